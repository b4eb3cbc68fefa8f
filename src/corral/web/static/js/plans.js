// Consolidation plans: the plan library (GET /api/plans), each plan's summary and its report, whose
// charts (hosts' stacked demand under the cap, before/after utilization, the cost comparison) are the
// same HTML that `corral report --html` writes, shown in a frame.
import { api } from "./api.js";
import { h } from "./format.js";

export function renderPlans(view, ctx, selected) {
  const list = h("ul", { class: "plan-list", id: "plan-list" });
  const detail = h("div", { class: "plan-detail", id: "plan-detail" });
  view.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Consolidation plans")),
    h("p", { class: "status-line" },
      "Plans kept by ", h("code", {}, "corral plan … --save NAME"), " and by ", h("code", {}, "corral demo"), "."),
    h("div", { class: "plans" }, h("div", { class: "panel" }, list), detail));

  let stopped = false;
  api.get("/api/plans").then((plans) => {
    if (stopped) return;
    if (!plans.length) {
      list.append(h("li", { class: "muted" }, "No plans yet."));
      return;
    }
    const name = selected || plans[plans.length - 1].name;
    for (const plan of plans) {
      list.append(h("li", { class: plan.name === name ? "active" : "" },
        h("a", { href: `#/plans/${encodeURIComponent(plan.name)}`, dataset: { plan: plan.name } }, plan.name),
        h("span", { class: "muted" }, ` ${new Date(plan.modified * 1000).toLocaleString()}`)));
    }
    return api.get(`/api/plans/${encodeURIComponent(name)}`).then((plan) => {
      if (stopped) return;
      detail.replaceChildren(
        h("div", { class: "panel plan-summary", id: "plan-summary" }, ...plan.summary.map((line) => h("p", {}, line))),
        h("iframe", { class: "report", id: "plan-report", title: `report of plan ${name}`,
                      src: `/api/plans/${encodeURIComponent(name)}/report` }));
    });
  }).catch((err) => ctx.flash(err.message, "error"));
  return () => { stopped = true; };
}
