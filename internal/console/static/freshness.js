// freshness.js: the time-to-fresh plot of the last day. For each new item,
// how long until 50 %, 90 % and 99 % of its feed's background-enabled
// devices of each platform had synced past it (GET /v1/stats/freshness).
// Drawn as inline SVG with chart.js's helpers: one line per platform and
// share, a point per item; a share not reached (yet, or ever) is no point.

import { request } from "./api.js";
import { el, frame, HEIGHT } from "./chart.js";
import { hhmm, DASH } from "./format.js";

const PLATFORMS = ["android", "ios"];
const SHARES = ["p50", "p90", "p99"];
const EVERY_MS = 30000; // the data changes slowly; the overview refreshes every 5 s

const state = { data: null, at: 0, busy: false, feed: "" };

/** seconds formats a time-to-fresh; null (not reached) becomes a dash. */
export function seconds(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return DASH;
  if (v < 90) return `${v.toFixed(v < 10 ? 1 : 0)} s`;
  if (v < 5400) return `${(v / 60).toFixed(1)} min`;
  return `${(v / 3600).toFixed(1)} h`;
}

/** rows turns the API's answer into {t (ms), feed, android_p50, ...} rows. */
export function rows(data, feed) {
  const items = (data && Array.isArray(data.items)) ? data.items : [];
  return items
    .filter((it) => !feed || it.feed === feed)
    .map((it) => {
      const r = { t: Date.parse(it.published), feed: it.feed, cursor: it.cursor };
      for (const pl of PLATFORMS) {
        const p = (it.platforms || {})[pl] || {};
        for (const s of SHARES) {
          const v = p[`${s}_seconds`];
          r[`${pl}_${s}`] = typeof v === "number" ? v : null;
        }
      }
      return r;
    })
    .filter((r) => Number.isFinite(r.t));
}

/** summary is the text alternative of the plot. */
export function summary(rs) {
  if (rs.length === 0) return "No new items in the last day.";
  const last = rs[rs.length - 1];
  const parts = PLATFORMS.map((pl) => `${pl} ${SHARES.map((s) => `${s} ${seconds(last[`${pl}_${s}`])}`).join(", ")}`);
  return `Time-to-fresh of ${rs.length} new items in the last day. Latest item: ${parts.join("; ")}.`;
}

function draw(container, rs, label) {
  const now = Date.now();
  const t0 = rs.length ? rs[0].t : now - 86400000;
  const t1 = rs.length ? Math.max(rs[rs.length - 1].t, t0 + 60000) : now;
  let maxV = 0;
  for (const r of rs) for (const pl of PLATFORMS) for (const s of SHARES) maxV = Math.max(maxV, r[`${pl}_${s}`] || 0);
  const { svg, grid, x, y, empty } = frame(container, label, t0, t1, maxV, (v) => `${v} s`);
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    grid.append(el("text", { x: x(t), y: HEIGHT - 8, "text-anchor": "middle" }, hhmm(new Date(t))));
  }
  svg.append(grid);
  if (rs.length === 0) {
    svg.append(empty("No new items in the last day"));
  } else {
    for (const pl of PLATFORMS) {
      for (const s of SHARES) {
        const key = `${pl}_${s}`;
        const pts = rs.filter((r) => r[key] !== null).map((r) => `${x(r.t).toFixed(1)},${y(r[key]).toFixed(1)}`).join(" ");
        svg.append(el("polyline", { class: `chart-line fresh-${pl} fresh-${s}`, points: pts, "data-series": key }));
      }
    }
  }
  container.append(svg);
}

function fillTable(tbody, rs) {
  tbody.replaceChildren();
  for (const r of rs) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = hhmm(new Date(r.t));
    tr.append(th);
    const cells = [r.feed];
    for (const pl of PLATFORMS) for (const s of SHARES) cells.push(seconds(r[`${pl}_${s}`]));
    for (const v of cells) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    tbody.append(tr);
  }
}

/** render draws the plot and its table for the selected feed. */
export function render() {
  const plot = document.querySelector("#fresh-plot");
  if (!plot || !state.data) return;
  const select = document.querySelector("#fresh-feed");
  const feeds = [...new Set(((state.data.items) || []).map((it) => it.feed))].sort();
  const options = [["", "All feeds"], ...feeds.map((f) => [f, f])];
  if (select.options.length !== options.length || [...select.options].some((o, i) => o.value !== options[i][0])) {
    select.replaceChildren(...options.map(([v, t]) => new Option(t, v, false, v === state.feed)));
  }
  const rs = rows(state.data, state.feed);
  draw(plot, rs, summary(rs));
  fillTable(document.querySelector("#fresh-table tbody"), rs);
}

/** update reloads the data at most every 30 s (force: now) and redraws. */
export async function update(key, force = false) {
  if (state.busy || !key || (!force && Date.now() - state.at < EVERY_MS)) return;
  state.busy = true;
  const err = document.querySelector("#fresh-error");
  try {
    state.data = await request(key, "GET", "/v1/stats/freshness");
    state.at = Date.now();
    err.textContent = "";
    render();
  } catch (e) {
    err.textContent = `Could not load time-to-fresh: ${e.message}`;
  } finally {
    state.busy = false;
  }
}

/** reset forgets the last session's data. */
export function reset() {
  state.data = null;
  state.at = 0;
  state.feed = "";
}

/** init wires the feed selector. */
export function init() {
  document.querySelector("#fresh-feed").addEventListener("change", (e) => {
    state.feed = e.target.value;
    render();
  });
}
