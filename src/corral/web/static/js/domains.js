// The main window: per host, its Domain-0 first, then its guests, with live CPU sparklines and actions. A guest's
// name is unique across hosts; Domain-0 rows are told apart by their host. Guests carry their tags as chips (a
// click filters the list by that tag: GET /api/domains?tag=...) and a checkbox: the selected guests are started,
// shut down or powered off together (POST /api/bulk/{action}), each guest with its own result.
import { api } from "./api.js";
import { actionButtons } from "./actions.js";
import { sparkline } from "./charts.js";
import { chip, h, mib, pct } from "./format.js";

const REFRESH_MS = 4000;
const BULK = {
  start: { label: "Start", doing: "Starting", done: "Start" },
  shutdown: { label: "Shut down", doing: "Shutting down", done: "Shut down", destructive: true,
              confirm: (names) => `Shut down ${names.join(", ")}? Each gets the ACPI power button.` },
  poweroff: { label: "Power off", doing: "Powering off", done: "Power off", destructive: true,
              confirm: (names) => `Power off ${names.join(", ")}? Like pulling the plug: unsaved data in them is lost.` },
};

export function renderDomains(view, ctx, initialTag = null) {
  const tbody = h("tbody");
  const status = h("p", { class: "status-line" });
  const busy = new Map(); // name -> what is being done
  const hostHead = h("th", { hidden: true }, "Host");
  const key = (row) => ctx.liveKey(row.name, row.host);
  const selected = new Set(); // guest names (kept while a filter hides them; an action takes those shown)
  let rows = [];
  let timer = null;
  let stopped = false;
  let tag = initialTag || "";
  let bulkBusy = false;

  // The tag filter: typed, or a chip clicked; kept in the address (#/?tag=web) without a new page.
  const filter = h("input", { type: "search", id: "tag-filter", placeholder: "Filter by tag", value: tag,
                              autocomplete: "off", spellcheck: "false", "aria-label": "filter by tag" });
  const clearFilter = h("button", { type: "button", class: "small secondary", id: "clear-filter", hidden: !tag,
                                    onclick: () => setFilter("") }, "Show all");
  let filterDebounce = null;
  filter.addEventListener("input", () => {
    clearTimeout(filterDebounce);
    filterDebounce = setTimeout(() => setFilter(filter.value.trim()), 300);
  });
  function setFilter(value) {
    clearTimeout(filterDebounce);
    tag = value;
    filter.value = value;
    clearFilter.hidden = !value;
    history.replaceState(null, "", value ? `#/?tag=${encodeURIComponent(value)}` : "#/");
    refresh();
  }

  // Several guests at once.
  const selectAll = h("input", { type: "checkbox", id: "select-all", "aria-label": "select every guest shown" });
  const selectedText = h("span", { class: "status-line", id: "selected-count" });
  const bulkButtons = Object.entries(BULK).map(([action, spec]) => h("button", {
    type: "button", class: `small${spec.destructive ? " destructive" : ""}`, dataset: { bulk: action },
    onclick: () => bulk(action),
  }, spec.label));
  const bulkResult = h("div", { class: "panel bulk-result", id: "bulk-result", role: "status", hidden: true });
  const guests = () => rows.filter((r) => r.name !== "Domain-0");
  selectAll.addEventListener("change", () => {
    for (const row of guests()) {
      if (selectAll.checked) selected.add(row.name);
      else selected.delete(row.name);
    }
    draw();
  });

  view.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Domains"),
      h("div", { class: "filter" }, filter, clearFilter),
      h("a", { class: "button", href: "#/create", id: "new-guest" }, "New guest")),
    h("div", { class: "bulk-bar actions", id: "bulk" },
      h("label", { class: "check" }, selectAll, "All"), selectedText, ...bulkButtons),
    bulkResult,
    h("div", { class: "panel" },
      h("table", { class: "domains", id: "domains" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), hostHead, h("th", {}, "State"), h("th", {}, "CPU usage"),
          h("th", {}, "vCPUs"), h("th", {}, "Memory"), h("th", {}, "Tags"), h("th", {}, "Autostart"),
          h("th", {}, "Actions"))),
        tbody)),
    status);

  function drawSelection() {
    const shown = guests();
    const count = shown.filter((r) => selected.has(r.name)).length;
    selectAll.checked = count > 0 && count === shown.length;
    selectAll.indeterminate = count > 0 && count < shown.length;
    selectAll.disabled = !shown.length;
    selectedText.textContent = count ? `${count} selected` : "Select guests for";
    for (const b of bulkButtons) b.disabled = bulkBusy || !count;
  }

  async function bulk(action) {
    const spec = BULK[action];
    const names = guests().filter((r) => selected.has(r.name)).map((r) => r.name);
    if (!names.length) return;
    if (spec.confirm && !(await ctx.confirmAction(spec.confirm(names), spec.label))) return;
    bulkBusy = true;
    for (const n of names) busy.set(n, spec.doing.toLowerCase());
    bulkResult.hidden = false;
    bulkResult.className = "panel bulk-result";
    bulkResult.replaceChildren(h("p", { class: "status-line" }, `${spec.doing} ${names.length} guest${names.length === 1 ? "" : "s"}…`));
    draw();
    try {
      const result = await api.post(`/api/bulk/${action}`, action === "shutdown" ? { names, timeout: 90 } : { names });
      showBulk(spec, result);
      selected.clear();
    } catch (err) {
      bulkResult.className = "panel bulk-result";
      bulkResult.replaceChildren(h("p", { class: "outcome bad" }, err.message));
    } finally {
      bulkBusy = false;
      for (const n of names) busy.delete(n);
      refresh();
    }
  }

  function showBulk(spec, result) {
    const summary = `${spec.done}: ${result.succeeded} succeeded, ${result.failed} failed`;
    bulkResult.replaceChildren(
      h("div", { class: "toolbar" },
        h("p", { class: `outcome summary ${result.failed ? "bad" : "ok"}`, id: "bulk-summary" }, summary),
        h("button", { type: "button", class: "small secondary", onclick: () => { bulkResult.hidden = true; } }, "Close")),
      h("ul", { class: "bulk-results" }, result.results.map((r) => h("li", {
        class: r.ok ? "ok" : "bad", dataset: { name: r.name, ok: String(r.ok) } },
      h("span", { class: "name" }, r.name), " ",
      h("span", { class: "result" }, r.ok ? `done, ${r.state ?? "?"}` : r.error || "failed")))));
  }

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
      const box = isHost ? null : h("input", {
        type: "checkbox", class: "select", checked: selected.has(row.name), "aria-label": `select ${row.name}`,
        onchange: (event) => {
          if (event.currentTarget.checked) selected.add(row.name);
          else selected.delete(row.name);
          drawSelection();
        },
      });
      const tags = (row.tags || []).map((t) => chip(t, { title: `only the guests tagged ${t}`,
                                                         onclick: () => setFilter(t) }));
      return h("tr", { class: isHost ? "host" : "", dataset: { name: row.name, host: row.host, state: row.state } },
        h("td", { class: "name" }, box, h("a", { href: link }, row.name)),
        several ? h("td", { "data-label": "Host", class: "host-name" }, row.host) : null,
        h("td", { "data-label": "" }, state),
        h("td", { "data-label": "CPU", class: "cpu-cell" }, cpuCell(row)),
        h("td", { "data-label": "vCPUs", class: "num" }, row.vcpus),
        h("td", { "data-label": "Memory", class: "num" }, mib(row.memory_mib)),
        h("td", { "data-label": isHost || !tags.length ? null : "Tags", class: "tags-cell" }, h("div", { class: "chips" }, tags)),
        h("td", { "data-label": isHost ? null : "Autostart", class: "autostart-cell" },
          isHost ? "" : row.autostart ? h("span", { class: "badge on" }, "on") : h("span", { class: "muted" }, "off")),
        h("td", { class: "actions-cell" }, actions));
    }));
    drawSelection();
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
      const asked = tag;
      const answer = await api.get("/api/domains", { tag: asked || undefined });
      if (asked !== tag) return; // the filter changed meanwhile: its own refresh draws
      rows = answer;
      const unseeded = rows.filter((r) => r.state === "running" && !seeded.has(key(r)));
      if (unseeded.length) seed(unseeded);
      const count = guests().length;
      const running = guests().filter((r) => r.state === "running").length;
      status.textContent = `${count} guest${count === 1 ? "" : "s"}${tag ? ` tagged ${tag}` : ""}, ${running} running`;
      draw();
    } catch (err) {
      if (tag) { rows = []; draw(); }
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
  return () => { stopped = true; clearTimeout(timer); clearTimeout(filterDebounce); unsubscribe(); };
}
