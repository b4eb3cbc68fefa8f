// A guest's snapshots (create, revert, delete: the last two ask first) and cloning it, as virt-manager's
// snapshot and clone dialogs do. Everything goes through the REST API.
import { api, domainPath } from "./api.js";
import { h } from "./format.js";

export function mountSnapshots(container, ctx, name) {
  const tbody = h("tbody");
  const snapName = h("input", { name: "snapshot", placeholder: "before-upgrade", required: true,
                                pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}", "aria-label": "snapshot name" });
  const cloneName = h("input", { name: "clone", placeholder: `${name}-copy`, required: true,
                                 pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}", "aria-label": "name of the copy" });
  const guard = async (what, fn) => {
    try { await fn(); ctx.flash(what); } catch (err) { ctx.flash(err.message, "error"); }
    await load();
  };

  async function load() {
    let snaps = [];
    try { snaps = await api.get(`${domainPath(name)}/snapshots`); } catch (err) { ctx.flash(err.message, "error"); }
    tbody.replaceChildren(...(snaps.length ? snaps.map((s) => h("tr", { dataset: { snapshot: s.name } },
      h("td", {}, s.name, s.current ? h("span", { class: "muted" }, " (current)") : ""),
      h("td", {}, new Date(s.created).toLocaleString()), h("td", {}, s.state),
      h("td", {},
        h("button", { type: "button", class: "small destructive", dataset: { action: "revert" }, onclick: async () => {
          if (!(await ctx.confirmAction(`Revert ${name} to ${s.name}? What changed since is lost.`, "Revert"))) return;
          await guard(`${name}: reverted to ${s.name}`,
                      () => api.post(`${domainPath(name)}/snapshots/${encodeURIComponent(s.name)}/revert`));
        } }, "Revert"),
        h("button", { type: "button", class: "small destructive", dataset: { action: "delete-snapshot" }, onclick: async () => {
          if (!(await ctx.confirmAction(`Delete snapshot ${s.name} of ${name}?`, "Delete"))) return;
          await guard(`${name}: snapshot ${s.name} deleted`,
                      () => api.del(`${domainPath(name)}/snapshots/${encodeURIComponent(s.name)}`));
        } }, "Delete"))))
      : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No snapshots."))]));
  }

  container.append(
    h("div", { class: "panel" },
      h("h2", {}, "Snapshots"),
      h("form", { class: "inline-form", id: "snapshot-form", onsubmit: async (event) => {
        event.preventDefault();
        await guard(`${name}: snapshot ${snapName.value} taken`,
                    () => api.post(`${domainPath(name)}/snapshots`, { name: snapName.value }));
        snapName.value = "";
      } }, snapName, h("button", { type: "submit" }, "Take snapshot")),
      h("table", { class: "snapshots", id: "snapshots" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Taken"), h("th", {}, "State"), h("th", {}, ""))),
        tbody)),
    h("div", { class: "panel" },
      h("h2", {}, "Clone"),
      h("p", { class: "status-line" }, "A copy of a shut-off guest: its own disk data is copied, the base image shared."),
      h("form", { class: "inline-form", id: "clone-form", onsubmit: async (event) => {
        event.preventDefault();
        try {
          await api.post(`${domainPath(name)}/clone`, { name: cloneName.value });
          ctx.flash(`${cloneName.value}: cloned from ${name}`);
          ctx.go(`#/domain/${encodeURIComponent(cloneName.value)}`);
        } catch (err) { ctx.flash(err.message, "error"); }
      } }, cloneName, h("button", { type: "submit" }, "Clone"))));
  load();
  return null;
}
