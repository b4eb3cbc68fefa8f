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

// series: [{label, points: [[time, value|null], ...]}]; format: value -> text; fixedMax: e.g. 100 for %;
// cap: a value drawn as a dashed line (a host's cap); marks: [{time, label}] drawn as vertical lines (migrations).
export function timeChart(series, { format = String, fixedMax = null, span = null, now = Date.now() / 1000,
                                    width = 600, cap = null, marks = [] } = {}) {
  const W = Math.max(240, Math.round(width));
  const H = 160;
  const L = 68;
  const B = 18;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
  const t1 = now;
  const t0 = span ? now - span : (all.length ? Math.min(...all.map((p) => p[0])) : now - 60);
  let top = fixedMax ?? Math.max(1, ...all.map((p) => p[1]));
  if (!fixedMax) top *= 1.1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - 4);
  const y = (v) => H - B - (v / top) * (H - B - 6);
  for (const f of [0, 0.5, 1]) {
    const v = top * f;
    root.append(svg("line", { class: "axis", x1: L, x2: W - 4, y1: y(v), y2: y(v) }));
    const label = svg("text", { class: "tick", x: L - 6, y: y(v) + 3, "text-anchor": "end" });
    label.textContent = format(v);
    root.append(label);
  }
  for (const t of [t0, (t0 + t1) / 2, t1]) {
    const label = svg("text", { class: "tick", x: x(t), y: H - 4,
                                "text-anchor": t === t0 ? "start" : t === t1 ? "end" : "middle" });
    label.textContent = new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    root.append(label);
  }
  if (cap !== null && cap <= top) {
    const line = svg("line", { class: "cap-line", x1: L, x2: W - 4, y1: y(cap), y2: y(cap) });
    const title = svg("title");
    title.textContent = `cap ${format(cap)}`;
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
        root.append(svg("polyline", { class: "series", stroke: COLORS[i % COLORS.length], points: run.join(" "),
                                      "vector-effect": "non-scaling-stroke" }));
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
