// Search, as Scope's: several terms at once, all must match (AND).
//   free text        label, minor label, id, any metadata value or table cell contains it
//   field: value     a metadata row (by label or id) or label/name/host/id contains value
//   cpu > 4%         a metric (by label or id) compared: > >= < <= =;
//   memory < 10mb    values in %, or bytes with b/kb/mb/gb/tb (1024s)
// Case does not matter. Quotes keep spaces: name: "my app".

const TERM = /([A-Za-z_][\w.-]*)\s*(<=|>=|<|>|=)\s*(\d+(?:\.\d+)?)\s*(%|[kmgt]i?b\b|b\b)?|([A-Za-z_][\w.-]*):\s*("[^"]*"|\S+)|("[^"]*"|\S+)/gi;
const BYTES = { b: 1, kb: 1024, kib: 1024, mb: 1024 ** 2, mib: 1024 ** 2, gb: 1024 ** 3, gib: 1024 ** 3, tb: 1024 ** 4, tib: 1024 ** 4 };

const unquote = (s) => (s.startsWith('"') && s.endsWith('"') && s.length > 1 ? s.slice(1, -1) : s);

export function parse(text) {
  const terms = [];
  for (const m of (text || '').matchAll(TERM)) {
    if (m[1]) {
      const unit = (m[4] || '').toLowerCase();
      const value = Number(m[3]) * (unit && unit !== '%' ? BYTES[unit] : 1);
      terms.push({ kind: 'metric', field: m[1].toLowerCase(), op: m[2], value });
    } else if (m[5]) {
      terms.push({ kind: 'field', field: m[5].toLowerCase(), value: unquote(m[6]).toLowerCase() });
    } else if (m[7]) {
      const t = unquote(m[7]).toLowerCase();
      if (t) terms.push({ kind: 'text', value: t });
    }
  }
  return terms;
}

const norm = (s) => String(s ?? '').toLowerCase();
const names = (row) => [norm(row.label), norm(row.id), norm(row.label).replace(/\s+/g, '_')];

function texts(node) {
  const out = [node.label, node.labelMinor, node.id];
  for (const row of node.metadata || []) out.push(row.value);
  for (const table of node.tables || []) {
    for (const row of table.rows || []) out.push(...Object.values(row.entries || {}));
  }
  return out.map(norm);
}

function fieldMatches(node, term) {
  const special = { label: node.label, name: node.label, host: node.labelMinor, id: node.id };
  if (term.field in special && norm(special[term.field]).includes(term.value)) return true;
  return (node.metadata || []).some((row) => names(row).some((n) => n === term.field || n.includes(term.field))
    && norm(row.value).includes(term.value));
}

const OPS = { '>': (a, b) => a > b, '>=': (a, b) => a >= b, '<': (a, b) => a < b, '<=': (a, b) => a <= b, '=': (a, b) => a === b };

function metricMatches(node, term) {
  return (node.metrics || []).some((row) => names(row).some((n) => n === term.field || n.includes(term.field))
    && OPS[term.op](Number(row.value) || 0, term.value));
}

export function matches(node, terms) {
  return terms.every((term) => {
    if (term.kind === 'text') return texts(node).some((t) => t.includes(term.value));
    if (term.kind === 'field') return fieldMatches(node, term);
    return metricMatches(node, term);
  });
}

// The ids of the nodes matching `text`, or null when there is nothing to search for.
export function search(nodes, text) {
  const terms = parse(text);
  if (!terms.length) return null;
  const out = new Set();
  for (const node of nodes.values()) if (matches(node, terms)) out.add(node.id);
  return out;
}
