// The terminal: xterm.js over the app's pipe websocket (Scope's /api/pipe/<id>), for a
// control that answered with a pipe (a shell in a container or on a host). Keystrokes
// go as binary messages, the shell's output comes back as binary messages; the size is
// sent with the control the answer named (resize_tty_control). Closing the panel closes
// the pipe (DELETE /api/pipe/<id>), which ends the shell.
import { Terminal as XTerm } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { controlUrl, del, postJson, wsUrl } from './api.js';

export class TerminalPanel {
  constructor(panel, { onClose }) {
    this.panel = panel;
    this.onClose = onClose;
    this.term = null;
    this.ws = null;
    panel.querySelector('#terminal-close').addEventListener('click', () => this.close());
    window.addEventListener('resize', () => this.fit());
  }

  get isOpen() { return !this.panel.hidden; }

  open(result, control, title) {
    this.close();
    this.pipe = result.pipe;
    this.resizeControl = result.resize_tty_control ? { ...control, id: result.resize_tty_control } : null;
    this.panel.hidden = false;
    this.panel.querySelector('#terminal-title').textContent = title;
    this.setState('connecting…');
    const host = this.panel.querySelector('#terminal');
    host.innerHTML = '';
    this.term = new XTerm({ convertEol: !result.raw_tty, cursorBlink: true, fontSize: 13, scrollback: 2000,
                            theme: { background: '#0d1020' } });
    this.fitAddon = new FitAddon();
    this.term.loadAddon(this.fitAddon);
    this.term.open(host);
    const ws = new WebSocket(wsUrl(`/api/pipe/${encodeURIComponent(this.pipe)}`));
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    const encoder = new TextEncoder();
    ws.onopen = () => { this.setState('connected'); this.fit(); this.term.focus(); };
    ws.onmessage = (e) => this.term.write(typeof e.data === 'string' ? e.data : new Uint8Array(e.data));
    ws.onclose = () => { if (this.ws === ws) this.setState('closed'); };
    this.term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(d)); });
  }

  setState(text) { this.panel.querySelector('#terminal-state').textContent = text; }

  fit() {
    if (!this.term || this.panel.hidden) return;
    this.fitAddon.fit();
    if (this.resizeControl) {
      postJson(controlUrl(this.resizeControl), { pipeID: this.pipe, width: String(this.term.cols), height: String(this.term.rows) })
        .catch(() => null);
    }
  }

  // What the terminal shows now, one string per line (for tests and copy).
  text() {
    if (!this.term) return '';
    const buf = this.term.buffer.active;
    const out = [];
    for (let i = 0; i < buf.length; i += 1) out.push(buf.getLine(i).translateToString(true));
    return out.join('\n');
  }

  close() {
    if (!this.term) return;
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
    del(`/api/pipe/${encodeURIComponent(this.pipe)}`);
    this.term.dispose();
    this.term = null;
    this.panel.hidden = true;
    this.onClose();
  }
}
