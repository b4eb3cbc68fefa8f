// Tiny SVG charts: a sparkline for the domain list, and a time-series chart for the details page.
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

export function sparkline(values, { max = 100, width = 120, height = 28 } = {}) {
  const root = svg("svg", { class: "spark", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
                            role: "img", "aria-label": "CPU usage" });
  const pts = values.filter((v) => v !== null && v !== undefined);
  if (pts.length < 2) return root;
  const step = width / (values.length - 1 || 1);
  const top = Math.max(max, ...pts);
  const coords = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) return;
    coords.push(`${(i * step).toFixed(1)},${(height - 1 - (v / top) * (height - 2)).toFixed(1)}`);
  });
  const first = coords[0].split(",")[0];
  const last = coords[coords.length - 1].split(",")[0];
  root.append(svg("polygon", { points: `${first},${height} ${coords.join(" ")} ${last},${height}` }));
  root.append(svg("polyline", { points: coords.join(" ") }));
  return root;
}

const COLORS = ["#2f6fdf", "#e07b24", "#1f9d55", "#a445d6"];
// A second (third, …) series is dashed and drawn over the first: where they are equal (read = write = 0),
// both still show.
const DASHES = ["", "6 4", "2 3", "8 3 2 3"];
const WIDTHS = [1.6, 2, 2, 2];

// Round ("nice") steps: 1, 2, 2.5 or 5 times a power of ten, so that an axis reads 0, 25, 50, 75, 100.
const NICE = [1, 2, 2.5, 5, 10];
const BINARY = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                    2 * 86400, 7 * 86400];

export function niceStep(raw) {
  if (!(raw > 0) || !Number.isFinite(raw)) return 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = NICE.find((n) => n * power >= raw * (1 - 1e-9)) * power;
  return Number(step.toPrecision(12));
}

function decimals(step) {
  const text = String(Number(step.toPrecision(12)));
  return text.includes(".") ? text.split(".")[1].length : 0;
}

// The value axis: from 0 to a round top at or above `max`, in about `intervals` round steps. kind "bytes" counts
// in KiB, MiB, … (the step is round in the unit the top is in: 0, 5, 10 MiB); "pct" adds " %"; else plain numbers.
export function valueAxis(max, { kind = "number", suffix = "", fixedMax = null, intervals = 4 } = {}) {
  let unit = 1;
  let unitName = "";
  const top0 = fixedMax ?? (max > 0 ? max : kind === "bytes" ? 1024 : 1);
  if (kind === "bytes") {
    let i = 0;
    while (i < BINARY.length - 1 && top0 >= 1024 ** (i + 1)) i += 1;
    unit = 1024 ** i;
    unitName = BINARY[i];
  }
  let step = niceStep(top0 / unit / intervals);
  if (kind === "bytes" && unit === 1) step = Math.max(1, step); // no fractions of a byte
  const fits = fixedMax !== null && Number.isInteger(fixedMax / unit / step); // 100 % in steps of 25
  const top = fits ? fixedMax : Math.ceil(top0 / unit / step - 1e-9) * step * unit;
  const places = decimals(step);
  const label = (v) => {
    const n = String(Number((v / unit).toFixed(places))); // 0, 0.25, 0.5: no trailing zeros
    if (kind === "bytes") return `${n} ${unitName}${suffix}`;
    if (kind === "pct") return `${n} %`;
    return `${n}${suffix}`;
  };
  const ticks = [];
  for (let k = 0; k * step * unit <= top * (1 + 1e-9); k += 1) {
    const value = Number((k * step * unit).toPrecision(12));
    ticks.push({ value, label: label(value) });
  }
  const format = (v) => (kind === "bytes" ? `${Number((v / unit).toPrecision(3))} ${unitName}${suffix}`
    : kind === "pct" ? `${Number(v.toPrecision(3))} %` : `${Number(v.toPrecision(3))}${suffix}`);
  return { top, step, unit, unitName, ticks, format };
}

// The time axis: ticks on round times of the local clock (every 15 s, 1 min, 5 min, 1 h, 6 h, 1 day, …), at
// most `most` of them.
export function timeTicks(t0, t1, most = 6) {
  const span = Math.max(1, t1 - t0);
  const step = TIME_STEPS.find((s) => Math.floor(span / s) + 1 <= most) ?? TIME_STEPS[TIME_STEPS.length - 1];
  const offset = -new Date(t0 * 1000).getTimezoneOffset() * 60; // local midnight is a round time
  const ticks = [];
  for (let t = Math.ceil((t0 + offset) / step) * step - offset; t <= t1 + 1e-6; t += step) {
    const date = new Date(t * 1000);
    const label = step >= 86400 ? date.toLocaleDateString([], { month: "short", day: "numeric" })
      : date.toLocaleTimeString([], step < 60 ? { hour: "2-digit", minute: "2-digit", second: "2-digit" }
        : { hour: "2-digit", minute: "2-digit" });
    ticks.push({ time: t, label });
  }
  return { step, ticks };
}

// A legend swatch: the series' colour and dash.
export function swatch(index) {
  const root = svg("svg", { class: "swatch", viewBox: "0 0 24 8", width: 24, height: 8, "aria-hidden": "true" });
  root.append(svg("line", { x1: 1, x2: 23, y1: 4, y2: 4, stroke: COLORS[index % COLORS.length],
                            "stroke-width": WIDTHS[index % WIDTHS.length] + 0.4,
                            "stroke-dasharray": DASHES[index % DASHES.length] || "none" }));
  return root;
}

// series: [{label, points: [[time, value|null], ...]}]; kind: "bytes", "pct" or "number" (the value axis, see
// valueAxis), suffix: after a value's unit ("/s"); fixedMax: e.g. 100 for %; cap: a value drawn as a dashed line
// (a host's cap); marks: [{time, label}] drawn as vertical lines (migrations). Ticks are round numbers and times.
export function timeChart(series, { kind = "number", suffix = "", fixedMax = null, span = null, now = Date.now() / 1000,
                                    width = 600, cap = null, marks = [] } = {}) {
  const W = Math.max(240, Math.round(width));
  const H = 160;
  const L = 68;
  const B = 18;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
  const t1 = now;
  const t0 = span ? now - span : (all.length ? Math.min(...all.map((p) => p[0])) : now - 60);
  const axis = valueAxis(Math.max(0, ...all.map((p) => p[1])), { kind, suffix, fixedMax });
  const top = axis.top;
  root.dataset.step = String(axis.step * axis.unit); // the value axis: round steps of its unit (1, KiB, MiB, …)
  root.dataset.unit = String(axis.unit);
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - 4);
  const y = (v) => H - B - (v / top) * (H - B - 6);
  for (const tick of axis.ticks) {
    root.append(svg("line", { class: "axis", x1: L, x2: W - 4, y1: y(tick.value), y2: y(tick.value) }));
    const label = svg("text", { class: "tick", x: L - 6, y: y(tick.value) + 3, "text-anchor": "end",
                                "data-axis": "y", "data-value": tick.value });
    label.textContent = tick.label;
    root.append(label);
  }
  const times = timeTicks(t0, t1, Math.max(2, Math.floor((W - L) / 75)));
  root.dataset.timeStep = String(times.step);
  for (const tick of times.ticks) {
    const px = x(tick.time);
    const label = svg("text", { class: "tick", x: px, y: H - 4, "data-axis": "x", "data-time": tick.time,
                                "text-anchor": px < L + 24 ? "start" : px > W - 28 ? "end" : "middle" });
    label.textContent = tick.label;
    root.append(label);
  }
  if (cap !== null && cap <= top) {
    const line = svg("line", { class: "cap-line", x1: L, x2: W - 4, y1: y(cap), y2: y(cap) });
    const title = svg("title");
    title.textContent = `cap ${axis.format(cap)}`;
    line.append(title);
    root.append(line);
  }
  for (const mark of marks) {
    if (mark.time < t0 || mark.time > t1) continue;
    const line = svg("line", { class: "mark", x1: x(mark.time), x2: x(mark.time), y1: 6, y2: H - B });
    const title = svg("title");
    title.textContent = mark.label;
    line.append(title);
    root.append(line);
  }
  series.forEach((s, i) => {
    let run = [];
    const flush = () => {
      if (run.length > 1) {
        const line = svg("polyline", { class: "series", stroke: COLORS[i % COLORS.length], points: run.join(" "),
                                       "stroke-width": WIDTHS[i % WIDTHS.length], "data-series": i,
                                       "vector-effect": "non-scaling-stroke" });
        if (DASHES[i % DASHES.length]) line.setAttribute("stroke-dasharray", DASHES[i % DASHES.length]);
        const title = svg("title");
        title.textContent = s.label;
        line.append(title);
        root.append(line);
      }
      run = [];
    };
    for (const [t, v] of s.points) {
      if (t < t0) continue;
      if (v === null || v === undefined) { flush(); continue; }
      run.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    }
    flush();
  });
  return root;
}

export const chartColors = COLORS;
