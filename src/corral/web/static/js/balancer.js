// The balancer on the Hosts page: its mode (off / recommend / automatic, switched at run time), what it
// recommends now with an Apply button, and its decision timeline (what, why, what was expected, what happened,
// how long). Everything comes from /api/balancer*; nothing is decided here.
import { api } from "./api.js";
import { clock, duration, h } from "./format.js";

const MODES = [
  ["off", "Off", "the balancer does nothing"],
  ["recommend", "Recommend", "moves are shown here and applied by a click"],
  ["automatic", "Automatic", "the balancer carries out its moves every interval"],
];
const PLAN_MS = 30000; // the recommendations are asked for again this often (planning reads every host)
const TIMELINE_ROWS = 40;

function what(entry) {
  if (entry.kind === "move") return `${entry.guest}: ${entry.source} → ${entry.dest}`;
  if (entry.kind === "wake") return `wake ${entry.dest}`;
  if (entry.kind === "standby") return `standby ${entry.source}`;
  if (entry.kind === "refused") return entry.guest || "refused";
  return `round ${entry.round}`;
}

function outcomeClass(outcome) {
  if (outcome.startsWith("done")) return "ok";
  if (outcome.startsWith("failed") || outcome.startsWith("not ")) return "bad";
  return "muted";
}

// onApplied(): told after a round was carried out from here (the hosts changed).
export function balancerPanel(ctx, { onApplied }) {
  const modeBar = h("div", { class: "range", role: "radiogroup", "aria-label": "balancer mode", id: "balancer-mode" });
  const summary = h("p", { class: "status-line", id: "balancer-summary" });
  const recommendations = h("div", { class: "recommendations", id: "recommendations" });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const panel = h("section", { class: "panel balancer", id: "balancer" },
    h("div", { class: "toolbar" }, h("h2", {}, "Balancer"), modeBar),
    summary, recommendations,
    h("details", { class: "timeline-box", open: true }, h("summary", {}, "Decision timeline"), timeline));
  let status = null;
  let plan = null;
  let applying = false;
  let planTimer = null;
  let closed = false;

  function drawMode() {
    modeBar.replaceChildren(...MODES.map(([id, label, title]) => h("button", {
      type: "button", role: "radio", "aria-checked": String(status?.mode === id), title,
      class: `small${status?.mode === id ? " active" : ""}`, dataset: { mode: id }, disabled: !status,
      onclick: () => setMode(id),
    }, label)));
    if (status) {
      summary.textContent = `Every ${duration(status.interval_s)}, policy ${status.policy}, at most ${status.max_migrations} `
        + `migration(s) a round, cool-down ${duration(status.cooldown_s)}`
        + (status.last_round ? `. Last round: ${status.last_round}` : ". No round yet.");
    }
  }

  async function setMode(mode) {
    try {
      status = await api.put("/api/balancer/mode", { mode });
      ctx.flash(`balancer: ${mode}`);
    } catch (err) {
      ctx.flash(err.message, "error");
    }
    drawMode();
    loadPlan();
  }

  function drawPlan() {
    if (!plan) { recommendations.replaceChildren(h("p", { class: "status-line" }, "Asking the policy…")); return; }
    const rows = [
      ...plan.wakes.map((w) => ({ kind: "wake", text: `wake ${w.host}`, why: w.reason, expected: "" })),
      ...plan.moves.map((m) => ({ kind: "move", text: `${m.guest}: ${m.source} → ${m.dest}`, why: m.reason,
                                  expected: m.expected })),
      ...plan.standbys.map((s) => ({ kind: "standby", text: `standby ${s.host}`, why: s.reason, expected: "" })),
    ];
    const items = [h("h3", {}, rows.length ? "Recommended now" : "Nothing to do now")];
    if (!rows.length) items.push(h("p", { class: "status-line" }, plan.summary));
    else {
      items.push(h("ul", { class: "recommended" }, rows.map((r) => h("li", { dataset: { kind: r.kind } },
        h("strong", {}, r.text), h("span", { class: "why" }, ` — ${r.why}`),
        r.expected ? h("span", { class: "muted" }, ` (expected: ${r.expected})`) : null))));
      items.push(h("button", {
        type: "button", id: "balancer-apply", disabled: applying, dataset: { action: "apply" },
        onclick: apply,
      }, applying ? "Applying…" : `Apply ${rows.length} step(s)`));
    }
    if (plan.refused.length) {
      items.push(h("details", { class: "refused" }, h("summary", {}, `${plan.refused.length} refused by the rules`),
        h("ul", {}, plan.refused.map((r) => h("li", {}, h("strong", {}, r.what), ` — ${r.why}`)))));
    }
    recommendations.replaceChildren(...items);
  }

  async function apply() {
    if (!(await ctx.confirmAction("Carry out the balancer's round now (it is planned again on the hosts as they are)?",
                                  "Apply"))) return;
    applying = true;
    drawPlan();
    try {
      const done = await api.post("/api/balancer/apply");
      const failed = done.outcomes.filter((o) => !o.outcome.startsWith("done"));
      ctx.flash(done.outcomes.length ? `${done.outcomes.length - failed.length} of ${done.outcomes.length} step(s) done`
        + (failed.length ? `; ${failed.map((o) => `${o.what}: ${o.outcome}`).join("; ")}` : "") : done.summary,
                failed.length ? "error" : "info");
    } catch (err) {
      ctx.flash(err.message, "error");
    } finally {
      applying = false;
      onApplied();
      loadPlan();
      loadTimeline();
    }
  }

  function drawTimeline(entries) {
    timeline.replaceChildren(...entries.map((e) => h("li", { class: `entry ${e.kind}`, dataset: { kind: e.kind } },
      h("span", { class: "when num" }, clock(e.time)),
      h("span", { class: "what" }, what(e)),
      h("span", { class: `result ${outcomeClass(e.outcome)}` }, e.outcome
        + (e.duration_s !== null && e.duration_s !== undefined && e.kind !== "round" ? ` (${duration(e.duration_s)})` : "")),
      h("span", { class: "why muted" }, e.kind === "round" ? e.reason : `${e.reason}${e.expected ? `; expected: ${e.expected}` : ""}`))));
    if (!entries.length) timeline.replaceChildren(h("li", { class: "muted" }, "No decisions yet."));
  }

  async function loadStatus() {
    try { status = await api.get("/api/balancer"); } catch (err) { summary.textContent = err.message; }
    drawMode();
  }

  async function loadPlan() {
    clearTimeout(planTimer);
    try { plan = await api.get("/api/balancer/plan"); } catch (err) {
      plan = null;
      recommendations.replaceChildren(h("p", { class: "error-text" }, err.message));
    }
    if (plan) drawPlan();
    if (!closed) planTimer = setTimeout(loadPlan, PLAN_MS);
  }

  async function loadTimeline() {
    try { drawTimeline(await api.get("/api/balancer/log", { limit: TIMELINE_ROWS })); } catch { /* shown by status */ }
  }

  drawMode();
  drawPlan();
  loadStatus();
  loadPlan();
  loadTimeline();
  return {
    panel,
    refresh: () => { loadStatus(); loadTimeline(); },
    close: () => { closed = true; clearTimeout(planTimer); },
  };
}
