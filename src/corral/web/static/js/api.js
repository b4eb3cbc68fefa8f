// The REST API, as the browser uses it: the session cookie goes by itself; every state change carries the
// CSRF token (kept in sessionStorage, which ends with the tab, like the cookie with the browser).
const CSRF_KEY = "corral.csrf";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function csrfToken() {
  return sessionStorage.getItem(CSRF_KEY);
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

export async function request(method, path, { body, query } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken() || "";
  let response;
  try {
    response = await fetch(url, { method, headers, credentials: "same-origin",
                                  body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, `cannot reach the server: ${err.message}`);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) {
    const message = data && typeof data === "object" && data.error ? data.error : `HTTP ${response.status}`;
    if (response.status === 401 && path !== "/api/login") onUnauthorized(message);
    throw new ApiError(response.status, message);
  }
  return data;
}

export const api = {
  get: (path, query) => request("GET", path, { query }),
  post: (path, body, query) => request("POST", path, { body, query }),
  put: (path, body, query) => request("PUT", path, { body, query }),
  patch: (path, body, query) => request("PATCH", path, { body, query }),
  del: (path, query) => request("DELETE", path, { query }),

  async login(user, password) {
    const data = await request("POST", "/api/login", { body: { user, password } });
    sessionStorage.setItem(CSRF_KEY, data.csrf_token);
    return data;
  },
  async logout() {
    try { await request("POST", "/api/logout"); } finally { sessionStorage.removeItem(CSRF_KEY); }
  },
  forget() {
    sessionStorage.removeItem(CSRF_KEY);
  },
};

export const domainPath = (name) => `/api/domains/${encodeURIComponent(name)}`;
export const hostPath = (name) => `/api/hosts/${encodeURIComponent(name)}`;

function socketUrl(path) {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
}

// A WebSocket on this server that ends when the server ends it (no reconnecting): JSON messages to `onMessage`,
// then `onClose(code, reason)`.
export function openSocket(path, { onMessage, onClose }) {
  const ws = new WebSocket(socketUrl(path));
  ws.onmessage = (event) => onMessage(JSON.parse(event.data));
  ws.onclose = (event) => { if (onClose) onClose(event.code, event.reason); };
  return { close() { ws.onclose = null; ws.close(); } };
}

// A WebSocket on this server (same origin: the cookie goes along), reconnecting until closed.
export function liveSocket(path, onMessage, { binary = false } = {}) {
  let ws = null;
  let stopped = false;
  let delay = 1000;
  const open = () => {
    ws = new WebSocket(socketUrl(path));
    if (binary) ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => {
      delay = 1000;
      onMessage(binary ? event.data : JSON.parse(event.data));
    };
    ws.onclose = () => {
      if (!stopped) setTimeout(open, delay = Math.min(delay * 2, 15000));
    };
  };
  open();
  return { close() { stopped = true; if (ws) ws.close(); } };
}
