// Migrations from the console: the dialog that starts one (a destination host, then confirm), and each
// migration's live progress over its WebSocket (memory and disk left, rate, pass), its abort button, and at
// the end the result line (total time, downtime) or the error.
import { api, domainPath, openSocket } from "./api.js";
import { bytes, h } from "./format.js";

const SHOWN_ENDED = 4; // finished migrations kept in view, newest first

export function progressOf(m) {
  const p = m.progress;
  if (m.state === "succeeded") return { fraction: 1, text: "done" };
  if (!p || !(p.memory_total + p.disk_total)) {
    return { fraction: 0, text: m.state === "running" ? (m.live ? "preparing" : "moving its definition") : "" };
  }
  const total = p.memory_total + p.disk_total;
  const left = p.memory_remaining + p.disk_remaining;
  const parts = [`pass ${p.iteration}`, `memory ${bytes(p.memory_remaining)} left`];
  if (p.disk_total) parts.push(`disk ${bytes(p.disk_remaining)} left`);
  parts.push(bytes(p.memory_bps, "/s"));
  return { fraction: Math.max(0, Math.min(1, 1 - left / total)), text: parts.join(" · ") };
}

export function outcomeText(m) {
  if (m.state === "succeeded" && m.result) {
    const r = m.result;
    const downtime = r.downtime_ms !== null && r.downtime_ms !== undefined ? `, downtime ${r.downtime_ms} ms` : "";
    const moved = r.live ? `, ${bytes(r.memory_bytes)} of memory in ${r.iterations} pass(es)` : "";
    return `${r.guest} moved from ${r.source} to ${r.dest} in ${r.total_s.toFixed(1)} s${downtime}${moved}`;
  }
  if (m.state === "running") return m.abort_requested ? "aborting…" : "";
  return m.error || m.state;
}

// The migrations panel: every migration of this server (GET /api/migrations), the running ones followed
// over their WebSockets. `onChange()` is told when one starts or ends, `onEnd(m)` when one ends.
export function migrationBoard(ctx, { onChange, onEnd }) {
  const list = h("div", { class: "migration-list" });
  const panel = h("section", { class: "panel migrations", id: "migrations", hidden: true },
    h("h2", {}, "Migrations"), list);
  const known = new Map(); // id -> status
  const sockets = new Map(); // id -> socket

  function follow(m) {
    if (sockets.has(m.id) || m.state !== "running") return;
    sockets.set(m.id, openSocket(`/api/ws/migrations/${encodeURIComponent(m.id)}`, {
      onMessage: (status) => update(status),
      onClose: (code, reason) => {
        sockets.delete(m.id);
        if (code !== 1000 && known.get(m.id)?.state === "running") {
          ctx.flash(`progress of ${m.guest} lost${reason ? `: ${reason}` : ""}`, "error");
        }
      },
    }));
  }

  function update(m) {
    const before = known.get(m.id);
    known.set(m.id, m);
    follow(m);
    draw();
    if (!before || before.state !== m.state) onChange();
    if (before && before.state === "running" && m.state !== "running") {
      ctx.flash(outcomeText(m), m.state === "succeeded" ? "info" : "error");
      onEnd(m);
    }
  }

  function row(m) {
    const { fraction, text } = progressOf(m);
    const abort = m.state === "running" ? h("button", {
      type: "button", class: "small destructive", dataset: { action: "abort" }, disabled: m.abort_requested,
      onclick: async (event) => {
        event.currentTarget.disabled = true;
        try { update(await api.del(`/api/migrations/${encodeURIComponent(m.id)}`)); } catch (err) { ctx.flash(err.message, "error"); }
      },
    }, "Abort") : null;
    return h("div", { class: `migration ${m.state}`, dataset: { id: m.id, guest: m.guest, state: m.state } },
      h("div", { class: "migration-head" },
        h("strong", {}, m.guest), h("span", {}, ` ${m.source} → ${m.dest}`),
        h("span", { class: "muted" }, m.live ? " (live)" : " (offline)"), abort),
      h("div", { class: "meter-bar", role: "progressbar", "aria-label": `migration of ${m.guest}`,
                 "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(fraction * 100) },
        h("div", { class: `fill ${m.state}`, style: `width: ${(fraction * 100).toFixed(1)}%` })),
      h("p", { class: "status-line detail" }, text),
      m.state !== "running" || m.abort_requested
        ? h("p", { class: `result ${m.state === "succeeded" ? "ok" : m.state === "running" ? "" : "bad"}` }, outcomeText(m))
        : null);
  }

  function draw() {
    const all = [...known.values()].sort((a, b) => b.started - a.started);
    const shown = [...all.filter((m) => m.state === "running"),
                   ...all.filter((m) => m.state !== "running").slice(0, SHOWN_ENDED)];
    list.replaceChildren(...shown.map(row));
    panel.hidden = shown.length === 0;
  }

  return {
    panel,
    async load() {
      try {
        for (const m of await api.get("/api/migrations")) {
          const before = known.get(m.id);
          if (!before || before.state === "running") update(m);
        }
      } catch { /* the next refresh tries again */ }
    },
    track: update,
    running(guest) {
      return [...known.values()].find((m) => m.guest === guest && m.state === "running") || null;
    },
    close() {
      for (const socket of sockets.values()) socket.close();
      sockets.clear();
    },
  };
}

// The dialog that starts a migration: the destination (hosts that cannot take guests are shown, disabled, with
// why), disks copied where the two hosts do not share storage, an optional bandwidth cap; "Migrate" confirms.
// Resolves with the new migration, or null when cancelled.
export function migrateDialog(guest, hosts) {
  const source = hosts.find((x) => x.name === guest.host);
  const others = hosts.filter((x) => x.name !== guest.host);
  const usable = others.filter((x) => x.state === "up");
  const dest = h("select", { name: "dest", required: true },
    others.map((x) => h("option", { value: x.name, disabled: x.state !== "up" },
                        x.state === "up" ? x.name : `${x.name} (${x.state})`)));
  if (usable.length) dest.value = usable[0].name;
  const copy = h("input", { type: "checkbox", name: "copy_storage" });
  const copyLabel = h("label", { class: "check" }, copy, "Copy its disks (the hosts do not share storage)");
  const bandwidth = h("input", { type: "number", name: "bandwidth", min: 1, step: 1, placeholder: "no limit" });
  const summary = h("p", { class: "status-line", id: "migrate-summary" });
  const error = h("p", { class: "error-text", role: "alert" });
  const submit = h("button", { type: "submit", id: "migrate-submit", value: "ok" }, "Migrate");
  const running = guest.state === "running" || guest.state === "paused";
  const explain = () => {
    const target = hosts.find((x) => x.name === dest.value);
    const shared = source && target && source.storage === "shared" && target.storage === "shared";
    copyLabel.hidden = Boolean(shared);
    copy.checked = !shared;
    submit.disabled = !target || target.state !== "up";
    summary.textContent = !target ? "No other host can take it now."
      : `${guest.name} moves from ${guest.host} to ${target.name}: ${running
        ? "live, it keeps running and pauses only for a moment at the end"
        : "shut off, its definition moves"}.`;
  };
  dest.addEventListener("change", explain);
  const form = h("form", { class: "form", id: "migrate-form" },
    h("label", { class: "wide" }, "Destination host", dest),
    running ? h("label", { class: "wide" }, "Bandwidth (MiB/s, optional)", bandwidth) : null,
    h("div", { class: "wide" }, copyLabel),
    h("div", { class: "wide" }, summary, error),
    h("div", { class: "buttons wide" },
      h("button", { type: "button", class: "secondary", value: "cancel", onclick: () => dialog.close() }, "Cancel"),
      submit));
  const dialog = h("dialog", { id: "migrate-dialog", class: "migrate" }, h("h2", {}, `Migrate ${guest.name}`), form);
  document.body.append(dialog);
  explain();
  return new Promise((resolve) => {
    let started = null;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      submit.disabled = true;
      error.textContent = "";
      const body = { host: dest.value };
      if (copy.checked && !copyLabel.hidden) body.copy_storage = true;
      if (running && bandwidth.value) body.bandwidth = Number(bandwidth.value);
      try {
        started = await api.post(`${domainPath(guest.name)}/migrate`, body);
        dialog.close();
      } catch (err) {
        error.textContent = err.message;
        submit.disabled = false;
      }
    });
    dialog.addEventListener("close", () => { dialog.remove(); resolve(started); }, { once: true });
    dialog.showModal();
  });
}
