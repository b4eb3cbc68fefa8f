// Guest actions, as virt-manager offers them; the destructive ones ask first.
import { api, domainPath } from "./api.js";

export const ACTIONS = {
  start: { label: "Start", states: ["shut-off", "crashed"], busy: "starting" },
  shutdown: { label: "Shut down", states: ["running"], busy: "shutting down", destructive: true,
              confirm: (n) => `Shut down ${n}? Its operating system gets the ACPI power button.` },
  reboot: { label: "Reboot", states: ["running"], busy: "rebooting", destructive: true,
            confirm: (n) => `Reboot ${n}?` },
  pause: { label: "Pause", states: ["running"], busy: "pausing" },
  resume: { label: "Resume", states: ["paused"], busy: "resuming" },
  poweroff: { label: "Force off", states: ["running", "paused", "blocked", "crashed", "suspended"], busy: "powering off",
              destructive: true, confirm: (n) => `Force ${n} off? Like pulling the plug: unsaved data in it is lost.` },
  delete: { label: "Delete", states: ["shut-off", "crashed", "running", "paused"], busy: "deleting", destructive: true,
            confirm: (n) => `Delete ${n}? Its domain, its disks and its console log are removed for good.` },
};

export async function runAction(ctx, name, action, onBusy) {
  const spec = ACTIONS[action];
  if (spec.confirm && !(await ctx.confirmAction(spec.confirm(name), spec.label))) return false;
  if (onBusy) onBusy(spec.busy);
  try {
    if (action === "delete") await api.del(domainPath(name));
    else await api.post(`${domainPath(name)}/${action}`, undefined, action === "shutdown" ? { timeout: 90 } : undefined);
    ctx.flash(`${name}: ${action === "delete" ? "deleted" : `${spec.label.toLowerCase()} done`}`);
    return true;
  } catch (err) {
    ctx.flash(err.message, "error");
    return false;
  }
}

export function actionButtons(h, ctx, name, state, after, onBusy) {
  return Object.entries(ACTIONS).filter(([, spec]) => spec.states.includes(state)).map(([action, spec]) =>
    h("button", {
      type: "button", class: `small${spec.destructive ? " destructive" : ""}`, dataset: { action },
      onclick: async (event) => {
        event.currentTarget.disabled = true;
        await runAction(ctx, name, action, onBusy);
        after(action);
      },
    }, spec.label));
}
