// New guest: the spec's fields (disk size and an ISO too); the admission guard's answer (POST /api/domains/check)
// is shown as the fields change, and asked again right before the guest is created. Below, the import of a disk
// image or ISO from a folder of the host (POST /api/images), which then shows in the image list.
import { api } from "./api.js";
import { h } from "./format.js";

export function renderCreate(view, ctx) {
  const field = (label, input, cls) => h("label", { class: cls }, label, input);
  const name = h("input", { name: "name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}",
                            placeholder: "web", autocomplete: "off" });
  const image = h("select", { name: "image", required: true });
  const vcpus = h("input", { name: "vcpus", type: "number", min: 1, max: 64, value: 1, required: true });
  const memory = h("input", { name: "memory", type: "number", min: 64, step: 32, value: 256, required: true });
  const diskSize = h("input", { name: "disk", type: "number", min: 1, max: 16384, step: "any", inputmode: "decimal",
                                placeholder: "the image's size" });
  const isoList = h("datalist", { id: "iso-list" });
  const iso = h("input", { name: "iso", list: "iso-list", autocomplete: "off", spellcheck: "false",
                           placeholder: "/var/lib/libvirt/images/install.iso" });
  const cpu = h("input", { name: "load_cpu", type: "number", min: 0, max: 100, value: 0 });
  const disk = h("input", { name: "load_disk", type: "number", min: 0, value: 0 });
  const net = h("input", { name: "load_net", type: "number", min: 0, value: 0 });
  // Disk images (a cloud image such as debian): the user cloud-init makes at first boot and its SSH keys.
  const user = h("input", { name: "user", autocomplete: "off", spellcheck: "false", maxlength: 32,
                            placeholder: "the image's default user" });
  const sshKeys = h("textarea", { name: "ssh_keys", rows: 3, spellcheck: "false",
                                  placeholder: "ssh-ed25519 AAAA… you@laptop (one public key a line)" });
  const firstBoot = h("fieldset", { class: "wide", id: "first-boot", hidden: true },
    h("legend", {}, "First boot (disk images: cloud-init)"),
    h("div", { class: "form" }, field("User", user), field("SSH public keys, one a line", sshKeys, "wide")));
  const start = h("input", { name: "start", type: "checkbox", checked: true });
  const guard = h("div", { class: "guard pending", id: "guard", role: "status" }, "Fill in the fields to check the host.");
  const error = h("p", { class: "error-text", role: "alert" });
  const submit = h("button", { type: "submit", id: "create-submit" }, "Create");
  const buildTiny = h("button", { type: "button", class: "secondary small", hidden: true }, "Build the tiny image");
  const load = h("fieldset", { class: "wide" }, h("legend", {}, "Load (tiny image: the workload it runs at boot)"),
    h("div", { class: "form" }, field("CPU, % of each vCPU", cpu), field("Disk, KiB/s", disk), field("Network, KiB/s", net)));

  const form = h("form", { class: "form", id: "create-form", novalidate: true },
    field("Name", name), field("Image", image), field("vCPUs", vcpus), field("Memory, MiB", memory),
    field("Disk, GiB", diskSize), field("ISO as a CD-ROM (a path on the host; optional)", h("span", {}, iso, isoList),
                                        "wide"), load, firstBoot,
    h("label", { class: "check wide" }, start, "Start it once created"),
    h("div", { class: "wide" }, guard), h("div", { class: "wide toolbar" }, submit, h("a", { href: "#/" }, "Cancel")),
    h("div", { class: "wide" }, error));
  // Import: a disk image (qcow2, raw) or an ISO where it is, in a folder Corral allows (never written to).
  const importName = h("input", { name: "import_name", required: true, autocomplete: "off", placeholder: "debian12",
                                  pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}" });
  const importPath = h("input", { name: "import_path", required: true, autocomplete: "off", spellcheck: "false",
                                  placeholder: "/var/lib/libvirt/images/debian.qcow2" });
  const importError = h("p", { class: "error-text", role: "alert", id: "import-error" });
  const importSubmit = h("button", { type: "submit", class: "secondary" }, "Import");
  const importForm = h("form", { class: "form", id: "import-form", novalidate: true },
    field("Image name", importName), field("Path on the host", importPath, "wide"),
    h("div", { class: "wide toolbar" }, importSubmit,
      h("span", { class: "status-line" }, "From Corral's data folder, /var/lib/libvirt/images or the config's image_dirs.")),
    h("div", { class: "wide" }, importError));
  const importBox = h("details", { class: "panel import", id: "import" },
    h("summary", {}, "Import a disk image or ISO"), importForm);
  view.append(h("div", { class: "toolbar" }, h("h1", {}, "New guest"), buildTiny), h("div", { class: "panel" }, form),
    importBox);

  const spec = () => {
    const body = { name: name.value.trim(), image: image.value, vcpus: Number(vcpus.value), memory: Number(memory.value) };
    const chosen = images.find((i) => i.name === image.value);
    if (!chosen || chosen.kind === "kernel") {
      body.load = { cpu: Number(cpu.value) || 0, disk: Number(disk.value) || 0, net: Number(net.value) || 0 };
    }
    if (diskSize.value.trim() !== "") body.disk = Number(diskSize.value);
    if (iso.value.trim()) body.iso = iso.value.trim();
    if (chosen && chosen.kind === "disk") {
      if (user.value.trim()) body.user = user.value.trim();
      const keys = sshKeys.value.split("\n").map((line) => line.trim()).filter((line) => line && !line.startsWith("#"));
      if (keys.length) body.ssh_keys = keys;
    }
    return body;
  };

  let images = [];
  let checkSeq = 0;
  let debounce = null;
  let lastCheck = null;

  async function check() {
    const seq = ++checkSeq;
    const body = spec();
    if (!body.name || !body.image) {
      guard.className = "guard pending";
      guard.textContent = "Fill in the fields to check the host.";
      return null;
    }
    guard.className = "guard pending";
    guard.textContent = "Asking the admission guard…";
    try {
      const answer = await api.post("/api/domains/check", body, { start: start.checked });
      if (seq !== checkSeq) return null;
      lastCheck = answer;
      guard.className = `guard ${answer.fits ? "fits" : "refused"}`;
      guard.textContent = answer.fits
        ? `Fits ${answer.beside_running ? "beside the running guests" : "on this host"}.`
        : `Refused by the admission guard: ${answer.exceeded}`;
      submit.disabled = !answer.fits;
      return answer;
    } catch (err) {
      if (seq !== checkSeq) return null;
      guard.className = "guard refused";
      guard.textContent = err.message;
      submit.disabled = true;
      return null;
    }
  }
  const showLoad = () => {
    const chosen = images.find((i) => i.name === image.value);
    load.hidden = !!chosen && chosen.kind !== "kernel";
    firstBoot.hidden = !chosen || chosen.kind !== "disk";
  };
  image.addEventListener("change", showLoad);
  const scheduleCheck = () => { clearTimeout(debounce); debounce = setTimeout(check, 350); };
  form.addEventListener("input", scheduleCheck);
  form.addEventListener("change", scheduleCheck);

  async function loadImages(select = null) {
    try {
      images = await api.get("/api/images");
    } catch (err) {
      error.textContent = err.message;
      return;
    }
    const previous = image.value;
    image.replaceChildren(...images.map((i) => h("option", { value: i.name }, `${i.name}${i.kind ? ` (${i.kind})` : ""}`)));
    isoList.replaceChildren(...images.filter((i) => i.kind === "iso" && i.path).map((i) =>
      h("option", { value: i.path }, i.name)));
    const preferred = [select, previous, "tiny"].find((n) => n && images.some((i) => i.name === n));
    if (preferred) image.value = preferred;
    buildTiny.hidden = images.some((i) => i.name === "tiny");
    showLoad();
    scheduleCheck();
  }
  buildTiny.addEventListener("click", async () => {
    buildTiny.disabled = true;
    buildTiny.textContent = "Building the tiny image…";
    try {
      await api.post("/api/images/tiny/build");
      ctx.flash("the tiny image is built");
      await loadImages();
    } catch (err) {
      ctx.flash(err.message, "error");
    } finally {
      buildTiny.disabled = false;
      buildTiny.textContent = "Build the tiny image";
    }
  });

  importForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    importError.textContent = "";
    const body = { name: importName.value.trim(), path: importPath.value.trim() };
    if (!body.name || !body.path) { importError.textContent = "Give the image a name and its path on the host."; return; }
    importSubmit.disabled = true;
    importSubmit.textContent = "Importing…";
    try {
      const record = await api.post("/api/images", body);
      ctx.flash(`image ${record.name} imported (${record.kind}${record.format ? ` ${record.format}` : ""})`);
      importName.value = "";
      importPath.value = "";
      await loadImages(record.name);
    } catch (err) {
      importError.textContent = err.message;
    } finally {
      importSubmit.disabled = false;
      importSubmit.textContent = "Import";
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    const answer = await check();
    if (!answer || !answer.fits) { submit.disabled = !!lastCheck && !lastCheck.fits; return; }
    submit.textContent = start.checked ? "Creating and starting…" : "Creating…";
    try {
      const made = await api.post("/api/domains", spec(), { start: start.checked });
      ctx.flash(`${made.name} created${start.checked ? " and started" : ""}`);
      ctx.go(`#/domain/${encodeURIComponent(made.name)}`);
    } catch (err) {
      error.textContent = err.message;
      submit.disabled = false;
      submit.textContent = "Create";
    }
  });
  loadImages();
  name.focus();
  return () => clearTimeout(debounce);
}

