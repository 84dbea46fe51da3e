// chart.js: the pushes-and-wakes line chart, drawn as inline SVG. No
// library: two polylines over a grid, sized to the container in CSS pixels.

import { num, hhmm, DASH } from "./format.js";

const SVG = "http://www.w3.org/2000/svg"; // the SVG namespace name, not a fetch
export const HEIGHT = 220;
const MARGIN = { top: 12, right: 14, bottom: 28, left: 52 };

export function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** niceStep rounds a raw tick step up to 1, 2 or 5 times a power of ten. */
export function niceStep(raw) {
  if (raw <= 1) return 1;
  const pow = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) {
    if (m * pow >= raw) return m * pow;
  }
  return 10 * pow;
}

/**
 * points pairs the series into {t, sent, wakes} rows, dropping entries whose
 * minute is missing; a missing count counts as 0.
 */
export function points(series) {
  const minutes = (series && series.minutes) || [];
  const sent = (series && series.sent) || [];
  const wakes = (series && series.wakes) || [];
  const rows = [];
  minutes.forEach((m, i) => {
    if (typeof m !== "number") return;
    rows.push({ t: m, sent: Number(sent[i]) || 0, wakes: Number(wakes[i]) || 0 });
  });
  return rows;
}

/** summary is the text alternative of the chart. */
export function summary(rows) {
  if (rows.length === 0) return "No pushes or wakes recorded in the last hour.";
  let sent = 0;
  let wakes = 0;
  let peak = rows[0];
  for (const r of rows) {
    sent += r.sent;
    wakes += r.wakes;
    if (r.sent > peak.sent) peak = r;
  }
  const peakText = peak.sent > 0 ? ` Busiest minute: ${num(peak.sent)} pushes at ${hhmm(new Date(peak.t * 1000))}.` : "";
  return `Last hour: ${num(sent)} pushes sent and ${num(wakes)} app wakes.${peakText}`;
}

/**
 * frame empties container and starts a chart in it: the SVG (not yet
 * appended) with its title, the scales from times t0..t1 (in the rows'
 * unit) and values 0..maxV (rounded up to a nice step), and a grid group
 * holding the horizontal lines with their values (fmt formats them). The
 * caller adds the time labels, the lines, and appends grid and svg.
 */
export function frame(container, label, t0, t1, maxV, fmt) {
  container.replaceChildren();
  const width = Math.max(280, Math.floor(container.clientWidth || 720));
  const svg = el("svg", {
    width,
    height: HEIGHT,
    viewBox: `0 0 ${width} ${HEIGHT}`,
    role: "img",
    "aria-label": label,
    class: "chart-svg",
  });
  svg.append(el("title", {}, label));
  const innerW = width - MARGIN.left - MARGIN.right;
  const innerH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const step = niceStep(Math.max(maxV, 4) / 4);
  const top = Math.max(step, Math.ceil(maxV / step) * step);
  const x = (t) => MARGIN.left + ((t - t0) / (t1 - t0)) * innerW;
  const y = (v) => MARGIN.top + innerH - (v / top) * innerH;
  const grid = el("g", { class: "chart-grid" });
  for (let v = 0; v <= top + 1e-9; v += step) {
    const yy = Math.round(y(v)) + 0.5;
    grid.append(el("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: yy, y2: yy }));
    grid.append(el("text", { x: MARGIN.left - 8, y: yy + 4, "text-anchor": "end" }, fmt(v)));
  }
  const empty = (text) =>
    el("text", { class: "chart-empty", x: MARGIN.left + innerW / 2, y: MARGIN.top + innerH / 2, "text-anchor": "middle" }, text);
  return { svg, grid, x, y, innerW, innerH, empty };
}

/** draw replaces the contents of container with the chart of rows. */
export function draw(container, rows, label) {
  const nowMin = Math.floor(Date.now() / 60000) * 60;
  const t0 = rows.length ? rows[0].t : nowMin - 3600;
  const t1 = rows.length ? Math.max(rows[rows.length - 1].t, t0 + 60) : nowMin;
  const maxV = rows.reduce((m, r) => Math.max(m, r.sent, r.wakes), 0);
  const { svg, grid, x, y, innerW, innerH, empty } = frame(container, label, t0, t1, maxV, num);

  // Time labels on quarter hours, or half hours when narrow.
  const every = innerW < 420 ? 1800 : 900;
  const firstTick = Math.ceil(t0 / every) * every;
  for (let t = firstTick; t <= t1; t += every) {
    const xx = Math.round(x(t)) + 0.5;
    grid.append(el("line", { class: "tick", x1: xx, x2: xx, y1: MARGIN.top + innerH, y2: MARGIN.top + innerH + 5 }));
    grid.append(el("text", { x: xx, y: HEIGHT - 8, "text-anchor": "middle" }, hhmm(new Date(t * 1000))));
  }
  svg.append(grid);

  if (rows.length === 0) {
    svg.append(empty("No data in the last hour"));
  } else {
    for (const [key, cls] of [["wakes", "line-wakes"], ["sent", "line-sent"]]) {
      const pts = rows.map((r) => `${x(r.t).toFixed(1)},${y(r[key]).toFixed(1)}`).join(" ");
      svg.append(el("polyline", { class: `chart-line ${cls}`, points: pts }));
    }
  }
  container.append(svg);
}

/** fillTable writes rows into the chart's data table body. */
export function fillTable(tbody, rows) {
  tbody.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 3;
    td.textContent = "No data in the last hour.";
    tr.append(td);
    tbody.append(tr);
    return;
  }
  for (const r of rows) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = hhmm(new Date(r.t * 1000));
    tr.append(th);
    for (const v of [r.sent, r.wakes]) {
      const td = document.createElement("td");
      td.textContent = v === null ? DASH : num(v);
      tr.append(td);
    }
    tbody.append(tr);
  }
}
