// The table view (like `top`): one row per node, its metrics as columns, heaviest first
// (by the first metric, CPU where there is one); a click on a column header sorts by
// it, a second click reverses. Search dims the rows that do not match.
import { escapeHtml, metricValue } from './format.js';

export class Table {
  constructor(container, { onSelect }) {
    this.container = container;
    this.onSelect = onSelect;
    this.sort = null; // {key, desc}
    this.matched = null;
    this.nodes = new Map();
    container.addEventListener('click', (e) => {
      const th = e.target.closest('th[data-key]');
      if (th) {
        const key = th.dataset.key;
        this.sort = { key, desc: this.sort && this.sort.key === key ? !this.sort.desc : key !== 'label' };
        this.render(this.nodes);
        return;
      }
      const tr = e.target.closest('tr[data-id]');
      if (tr) this.onSelect(tr.dataset.id);
    });
  }

  columns(nodes) {
    const metrics = new Map();
    for (const n of nodes.values()) {
      for (const m of n.metrics || []) if (!metrics.has(m.id)) metrics.set(m.id, { key: `metric:${m.id}`, label: m.label, priority: m.priority || 0 });
    }
    const cols = [...metrics.values()].sort((a, b) => a.priority - b.priority);
    return [{ key: 'label', label: 'Name' }, { key: 'labelMinor', label: 'Where' }, ...cols,
            { key: 'connections', label: 'Connections' }];
  }

  value(n, key) {
    if (key === 'connections') return (n.adjacency || []).length;
    if (key.startsWith('metric:')) {
      const m = (n.metrics || []).find((r) => r.id === key.slice(7));
      return m ? Number(m.value) || 0 : -1;
    }
    return String(n[key] || '').toLowerCase();
  }

  cell(n, key) {
    if (key === 'connections') return String((n.adjacency || []).length);
    if (key.startsWith('metric:')) {
      const m = (n.metrics || []).find((r) => r.id === key.slice(7));
      return m ? metricValue(m) : '';
    }
    return n[key] || '';
  }

  render(nodes) {
    this.nodes = nodes;
    const cols = this.columns(nodes);
    if (!this.sort || !cols.some((c) => c.key === this.sort.key)) {
      const first = cols.find((c) => c.key.startsWith('metric:'));
      this.sort = first ? { key: first.key, desc: true } : { key: 'label', desc: false };
    }
    const { key, desc } = this.sort;
    const rows = [...nodes.values()].sort((a, b) => {
      const va = this.value(a, key), vb = this.value(b, key);
      const c = va < vb ? -1 : va > vb ? 1 : a.label.localeCompare(b.label);
      return desc ? -c : c;
    });
    const head = cols.map((c) => `<th data-key="${escapeHtml(c.key)}" class="${c.key === key ? (desc ? 'sorted desc' : 'sorted asc') : ''}">${escapeHtml(c.label)}</th>`).join('');
    const body = rows.map((n) => {
      const cls = [this.matched ? (this.matched.has(n.id) ? 'match' : 'dimmed') : '', n.pseudo ? 'pseudo' : ''].join(' ');
      return `<tr data-id="${escapeHtml(n.id)}" class="${cls.trim()}">${cols.map((c) => `<td>${escapeHtml(this.cell(n, c.key))}</td>`).join('')}</tr>`;
    }).join('');
    this.container.innerHTML = `<table class="nodes"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
  }

  highlight(matched) {
    this.matched = matched;
    this.render(this.nodes);
  }
}
