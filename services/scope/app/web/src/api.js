// The app's HTTP API (Scope 1.13's paths) and its websockets, same origin.

export class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function check(resp) {
  if (resp.ok) return resp;
  let message = await resp.text();
  try { const parsed = JSON.parse(message); if (typeof parsed === 'string') message = parsed; } catch (e) { /* text */ }
  throw new HttpError(resp.status, message.trim() || resp.statusText);
}

export async function getJson(path) {
  const resp = await check(await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } }));
  return resp.json();
}

export async function postJson(path, body) {
  const resp = await check(await fetch(path, {
    method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' },
    body: body === undefined ? '' : JSON.stringify(body),
  }));
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export function del(path) {
  return fetch(path, { method: 'DELETE', credentials: 'same-origin' }).catch(() => null);
}

export function query(options) {
  const q = new URLSearchParams(options);
  const s = q.toString();
  return s ? `?${s}` : '';
}

export function topologyUrl(id, options) { return `/api/topology/${encodeURIComponent(id)}${query(options)}`; }

export function nodeUrl(topologyId, nodeId, options) {
  return `/api/topology/${encodeURIComponent(topologyId)}/${encodeURIComponent(nodeId)}${query(options)}`;
}

export function wsUrl(path) {
  const proto = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${window.location.host}${path}`;
}

export function controlUrl(control) {
  return `/api/control/${encodeURIComponent(control.probeId)}/${encodeURIComponent(control.nodeId)}/${encodeURIComponent(control.id)}`;
}
