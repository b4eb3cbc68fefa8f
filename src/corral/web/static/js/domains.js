// The main window: Domain-0 first, then every guest, with live CPU sparklines and actions.
import { api } from "./api.js";
import { actionButtons } from "./actions.js";
import { sparkline } from "./charts.js";
import { h, mib, pct } from "./format.js";

const REFRESH_MS = 4000;

export function renderDomains(view, ctx) {
  const tbody = h("tbody");
  const status = h("p", { class: "status-line" });
  const busy = new Map(); // name -> what is being done
  let rows = [];
  let timer = null;
  let stopped = false;

  view.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Domains"),
      h("a", { class: "button", href: "#/create", id: "new-guest" }, "New guest")),
    h("div", { class: "panel" },
      h("table", { class: "domains", id: "domains" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "State"), h("th", {}, "CPU usage"),
          h("th", {}, "vCPUs"), h("th", {}, "Memory"), h("th", {}, "Actions"))),
        tbody)),
    status);

  const liveCpu = (name, fallback) => {
    const samples = ctx.live.samples.get(name) || [];
    const last = samples.length ? samples[samples.length - 1].cpu_pct : null;
    return { values: samples.map((s) => s.cpu_pct), now: last ?? fallback };
  };

  const cpuCell = (row) => {
    const { values, now } = liveCpu(row.name, row.cpu_pct);
    return h("div", { class: "cpu" }, sparkline(values), h("span", { class: "pct" }, row.state === "running" ? pct(now) : "–"));
  };

  function draw() {
    tbody.replaceChildren(...rows.map((row) => {
      const isHost = row.name === "Domain-0";
      const doing = busy.get(row.name);
      const state = doing ? h("span", { class: "state busy" }, doing)
        : h("span", { class: `state ${row.state}` }, row.state);
      const actions = isHost ? h("span", { class: "status-line" }, "the host")
        : h("div", { class: "actions" }, actionButtons(h, ctx, row.name, row.state, () => {
          busy.delete(row.name);
          refresh();
        }, (what) => { busy.set(row.name, what); draw(); }));
      if (doing && !isHost) for (const b of actions.querySelectorAll("button")) b.disabled = true;
      return h("tr", { class: isHost ? "host" : "", dataset: { name: row.name, state: row.state } },
        h("td", { class: "name" }, h("a", { href: `#/domain/${encodeURIComponent(row.name)}` }, row.name)),
        h("td", { "data-label": "" }, state),
        h("td", { "data-label": "CPU", class: "cpu-cell" }, cpuCell(row)),
        h("td", { "data-label": "vCPUs", class: "num" }, row.vcpus),
        h("td", { "data-label": "Memory", class: "num" }, mib(row.memory_mib)),
        h("td", { class: "actions-cell" }, actions));
    }));
  }

  const seeded = new Set();
  async function seed(names) {
    await Promise.all(names.map(async (name) => {
      seeded.add(name);
      try {
        ctx.live.seed(name, await api.get(`/api/stats/${encodeURIComponent(name)}`,
                                          { since: "2m", resource: "cpu", resolution: "raw" }));
      } catch { /* the live samples will do */ }
    }));
    draw();
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      rows = await api.get("/api/domains");
      const unseeded = rows.filter((r) => r.state === "running" && !seeded.has(r.name)).map((r) => r.name);
      if (unseeded.length) seed(unseeded);
      const guests = rows.length - 1;
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
      const row = rows.find((r) => r.name === tr.dataset.name);
      const cell = tr.querySelector(".cpu-cell");
      if (row && cell) cell.replaceChildren(cpuCell(row));
    }
  });
  refresh();
  return () => { stopped = true; clearTimeout(timer); unsubscribe(); };
}
