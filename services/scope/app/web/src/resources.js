// The resources view: per host, CPU or memory as stacked bars, three layers as Scope's
// resource view: the host's use, its containers', its processes'. Each segment's width is
// its share of the host's capacity (a metric's value over its max: CPU in percent of
// all CPUs, memory in bytes of the host's), so the layers line up. Hover for values;
// click a segment for its details. Refreshed from the API every 3 s while shown.
import { getJson, topologyUrl } from './api.js';
import { escapeHtml, findMetric, metricValue } from './format.js';

const LAYERS = [
  { id: 'hosts', label: 'Host', options: {} },
  { id: 'containers', label: 'Containers', options: { system: 'all', stopped: 'running', pseudo: 'hide' } },
  { id: 'processes', label: 'Processes', options: { unconnected: 'show' } },
];
const COLORS = ['#5b8def', '#48b5a5', '#e0a34a', '#c0679e', '#7d6be0', '#6cbf5b', '#d9705a', '#4aa3d9'];

function hostOf(n, layer) {
  if (layer === 'hosts') return n.id;
  const parent = (n.parents || []).find((p) => p.topologyId === 'hosts');
  return parent ? parent.id : null;
}

export class Resources {
  constructor(container, { onSelect }) {
    this.container = container;
    this.metric = 'CPU';
    this.matched = null;
    this.data = null;
    container.addEventListener('click', (e) => {
      const b = e.target.closest('button[data-metric]');
      if (b) { this.metric = b.dataset.metric; this.draw(); return; }
      const seg = e.target.closest('[data-node]');
      if (seg) onSelect(seg.dataset.node, seg.dataset.topology);
    });
  }

  async refresh() {
    const answers = await Promise.all(LAYERS.map((l) => getJson(topologyUrl(l.id, l.options))));
    this.data = LAYERS.map((l, i) => ({ ...l, nodes: Object.values(answers[i].nodes || {}).filter((n) => !n.pseudo) }));
    this.draw();
  }

  segments(nodes, hostId, layer) {
    const out = [];
    for (const n of nodes) {
      if (hostOf(n, layer) !== hostId) continue;
      const m = findMetric(n, this.metric);
      if (!m || !m.max || !(Number(m.value) > 0)) continue;
      out.push({ n, m, share: Math.max(0, Math.min(1, (Number(m.value) || 0) / m.max)) });
    }
    return out.sort((a, b) => b.share - a.share);
  }

  draw() {
    if (!this.data) return;
    const [hosts, ...layers] = this.data;
    const picker = ['CPU', 'Memory'].map((m) => `<button data-metric="${m}" class="${m === this.metric ? 'active' : ''}">${m}</button>`).join('');
    const blocks = hosts.nodes.sort((a, b) => a.label.localeCompare(b.label)).map((h) => {
      const rows = [{ ...hosts, segs: this.segments([h], h.id, 'hosts') },
                    ...layers.map((l) => ({ ...l, segs: this.segments(l.nodes, h.id, l.id) }))];
      return `<div class="res-host"><h3>${escapeHtml(h.label)}</h3>${rows.map((r) => this.row(r)).join('')}</div>`;
    }).join('');
    this.container.innerHTML = `<div class="res-picker">${picker}</div>${blocks || '<p class="empty">No hosts reporting.</p>'}`;
  }

  row(layer) {
    let total = 0;
    const segs = layer.segs.map((s, i) => {
      total += s.share;
      const width = (s.share * 100).toFixed(3);
      const dim = this.matched && !this.matched.has(s.n.id) ? ' dimmed' : '';
      const title = `${s.n.label}: ${metricValue(s.m)}`;
      return `<div class="seg${dim}" data-node="${escapeHtml(s.n.id)}" data-topology="${layer.id}" title="${escapeHtml(title)}"
        style="width:${width}%;background:${COLORS[i % COLORS.length]}">${s.share > 0.08 ? escapeHtml(s.n.label) : ''}</div>`;
    }).join('');
    return `<div class="res-row"><span class="res-label">${layer.label}</span><div class="res-bar">${segs}</div>
      <span class="res-total">${(Math.min(total, 1) * 100).toFixed(1)}%</span></div>`;
  }

  highlight(matched) {
    this.matched = matched;
    this.draw();
  }
}
