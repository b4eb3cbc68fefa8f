// Corral's web console: a hash router over views that only call the REST API.
import { api, liveSocket, setUnauthorizedHandler } from "./api.js";
import { renderLogin } from "./login.js";
import { renderDomains } from "./domains.js";
import { renderCreate } from "./create.js";
import { renderDetails } from "./details.js";
import { renderPlans } from "./plans.js";
import { renderHosts } from "./hosts.js";
import { strip } from "./format.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
strip(nav); // on phones the top bar's links are one row that scrolls sideways
let cleanup = null;
let user = null;

// Live samples of every domain from /api/ws/stats, kept for the sparklines and the live graphs. A guest's name
// is unique across hosts; each host has a Domain-0 of its own, kept under liveKey("Domain-0", host).
const LIVE_KEEP = 120;
export const liveKey = (domain, host) => (domain === "Domain-0" ? `Domain-0@${host}` : domain);
export const live = {
  samples: new Map(), // liveKey -> [sample, ...] oldest first
  listeners: new Set(),
  socket: null,
  start() {
    if (this.socket) return;
    this.socket = liveSocket("/api/ws/stats", (rows) => {
      for (const row of rows) {
        const key = liveKey(row.domain, row.host);
        const list = this.samples.get(key) || [];
        if (!list.length || list[list.length - 1].time !== row.time) list.push(row);
        if (list.length > LIVE_KEEP) list.splice(0, list.length - LIVE_KEEP);
        this.samples.set(key, list);
      }
      for (const listener of this.listeners) listener(rows);
    });
  },
  stop() {
    if (this.socket) this.socket.close();
    this.socket = null;
    this.samples.clear();
  },
  // History rows (GET /api/stats/{domain}) in front of the live samples, so a sparkline has a past at once.
  seed(key, rows) {
    const list = this.samples.get(key) || [];
    const first = list.length ? list[0].time : Infinity;
    const older = rows.filter((r) => r.time < first);
    this.samples.set(key, [...older, ...list].slice(-LIVE_KEEP));
  },
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  },
};

export function flash(message, kind = "info") {
  const box = document.getElementById("flash");
  const toast = document.createElement("div");
  toast.className = `toast ${kind}`;
  toast.textContent = message;
  box.append(toast);
  setTimeout(() => toast.remove(), kind === "error" ? 8000 : 4000);
}

export function confirmAction(text, okLabel = "OK") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// The host's name in the top bar (GET /api/host needs a session: asked once logged in).
let hostAsked = null;
function showHostName() {
  if (hostAsked) return;
  hostAsked = api.get("/api/host").then((host) => {
    const name = host.hostname || host.host;
    document.getElementById("host-name").textContent = name;
    document.title = `${name} · Corral`;
  }).catch(() => { hostAsked = null; });
}

function showLogin(reason) {
  user = null;
  hostAsked = null;
  document.getElementById("host-name").textContent = "";
  document.title = "Corral";
  api.forget();
  live.stop();
  nav.hidden = true;
  if (!location.hash.startsWith("#/login")) {
    const back = location.hash && location.hash !== "#/" ? location.hash : "";
    location.hash = back ? `#/login?next=${encodeURIComponent(back)}` : "#/login";
  }
  if (reason) flash(reason, "error");
}
setUnauthorizedHandler((message) => showLogin(message));

async function whoami() {
  try {
    const session = await fetch("/api/session", { credentials: "same-origin" }).then((r) => (r.ok ? r.json() : {}));
    user = session.user || null;
  } catch {
    user = null;
  }
  return user;
}

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  const hash = location.hash || "#/";
  const [path, queryString] = hash.slice(1).split("?");
  const query = new URLSearchParams(queryString || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  view.replaceChildren();
  if (parts[0] === "login") {
    nav.hidden = true;
    cleanup = renderLogin(view, {
      async onLogin(name) {
        user = name;
        go(query.get("next") || "#/");
      },
    });
    return;
  }
  if (!user && !(await whoami())) {
    showLogin();
    return;
  }
  nav.hidden = false;
  document.getElementById("who").textContent = `(${user})`;
  showHostName();
  for (const a of nav.querySelectorAll("a")) {
    const here = ["create", "plans", "hosts"].includes(parts[0]) ? parts[0] : parts.length ? "" : "domains";
    a.classList.toggle("active", a.dataset.nav === here);
  }
  const active = nav.querySelector("a.active");
  if (active && nav.scrollWidth > nav.clientWidth) active.scrollIntoView({ block: "nearest", inline: "nearest" });
  nav.dispatchEvent(new Event("scroll")); // strip(): where there is more
  live.start();
  const ctx = { live, liveKey, flash, confirmAction, go };
  if (parts.length === 0) cleanup = renderDomains(view, ctx, query.get("tag"));
  else if (parts[0] === "create") cleanup = renderCreate(view, ctx);
  else if (parts[0] === "plans") cleanup = renderPlans(view, ctx, parts[1]);
  else if (parts[0] === "hosts") cleanup = renderHosts(view, ctx);
  else if (parts[0] === "domain" && parts[1]) {
    cleanup = renderDetails(view, ctx, parts[1], parts[2] || "overview", query.get("host"));
  }
  else view.textContent = "Nothing here.";
}

document.getElementById("logout").addEventListener("click", async () => {
  try { await api.logout(); } catch { /* already gone */ }
  showLogin();
});

api.get("/api/health").then((h) => {
  document.getElementById("version").textContent = `v${h.version}`;
}).catch(() => {});
window.addEventListener("hashchange", route);
route();
