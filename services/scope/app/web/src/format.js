// Formatting of Scope's metric and metadata values, as Scope's UI shows them.

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

export function fileSize(bytes) {
  let v = Number(bytes) || 0;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) { v /= 1024; i += 1; }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${UNITS[i]}`;
}

export function metricValue(row) {
  const v = Number(row.value) || 0;
  if (row.format === 'percent') return `${v.toFixed(2)}%`;
  if (row.format === 'filesize') return fileSize(v);
  if (row.format === 'integer') return String(Math.round(v));
  return v.toFixed(2).replace(/\.00$/, '');
}

export function metadataValue(row) {
  if (row.dataType === 'duration' && /^\d+$/.test(row.value)) {
    const s = Number(row.value);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
  }
  return row.value;
}

export function escapeHtml(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

// The metric row of a node summary whose id or label names `what` ("cpu", "memory").
export function findMetric(node, what) {
  const w = what.toLowerCase();
  return (node.metrics || []).find((m) => m.label.toLowerCase() === w || m.id.toLowerCase().includes(w));
}

export function overlayName(overlay) {
  return { 'weave-py-vxlan': 'fastpath', 'fast-sleeve': 'fast sleeve', sleeve: 'sleeve' }[overlay] || overlay || '?';
}

// One link's label: "<router's overlay name> (<what it is>) · encrypted · MTU n".
export function linkLabel(link) {
  const kind = overlayName(link.overlay);
  const name = kind === link.overlay ? link.overlay : `${link.overlay} (${kind})`;
  const parts = [name || '?', link.encrypted ? 'encrypted' : 'unencrypted', `MTU ${link.mtu ?? '?'}`];
  if (link.state && link.state !== 'established') parts.push(link.state);
  return parts.join(' · ');
}
