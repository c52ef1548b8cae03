// The details panel of one node (Scope's node details): its controls, metrics with
// sparklines, metadata, parents as links, tables, children tables, inbound and outbound
// connections, and for a container its recent traces (ours: /api/weave/traces). It is
// fetched again every 2 s while open; `esc` closes it.
import { getJson, nodeUrl } from './api.js';
import { escapeHtml, metadataValue, metricValue } from './format.js';

const SERVICES = ['gossip', 'ipam', 'dns', 'datapath', 'npc', 'scope-probe', 'scope-app'];
const CONTAINER_TOPOLOGIES = new Set(['containers', 'containers-by-hostname', 'containers-by-image']);

function sparkline(samples) {
  const values = (samples || []).map((s) => Number(s.value) || 0);
  if (values.length < 2) return '';
  const w = 120, h = 24, lo = Math.min(...values), hi = Math.max(...values);
  const span = hi - lo || 1;
  const pts = values.map((v, i) => `${((i / (values.length - 1)) * w).toFixed(1)},${(h - 2 - ((v - lo) / span) * (h - 4)).toFixed(1)}`);
  return `<svg class="spark" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}"><polyline points="${pts.join(' ')}"/></svg>`;
}

function section(title, body, cls = '') {
  return body ? `<section class="d-section ${cls}"><h4>${escapeHtml(title)}</h4>${body}</section>` : '';
}

function cellOf(row, column) {
  const meta = (row.metadata || []).find((m) => m.id === column.id);
  if (meta) return meta.value;
  const metric = (row.metrics || []).find((m) => m.id === column.id);
  return metric ? metricValue(metric) : '';
}

export class Details {
  constructor(el, app) {
    this.el = el;
    this.app = app;
    this.current = null;
    this.timer = null;
    el.addEventListener('click', (e) => this.click(e));
  }

  get isOpen() { return !this.el.hidden; }

  async open(topologyId, nodeId) {
    this.current = { topologyId, nodeId };
    this.result = null;
    this.el.hidden = false;
    this.el.innerHTML = '<div class="d-loading">Loading…</div>';
    clearInterval(this.timer);
    this.timer = setInterval(() => this.refresh(), 2000);
    await this.refresh();
  }

  close() {
    clearInterval(this.timer);
    this.current = null;
    this.el.hidden = true;
    this.el.innerHTML = '';
    this.app.detailsClosed();
  }

  async refresh() {
    const cur = this.current;
    if (!cur) return;
    let node;
    try {
      node = (await getJson(nodeUrl(cur.topologyId, cur.nodeId, this.app.optionsFor(cur.topologyId)))).node;
    } catch (err) {
      if (this.current === cur) this.el.innerHTML = this.header({ label: cur.nodeId, labelMinor: '' }) + `<p class="error">${escapeHtml(err.message)}</p>`;
      return;
    }
    let traces = null;
    if (CONTAINER_TOPOLOGIES.has(cur.topologyId) && cur.nodeId.endsWith(';<container>')) {
      traces = await getJson(`/api/weave/traces?node=${encodeURIComponent(cur.nodeId)}&limit=8`).catch(() => null);
    }
    if (this.current !== cur) return;
    const open = new Set([...this.el.querySelectorAll('details[open]')].map((d) => d.dataset.key));
    const picked = Object.fromEntries([...this.el.querySelectorAll('select[data-args-for]')].map((p) => [p.dataset.argsFor, p.value]));
    const scroll = this.el.scrollTop;
    this.el.innerHTML = this.render(node, traces);
    for (const d of this.el.querySelectorAll('details[data-key]')) if (open.has(d.dataset.key)) d.open = true;
    for (const p of this.el.querySelectorAll('select[data-args-for]')) if (picked[p.dataset.argsFor]) p.value = picked[p.dataset.argsFor];
    this.el.scrollTop = scroll;
    this.node = node;
  }

  header(node) {
    return `<header class="d-head"><div><h2>${escapeHtml(node.label)}</h2><div class="minor">${escapeHtml(node.labelMinor || '')}</div></div>
      <button class="d-close" data-action="close" title="Close (esc)">×</button></header>`;
  }

  render(node, traces) {
    return [this.header(node), this.controls(node), this.metrics(node), this.metadata(node), this.parents(node),
            this.tables(node), this.children(node), this.connections(node), this.traces(traces)].join('');
  }

  controls(node) {
    const controls = (node.controls || []).slice().sort((a, b) => a.rank - b.rank);
    if (!controls.length) return '';
    const buttons = controls.map((c, i) => {
      const pick = c.id === 'weave_py_restart_service'
        ? `<select data-args-for="${i}">${SERVICES.map((s) => `<option>${s}</option>`).join('')}</select>` : '';
      return `<span class="control">${pick}<button class="control-btn" data-control="${i}" data-id="${escapeHtml(c.id)}">${escapeHtml(c.human)}</button></span>`;
    }).join('');
    const r = this.result;
    return `<div class="d-controls">${buttons}<div class="d-control-result ${r ? (r.ok ? 'ok' : 'error') : ''}" role="status">${escapeHtml(r ? r.text : '')}</div></div>`;
  }

  metrics(node) {
    const rows = (node.metrics || []).map((m) => `<tr><th>${escapeHtml(m.label)}</th><td class="num">${escapeHtml(metricValue(m))}</td><td>${sparkline(m.samples)}</td></tr>`).join('');
    return section('Status', rows && `<table class="kv">${rows}</table>`);
  }

  metadata(node) {
    const rows = (node.metadata || []).map((m) => `<tr><th>${escapeHtml(m.label)}</th><td>${escapeHtml(metadataValue(m))}</td></tr>`).join('');
    return section('Info', rows && `<table class="kv">${rows}</table>`);
  }

  parents(node) {
    const links = (node.parents || []).map((p) => `<a href="#" class="node-link" data-topology="${escapeHtml(p.topologyId)}" data-node="${escapeHtml(p.id)}">${escapeHtml(p.label || p.id)}</a>`).join(' ');
    return section('Parents', links && `<div class="parents">${links}</div>`);
  }

  tables(node) {
    return (node.tables || []).filter((t) => (t.rows || []).length).map((t) => {
      if (t.type === 'multicolumn-table') {
        const cols = t.columns || [];
        const head = cols.map((c) => `<th>${escapeHtml(c.label)}</th>`).join('');
        const body = t.rows.map((r) => `<tr>${cols.map((c) => `<td>${escapeHtml((r.entries || {})[c.id] ?? '')}</td>`).join('')}</tr>`).join('');
        return section(t.label || 'Table', `<table class="grid" data-table="${escapeHtml(t.id)}"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`);
      }
      const body = t.rows.map((r) => `<tr><th>${escapeHtml(r.entries.label)}</th><td>${escapeHtml(r.entries.value)}</td></tr>`).join('');
      return section(t.label || 'Table', `<table class="kv" data-table="${escapeHtml(t.id)}">${body}</table>`);
    }).join('');
  }

  children(node) {
    return (node.children || []).map((group) => {
      const cols = group.columns || [];
      const head = `<th>Name</th>${cols.map((c) => `<th>${escapeHtml(c.label)}</th>`).join('')}`;
      const body = (group.nodes || []).map((r) => `<tr><td><a href="#" class="node-link" data-topology="${escapeHtml(group.topologyId)}" data-node="${escapeHtml(r.id)}">${escapeHtml(r.label)}</a></td>${cols.map((c) => `<td>${escapeHtml(cellOf(r, c))}</td>`).join('')}</tr>`).join('');
      return section(group.label, `<table class="grid children"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`);
    }).join('');
  }

  connections(node) {
    return (node.connections || []).map((c) => {
      if (!(c.connections || []).length) return section(c.label, '<p class="empty">None.</p>', 'conn');
      const cols = c.columns || [];
      const head = `<th>${c.label === 'Inbound' ? 'From' : 'To'}</th>${cols.map((col) => `<th>${escapeHtml(col.label)}</th>`).join('')}`;
      const body = c.connections.map((r) => `<tr><td><a href="#" class="node-link" data-topology="${escapeHtml(c.topologyId)}" data-node="${escapeHtml(r.nodeId)}">${escapeHtml(r.label)}</a></td>${cols.map((col) => `<td>${escapeHtml(((r.metadata || []).find((m) => m.id === col.id) || {}).value ?? '')}</td>`).join('')}</tr>`).join('');
      return section(c.label, `<table class="grid"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`, 'conn');
    }).join('');
  }

  traces(answer) {
    if (!answer) return '';
    if (!answer.here) return section('Recent traces', `<p class="empty">Traces of ${escapeHtml(answer.host)}'s containers are kept on ${escapeHtml(answer.host)}: open its app.</p>`);
    if (!answer.traces.length) return section('Recent traces', '<p class="empty">No traces recorded for this container yet.</p>');
    const items = answer.traces.map((t) => {
      const when = new Date(t.start_ns / 1e6).toLocaleTimeString();
      const spans = t.spans.map((s) => `<tr><td style="padding-left:${0.3 + s.depth * 0.9}em">${escapeHtml(s.name)}</td><td>${escapeHtml(s.service)}@${escapeHtml(s.host)}</td><td class="num">+${s.offset_ms.toFixed(1)}</td><td class="num">${s.duration_ms.toFixed(2)} ms</td></tr>`).join('');
      return `<details class="trace" data-key="${escapeHtml(t.trace_id)}"><summary><b>${escapeHtml(t.name)}</b> ${when} · ${t.duration_ms.toFixed(1)} ms · ${t.spans.length} spans</summary>
        <table class="grid spans"><thead><tr><th>Span</th><th>Service</th><th>Offset</th><th>Took</th></tr></thead><tbody>${spans}</tbody></table></details>`;
    }).join('');
    return section('Recent traces', items, 'traces');
  }

  click(e) {
    const link = e.target.closest('.node-link');
    if (link) { e.preventDefault(); this.app.showNode(link.dataset.topology, link.dataset.node); return; }
    if (e.target.closest('[data-action="close"]')) { this.close(); return; }
    const button = e.target.closest('button[data-control]');
    if (button && this.node) {
      const control = this.node.controls.slice().sort((a, b) => a.rank - b.rank)[Number(button.dataset.control)];
      const pick = this.el.querySelector(`select[data-args-for="${button.dataset.control}"]`);
      const args = pick ? { service: pick.value } : undefined;
      this.app.runControl(control, args, this.node, (text, ok) => {
        this.result = { text, ok };
        const out = this.el.querySelector('.d-control-result');
        if (out) { out.textContent = text; out.className = `d-control-result ${ok ? 'ok' : 'error'}`; }
      });
    }
  }
}
