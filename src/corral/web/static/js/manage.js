// A guest's settings on its details page, each through the REST API: autostart (PUT …/autostart), tags (PUT
// …/tags), vCPUs and memory for the next boot and live (PATCH /api/domains/{name}: the admission guard's refusal
// is shown in the form, nothing changed), its disks (add, grow, remove; eject a CD's medium) and its NICs (add on
// a network, remove). mountManage() builds the panels once; update(info) redraws them from GET /api/domains/{name}
// without touching what is being typed.
import { api, domainPath, hostPath } from "./api.js";
import { bytes, h, mib } from "./format.js";

const GIB = 1024 ** 3;
const LEARNED_KEY = "corral.disks";

// The guest details name a disk by its file; resizing and removing need its device (vdb). The API's answers to
// add and resize name both: kept for the tab's life (sessionStorage), for details that do not name the device.
function learned() {
  try { return JSON.parse(sessionStorage.getItem(LEARNED_KEY) || "{}"); } catch { return {}; }
}
function learn(domain, change) {
  if (!change.path) return;
  const all = learned();
  const key = `${domain}\n${change.path}`;
  if (change.action === "removed") delete all[key];
  else all[key] = { target: change.device, size_bytes: change.size_bytes };
  sessionStorage.setItem(LEARNED_KEY, JSON.stringify(all));
}

const gib = (value) => `${Number((value / GIB).toFixed(2))} GiB`;
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const describe = (r) => `${plural(r.vcpus, "vCPU")} (max ${r.max_vcpus}), ${mib(r.memory_mib)} (max ${mib(r.max_memory_mib)})`;

function outcome(el, ok, text) {
  el.className = `outcome ${ok ? "ok" : "bad"}`;
  el.textContent = text;
  el.hidden = false;
}

export function mountManage(container, ctx, name, refreshInfo) {
  let info = null;
  let stopped = false;
  const after = () => { if (!stopped) refreshInfo(); };

  // --- autostart and tags -----------------------------------------------------------------------------------
  const autostart = h("input", { type: "checkbox", id: "autostart", role: "switch" });
  const autostartAnswer = h("p", { class: "outcome", id: "autostart-answer", hidden: true });
  let autostartBusy = false;
  autostart.addEventListener("change", async () => {
    const wanted = autostart.checked;
    autostartBusy = true;
    autostart.disabled = true;
    try {
      const answer = await api.put(`${domainPath(name)}/autostart`, { autostart: wanted });
      autostart.checked = answer.autostart;
      outcome(autostartAnswer, true, `${name} ${answer.autostart ? "starts" : "no longer starts"} with its host`);
    } catch (err) {
      autostart.checked = !wanted;
      outcome(autostartAnswer, false, err.message);
    } finally {
      autostartBusy = false;
      autostart.disabled = false;
      after();
    }
  });

  const chips = h("div", { class: "chips", id: "tags" });
  const tagInput = h("input", { name: "tag", id: "tag-input", placeholder: "web", autocomplete: "off",
                                spellcheck: "false", "aria-label": "new tag" });
  const tagAnswer = h("p", { class: "outcome", id: "tags-answer", hidden: true });
  async function putTags(tags, what) {
    try {
      const answer = await api.put(`${domainPath(name)}/tags`, { tags });
      info = { ...info, tags: answer.tags };
      drawTags();
      tagAnswer.hidden = true;
      ctx.flash(`${name}: ${what}`);
      return true;
    } catch (err) {
      outcome(tagAnswer, false, err.message);
      return false;
    }
  }
  function drawTags() {
    const tags = info ? info.tags || [] : [];
    chips.replaceChildren(...(tags.length ? tags.map((t) => h("span", { class: "chip", dataset: { tag: t } },
      h("a", { href: `#/?tag=${encodeURIComponent(t)}`, title: `every guest tagged ${t}` }, t),
      h("button", { type: "button", class: "chip-remove", "aria-label": `remove tag ${t}`, title: `remove tag ${t}`,
                    onclick: () => putTags(tags.filter((x) => x !== t), `tag ${t} removed`) }, "×")))
      : [h("span", { class: "muted" }, "no tags")]));
  }
  const tagForm = h("form", { class: "inline-form", id: "tag-form", onsubmit: async (event) => {
    event.preventDefault();
    const added = tagInput.value.split(/[\s,]+/).map((t) => t.trim()).filter(Boolean);
    if (!added.length || !info) return;
    const tags = [...new Set([...(info.tags || []), ...added])];
    if (await putTags(tags, `tagged ${added.join(", ")}`)) tagInput.value = "";
  } }, tagInput, h("button", { type: "submit", class: "secondary" }, "Add tag"));

  const settings = h("section", { class: "panel", id: "settings" },
    h("h2", {}, "Autostart and tags"),
    h("label", { class: "switch" }, autostart, "Start with its host (libvirt autostart)"),
    autostartAnswer,
    h("h3", {}, "Tags"), chips, tagForm, tagAnswer);

  // --- vCPUs and memory -------------------------------------------------------------------------------------
  const num = (fieldName, attrs) => h("input", { name: fieldName, type: "number", required: true, ...attrs });
  const fields = {
    vcpus: num("vcpus", { min: 1, max: 64 }),
    memory: num("memory", { min: 64, step: 1 }),
    max_vcpus: num("max_vcpus", { min: 1, max: 64 }),
    max_memory: num("max_memory", { min: 64, step: 1 }),
  };
  const live = h("input", { type: "checkbox", name: "live" });
  const liveLabel = h("label", { class: "check wide" }, live, "Live: change the running guest now too (within its maxima)");
  const resourcesNow = h("p", { class: "status-line wide", id: "resources-now" });
  const editAnswer = h("div", { class: "guard", id: "edit-answer", role: "status", hidden: true });
  const editSubmit = h("button", { type: "submit", id: "edit-submit" }, "Apply");
  const field = (label, input) => h("label", {}, label, input);
  const editForm = h("form", { class: "form", id: "edit-form", novalidate: true },
    resourcesNow,
    field("vCPUs", fields.vcpus), field("Memory, MiB", fields.memory),
    field("Max vCPUs", fields.max_vcpus), field("Max memory, MiB", fields.max_memory),
    liveLabel, h("div", { class: "wide toolbar" }, editSubmit), h("div", { class: "wide" }, editAnswer));
  let resources = null;
  let dirty = false;
  editForm.addEventListener("input", () => { dirty = true; });

  function fillResources(answer, refill) {
    resources = answer;
    const running = answer.live !== null && answer.live !== undefined;
    resourcesNow.textContent = running ? `Now: ${describe(answer.live)} · next boot: ${describe(answer.next_boot)}`
      : `Next boot: ${describe(answer.next_boot)}`;
    if (refill || (!dirty && !editForm.contains(document.activeElement))) {
      const nb = answer.next_boot;
      fields.vcpus.value = nb.vcpus;
      fields.memory.value = nb.memory_mib;
      fields.max_vcpus.value = nb.max_vcpus;
      fields.max_memory.value = nb.max_memory_mib;
      live.checked = running;
      dirty = false;
    }
    live.disabled = !running;
    if (!running) live.checked = false;
  }
  async function loadResources(refill = false) {
    try {
      fillResources(await api.get(`${domainPath(name)}/resources`), refill);
    } catch (err) {
      resourcesNow.textContent = err.message;
    }
  }
  editForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!resources) return;
    const nb = resources.next_boot;
    const now = live.checked ? resources.live : null;
    const body = {};
    const pairs = [["vcpus", "vcpus"], ["memory", "memory_mib"], ["max_vcpus", "max_vcpus"], ["max_memory", "max_memory_mib"]];
    for (const [key, have] of pairs) {
      const raw = fields[key].value.trim();
      const value = Number(raw);
      if (raw === "" || !Number.isInteger(value)) {
        editAnswer.className = "guard refused";
        editAnswer.textContent = `${fields[key].closest("label").firstChild.textContent}: give a whole number`;
        editAnswer.hidden = false;
        return;
      }
      const livePart = now && (key === "vcpus" || key === "memory") && value !== now[have];
      if (value !== nb[have] || livePart) body[key] = value;
    }
    if (!Object.keys(body).length) {
      editAnswer.className = "guard pending";
      editAnswer.textContent = "Nothing to change.";
      editAnswer.hidden = false;
      return;
    }
    if (live.checked) body.live = true;
    editSubmit.disabled = true;
    editAnswer.className = "guard pending";
    editAnswer.textContent = "Asking the admission guard…";
    editAnswer.hidden = false;
    try {
      const answer = await api.patch(domainPath(name), body);
      fillResources(answer, true);
      editAnswer.className = "guard fits";
      editAnswer.textContent = answer.live ? `Done. Now: ${describe(answer.live)}; next boot: ${describe(answer.next_boot)}.`
        : `Done. Next boot: ${describe(answer.next_boot)}.`;
      after();
    } catch (err) {
      editAnswer.className = "guard refused";
      editAnswer.textContent = err.status === 507 ? `Refused by the admission guard: ${err.message}` : err.message;
      await loadResources(false);
    } finally {
      editSubmit.disabled = false;
    }
  });
  const edit = h("section", { class: "panel", id: "resources" }, h("h2", {}, "vCPUs and memory"), editForm);

  // --- disks ------------------------------------------------------------------------------------------------
  const diskRows = h("tbody");
  const diskAnswer = h("p", { class: "outcome", id: "disks-answer", hidden: true });
  const diskSize = h("input", { name: "disk_size", type: "number", min: 0.01, max: 16384, step: "any",
                                inputmode: "decimal", value: 1, "aria-label": "size of the new disk, GiB" });
  let diskBusy = false;
  const diskUi = new Map(); // device -> what is typed in its row ({ grow, keep }), kept across redraws
  async function diskOp(doing, fn, done) {
    diskBusy = true;
    drawDisks();
    outcome(diskAnswer, true, doing);
    diskAnswer.className = "outcome";
    try {
      const change = await fn();
      learn(name, change);
      outcome(diskAnswer, true, done(change));
    } catch (err) {
      outcome(diskAnswer, false, err.message);
    } finally {
      diskBusy = false;
      after();
    }
  }
  const diskForm = h("form", { class: "inline-form", id: "disk-form", onsubmit: (event) => {
    event.preventDefault();
    const size = Number(diskSize.value);
    diskOp(`Adding a ${size} GiB disk…`, () => api.post(`${domainPath(name)}/disks`, { size }),
           (c) => `disk ${c.device} added (${gib(c.size_bytes)})${c.live ? ", in the running guest too" : ""}`);
  } }, h("label", { class: "inline" }, "New disk, GiB", diskSize), h("button", { type: "submit", class: "secondary" }, "Add disk"));

  // boot: the guest's first disk, which Corral always defines as vda (its boot disk, never removed).
  function diskRow(d, boot) {
    const memo = learned()[`${name}\n${d.path}`] || {};
    const target = d.target || memo.target || (boot ? "vda" : null);
    const size = d.size_bytes ?? memo.size_bytes ?? null;
    const cd = d.device === "cdrom";
    const cells = [];
    if (cd) {
      cells.push(h("button", { type: "button", class: "small", dataset: { action: "eject" }, disabled: diskBusy,
        onclick: () => diskOp("Ejecting the CD…", () => api.post(`${domainPath(name)}/media/eject`),
                              () => "the CD drive is empty now") }, "Eject"));
    } else if (target) {
      const ui = diskUi.get(target) || {};
      diskUi.set(target, ui);
      const grow = h("input", { type: "number", class: "resize-size", min: 0.01, step: "any", inputmode: "decimal",
                                value: ui.grow ?? (size ? Number((size / GIB).toFixed(2)) : ""),
                                "aria-label": `new size of ${target}, GiB`,
                                oninput: (event) => { ui.grow = event.currentTarget.value; } });
      cells.push(h("span", { class: "resize" }, grow, h("button", {
        type: "button", class: "small", dataset: { action: "resize" }, disabled: diskBusy,
        onclick: () => {
          const wanted = Number(grow.value);
          delete ui.grow;
          diskOp(`Growing ${target} to ${wanted} GiB…`,
                 () => api.post(`${domainPath(name)}/disks/${encodeURIComponent(target)}/resize`, { size: wanted }),
                 (c) => `disk ${c.device} ${c.action === "unchanged" ? "unchanged" : "grown"}: ${gib(c.size_bytes)}`);
        } }, "Resize")));
      if (target !== "vda") {
        const keep = h("input", { type: "checkbox", class: "keep", checked: !!ui.keep,
                                  "aria-label": `keep the volume of ${target}`,
                                  onchange: (event) => { ui.keep = event.currentTarget.checked; } });
        cells.push(h("label", { class: "check keep-label" }, keep, "keep volume"), h("button", {
          type: "button", class: "small destructive", dataset: { action: "remove-disk" }, disabled: diskBusy,
          onclick: async () => {
            const kept = !!ui.keep;
            const text = `Remove disk ${target} from ${name}? ${kept ? "Its volume is kept." : "Its volume is deleted."}`;
            if (!(await ctx.confirmAction(text, "Remove"))) return;
            diskUi.delete(target);
            diskOp(`Removing ${target}…`,
                   () => api.del(`${domainPath(name)}/disks/${encodeURIComponent(target)}`, { keep: kept }),
                   (c) => `disk ${c.device} removed${c.kept ? `; its volume ${c.path} is kept` : ""}`);
          } }, "Remove"));
      }
    } else {
      cells.push(h("span", { class: "muted", title: "the guest's details name this disk's file, not its device" },
                   "device not known here"));
    }
    return h("tr", { dataset: { path: d.path, target: target || "", kind: d.device } },
      h("td", { "data-label": "Device", class: "device" }, target || "–"),
      h("td", { "data-label": "Kind" }, cd ? "CD-ROM" : target === "vda" ? "boot disk" : "disk"),
      h("td", { "data-label": "File", class: "path" }, d.path, h("span", { class: "muted" }, ` (${d.format})`)),
      h("td", { "data-label": "Size", class: "num size" }, size !== null ? bytes(size) : "–"),
      h("td", { class: "disk-actions" }, h("div", { class: "actions" }, cells)));
  }
  function drawDisks() {
    const disks = info ? info.disks || [] : [];
    const first = info && info.managed_by_corral ? disks.findIndex((d) => d.device === "disk") : -1;
    diskRows.replaceChildren(...(disks.length ? disks.map((d, i) => diskRow(d, i === first))
      : [h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No disks."))]));
    for (const b of diskForm.querySelectorAll("button")) b.disabled = diskBusy;
  }
  const disksPanel = h("section", { class: "panel", id: "disks" }, h("h2", {}, "Disks"),
    h("table", { class: "devices", id: "disk-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Device"), h("th", {}, "Kind"), h("th", {}, "File"), h("th", {}, "Size"),
        h("th", {}, ""))), diskRows),
    diskForm, diskAnswer);

  // --- NICs -------------------------------------------------------------------------------------------------
  const nicList = h("ul", { class: "nics", id: "nics" });
  const nicAnswer = h("p", { class: "outcome", id: "nics-answer", hidden: true });
  const networks = h("datalist", { id: "network-list" });
  const network = h("input", { name: "network", list: "network-list", autocomplete: "off", spellcheck: "false",
                               placeholder: "the host's default", "aria-label": "network of the new NIC" });
  let nicBusy = false;
  let hostAsked = null;
  async function nicOp(doing, fn, done) {
    nicBusy = true;
    drawNics();
    outcome(nicAnswer, true, doing);
    nicAnswer.className = "outcome";
    try {
      outcome(nicAnswer, true, done(await fn()));
    } catch (err) {
      outcome(nicAnswer, false, err.message);
    } finally {
      nicBusy = false;
      after();
    }
  }
  const nicForm = h("form", { class: "inline-form", id: "nic-form", onsubmit: (event) => {
    event.preventDefault();
    const wanted = network.value.trim();
    nicOp("Adding a NIC…", () => api.post(`${domainPath(name)}/nics`, wanted ? { network: wanted } : {}),
          (c) => `NIC ${c.mac} added${c.network ? ` on network ${c.network}` : " (user-mode)"}${c.live ? ", in the running guest too" : ""}`);
  } }, h("label", { class: "inline" }, "Network", network, networks), h("button", { type: "submit", class: "secondary" }, "Add NIC"));

  function drawNics() {
    const nics = info ? info.nics || [] : [];
    nicList.replaceChildren(...(nics.length ? nics.map((nic) => {
      const where = nic.network ? `network ${nic.network}` : nic.bridge ? `bridge ${nic.bridge}`
        : nic.type === "user" ? "user-mode" : nic.type;
      const details = [nic.model, nic.target, nic.guest_name].filter(Boolean).join(", ");
      return h("li", { dataset: { mac: nic.mac } },
        h("div", {}, h("span", { class: "mac" }, nic.mac), ` ${where}`,
          details ? h("span", { class: "muted" }, ` (${details})`) : null,
          nic.addresses.map((a) => h("span", { class: "address", dataset: { address: a.address },
                                               title: `from ${a.sources.join(" and ")}` }, `${a.address}/${a.prefix}`))),
        h("button", { type: "button", class: "small destructive", dataset: { action: "remove-nic" }, disabled: nicBusy,
          onclick: async () => {
            if (!(await ctx.confirmAction(`Remove the NIC ${nic.mac} from ${name}?`, "Remove"))) return;
            nicOp(`Removing ${nic.mac}…`, () => api.del(`${domainPath(name)}/nics/${encodeURIComponent(nic.mac)}`),
                  (c) => `NIC ${c.mac} removed`);
          } }, "Remove"));
    }) : [h("li", { class: "muted" }, "No NICs.")]));
    for (const b of nicForm.querySelectorAll("button")) b.disabled = nicBusy;
    const known = new Set(nics.map((n) => n.network).filter(Boolean));
    if (info && !hostAsked) {
      hostAsked = api.get(hostPath(info.host)).then((host) => host.network).catch(() => null);
    }
    Promise.resolve(hostAsked).then((def) => {
      if (def) known.add(def);
      networks.replaceChildren(...[...known].sort().map((n) => h("option", { value: n })));
    });
  }
  const nicsPanel = h("section", { class: "panel", id: "nics-panel" }, h("h2", {}, "Network interfaces"), nicList,
    nicForm, nicAnswer);

  container.append(h("div", { class: "manage", id: "manage" }, settings, edit, disksPanel, nicsPanel));
  let lastState = null;
  return {
    update(next) {
      info = next;
      if (!autostartBusy) autostart.checked = !!next.autostart;
      drawTags();
      if (!diskBusy && !diskRows.contains(document.activeElement)) drawDisks();
      if (!nicBusy) drawNics();
      loadResources(lastState === null);
      lastState = next.state;
    },
    cleanup() { stopped = true; },
  };
}
