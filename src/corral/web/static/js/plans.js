// Consolidation plans: the plan library (GET /api/plans), each plan's summary and its report, whose
// charts (hosts' stacked demand under the cap, before/after utilization, the cost comparison) are the
// same HTML that `corral report --html` writes, shown in a frame as tall as the report (no scrollbar of its own):
// the page puts the report's HTML in a sandboxed frame (no scripts run there) and sizes it to its content.
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
  let observer = null;
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
    const reportUrl = `/api/plans/${encodeURIComponent(name)}/report`;
    return Promise.all([api.get(`/api/plans/${encodeURIComponent(name)}`), api.get(reportUrl)]).then(([plan, html]) => {
      if (stopped) return;
      const frame = h("iframe", { class: "report", id: "plan-report", title: `report of plan ${name}`,
                                  sandbox: "allow-same-origin" });
      const fit = () => {
        const doc = frame.contentDocument;
        if (!doc || !doc.documentElement) return;
        const border = frame.offsetHeight - frame.clientHeight;
        frame.style.height = `${Math.ceil(doc.documentElement.getBoundingClientRect().height) + border}px`;
      };
      frame.addEventListener("load", () => {
        fit();
        if (observer) observer.disconnect();
        observer = new ResizeObserver(fit); // the report reflows with the page's width
        observer.observe(frame.contentDocument.documentElement);
      });
      frame.srcdoc = typeof html === "string" ? html : "";
      detail.replaceChildren(
        h("div", { class: "panel plan-summary", id: "plan-summary" }, ...plan.summary.map((line) => h("p", {}, line)),
          h("p", {}, h("a", { href: reportUrl, target: "_blank", rel: "noopener" }, "Open the report on its own"),
            " · ", h("a", { href: `/api/plans/${encodeURIComponent(name)}/servers.csv`, download: `${name}-servers.csv`,
                           id: "plan-csv" }, "Server → host table (CSV)"))),
        frame);
    });
  }).catch((err) => ctx.flash(err.message, "error"));
  return () => {
    stopped = true;
    if (observer) observer.disconnect();
  };
}
