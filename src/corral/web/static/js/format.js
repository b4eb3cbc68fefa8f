// Small helpers shared by the views: escaping, units, DOM building.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function mib(value) {
  if (value === null || value === undefined) return "–";
  return value >= 1024 ? `${(value / 1024).toFixed(value % 1024 ? 1 : 0)} GiB` : `${value} MiB`;
}

export function bytes(value, suffix = "") {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Math.abs(value);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(v >= 100 || i === 0 ? 0 : 1)} ${units[i]}${suffix}`;
}

export function pct(value) {
  return value === null || value === undefined ? "–" : `${value.toFixed(value >= 10 ? 0 : 1)} %`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function clock(time) {
  return new Date(time * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// A row that scrolls sideways (a page's tabs; the top bar's links on phones): marks the ends where there is more
// to see (.more-left, .more-right: a fade) and brings the active item into view. Returns what stops watching.
export function strip(el) {
  el.classList.add("strip");
  const mark = () => {
    const more = el.scrollWidth - el.clientWidth;
    el.classList.toggle("more-left", more > 1 && el.scrollLeft > 1);
    el.classList.toggle("more-right", more > 1 && el.scrollLeft < more - 1);
  };
  const active = el.querySelector(".active");
  if (active && el.scrollWidth > el.clientWidth) {
    el.scrollLeft = Math.max(0, active.offsetLeft - el.offsetLeft - (el.clientWidth - active.offsetWidth) / 2);
  }
  el.addEventListener("scroll", mark, { passive: true });
  window.addEventListener("resize", mark);
  requestAnimationFrame(mark);
  return () => { el.removeEventListener("scroll", mark); window.removeEventListener("resize", mark); };
}

// A guest's tag as a chip: a button when a click does something (the list: filter by it), else a label.
export function chip(tag, { onclick, title } = {}) {
  return onclick ? h("button", { type: "button", class: "chip", dataset: { tag }, title, onclick }, tag)
    : h("span", { class: "chip", dataset: { tag } }, tag);
}
