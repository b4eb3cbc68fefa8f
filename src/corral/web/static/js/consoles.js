// The guest's consoles in the page: the serial console in xterm.js, the display in noVNC. Both connect
// through a one-time ticket (POST /api/domains/{name}/console-ticket) to a WebSocket of this server.
import { api, domainPath } from "./api.js";
import { h } from "./format.js";

function wsUrl(path) {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
}

function ensureCss(href) {
  if (!document.querySelector(`link[href="${href}"]`)) {
    document.head.append(h("link", { rel: "stylesheet", href }));
  }
}

async function ticket(name) {
  const answer = await api.post(`${domainPath(name)}/console-ticket`);
  return answer.ticket;
}

export function mountSerial(container, ctx, name) {
  ensureCss("/ui/vendor/xterm/xterm.css");
  const status = h("p", { class: "status-line", id: "console-status" }, "Connecting…");
  const reconnect = h("button", { type: "button", class: "small secondary", hidden: true }, "Reconnect");
  const screen = h("div", { class: "terminal", id: "terminal" });
  container.append(h("div", { class: "toolbar" }, status, reconnect), screen);
  let term = null;
  let fit = null;
  let ws = null;
  let closed = false;
  const encoder = new TextEncoder();

  const onResize = () => { if (fit) fit.fit(); };

  async function connect() {
    reconnect.hidden = true;
    status.textContent = "Connecting…";
    let t;
    try {
      t = await ticket(name);
    } catch (err) {
      status.textContent = err.message;
      reconnect.hidden = false;
      return;
    }
    if (closed) return;
    ws = new WebSocket(wsUrl(`/api/ws/console/${encodeURIComponent(name)}?ticket=${encodeURIComponent(t)}`));
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      status.textContent = `Serial console of ${name}: press Enter for a prompt.`;
      if (term) term.focus();
    };
    ws.onmessage = (event) => {
      if (term) term.write(typeof event.data === "string" ? event.data : new Uint8Array(event.data));
    };
    ws.onclose = (event) => {
      if (closed) return;
      status.textContent = `Disconnected${event.reason ? `: ${event.reason}` : ""}.`;
      reconnect.hidden = false;
    };
  }

  (async () => {
    try {
      const [{ Terminal }, { FitAddon }] = await Promise.all([
        import("/ui/vendor/xterm/xterm.mjs"), import("/ui/vendor/xterm/addon-fit.mjs")]);
      if (closed) return;
      term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 5000,
                            fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace" });
      fit = new FitAddon();
      term.loadAddon(fit);
      term.open(screen);
      fit.fit();
      term.onData((data) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data)); });
      window.addEventListener("resize", onResize);
      window.corralConsole = { term, name };
    } catch (err) {
      status.textContent = `xterm.js is missing (run scripts/setup): ${err.message}`;
      return;
    }
    connect();
  })();
  reconnect.addEventListener("click", connect);

  return () => {
    closed = true;
    window.removeEventListener("resize", onResize);
    if (ws) ws.close();
    if (term) term.dispose();
    if (window.corralConsole && window.corralConsole.term === term) delete window.corralConsole;
  };
}

export function mountDisplay(container, ctx, name) {
  const status = h("p", { class: "status-line", id: "vnc-status" }, "Connecting…");
  const reconnect = h("button", { type: "button", class: "small secondary", hidden: true }, "Reconnect");
  const cad = h("button", { type: "button", class: "small secondary" }, "Send Ctrl+Alt+Del");
  const screen = h("div", { class: "vnc", id: "vnc" });
  container.append(h("div", { class: "toolbar" }, status, cad, reconnect), screen);
  let rfb = null;
  let closed = false;

  async function connect() {
    reconnect.hidden = true;
    status.textContent = "Connecting…";
    try {
      const [{ default: RFB }, t] = await Promise.all([import("/ui/vendor/novnc/core/rfb.js"), ticket(name)]);
      if (closed) return;
      rfb = new RFB(screen, wsUrl(`/api/ws/vnc/${encodeURIComponent(name)}?ticket=${encodeURIComponent(t)}`));
      rfb.scaleViewport = true;
      rfb.background = "#111";
      rfb.addEventListener("connect", () => { status.textContent = `Display of ${name}`; });
      rfb.addEventListener("disconnect", (event) => {
        if (closed) return;
        status.textContent = event.detail.clean ? "Disconnected." : "The display connection was lost.";
        reconnect.hidden = false;
        rfb = null;
      });
      window.corralDisplay = { rfb, name };
    } catch (err) {
      status.textContent = err.message;
      reconnect.hidden = false;
    }
  }
  cad.addEventListener("click", () => { if (rfb) rfb.sendCtrlAltDel(); });
  reconnect.addEventListener("click", connect);
  connect();
  return () => {
    closed = true;
    if (rfb) rfb.disconnect();
    delete window.corralDisplay;
  };
}
