// The graph view: cytoscape.js with the dagre layout, top to bottom (a connection's
// client above its server: Scope's adjacency goes client -> server).
//
// Live updates do not lay the graph out again: `apply(diff)` changes the nodes that
// changed in place, removes the removed, and puts each added node beside the nodes it
// is connected to (or under the graph), leaving every other node where it is. A whole
// layout runs on a reset (new topology, options, reconnect), when more than a third of
// the nodes are new (`layouts` counts them). Weave Net peers, a mesh, go on a circle.
import cytoscape from 'cytoscape';
import dagre from 'cytoscape-dagre';
import { linkLabel } from './format.js';

cytoscape.use(dagre);

const SHAPES = {
  circle: 'ellipse', square: 'round-rectangle', hexagon: 'round-hexagon', heptagon: 'round-heptagon',
  octagon: 'round-octagon', pentagon: 'round-pentagon', triangle: 'round-triangle', cloud: 'round-rectangle',
  dottedcircle: 'ellipse', dottedsquare: 'round-rectangle', sheet: 'rectangle', cylinder: 'barrel',
};

const STYLE = [
  { selector: 'node', style: {
    shape: 'data(shape)', width: 46, height: 46, 'background-color': '#3f4f7f', 'border-width': 2,
    'border-color': '#8aa2e8', label: 'data(text)', color: '#e6e9f5', 'font-size': 11, 'text-wrap': 'wrap',
    'text-max-width': 150, 'text-valign': 'bottom', 'text-margin-y': 6, 'min-zoomed-font-size': 6,
    'transition-property': 'opacity, border-color', 'transition-duration': '150ms' } },
  { selector: 'node[?stack]', style: { 'border-width': 4, 'border-style': 'double' } },
  { selector: 'node[?pseudo]', style: { 'background-color': '#2a2f45', 'border-style': 'dashed', 'border-color': '#777' } },
  { selector: 'node.host', style: { 'background-color': '#2f5f5a', 'border-color': '#7fd1c7' } },
  { selector: 'edge', style: {
    width: 1.6, 'line-color': '#6f7fb0', 'target-arrow-color': '#6f7fb0', 'target-arrow-shape': 'triangle',
    'curve-style': 'bezier', 'arrow-scale': 0.8, opacity: 0.85 } },
  { selector: 'edge.blocked', style: {
    'line-color': '#ff4d4d', 'target-arrow-color': '#ff4d4d', 'line-style': 'dashed', width: 2.4, opacity: 1,
    label: 'blocked', color: '#ff8080', 'font-size': 9, 'text-background-color': '#161a2b',
    'text-background-opacity': 1 } },
  { selector: 'edge.link', style: {
    'target-arrow-shape': 'none', 'line-color': '#7fd1c7', width: 2.5, label: 'data(text)', color: '#c8f1ec',
    'font-size': 10, 'text-rotation': 'autorotate', 'text-background-color': '#161a2b',
    'text-background-opacity': 0.9, 'text-background-padding': 2 } },
  { selector: 'edge.link.pending', style: { 'line-style': 'dashed', 'line-color': '#d9b35f' } },
  { selector: 'edge.link.plain', style: { 'line-color': '#d9b35f' } },
  { selector: '.dimmed', style: { opacity: 0.15 } },
  { selector: 'node.match', style: { 'border-color': '#ffd24d', 'border-width': 4 } },
  { selector: 'node:selected', style: { 'border-color': '#ffffff', 'border-width': 4 } },
];

function nodeData(n) {
  return { id: n.id, text: n.labelMinor ? `${n.label}\n${n.labelMinor}` : n.label, label: n.label,
           shape: SHAPES[n.shape] || 'ellipse', pseudo: !!n.pseudo, stack: !!n.stack };
}

// The edges of a node: Scope's adjacency, blocked attempts (ours, red), and on the Weave
// Net topology each link with its overlay (ours; one edge per pair of peers).
export function edgesOf(n, nodes, topologyId) {
  const out = [];
  const blocked = new Set(n.weave_py_blocked || []);
  if (topologyId === 'weave') {
    for (const link of n.weave_py_links || []) {
      const peer = nodes.get(link.peer);
      if (!peer || link.peer === n.id) continue;
      const back = (peer.weave_py_links || []).find((l) => l.peer === n.id);
      if (back && link.peer < n.id) continue; // the pair is drawn once, from its first peer
      const text = back && linkLabel(back) !== linkLabel(link) ? `${linkLabel(link)} | ${linkLabel(back)}` : linkLabel(link);
      const [a, b] = [n.id, link.peer].sort();
      const classes = [link.state === 'established' ? '' : 'pending', link.encrypted ? '' : 'plain'];
      out.push({ data: { id: `link|${a}|${b}`, source: a, target: b, text, overlay: link.overlay },
                 classes: ['link', ...classes].join(' ').trim() });
    }
    return out;
  }
  for (const target of n.adjacency || []) {
    if (!nodes.has(target) || target === n.id) continue;
    out.push({ data: { id: `${n.id}|${target}`, source: n.id, target }, classes: blocked.has(target) ? 'blocked' : '' });
  }
  for (const target of blocked) {
    if (nodes.has(target) && !(n.adjacency || []).includes(target) && target !== n.id) {
      out.push({ data: { id: `${n.id}|${target}`, source: n.id, target }, classes: 'blocked' });
    }
  }
  return out;
}

export class Graph {
  constructor(container, { onSelect }) {
    this.container = container;
    this.layouts = 0;
    this.topologyId = '';
    this.cy = cytoscape({ container, style: STYLE, minZoom: 0.1, maxZoom: 3,
                          boxSelectionEnabled: false });
    this.cy.on('tap', 'node', (e) => onSelect(e.target.id()));
  }

  reset(nodes, topologyId) {
    this.topologyId = topologyId;
    const cy = this.cy;
    cy.batch(() => {
      cy.elements().remove();
      cy.add([...nodes.values()].map((n) => ({ group: 'nodes', data: nodeData(n), classes: topologyId === 'hosts' || topologyId === 'weave' ? 'host' : '' })));
      for (const n of nodes.values()) cy.add(edgesOf(n, nodes, topologyId).map((e) => ({ group: 'edges', ...e })));
    });
    this.layout();
  }

  apply(diff, nodes) {
    const cy = this.cy;
    const added = [];
    cy.batch(() => {
      for (const id of diff.remove || []) cy.getElementById(id).remove();
      for (const n of diff.update || []) {
        const el = cy.getElementById(n.id);
        if (el.nonempty()) el.data(nodeData(n));
      }
      for (const n of diff.add || []) {
        if (cy.getElementById(n.id).empty()) {
          added.push(cy.add({ group: 'nodes', data: nodeData(n), classes: this.topologyId === 'hosts' || this.topologyId === 'weave' ? 'host' : '' }));
        }
      }
      cy.edges().remove();
      for (const n of nodes.values()) cy.add(edgesOf(n, nodes, this.topologyId).map((e) => ({ group: 'edges', ...e })));
    });
    if (!added.length) return;
    if (added.length * 3 > cy.nodes().length) { this.layout(); return; }
    for (const el of added) this.place(el);
  }

  // An added node goes beside its placed neighbours (or below the graph); nothing moves.
  place(el) {
    const known = el.neighborhood('node').filter((n) => !n.same(el));
    const box = this.cy.nodes().not(el).boundingBox();
    if (known.nonempty()) {
      const x = known.reduce((s, n) => s + n.position('x'), 0) / known.length;
      const y = Math.max(...known.map((n) => n.position('y'))) + 90;
      el.position({ x: x + 60 * (Math.random() - 0.5), y });
    } else {
      el.position({ x: (Number.isFinite(box.x2) ? box.x2 : 0) + 80, y: Number.isFinite(box.y1) ? box.y1 : 0 });
    }
  }

  layout() {
    this.layouts += 1;
    // Weave Net peers form a mesh (no clients, no servers): a circle shows every link
    const options = this.topologyId === 'weave'
      ? { name: 'circle', fit: true, padding: 80, avoidOverlap: true, spacingFactor: 1.4, animate: false }
      : { name: 'dagre', rankDir: 'TB', nodeSep: 50, rankSep: 90, edgeSep: 10, fit: true, padding: 40, animate: false };
    this.cy.layout(options).run();
    if (this.cy.zoom() > 1.2) { this.cy.zoom(1.2); this.cy.center(); }
  }

  highlight(matched) {
    this.cy.batch(() => {
      this.cy.elements().removeClass('dimmed match');
      if (!matched) return;
      this.cy.nodes().forEach((n) => n.addClass(matched.has(n.id()) ? 'match' : 'dimmed'));
      this.cy.edges().forEach((e) => {
        if (!matched.has(e.source().id()) || !matched.has(e.target().id())) e.addClass('dimmed');
      });
    });
  }

  select(id) {
    this.cy.nodes(':selected').unselect();
    if (id) this.cy.getElementById(id).select();
  }

  resize() { this.cy.resize(); }

  // The graph's area changed (a panel opened or closed): show it all in what is left.
  refit() {
    this.cy.resize();
    this.cy.fit(undefined, 40);
    if (this.cy.zoom() > 1.2) { this.cy.zoom(1.2); this.cy.center(); }
  }

  positions() {
    const out = {};
    this.cy.nodes().forEach((n) => { out[n.id()] = { ...n.position() }; });
    return out;
  }
}
