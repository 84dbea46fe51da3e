// format.js: how numbers, durations and times read on the console.

const numberFormat = new Intl.NumberFormat();
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const clockSeconds = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const full = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** DASH stands for a value the server does not have. */
export const DASH = "—";

/** num formats a count; null and undefined become a dash. */
export function num(v) {
  return typeof v === "number" && Number.isFinite(v) ? numberFormat.format(v) : DASH;
}

/** percent formats a 0..1 ratio such as the wake rate. */
export function percent(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return DASH;
  return `${(v * 100).toFixed(v >= 0.995 || v === 0 ? 0 : 1)} %`;
}

/** millis formats a latency in milliseconds. */
export function millis(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return DASH;
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60000) return `${(v / 1000).toFixed(1)} s`;
  return `${(v / 60000).toFixed(1)} min`;
}

/** interval formats seconds the way Go parses durations: 90 → "1m30s". */
export function interval(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds <= 0) return "";
  let s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return `${h ? `${h}h` : ""}${m ? `${m}m` : ""}${s ? `${s}s` : ""}`;
}

/** parseTime returns a Date for an RFC 3339 string, or null. */
export function parseTime(v) {
  if (!v) return null;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** ago describes a time relative to now: "3 minutes ago", "in 2 minutes". */
export function ago(d, now = Date.now()) {
  const diff = (d.getTime() - now) / 1000;
  const abs = Math.abs(diff);
  if (abs < 10) return relative.format(0, "second");
  if (abs < 90) return relative.format(Math.round(diff), "second");
  if (abs < 90 * 60) return relative.format(Math.round(diff / 60), "minute");
  if (abs < 36 * 3600) return relative.format(Math.round(diff / 3600), "hour");
  return relative.format(Math.round(diff / 86400), "day");
}

/** hhmm formats a Date as a wall-clock time. */
export function hhmm(d) {
  return clock.format(d);
}

/** hhmmss formats a Date as a wall-clock time with seconds. */
export function hhmmss(d) {
  return clockSeconds.format(d);
}

/** fullTime formats a Date with its date, for tooltips. */
export function fullTime(d) {
  return full.format(d);
}
