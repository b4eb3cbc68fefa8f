// New guest: the spec's fields; the admission guard's answer (POST /api/domains/check) is shown as the
// fields change, and asked again right before the guest is created.
import { api } from "./api.js";
import { h } from "./format.js";

export function renderCreate(view, ctx) {
  const field = (label, input, cls) => h("label", { class: cls }, label, input);
  const name = h("input", { name: "name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}",
                            placeholder: "web", autocomplete: "off" });
  const image = h("select", { name: "image", required: true });
  const vcpus = h("input", { name: "vcpus", type: "number", min: 1, max: 64, value: 1, required: true });
  const memory = h("input", { name: "memory", type: "number", min: 64, step: 32, value: 256, required: true });
  const cpu = h("input", { name: "load_cpu", type: "number", min: 0, max: 100, value: 0 });
  const disk = h("input", { name: "load_disk", type: "number", min: 0, value: 0 });
  const net = h("input", { name: "load_net", type: "number", min: 0, value: 0 });
  const start = h("input", { name: "start", type: "checkbox", checked: true });
  const guard = h("div", { class: "guard pending", id: "guard", role: "status" }, "Fill in the fields to check the host.");
  const error = h("p", { class: "error-text", role: "alert" });
  const submit = h("button", { type: "submit", id: "create-submit" }, "Create");
  const buildTiny = h("button", { type: "button", class: "secondary small", hidden: true }, "Build the tiny image");
  const load = h("fieldset", { class: "wide" }, h("legend", {}, "Load (tiny image: the workload it runs at boot)"),
    h("div", { class: "form" }, field("CPU, % of each vCPU", cpu), field("Disk, KiB/s", disk), field("Network, KiB/s", net)));

  const form = h("form", { class: "form", id: "create-form", novalidate: true },
    field("Name", name), field("Image", image), field("vCPUs", vcpus), field("Memory, MiB", memory), load,
    h("label", { class: "check wide" }, start, "Start it once created"),
    h("div", { class: "wide" }, guard), h("div", { class: "wide toolbar" }, submit, h("a", { href: "#/" }, "Cancel")),
    h("div", { class: "wide" }, error));
  view.append(h("div", { class: "toolbar" }, h("h1", {}, "New guest"), buildTiny), h("div", { class: "panel" }, form));

  const spec = () => {
    const body = { name: name.value.trim(), image: image.value, vcpus: Number(vcpus.value), memory: Number(memory.value) };
    const chosen = images.find((i) => i.name === image.value);
    if (!chosen || chosen.kind === "kernel") {
      body.load = { cpu: Number(cpu.value) || 0, disk: Number(disk.value) || 0, net: Number(net.value) || 0 };
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
  };
  image.addEventListener("change", showLoad);
  const scheduleCheck = () => { clearTimeout(debounce); debounce = setTimeout(check, 350); };
  form.addEventListener("input", scheduleCheck);
  form.addEventListener("change", scheduleCheck);

  async function loadImages() {
    try {
      images = await api.get("/api/images");
    } catch (err) {
      error.textContent = err.message;
      return;
    }
    const previous = image.value;
    image.replaceChildren(...images.map((i) => h("option", { value: i.name }, `${i.name}${i.kind ? ` (${i.kind})` : ""}`)));
    const preferred = [previous, "tiny"].find((n) => images.some((i) => i.name === n));
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

