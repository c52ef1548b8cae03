// The Scope page: topology selector (with sub-topologies and options), graph / table /
// resources views, search, details panel, controls and terminal, live from the app's
// topology websocket (Scope's diffs). The state that can be linked to (topology, view,
// search) lives in the URL's hash. Keyboard: `/` search, `g` `t` `r` views, `esc`
// closes the terminal, then the details panel, then clears the search.
import './style.css';
import { HttpError, controlUrl, getJson, postJson, query, wsUrl } from './api.js';
import { Details } from './details.js';
import { Graph } from './graph.js';
import { Resources } from './resources.js';
import { search } from './search.js';
import { Table } from './table.js';
import { TerminalPanel } from './terminal.js';
import { escapeHtml } from './format.js';

const $ = (sel) => document.querySelector(sel);
const VIEWS = ['graph', 'table', 'resources'];
const KEYS = { g: 'graph', t: 'table', r: 'resources' };
const MAX_BACKOFF_MS = 15000;

class App {
  constructor() {
    this.topologies = [];
    this.byId = new Map();
    this.topologyId = 'containers';
    this.view = 'graph';
    this.options = {}; // topology id -> {group id: value}
    this.nodes = new Map();
    this.frames = 0;
    this.ws = null;
    this.backoff = 1000;
    this.connected = false;
    this.config = {};
    this.graph = new Graph($('#graph'), { onSelect: (id) => this.showNode(this.topologyId, id) });
    this.table = new Table($('#table'), { onSelect: (id) => this.showNode(this.topologyId, id) });
    this.resources = new Resources($('#resources'), { onSelect: (id, t) => this.showNode(t, id) });
    this.details = new Details($('#details'), this);
    this.terminal = new TerminalPanel($('#terminal-panel'), { onClose: () => this.panels() });
    this.readHash();
  }

  // -- state in the URL ---------------------------------------------------------------
  readHash() {
    const h = new URLSearchParams(window.location.hash.slice(1));
    if (h.get('topology')) this.topologyId = h.get('topology');
    if (VIEWS.includes(h.get('view'))) this.view = h.get('view');
    $('#search').value = h.get('q') || '';
  }

  writeHash() {
    const h = new URLSearchParams({ topology: this.topologyId, view: this.view });
    if ($('#search').value) h.set('q', $('#search').value);
    window.history.replaceState(null, '', `#${h}`);
  }

  // -- topologies and options -------------------------------------------------------
  async loadTopologies() {
    try {
      this.topologies = await getJson(`/api/topology${query(this.topologyQuery())}`);
    } catch (err) {
      this.showStatus(err instanceof HttpError && err.status === 401
        ? 'Your session has ended: <a href="/">log in again</a>.' : `Cannot list topologies: ${escapeHtml(err.message)}`);
      return;
    }
    this.byId = new Map();
    for (const t of this.topologies) {
      this.byId.set(t.url.split('/').pop(), t);
      for (const s of t.sub_topologies || []) this.byId.set(s.url.split('/').pop(), { ...s, parent: t });
    }
    if (!this.byId.has(this.topologyId)) this.topologyId = 'containers';
    this.renderTopologies();
    this.renderOptions();
  }

  renderTopologies() {
    const item = (t, sub) => {
      const id = t.url.split('/').pop();
      const count = t.stats ? t.stats.node_count : 0;
      const active = id === this.topologyId ? ' active' : '';
      return `<button class="topo${sub ? ' sub' : ''}${active}" data-topology="${id}">${escapeHtml(t.name)}<span class="count">${count}</span></button>`;
    };
    const shown = this.topologies.filter((t) => !t.hide_if_empty || t.stats.node_count > 0
      || (t.sub_topologies || []).some((s) => s.url.endsWith(`/${this.topologyId}`)) || t.url.endsWith(`/${this.topologyId}`));
    $('#topologies').innerHTML = shown.sort((a, b) => a.rank - b.rank).map((t) => `<div class="topo-group">${item(t, false)}${(t.sub_topologies || []).map((s) => item(s, true)).join('')}</div>`).join('');
  }

  optionsFor(topologyId) {
    const t = this.byId.get(topologyId);
    const chosen = this.options[topologyId] || {};
    const out = {};
    for (const group of (t && t.options) || []) out[group.id] = chosen[group.id] || group.defaultValue;
    return out;
  }

  renderOptions() {
    const t = this.byId.get(this.topologyId);
    const current = this.optionsFor(this.topologyId);
    $('#options').innerHTML = ((t && t.options) || []).map((group) => `<div class="opt-group" data-group="${escapeHtml(group.id)}">${group.options.map((o) => `<button data-option="${escapeHtml(o.value)}" class="${current[group.id] === o.value ? 'active' : ''}">${escapeHtml(o.label)}</button>`).join('')}</div>`).join('');
  }

  setTopology(id) {
    if (id === this.topologyId && this.ws) return;
    this.topologyId = id;
    this.renderTopologies();
    this.renderOptions();
    this.writeHash();
    this.connect();
  }

  setOption(groupId, value) {
    this.options[this.topologyId] = { ...this.optionsFor(this.topologyId), [groupId]: value };
    this.renderOptions();
    this.connect();
  }

  // -- the live topology --------------------------------------------------------------
  topologyQuery() { return { t: '1s', ...this.optionsFor(this.topologyId) }; }

  connect() {
    if (this.ws) { const old = this.ws; this.ws = null; old.close(); }
    clearTimeout(this.retry);
    const ws = new WebSocket(wsUrl(`/api/topology/${encodeURIComponent(this.topologyId)}/ws${query(this.topologyQuery())}`));
    this.ws = ws;
    this.awaitingReset = true;
    ws.onopen = () => { if (this.ws === ws) { this.connected = true; this.backoff = 1000; this.hideStatus(); } };
    ws.onmessage = (e) => { if (this.ws === ws) this.applyFrame(JSON.parse(e.data)); };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.connected = false;
      this.ws = null;
      const wait = this.backoff;
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
      this.showStatus(`Connection to the app lost: retrying in ${Math.round(wait / 1000)} s… <button id="retry-now">Retry now</button>`);
      const again = $('#retry-now');
      if (again) again.onclick = () => this.connect();
      this.retry = setTimeout(() => this.connect(), wait);
    };
  }

  applyFrame(frame) {
    this.frames += 1;
    const reset = frame.reset || this.awaitingReset;
    this.awaitingReset = false;
    if (reset) this.nodes = new Map();
    for (const id of frame.remove || []) this.nodes.delete(id);
    for (const n of [...(frame.add || []), ...(frame.update || [])]) this.nodes.set(n.id, n);
    if (reset) this.graph.reset(this.nodes, this.topologyId);
    else this.graph.apply(frame, this.nodes);
    if (this.view === 'table') this.table.render(this.nodes);
    else this.table.nodes = this.nodes;
    this.runSearch(false);
    this.renderFooter();
    $('#graph').dataset.nodes = String(this.nodes.size);
    $('#graph').dataset.frames = String(this.frames);
  }

  // -- views ----------------------------------------------------------------------------
  setView(view) {
    this.view = view;
    for (const v of VIEWS) $(`#${v}`).hidden = v !== view;
    for (const b of document.querySelectorAll('#views button')) b.classList.toggle('active', b.dataset.view === view);
    clearInterval(this.resourceTimer);
    if (view === 'graph') this.graph.resize();
    if (view === 'table') this.table.render(this.nodes);
    if (view === 'resources') {
      const refresh = () => this.resources.refresh().catch((err) => this.showStatus(`Resources: ${escapeHtml(err.message)}`));
      refresh();
      this.resourceTimer = setInterval(refresh, 3000);
    }
    this.writeHash();
    this.renderLegend();
  }

  renderLegend() {
    const items = this.topologyId === 'weave'
      ? ['<span class="sw link"></span>link: overlay · encryption · MTU', '<span class="sw pending"></span>pending or unencrypted']
      : ['<span class="sw edge"></span>connection (client above server)', '<span class="sw blocked"></span>blocked by a network policy'];
    $('#legend').innerHTML = this.view === 'graph' ? items.map((i) => `<span>${i}</span>`).join('') : '';
  }

  runSearch(write = true) {
    const text = $('#search').value;
    const matched = search(this.nodes, text);
    this.matched = matched;
    this.graph.highlight(matched);
    if (this.view === 'table') this.table.highlight(matched);
    else this.table.matched = matched;
    if (this.view === 'resources') this.resources.highlight(matched);
    else this.resources.matched = matched;
    $('#search-count').textContent = matched ? `${matched.size} of ${this.nodes.size}` : '';
    if (write) this.writeHash();
  }

  renderFooter() {
    const t = this.byId.get(this.topologyId);
    const name = t ? (t.parent ? `${t.parent.name} ${t.name}` : t.name) : this.topologyId;
    const controls = this.config.controls ? 'controls on' : 'controls off';
    $('#footer').textContent = `${this.nodes.size} nodes · ${name} · app on ${this.config.hostname || '?'} (${this.config.version || ''}) · ${controls}`;
    this.renderLegend();
  }

  showStatus(html) { const s = $('#status'); s.innerHTML = html; s.hidden = false; }
  hideStatus() { $('#status').hidden = true; }

  // -- details and controls ----------------------------------------------------------
  showNode(topologyId, nodeId) {
    if (topologyId && topologyId !== this.topologyId && this.byId.has(topologyId)) this.setTopology(topologyId);
    this.graph.select(nodeId);
    this.details.open(topologyId || this.topologyId, nodeId);
    this.panels();
  }

  detailsClosed() { this.graph.select(null); this.panels(); }

  // The graph keeps clear of the open panels (it is fitted again, not laid out).
  panels() {
    const main = $('main');
    const details = this.details.isOpen, terminal = this.terminal.isOpen;
    if (main.classList.contains('with-details') === details && main.classList.contains('with-terminal') === terminal) return;
    main.classList.toggle('with-details', details);
    main.classList.toggle('with-terminal', terminal);
    this.graph.refit();
  }

  async runControl(control, args, node, report) {
    report(`${control.human}…`, true);
    try {
      const result = await postJson(controlUrl(control), args);
      if (result && result.pipe) {
        this.terminal.open(result, control, `${node.label} · ${control.human}`);
        this.panels();
        report('terminal open', true);
      } else {
        report((result && result.value) || 'done', true);
      }
    } catch (err) {
      report(err.message, false);
    }
  }

  // -- keyboard -------------------------------------------------------------------------
  onKey(e) {
    const inTerminal = e.target.closest && e.target.closest('#terminal-panel');
    const typing = ['INPUT', 'SELECT', 'TEXTAREA'].includes(e.target.tagName);
    if (inTerminal) return; // every key is the shell's (close with the × button)
    if (e.key === 'Escape') {
      if (typing) { e.target.blur(); if (e.target.id === 'search' && !e.target.value) return; }
      if (this.terminal.isOpen) this.terminal.close();
      else if (this.details.isOpen) this.details.close();
      else if ($('#search').value) { $('#search').value = ''; this.runSearch(); }
      return;
    }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === '/') { e.preventDefault(); $('#search').focus(); $('#search').select(); }
    else if (KEYS[e.key]) this.setView(KEYS[e.key]);
  }

  bind() {
    $('#topologies').addEventListener('click', (e) => {
      const b = e.target.closest('button[data-topology]');
      if (b) this.setTopology(b.dataset.topology);
    });
    $('#options').addEventListener('click', (e) => {
      const b = e.target.closest('button[data-option]');
      if (b) this.setOption(b.closest('.opt-group').dataset.group, b.dataset.option);
    });
    $('#views').addEventListener('click', (e) => {
      const b = e.target.closest('button[data-view]');
      if (b) this.setView(b.dataset.view);
    });
    $('#search').addEventListener('input', () => this.runSearch());
    document.addEventListener('keydown', (e) => this.onKey(e));
    window.addEventListener('resize', () => this.graph.resize());
  }

  async start() {
    this.bind();
    this.config = await getJson('/api/weave/config').catch(() => ({}));
    await this.loadTopologies();
    this.setView(this.view);
    this.connect();
    setInterval(() => this.loadTopologies(), 5000);
  }
}

const app = new App();
// For tests and the console: the live state (node map, graph, terminal text).
window.__scope = {
  app,
  nodeCount: () => app.graph.cy.nodes().length,
  edgeCount: () => app.graph.cy.edges().length,
  edges: () => app.graph.cy.edges().map((e) => ({ id: e.id(), source: e.source().id(), target: e.target().id(), text: e.data('text') || '', classes: e.classes() })),
  matched: () => (app.matched ? [...app.matched] : null),
  layouts: () => app.graph.layouts,
  frames: () => app.frames,
  positions: () => app.graph.positions(),
  topologyQuery: () => app.topologyQuery(),
  terminalText: () => app.terminal.text(),
  connected: () => app.connected,
};
app.start();
