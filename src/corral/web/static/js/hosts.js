// The hosts: each with its state, CPU and memory against the cap, its guests' load over the last hour against
// the cap with the balancer's migrations marked; a maintenance switch (which moves the guests away), evacuation,
// standby and wake where the host has a power driver; a guest's migration with live progress (migrations.js);
// the balancer's mode, recommendations and timeline (balancer.js).
import { api, hostPath } from "./api.js";
import { balancerPanel } from "./balancer.js";
import { timeChart } from "./charts.js";
import { migrateDialog, migrationBoard } from "./migrations.js";
import { clock, h, mib, pct } from "./format.js";

const REFRESH_MS = 5000;
const LOAD_SPAN = "1h";

function meter(id, label, text, value, max, cap) {
  const fraction = max > 0 ? Math.max(0, Math.min(1, value / max)) : 0;
  const over = cap !== null && cap !== undefined ? fraction > cap : fraction >= 1;
  return h("div", { class: "meter", dataset: { meter: id } },
    h("div", { class: "meter-label" }, h("span", {}, label), h("span", { class: "meter-text" }, text)),
    h("div", { class: "meter-bar", role: "meter", "aria-label": label, "aria-valuemin": 0, "aria-valuemax": max,
               "aria-valuenow": value },
      h("div", { class: `fill${over ? " over" : ""}`, style: `width: ${(fraction * 100).toFixed(1)}%` }),
      cap !== null && cap !== undefined
        ? h("div", { class: "cap", style: `left: ${(Math.min(1, cap) * 100).toFixed(1)}%`, title: "the cap" }) : null));
}

// CPU now against the cap, vCPUs and memory of the running guests against what the admission guard allows
// (from the host's report when there is one, else from its summary).
function meters(host, report) {
  if (host.cores === null) return h("p", { class: "status-line" }, host.state === "standby" ? "In standby." : "Not answering.");
  const cap = report ? report.limits.cap : host.cpu_cap_cores / host.cores;
  const budget = (r) => (report ? report.capacity[r] : null);
  const cpu = budget("cpu");
  const expected = cpu ? ` · guests expect ${cpu.used.toFixed(1)} of ${cpu.limit.toFixed(1)} cores` : "";
  const vcpus = budget("vcpus");
  const memory = budget("memory");
  return h("div", { class: "meters" },
    meter("cpu", "CPU", `${pct(host.cpu_pct)} of ${host.cores} cores · cap ${Math.round(cap * 100)} %${expected}`,
          host.cpu_pct ?? 0, 100, cap),
    meter("vcpus", "vCPUs", vcpus ? `${host.vcpus_allocated} of ${vcpus.limit} allowed` : `${host.vcpus_allocated} allocated`,
          host.vcpus_allocated, vcpus ? vcpus.limit : host.cores),
    meter("memory", "Memory", memory ? `${mib(host.memory_allocated_mib)} of ${mib(memory.limit)} allowed (${mib(host.memory_mib)})`
      : `${mib(host.memory_allocated_mib)} of ${mib(host.memory_mib)}`,
          host.memory_allocated_mib, host.memory_mib, memory ? memory.limit / host.memory_mib : null));
}

export function renderHosts(view, ctx) {
  const grid = h("div", { class: "hosts", id: "hosts" });
  const status = h("p", { class: "status-line" });
  let hosts = [];
  const reports = new Map(); // host -> GET /api/hosts/{name}
  let guests = new Map(); // host -> listing rows of its guests
  const busy = new Map(); // host -> what is being done
  const outcome = new Map(); // host -> {text, kind}: the last action's result or refusal
  let timer = null;
  let stopped = false;
  let loading = false;
  let again = false; // asked for while a refresh was under way: its answers may be older than what was done
  const loads = new Map(); // host -> GET /api/hosts/{name}/load
  const board = migrationBoard(ctx, { onChange: () => draw(), onEnd: () => refresh() });
  const balancer = balancerPanel(ctx, { onApplied: () => refresh() });

  view.append(h("div", { class: "toolbar" }, h("h1", {}, "Hosts"), status), balancer.panel, board.panel, grid);

  async function act(name, doing, call, describe) {
    busy.set(name, doing);
    outcome.delete(name);
    draw();
    try {
      const text = describe(await call());
      outcome.set(name, { text, kind: "ok" });
      ctx.flash(`${name}: ${text}`);
    } catch (err) {
      outcome.set(name, { text: err.message, kind: "bad" });
      ctx.flash(err.message, "error");
    } finally {
      busy.delete(name);
      refresh();
    }
  }

  const movedText = (evacuation) => {
    const moved = evacuation ? evacuation.moved : [];
    const where = moved.map((m) => `${m.guest} → ${m.dest}`).join(", ");
    return `${moved.length} guest(s) moved away${where ? `: ${where}` : ""}`;
  };

  async function maintenance(host, on, guestCount) {
    if (on && !(await ctx.confirmAction(`Put ${host.name} in maintenance? No new guests go there${guestCount
      ? `, and its ${guestCount} guest(s) move to other hosts now` : ""}.`, "Maintenance on"))) {
      draw();
      return;
    }
    await act(host.name, on ? "evacuating" : "leaving maintenance",
              () => api.post(`${hostPath(host.name)}/maintenance`, { on }),
              (answer) => (answer.maintenance ? `maintenance on; ${movedText(answer.evacuation)}` : "maintenance off"));
  }

  function controls(host, count) {
    const doing = busy.get(host.name);
    const usable = host.state === "up" || host.state === "maintenance";
    const toggle = h("input", { type: "checkbox", role: "switch", name: "maintenance", dataset: { action: "maintenance" },
                                disabled: Boolean(doing) || !usable, "aria-label": `maintenance of ${host.name}` });
    toggle.checked = host.state === "maintenance";
    toggle.addEventListener("change", () => maintenance(host, toggle.checked, count));
    const button = (action, label, handler, cls = "small") => h("button", {
      type: "button", class: cls, dataset: { action }, disabled: Boolean(doing), onclick: handler }, label);
    const items = [h("label", { class: "switch" }, toggle, h("span", {}, "Maintenance"))];
    if (count && usable) {
      items.push(button("evacuate", "Evacuate", async () => {
        if (!(await ctx.confirmAction(`Move the ${count} guest(s) of ${host.name} to other hosts?`, "Evacuate"))) return;
        await act(host.name, "evacuating", () => api.post(`${hostPath(host.name)}/evacuate`), movedText);
      }));
    }
    if (host.power !== "none" && usable) {
      items.push(button("standby", "Standby", async () => {
        if (!(await ctx.confirmAction(`Power ${host.name} down (${host.power})?`, "Standby"))) return;
        await act(host.name, "going to standby", () => api.post(`${hostPath(host.name)}/standby`), () => "standby");
      }, "small destructive"));
    }
    if (host.power !== "none" && !usable) {
      items.push(button("wake", "Wake", () => act(host.name, "waking", () => api.post(`${hostPath(host.name)}/wake`),
                                                    (answer) => `up (libvirt answered after ${answer.after_s.toFixed(1)} s)`)));
    }
    return h("div", { class: "actions host-actions" }, items);
  }

  function guestList(host, rows) {
    if (!rows.length) return h("p", { class: "status-line" }, host.cores === null ? "" : "No guests.");
    const canMove = hosts.some((x) => x.name !== host.name && x.state === "up");
    return h("ul", { class: "guests" }, rows.map((row) => {
      const moving = board.running(row.name);
      const state = moving ? h("span", { class: "state busy" }, `migrating → ${moving.dest}`)
        : h("span", { class: `state ${row.state}` }, row.state);
      return h("li", { class: "guest", dataset: { name: row.name, state: row.state } },
        h("a", { class: "name", href: `#/domain/${encodeURIComponent(row.name)}` }, row.name), state,
        h("span", { class: "num muted" }, `${row.vcpus} vCPU · ${mib(row.memory_mib)}`),
        h("button", { type: "button", class: "small secondary", dataset: { action: "migrate" },
                      disabled: Boolean(moving) || !canMove || busy.has(host.name),
                      onclick: async () => {
                        const started = await migrateDialog(row, hosts);
                        if (started) {
                          ctx.flash(`${row.name}: migration to ${started.dest} started`);
                          board.track(started);
                        }
                      } }, "Migrate"));
    }));
  }

  // What the host's guests took of it over the last hour, against its cap, the balancer's migrations marked.
  function loadChart(host) {
    const load = loads.get(host.name);
    if (!load || host.cores === null) return null;
    const marks = load.moves.map((m) => ({
      time: m.time, label: `${clock(m.time)} ${m.guest}: ${m.source} → ${m.dest} (${m.outcome})` }));
    const last = load.points.length ? load.points[load.points.length - 1][1] : null;
    return h("section", { class: "chart host-load", dataset: { chart: "host-load" } },
      h("h3", {}, "Guests' CPU, last hour", h("span", { class: "now" },
        last === null ? "no samples yet" : `${pct(last)} now · cap ${Math.round(load.cap_pct)} %`
        + (marks.length ? ` · ${marks.length} migration(s)` : ""))),
      timeChart([{ label: "guests' CPU", points: load.points }],
                { kind: "pct", fixedMax: 100, span: 3600, cap: load.cap_pct, marks,
                  width: 420 }));
  }

  function card(host) {
    const rows = guests.get(host.name) || [];
    const doing = busy.get(host.name);
    const done = outcome.get(host.name);
    return h("article", { class: "panel host-card", dataset: { host: host.name, state: host.state } },
      h("header", { class: "host-head" },
        h("h2", {}, h("a", { href: `#/domain/Domain-0?host=${encodeURIComponent(host.name)}` }, host.name)),
        h("span", { class: `state ${doing ? "busy" : host.state}`, dataset: { role: "host-state" } },
          doing ? `${doing}…` : host.state)),
      h("p", { class: "status-line uri" }, `${host.uri} · storage ${host.storage}`,
        host.power !== "none" ? ` · power ${host.power}` : "",
        ` · ${host.guests_running} running of ${host.guests_defined}`),
      host.error ? h("p", { class: "error-text" }, host.error) : null,
      meters(host, reports.get(host.name)),
      controls(host, rows.length),
      done ? h("p", { class: `outcome ${done.kind}` }, done.text) : null,
      guestList(host, rows),
      loadChart(host));
  }

  function draw() {
    grid.replaceChildren(...hosts.map(card));
  }

  async function refresh() {
    clearTimeout(timer);
    if (loading) { again = true; return; }
    loading = true;
    again = false;
    // The hosts and the guests are asked for side by side, each drawn as it comes.
    const summaries = api.get("/api/hosts").then(async (rows) => {
      hosts = rows;
      const up = hosts.filter((x) => x.state === "up").length;
      status.textContent = `${hosts.length} host${hosts.length === 1 ? "" : "s"}, ${up} up`;
      draw();
      await Promise.all(hosts.map(async (host) => {
        if (host.cores === null) { reports.delete(host.name); return; }
        try { reports.set(host.name, await api.get(hostPath(host.name))); } catch { reports.delete(host.name); }
        try {
          loads.set(host.name, await api.get(`${hostPath(host.name)}/load`, { since: LOAD_SPAN }));
        } catch { loads.delete(host.name); }
      }));
      draw();
    });
    const listing = Promise.all([api.get("/api/domains"), board.load()]).then(([rows]) => {
      guests = new Map();
      for (const row of rows) {
        if (row.name === "Domain-0") continue;
        if (!guests.has(row.host)) guests.set(row.host, []);
        guests.get(row.host).push(row);
      }
      draw();
    });
    balancer.refresh();
    const failed = (await Promise.allSettled([summaries, listing])).find((r) => r.status === "rejected");
    if (failed) status.textContent = failed.reason.message;
    loading = false;
    if (!stopped) timer = setTimeout(refresh, again ? 0 : REFRESH_MS);
  }

  refresh();
  return () => { stopped = true; clearTimeout(timer); board.close(); balancer.close(); };
}
