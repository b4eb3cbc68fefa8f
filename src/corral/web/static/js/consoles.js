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

// Key combinations a browser would keep for itself, sent to the guest as they are: [label, keys, id]; a key is
// [keysym name in noVNC's KeyTable, KeyboardEvent.code]. Ctrl+Alt+Del goes through noVNC's own sendCtrlAltDel().
const CTRL = ["XK_Control_L", "ControlLeft"];
const ALT = ["XK_Alt_L", "AltLeft"];
const SPECIAL_KEYS = [
  ["Ctrl+Alt+Del", null, "ctrl-alt-del"],
  ["Ctrl+Alt+Backspace", [CTRL, ALT, ["XK_BackSpace", "Backspace"]], "ctrl-alt-backspace"],
  ...[1, 2, 3, 7].map((n) => [`Ctrl+Alt+F${n}`, [CTRL, ALT, [`XK_F${n}`, `F${n}`]], `ctrl-alt-f${n}`]),
  ["Alt+Tab", [ALT, ["XK_Tab", "Tab"]], "alt-tab"],
  ["Alt+F4", [ALT, ["XK_F4", "F4"]], "alt-f4"],
  ["Tab", [["XK_Tab", "Tab"]], "tab"],
  ["Esc", [["XK_Escape", "Escape"]], "esc"],
  ["Print Screen", [["XK_Print", "PrintScreen"]], "print"],
  ["Super (Windows key)", [["XK_Super_L", "MetaLeft"]], "super"],
];

// Press the keys in order, then release them in reverse order.
export function sendCombo(rfb, keyTable, keys) {
  for (const [sym, code] of keys) rfb.sendKey(keyTable[sym], code, true);
  for (const [sym, code] of [...keys].reverse()) rfb.sendKey(keyTable[sym], code, false);
}

export function mountDisplay(container, ctx, name) {
  const status = h("p", { class: "status-line", id: "vnc-status" }, "Connecting…");
  const reconnect = h("button", { type: "button", class: "small secondary", hidden: true }, "Reconnect");
  const screen = h("div", { class: "vnc", id: "vnc" });
  let rfb = null;
  let keyTable = null;
  let closed = false;

  // The special-keys menu.
  const keysMenu = h("details", { class: "menu", id: "vnc-keys" }, h("summary", { class: "button small secondary" },
    "Keys"), h("div", { class: "menu-items", role: "menu" }, SPECIAL_KEYS.map(([label, keys, id]) =>
    h("button", { type: "button", role: "menuitem", dataset: { keys: id }, onclick: () => {
      keysMenu.open = false;
      if (!rfb) return;
      if (keys === null) rfb.sendCtrlAltDel();
      else sendCombo(rfb, keyTable, keys);
      rfb.focus();
      ctx.flash(`sent ${label} to ${name}`);
    } }, label))));
  // The clipboard: text sent to the guest (as if pasted there), and what the guest puts on its clipboard.
  const clipText = h("textarea", { id: "vnc-clipboard-text", rows: 3, spellcheck: "false",
                                   placeholder: "Text to paste into the guest; the guest's clipboard shows here." });
  const clipSend = h("button", { type: "button", class: "small", id: "vnc-clipboard-send" }, "Send to the guest");
  const clipPanel = h("div", { class: "vnc-clipboard panel", id: "vnc-clipboard", hidden: true },
    h("label", { for: "vnc-clipboard-text" }, "Clipboard"), clipText, h("div", { class: "toolbar" }, clipSend));
  const clipToggle = h("button", { type: "button", class: "small secondary", id: "vnc-clipboard-toggle",
                                   "aria-expanded": "false" }, "Clipboard");
  clipToggle.addEventListener("click", () => {
    clipPanel.hidden = !clipPanel.hidden;
    clipToggle.setAttribute("aria-expanded", String(!clipPanel.hidden));
    if (!clipPanel.hidden) clipText.focus();
  });
  clipSend.addEventListener("click", () => {
    if (!rfb) return;
    rfb.clipboardPasteFrom(clipText.value);
    ctx.flash(`clipboard sent to ${name}`);
    rfb.focus();
  });
  // Full screen: the display scaled to the screen, with its toolbar (keys, clipboard, leave); Esc leaves it too.
  const wrapper = h("div", { class: "display", id: "display" });
  const full = h("button", { type: "button", class: "small secondary", id: "vnc-fullscreen",
                             hidden: !document.fullscreenEnabled }, "Full screen");
  full.addEventListener("click", async () => {
    try {
      if (document.fullscreenElement) await document.exitFullscreen();
      else await wrapper.requestFullscreen();
    } catch (err) {
      ctx.flash(`full screen: ${err.message}`, "error");
    }
  });
  const onFullscreen = () => {
    const on = document.fullscreenElement === wrapper;
    full.textContent = on ? "Leave full screen" : "Full screen";
    if (rfb) rfb.focus();
  };
  document.addEventListener("fullscreenchange", onFullscreen);

  const enable = (on) => { // keys and the clipboard need a connection
    keysMenu.classList.toggle("disabled", !on);
    keysMenu.open = keysMenu.open && on;
    clipSend.disabled = !on;
  };
  enable(false);
  wrapper.append(h("div", { class: "toolbar vnc-toolbar" }, status, keysMenu, clipToggle, full, reconnect),
    clipPanel, screen);
  container.append(wrapper);

  async function connect() {
    reconnect.hidden = true;
    status.textContent = "Connecting…";
    try {
      const [{ default: RFB }, { default: keys }, t] = await Promise.all([
        import("/ui/vendor/novnc/core/rfb.js"), import("/ui/vendor/novnc/core/input/keysym.js"), ticket(name)]);
      if (closed) return;
      keyTable = keys;
      rfb = new RFB(screen, wsUrl(`/api/ws/vnc/${encodeURIComponent(name)}?ticket=${encodeURIComponent(t)}`));
      rfb.scaleViewport = true;
      rfb.background = "#111";
      rfb.addEventListener("connect", () => { status.textContent = `Display of ${name}`; enable(true); });
      rfb.addEventListener("clipboard", (event) => { clipText.value = event.detail.text; });
      rfb.addEventListener("disconnect", (event) => {
        enable(false);
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
  reconnect.addEventListener("click", connect);
  connect();
  return () => {
    closed = true;
    document.removeEventListener("fullscreenchange", onFullscreen);
    if (document.fullscreenElement === wrapper) document.exitFullscreen().catch(() => {});
    if (rfb) rfb.disconnect();
    delete window.corralDisplay;
  };
}
