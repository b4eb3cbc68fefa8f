// One domain: its facts and actions, live and historical graphs of CPU, memory, disk and network, and its
// consoles. Domain-0 shows its host instead (?host=NAME; the default host without it).
import { api, domainPath, hostPath } from "./api.js";
import { actionButtons } from "./actions.js";
import { chartColors, swatch, timeChart } from "./charts.js";
import { mountDisplay, mountSerial } from "./consoles.js";
import { mountManage } from "./manage.js";
import { mountSnapshots } from "./snapshots.js";
import { bytes, duration, h, mib, pct, strip } from "./format.js";

const RANGES = [["live", "Live", 300], ["1h", "1 h", 3600], ["1d", "1 day", 86400], ["7d", "7 days", 7 * 86400]];
const CHARTS = [
  { id: "cpu", title: "CPU", resource: "cpu", series: [["cpu_pct", "CPU %"]], fmt: (v) => pct(v), max: 100,
    kind: "pct" },
  { id: "mem", title: "Memory", resource: "mem", series: [["mem_used_bytes", "used"], ["mem_total_bytes", "total"]],
    fmt: (v) => bytes(v), kind: "bytes" },
  { id: "disk", title: "Disk", resource: "disk", series: [["disk_read_bps", "read"], ["disk_write_bps", "write"]],
    fmt: (v) => bytes(v, "/s"), kind: "bytes", suffix: "/s" },
  { id: "net", title: "Network", resource: "net", series: [["net_rx_bps", "received"], ["net_tx_bps", "sent"]],
    fmt: (v) => bytes(v, "/s"), kind: "bytes", suffix: "/s" },
];

export function renderDetails(view, ctx, name, tab, hostName = null) {
  const isHost = name === "Domain-0";
  const base = `#/domain/${encodeURIComponent(name)}${isHost && hostName ? `?host=${encodeURIComponent(hostName)}` : ""}`;
  const tabs = [["overview", "Overview"], ...(isHost ? [] : [["console", "Serial console"], ["display", "Display"],
                                                         ["snapshots", "Snapshots & clone"]])];
  const heading = h("h1", {}, isHost && hostName ? `Domain-0 of ${hostName}` : name);
  const tabBar = h("nav", { class: "tabs", id: "tabs" }, tabs.map(([id, label]) =>
    h("a", { href: id === "overview" ? base : `${base}/${id}`, class: id === tab ? "active" : "", dataset: { tab: id } },
      label)));
  const state = h("span", { class: "state", id: "detail-state" });
  const actions = h("div", { class: "actions", id: "detail-actions" });
  const body = h("div", { id: "tab-body" });
  view.append(
    h("div", { class: "toolbar" }, heading, state, actions), tabBar, body);
  const cleanups = [strip(tabBar)];
  let stopped = false;
  let timer = null;
  let busy = null;
  let sampleHost = hostName; // Domain-0 of the default host: named by GET /api/host
  let manage = null; // a guest's settings, disks and NICs (overview)

  async function refreshInfo(facts) {
    clearTimeout(timer);
    try {
      if (isHost) {
        const host = await api.get(hostName ? hostPath(hostName) : "/api/host");
        sampleHost = host.host;
        state.className = "state running";
        state.textContent = "running";
        if (facts) fillHostFacts(facts, host);
      } else {
        const info = await api.get(domainPath(name));
        state.className = `state ${busy ? "busy" : info.state}`;
        state.textContent = busy || info.state;
        state.dataset.state = info.state;
        actions.replaceChildren(...actionButtons(h, ctx, name, info.state, (action) => {
          busy = null;
          if (action === "delete") { ctx.go("#/"); return; }
          refreshInfo(facts);
        }, (what) => { busy = what; state.className = "state busy"; state.textContent = what; }));
        if (facts) fillGuestFacts(facts, info);
        if (manage) manage.update(info);
      }
    } catch (err) {
      if (err.status === 404) { ctx.flash(err.message, "error"); ctx.go("#/"); return; }
      state.textContent = err.message;
    }
    if (!stopped) timer = setTimeout(() => refreshInfo(facts), 5000);
  }

  if (tab === "console" && !isHost) {
    cleanups.push(mountSerial(body, ctx, name));
    refreshInfo(null);
  } else if (tab === "display" && !isHost) {
    cleanups.push(mountDisplay(body, ctx, name));
    refreshInfo(null);
  } else if (tab === "snapshots" && !isHost) {
    cleanups.push(mountSnapshots(body, ctx, name));
    refreshInfo(null);
  } else {
    const facts = h("dl", { class: "facts", id: "facts" });
    body.append(h("div", { class: "panel" }, facts));
    if (!isHost) {
      manage = mountManage(body, ctx, name, () => refreshInfo(facts));
      cleanups.push(manage.cleanup);
    }
    cleanups.push(mountGraphs(body, ctx, name, hostName, () => ctx.liveKey(name, sampleHost)));
    refreshInfo(facts);
  }
  return () => {
    stopped = true;
    clearTimeout(timer);
    for (const fn of cleanups) if (fn) fn();
  };
}

function fillFacts(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([k, v, id]) => [h("dt", {}, k), h("dd", { id }, v ?? "–")]));
}

// A guest's addresses (from libvirt's DHCP leases and the guest agent); its NICs are in their panel (manage.js).
function addressText(info) {
  const all = (info.nics || []).flatMap((nic) => nic.addresses.map((a) => `${a.address}/${a.prefix}`));
  if (all.length) return all.join(", ");
  return info.state === "running" && (info.nics || []).length ? "none known yet" : "–";
}

function fillGuestFacts(dl, info) {
  fillFacts(dl, [
    ["State", info.state], ["Host", info.host], ["Addresses", addressText(info), "addresses"], ["ID", info.id ?? "–"],
    ["UUID", info.uuid], ["vCPUs", info.vcpus],
    ["Memory", mib(info.memory_mib)], ["CPU time", duration(info.cpu_time_s)],
    ["Image", info.image ?? (info.managed_by_corral ? "–" : "not made by Corral")], ["Load", info.load || "none"],
    ...(info.os_name ? [["OS", info.os_name, "os-name"]] : []),
    ...(info.agent ? [["Guest agent", "answers", "agent"]] : []),
    ["Display", info.vnc ? `VNC on ${info.vnc}` : "–"], ["Snapshots", info.snapshots.join(", ") || "none"],
    ["Autostart", info.autostart ? "yes" : "no", "autostart-fact"],
  ]);
}

function fillHostFacts(dl, host) {
  const cap = (r) => host.capacity[r] ? `${host.capacity[r].used} of ${host.capacity[r].limit} ${host.capacity[r].unit}` : "–";
  fillFacts(dl, [
    ["Host", host.hostname], ["CPU", `${host.cpu_model} — ${host.cores} cores`],
    ["Memory", `${mib(host.memory_used_mib)} used of ${mib(host.memory_mib)}`], ["Kernel", host.kernel],
    ["Engine", `${host.engine.toUpperCase()}: ${host.engine_reason}`],
    ["Guests", `${host.guests_running} running of ${host.guests_defined}`],
    ["Network", `${host.network ?? "user-mode"}${host.network_reason ? ` (${host.network_reason})` : ""}`],
    ["Capacity: vCPUs", cap("vcpus")], ["Capacity: memory", cap("memory")], ["Capacity: CPU", cap("cpu")],
  ]);
}

// liveKey(): where the live samples of this domain are kept (for Domain-0, once its host's name is known).
function mountGraphs(container, ctx, name, hostName, liveKey) {
  let range = "live";
  let history = []; // rows of GET /api/stats/{name}
  const rangeBar = h("div", { class: "range", id: "range" });
  const grid = h("div", { class: "charts", id: "charts" });
  container.append(h("div", { class: "toolbar" }, h("h2", {}, "Usage"), rangeBar), grid);

  const draw = () => {
    const [, , span] = RANGES.find((r) => r[0] === range);
    const now = Date.now() / 1000;
    const liveRows = ctx.live.samples.get(liveKey()) || [];
    const rows = range === "live" ? [...history, ...liveRows.filter((r) => !history.length || r.time > history[history.length - 1].time)]
      : history;
    const section = grid.querySelector(".chart");
    const width = (section ? section.clientWidth : grid.clientWidth >= 976 ? grid.clientWidth / 2 - 8 : grid.clientWidth) - 34;
    grid.replaceChildren(...CHARTS.map((chart) => {
      const series = chart.series.map(([metric, label]) => ({ label, points: rows.map((r) => [r.time, r[metric] ?? null]) }));
      const last = [...rows].reverse().find((r) => r[chart.series[0][0]] !== null && r[chart.series[0][0]] !== undefined);
      const nowText = !last ? "no data yet" : chart.series.length === 1 ? chart.fmt(last[chart.series[0][0]])
        : chart.series.map(([m, l]) => `${l} ${chart.fmt(last[m])}`).join(" · ");
      return h("section", { class: "chart panel", dataset: { chart: chart.id } },
        h("h3", {}, chart.title, h("span", { class: "now" }, nowText)),
        timeChart(series, { kind: chart.kind, suffix: chart.suffix ?? "", fixedMax: chart.max ?? null, span, now,
                            width }),
        h("div", { class: "legend" }, chart.series.map(([, label], i) =>
          h("span", { style: `color: ${chartColors[i]}`, dataset: { series: i } }, swatch(i), label))));
    }));
  };

  async function load() {
    const since = range === "live" ? "5m" : range;
    try {
      history = await api.get(`/api/stats/${encodeURIComponent(name)}`, { since, host: hostName || undefined });
    } catch (err) {
      history = [];
      ctx.flash(err.message, "error");
    }
    draw();
  }

  const drawRange = () => {
    rangeBar.replaceChildren(...RANGES.map(([id, label]) => h("button", {
      type: "button", class: `small${id === range ? " active" : ""}`, dataset: { range: id },
      onclick: () => { range = id; drawRange(); load(); },
    }, label)));
  };
  drawRange();
  load();
  const unsubscribe = ctx.live.subscribe(() => { if (range === "live") draw(); });
  const reload = setInterval(() => { if (range !== "live") load(); }, 60000);
  return () => { unsubscribe(); clearInterval(reload); };
}
