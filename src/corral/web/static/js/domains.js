// The main window: per host, its Domain-0 first, then its guests, with live CPU sparklines and actions. A guest's
// name is unique across hosts; Domain-0 rows are told apart by their host.
import { api } from "./api.js";
import { actionButtons } from "./actions.js";
import { sparkline } from "./charts.js";
import { h, mib, pct } from "./format.js";

const REFRESH_MS = 4000;

export function renderDomains(view, ctx) {
  const tbody = h("tbody");
  const status = h("p", { class: "status-line" });
  const busy = new Map(); // name -> what is being done
  const hostHead = h("th", { hidden: true }, "Host");
  const key = (row) => ctx.liveKey(row.name, row.host);
  let rows = [];
  let timer = null;
  let stopped = false;

  view.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Domains"),
      h("a", { class: "button", href: "#/create", id: "new-guest" }, "New guest")),
    h("div", { class: "panel" },
      h("table", { class: "domains", id: "domains" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), hostHead, h("th", {}, "State"), h("th", {}, "CPU usage"),
          h("th", {}, "vCPUs"), h("th", {}, "Memory"), h("th", {}, "Actions"))),
        tbody)),
    status);

  const liveCpu = (row, fallback) => {
    const samples = ctx.live.samples.get(key(row)) || [];
    const last = samples.length ? samples[samples.length - 1].cpu_pct : null;
    return { values: samples.map((s) => s.cpu_pct), now: last ?? fallback };
  };

  const cpuCell = (row) => {
    const { values, now } = liveCpu(row, row.cpu_pct);
    return h("div", { class: "cpu" }, sparkline(values), h("span", { class: "pct" }, row.state === "running" ? pct(now) : "–"));
  };

  function draw() {
    const several = new Set(rows.map((r) => r.host)).size > 1;
    hostHead.hidden = !several;
    tbody.replaceChildren(...rows.map((row) => {
      const isHost = row.name === "Domain-0";
      const doing = isHost ? null : busy.get(row.name);
      const state = doing ? h("span", { class: "state busy" }, doing)
        : h("span", { class: `state ${row.state}`, title: row.reason || undefined }, row.state);
      const link = isHost ? `#/domain/Domain-0?host=${encodeURIComponent(row.host)}` : `#/domain/${encodeURIComponent(row.name)}`;
      const actions = isHost ? h("span", { class: "status-line" }, "the host")
        : h("div", { class: "actions" }, actionButtons(h, ctx, row.name, row.state, () => {
          busy.delete(row.name);
          refresh();
        }, (what) => { busy.set(row.name, what); draw(); }));
      if (doing && !isHost) for (const b of actions.querySelectorAll("button")) b.disabled = true;
      return h("tr", { class: isHost ? "host" : "", dataset: { name: row.name, host: row.host, state: row.state } },
        h("td", { class: "name" }, h("a", { href: link }, row.name)),
        several ? h("td", { "data-label": "Host", class: "host-name" }, row.host) : null,
        h("td", { "data-label": "" }, state),
        h("td", { "data-label": "CPU", class: "cpu-cell" }, cpuCell(row)),
        h("td", { "data-label": "vCPUs", class: "num" }, row.vcpus),
        h("td", { "data-label": "Memory", class: "num" }, mib(row.memory_mib)),
        h("td", { class: "actions-cell" }, actions));
    }));
  }

  const seeded = new Set(); // live keys
  async function seed(unseeded) {
    await Promise.all(unseeded.map(async (row) => {
      seeded.add(key(row));
      try {
        ctx.live.seed(key(row), await api.get(`/api/stats/${encodeURIComponent(row.name)}`, {
          since: "2m", resource: "cpu", resolution: "raw", host: row.name === "Domain-0" ? row.host : undefined }));
      } catch { /* the live samples will do */ }
    }));
    draw();
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      rows = await api.get("/api/domains");
      const unseeded = rows.filter((r) => r.state === "running" && !seeded.has(key(r)));
      if (unseeded.length) seed(unseeded);
      const guests = rows.filter((r) => r.name !== "Domain-0").length;
      const running = rows.filter((r) => r.name !== "Domain-0" && r.state === "running").length;
      status.textContent = `${guests} guest${guests === 1 ? "" : "s"}, ${running} running`;
      draw();
    } catch (err) {
      status.textContent = err.message;
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  // Sparklines move with each live interval, between two listings.
  const unsubscribe = ctx.live.subscribe(() => {
    for (const tr of tbody.querySelectorAll("tr")) {
      const row = rows.find((r) => r.name === tr.dataset.name && r.host === tr.dataset.host);
      const cell = tr.querySelector(".cpu-cell");
      if (row && cell) cell.replaceChildren(cpuCell(row));
    }
  });
  refresh();
  return () => { stopped = true; clearTimeout(timer); unsubscribe(); };
}
