// app.js: the editors' console. Sign in with an API key (kept in this tab's
// sessionStorage), then watch the overview, refreshed every 5 s while the
// tab is visible, and trigger breaking-news syncs whose progress is followed
// every second, now or scheduled for later (listed, cancellable until they
// start). Admins also add, edit and delete feeds. With more than one app,
// a switcher picks the app whose figures, scheduled syncs and new syncs the
// page shows; the feeds and queues are shared by all apps.
//
// All text from the server is set with textContent, never parsed as HTML.

import { request, ApiError } from "./api.js";
import { num, percent, millis, interval, parseTime, ago, hhmmss, fullTime, DASH } from "./format.js";
import * as chart from "./chart.js";
import * as freshness from "./freshness.js";

const KEY_STORAGE = "nudge.console.key";
const APP_STORAGE = "nudge.console.app";
const REFRESH_MS = 5000;
const SYNC_POLL_MS = 1000;
const SYNC_COUNTS = ["targeted", "queued", "sent", "deferred", "coalesced", "skipped", "pruned", "failed", "superseded", "unresponsive", "in_flight", "held"];
/** Outcomes every targeted device ends in, one live bar each. */
const SYNC_OUTCOMES = ["sent", "in_flight", "skipped", "pruned", "failed", "superseded", "unresponsive"];
const MILESTONES = [50, 90, 100];
const PLATFORMS = [["ios", "iOS"], ["android", "Android"]];
const QUEUES = [["push", "Push"], ["events", "Events"]];
const FEED_ID = /^[a-z0-9-]{1,64}$/;
const GO_DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/;

const $ = (sel) => document.querySelector(sel);

/** h builds an element: h("a", {href, class}, "text", child…). */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "hidden") node.hidden = Boolean(v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/** safeURL returns u when it is an http(s) URL, else null (no javascript: links). */
function safeURL(u) {
  try {
    const parsed = new URL(u, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/** timeEl renders an RFC 3339 time as a relative <time>, or a dash. */
function timeEl(v, fallback = DASH) {
  const d = parseTime(v);
  if (!d) return fallback;
  return h("time", { datetime: d.toISOString(), title: fullTime(d) }, ago(d));
}

const state = {
  key: "",
  whoami: null,
  feeds: [],
  refreshTimer: 0,
  refreshing: false,
  lastUpdated: null,
  series: null,
  feedsSignature: "",
  checked: new Set(),
  confirmDelete: "",
  feedErrors: new Map(),
  editing: null, // null: form closed; "": adding; id: editing that feed
  sync: null, // {id, timer, done, waiting}
  scheduled: new Map(), // id -> scheduled sync, as last listed
  cancelled: new Set(), // ids this page cancelled
  scheduledTimer: 0,
  apps: [], // [{id, name}] the key may act for
  app: "", // the chosen app's id
};

// ---------------------------------------------------------------- session

function showLogin(message = "") {
  stopRefresh();
  stopSync();
  $("#console-view").hidden = true;
  $("#session").hidden = true;
  $("#login-view").hidden = false;
  $("#login-error").textContent = message;
  $("#login-key").setAttribute("aria-invalid", message ? "true" : "false");
  $("#login-key").focus();
}

function loginMessage(err) {
  if (err.status === 401) return "That key was not accepted.";
  if (err.status === 403) return "This key has no editor role.";
  return `Could not sign in: ${err.message}`;
}

async function onLogin(event) {
  event.preventDefault();
  const input = $("#login-key");
  const button = $("#login-submit");
  const key = input.value.trim();
  if (!key) {
    $("#login-error").textContent = "Enter your API key.";
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  button.disabled = true;
  button.textContent = "Signing in…";
  $("#login-error").textContent = "";
  try {
    await loadApps(key);
    const overview = await request(key, "GET", withApp("/v1/console/overview"));
    sessionStorage.setItem(KEY_STORAGE, key);
    state.key = key;
    input.value = "";
    enterConsole(overview);
  } catch (err) {
    $("#login-error").textContent = loginMessage(err);
    input.setAttribute("aria-invalid", "true");
    input.focus();
  } finally {
    button.disabled = false;
    button.textContent = "Sign in";
  }
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY_STORAGE);
  sessionStorage.removeItem(APP_STORAGE);
  state.key = "";
  state.apps = [];
  state.app = "";
  $("#app-switch").hidden = true;
  $("#app-select").replaceChildren();
  state.whoami = null;
  state.feeds = [];
  state.feedsSignature = "";
  state.checked.clear();
  state.confirmDelete = "";
  state.feedErrors.clear();
  state.series = null;
  freshness.reset();
  closeFeedForm();
  // Leave nothing of the last session on the page.
  for (const sel of ["#feeds", "#sync-feeds", "#platform-rows", "#queue-rows", "#chart-plot", "#chart-table tbody", "#fresh-plot", "#fresh-table tbody"]) {
    $(sel).replaceChildren();
  }
  $("#sync-progress").hidden = true;
  clearTimeout(state.scheduledTimer);
  state.scheduled.clear();
  state.cancelled.clear();
  $("#scheduled").replaceChildren();
  $("#scheduled-empty").hidden = false;
  $("#scheduled-status").textContent = "";
  $("#scheduled-error").textContent = "";
  $("#app-error").textContent = "";
  $("#sync-error").textContent = "";
  $("#feed-status").textContent = "";
  showLogin(message);
}

function enterConsole(overview) {
  $("#login-view").hidden = true;
  $("#console-view").hidden = false;
  $("#session").hidden = false;
  $("#login-error").textContent = "";
  render(overview);
  startRefresh();
  loadScheduled();
  $("#main").focus();
}

// ---------------------------------------------------------------- apps

/**
 * loadApps lists the apps key may act for and fills the switcher, which
 * shows only when there is a choice. The app chosen earlier in this tab is
 * kept if the key still has it. An api without apps (404) has one app.
 */
async function loadApps(key) {
  let list = [];
  try {
    const res = await request(key, "GET", "/v1/apps");
    list = Array.isArray(res.apps) ? res.apps.map((a) => ({ id: String(a.id), name: String(a.name || a.id) })) : [];
  } catch (err) {
    if (err.status !== 404) throw err;
  }
  state.apps = list;
  const saved = sessionStorage.getItem(APP_STORAGE) || "";
  state.app = list.some((a) => a.id === saved) ? saved : list.length ? list[0].id : "";
  const select = $("#app-select");
  select.replaceChildren(...list.map((a) => h("option", { value: a.id }, a.name === a.id ? a.id : `${a.name} (${a.id})`)));
  select.value = state.app;
  $("#app-switch").hidden = list.length < 2;
}

/** scopedApp is the app requests name: none when the only app is the
 * default one (a deployment without apps). */
function scopedApp() {
  return state.apps.length > 1 || (state.app && state.app !== "default") ? state.app : "";
}

/** withApp adds ?app= (or &app=) for the chosen app to path. */
function withApp(path) {
  const app = scopedApp();
  if (!app) return path;
  return `${path}${path.includes("?") ? "&" : "?"}app=${encodeURIComponent(app)}`;
}

/** onAppChange shows the other app: its figures and scheduled syncs; the
 * progress of the last sync, which was the other app's, is put away. */
function onAppChange(event) {
  state.app = event.target.value;
  sessionStorage.setItem(APP_STORAGE, state.app);
  stopSync();
  $("#sync-progress").hidden = true;
  clearTimeout(state.scheduledTimer);
  state.scheduled.clear();
  state.cancelled.clear();
  renderScheduled();
  for (const sel of ["#scheduled-status", "#scheduled-error", "#sync-error", "#audience-count"]) $(sel).textContent = "";
  refresh();
  loadScheduled();
}

// ---------------------------------------------------------------- overview

function startRefresh() {
  stopRefresh();
  state.refreshTimer = setInterval(() => {
    if (!document.hidden) refresh();
  }, REFRESH_MS);
}

function stopRefresh() {
  clearInterval(state.refreshTimer);
  state.refreshTimer = 0;
}

/** refresh reloads the overview; a failure is shown, never swallowed. */
async function refresh() {
  if (state.refreshing || !state.key) return;
  state.refreshing = true;
  const key = state.key;
  const app = state.app;
  try {
    const overview = await request(key, "GET", withApp("/v1/console/overview"));
    if (key !== state.key || app !== state.app) return;
    render(overview);
    $("#app-error").textContent = "";
    if (state.scheduled.size === 0) loadScheduled(); // another editor may have scheduled one
  } catch (err) {
    if (key !== state.key || app !== state.app) return;
    if (err.isAuth) {
      signOut(err.status === 401 ? "Your key is no longer accepted. Sign in again." : "This key has no editor role.");
      return;
    }
    const since = state.lastUpdated ? ` Showing data from ${hhmmss(state.lastUpdated)}; retrying every ${REFRESH_MS / 1000} s.` : "";
    $("#app-error").textContent = `Could not refresh the overview: ${err.message}${since}`;
  } finally {
    state.refreshing = false;
    if (key === state.key && app !== state.app) refresh(); // the app changed meanwhile
  }
}

function render(ov) {
  state.lastUpdated = new Date();
  renderWhoami(ov.whoami || {});
  renderPlatforms(ov.platforms || {}, ov.unresponsive_devices || {});
  renderQueues(ov.queues || {});
  state.series = chart.points(ov.series);
  renderChart();
  freshness.update(state.key);
  state.feeds = Array.isArray(ov.feeds) ? ov.feeds : [];
  renderSyncFeeds();
  renderFeeds();
  const u = $("#updated");
  u.replaceChildren("Updated ", h("time", { datetime: state.lastUpdated.toISOString() }, hhmmss(state.lastUpdated)));
}

function isAdmin() {
  return state.whoami && state.whoami.role === "admin";
}

function renderWhoami(who) {
  state.whoami = who;
  const role = who.role ? ` (${who.role})` : "";
  $("#whoami").textContent = `Signed in as ${who.name || "unknown"}${role}`;
  const admin = isAdmin();
  $("#feed-add").hidden = !admin;
  if (!admin) closeFeedForm();
}

function renderPlatforms(platforms, unresponsive) {
  const known = PLATFORMS.map(([k]) => k);
  const extra = Object.keys(platforms).filter((k) => !known.includes(k)).map((k) => [k, k]);
  const rows = [...PLATFORMS, ...extra].map(([key, label]) => {
    const p = platforms[key] || {};
    const cell = (metric, text) => h("td", { dataset: { platform: key, metric } }, text);
    return h("tr", { dataset: { platform: key } },
      h("th", { scope: "row" }, label),
      cell("sent", num(p.sent)),
      cell("deferred", num(p.deferred)),
      cell("coalesced", num(p.coalesced)),
      cell("pruned", num(p.pruned)),
      cell("failed", num(p.failed)),
      cell("unresponsive", num(p.unresponsive)),
      cell("unresponsive_devices", num(unresponsive[key])),
      cell("receipts", num(p.receipts)),
      cell("wake_rate", percent(p.wake_rate)),
      cell("wake_latency_p50_ms", millis(p.wake_latency_p50_ms)),
      cell("wake_latency_p99_ms", millis(p.wake_latency_p99_ms)),
    );
  });
  $("#platform-rows").replaceChildren(...rows);
}

function renderQueues(queues) {
  const rows = QUEUES.map(([key, label]) => {
    const q = queues[key] || {};
    const cell = (metric) => h("td", { dataset: { queue: key, metric } }, num(q[metric]));
    return h("tr", { dataset: { queue: key } },
      h("th", { scope: "row" }, label),
      cell("depth"), cell("pending"), cell("retry"), cell("dead"));
  });
  $("#queue-rows").replaceChildren(...rows);
}

function renderChart() {
  if (!state.series) return;
  const rows = state.series;
  const label = chart.summary(rows);
  chart.draw($("#chart-plot"), rows, label);
  chart.fillTable($("#chart-table tbody"), rows);
}

/** keepFocus re-renders inside root and then refocuses the same control. */
function keepFocus(root, renderFn) {
  const active = document.activeElement;
  const key = active && root.contains(active) ? active.dataset.focusKey : "";
  renderFn();
  if (key) {
    const again = root.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

function renderSyncFeeds() {
  const box = $("#sync-feeds");
  const signature = JSON.stringify(state.feeds.map((f) => [f.id, f.title]));
  if (signature === state.feedsSignature) return;
  state.feedsSignature = signature;
  const ids = new Set(state.feeds.map((f) => f.id));
  for (const id of [...state.checked]) if (!ids.has(id)) state.checked.delete(id);
  keepFocus(box, () => {
    if (state.feeds.length === 0) {
      box.replaceChildren(h("p", { class: "hint" }, "No feeds to sync yet."));
      return;
    }
    box.replaceChildren(...state.feeds.map((f) => {
      const id = `sync-feed-${f.id}`;
      const input = h("input", {
        type: "checkbox", name: "feed", id, value: f.id,
        dataset: { focusKey: `check:${f.id}` },
      });
      input.checked = state.checked.has(f.id);
      return h("div", { class: "check" }, input, h("label", { for: id }, f.title || f.id));
    }));
  });
}

function health(f) {
  const hh = f.health || {};
  const failures = Number(hh.consecutive_failures) || 0;
  if (failures > 0) return { kind: "failing", label: "Failing" };
  if (hh.last_success) return { kind: "ok", label: "OK" };
  return { kind: "pending", label: "Not polled yet" };
}

function renderFeeds() {
  const list = $("#feeds");
  $("#feeds-empty").hidden = state.feeds.length > 0;
  const admin = isAdmin();
  keepFocus(list, () => {
    list.replaceChildren(...state.feeds.map((f) => feedCard(f, admin)));
  });
}

function feedCard(f, admin) {
  const hh = f.health || {};
  const st = health(f);
  const titleId = `feed-${f.id}-title`;
  const href = safeURL(f.url);
  const failures = Number(hh.consecutive_failures) || 0;

  const meta = h("p", { class: "feed-meta" },
    h("code", {}, f.id),
    f.poll_interval_seconds ? ` · every ${interval(f.poll_interval_seconds)}` : "",
    " · ",
    href ? h("a", { href, rel: "noopener noreferrer", target: "_blank", class: "feed-url", dataset: { focusKey: `url:${f.id}` } }, f.url) : h("span", { class: "feed-url" }, f.url || DASH),
  );

  let problem = null;
  if (st.kind === "failing") {
    const status = hh.last_status ? ` (HTTP ${hh.last_status})` : "";
    problem = h("p", { class: "feed-problem", dataset: { testid: "feed-problem" } },
      h("strong", {}, `${failures} failure${failures === 1 ? "" : "s"} in a row${status}: `),
      hh.last_error || "no error text");
  }

  const facts = h("dl", { class: "feed-facts" },
    h("div", {}, h("dt", {}, "Last success"), h("dd", {}, timeEl(hh.last_success, "never"))),
    h("div", {}, h("dt", {}, "Next poll"), h("dd", {}, timeEl(hh.next_poll))),
    h("div", {}, h("dt", {}, "Cursor"), h("dd", {}, f.head_cursor === undefined || f.head_cursor === null || f.head_cursor === "" ? DASH : String(f.head_cursor))),
  );

  const latest = Array.isArray(f.latest) ? f.latest : [];
  const items = latest.length === 0
    ? h("p", { class: "hint" }, "No items yet.")
    : h("ol", { class: "items", "aria-label": `Latest items of ${f.title || f.id}` }, latest.map((it, i) => {
      const link = safeURL(it.url);
      const text = it.title || it.url || "untitled";
      return h("li", {},
        link ? h("a", { href: link, rel: "noopener noreferrer", target: "_blank", dataset: { focusKey: `item:${f.id}:${i}` } }, text) : text,
        " ", h("span", { class: "item-time" }, timeEl(it.published, "")));
    }));

  let actions = null;
  if (admin) {
    const err = state.feedErrors.get(f.id) || "";
    const errEl = h("p", { class: "error", role: "alert", id: `feed-${f.id}-error` }, err);
    if (state.confirmDelete === f.id) {
      actions = h("div", { class: "feed-actions confirm" },
        h("span", {}, `Delete “${f.title || f.id}”? Apps stop receiving its updates.`),
        h("button", { type: "button", class: "button-danger", dataset: { action: "delete-confirm", feed: f.id, focusKey: `delete-confirm:${f.id}` } }, "Delete feed"),
        h("button", { type: "button", class: "button-quiet", dataset: { action: "delete-cancel", feed: f.id, focusKey: `delete-cancel:${f.id}` } }, "Keep"),
        errEl);
    } else {
      actions = h("div", { class: "feed-actions" },
        h("button", { type: "button", class: "button-quiet", dataset: { action: "edit", feed: f.id, focusKey: `edit:${f.id}` }, "aria-label": `Edit ${f.title || f.id}` }, "Edit"),
        h("button", { type: "button", class: "button-quiet danger", dataset: { action: "delete", feed: f.id, focusKey: `delete:${f.id}` }, "aria-label": `Delete ${f.title || f.id}` }, "Delete"),
        errEl);
    }
  }

  return h("li", { class: `feed feed-${st.kind}`, dataset: { feedId: f.id, health: st.kind } },
    h("article", { "aria-labelledby": titleId },
      h("div", { class: "feed-head" },
        h("h3", { id: titleId, class: "feed-title" }, f.title || f.id),
        h("span", { class: `badge badge-${st.kind}`, dataset: { testid: "feed-health" } }, st.label)),
      meta, problem, facts,
      h("h4", { class: "items-heading" }, "Latest items"),
      items, actions));
}

// ---------------------------------------------------------------- feeds admin

function openFeedForm(feed) {
  const form = $("#feed-form");
  state.editing = feed ? feed.id : "";
  form.hidden = false;
  form.reset();
  for (const input of form.querySelectorAll("input")) input.removeAttribute("aria-invalid");
  $("#feed-error").textContent = "";
  $("#feed-status").textContent = "";
  $("#feed-form-heading").textContent = feed ? `Edit “${feed.title || feed.id}”` : "Add a feed";
  $("#feed-id").readOnly = Boolean(feed);
  if (feed) {
    $("#feed-id").value = feed.id;
    $("#feed-title").value = feed.title || "";
    $("#feed-url").value = feed.url || "";
    $("#feed-interval").value = interval(feed.poll_interval_seconds) || "5m";
    $("#feed-title").focus();
  } else {
    $("#feed-interval").value = "5m";
    $("#feed-id").focus();
  }
}

function closeFeedForm() {
  state.editing = null;
  $("#feed-form").hidden = true;
  $("#feed-error").textContent = "";
}

function fieldError(form, errorEl, inputSel, message) {
  for (const input of form.querySelectorAll("input, textarea")) input.removeAttribute("aria-invalid");
  errorEl.textContent = message;
  const input = inputSel ? form.querySelector(inputSel) : null;
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

const FEED_FIELDS = { id: "#feed-id", title: "#feed-title", url: "#feed-url", poll_interval: "#feed-interval" };

async function onFeedSubmit(event) {
  event.preventDefault();
  const form = $("#feed-form");
  const errorEl = $("#feed-error");
  const adding = state.editing === "";
  const id = $("#feed-id").value.trim();
  const body = {
    title: $("#feed-title").value.trim(),
    url: $("#feed-url").value.trim(),
    poll_interval: $("#feed-interval").value.trim(),
  };
  if (!FEED_ID.test(id)) return fieldError(form, errorEl, "#feed-id", "The id must be 1 to 64 lower-case letters, digits or dashes.");
  if (adding && state.feeds.some((f) => f.id === id)) return fieldError(form, errorEl, "#feed-id", `A feed with the id “${id}” already exists. Choose another id, or edit that feed.`);
  if (!body.title) return fieldError(form, errorEl, "#feed-title", "Enter a title.");
  if (!safeURL(body.url) || !/^https?:\/\//i.test(body.url)) return fieldError(form, errorEl, "#feed-url", "Enter the feed's full http:// or https:// URL.");
  if (!GO_DURATION.test(body.poll_interval)) return fieldError(form, errorEl, "#feed-interval", "Enter the poll interval as a duration such as 30s, 5m or 1h.");

  const button = $("#feed-submit");
  button.disabled = true;
  errorEl.textContent = "";
  try {
    await request(state.key, "PUT", `/v1/admin/feeds/${encodeURIComponent(id)}`, body);
    closeFeedForm();
    $("#feed-status").textContent = adding ? `Added feed “${body.title}”.` : `Saved feed “${body.title}”.`;
    await refresh();
    $("#feed-add").focus();
  } catch (err) {
    if (err.isAuth && err.status === 401) return signOut("Your key is no longer accepted. Sign in again.");
    const verb = adding ? "add" : "save";
    fieldError(form, errorEl, FEED_FIELDS[err.field], `Could not ${verb} the feed: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

async function onFeedAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const id = button.dataset.feed;
  const feed = state.feeds.find((f) => f.id === id);
  switch (button.dataset.action) {
    case "edit":
      if (feed) openFeedForm(feed);
      return;
    case "delete":
      state.confirmDelete = id;
      state.feedErrors.delete(id);
      renderFeeds();
      $(`[data-focus-key="${CSS.escape(`delete-cancel:${id}`)}"]`)?.focus();
      return;
    case "delete-cancel":
      state.confirmDelete = "";
      renderFeeds();
      $(`[data-focus-key="${CSS.escape(`delete:${id}`)}"]`)?.focus();
      return;
    case "delete-confirm":
      button.disabled = true;
      try {
        await request(state.key, "DELETE", `/v1/admin/feeds/${encodeURIComponent(id)}`);
        state.confirmDelete = "";
        state.feedErrors.delete(id);
        $("#feed-status").textContent = `Deleted feed “${feed ? feed.title || id : id}”.`;
        await refresh();
        $("#feed-add").focus();
      } catch (err) {
        if (err.status === 401) return signOut("Your key is no longer accepted. Sign in again.");
        state.feedErrors.set(id, `Could not delete the feed: ${err.message}`);
        renderFeeds();
      }
      return;
  }
}

// ---------------------------------------------------------------- syncs

async function onSyncSubmit(event) {
  event.preventDefault();
  const form = $("#sync-form");
  const errorEl = $("#sync-error");
  const feeds = [...form.querySelectorAll("input[name=feed]:checked")].map((i) => i.value);
  if (feeds.length === 0) {
    return fieldError(form, errorEl, "input[name=feed]", "Choose at least one feed to sync.");
  }
  const body = { feeds, lane: "breaking" };
  if (scopedApp()) body.app = scopedApp();
  const title = $("#alert-title").value.trim();
  const text = $("#alert-body").value.trim();
  if (title || text) body.alert = { title, body: text };
  const audience = audienceOf(form);
  if (audience) body.audience = audience;
  const sendAtValue = $("#sync-send-at").value;
  if (sendAtValue) {
    const at = new Date(sendAtValue); // datetime-local: the editor's local time
    if (Number.isNaN(at.getTime())) {
      return fieldError(form, errorEl, "#sync-send-at", "Enter the date and time to send at.");
    }
    body.send_at = at.toISOString();
  }

  const button = $("#sync-submit");
  button.disabled = true;
  button.textContent = body.send_at ? "Scheduling…" : "Sending…";
  fieldError(form, errorEl, null, "");
  try {
    const res = await request(state.key, "POST", "/v1/syncs", body);
    if (!res.id) throw new ApiError(202, "bad_response", "The server accepted the sync but sent no id.");
    $("#alert-title").value = "";
    $("#alert-body").value = "";
    if (body.send_at) {
      $("#sync-send-at").value = "";
      $("#scheduled-status").textContent = `Sync ${res.id} is scheduled for ${fullTime(new Date(res.send_at || body.send_at))}.`;
      loadScheduled();
    } else {
      startSync(String(res.id));
    }
  } catch (err) {
    if (err.status === 401) return signOut("Your key is no longer accepted. Sign in again.");
    const sel = err.field === "feeds" ? "input[name=feed]"
      : err.field === "alert.title" ? "#alert-title"
      : err.field === "alert.body" ? "#alert-body"
      : err.field === "send_at" ? "#sync-send-at" : null;
    fieldError(form, errorEl, sel, `Could not ${body.send_at ? "schedule" : "start"} the sync: ${err.message}`);
  } finally {
    button.disabled = false;
    syncButtonText();
  }
}

/** syncButtonText names what the sync button does: send now or schedule. */
function syncButtonText() {
  $("#sync-submit").textContent = $("#sync-send-at").value ? "Schedule sync" : "Send breaking sync";
}

// ---------------------------------------------------------------- scheduled syncs

/**
 * loadScheduled lists the scheduled syncs. A sync that left the list
 * without being cancelled here has started: the page says so and follows
 * its progress. While any is scheduled the list is reloaded every second.
 */
async function loadScheduled() {
  clearTimeout(state.scheduledTimer);
  const key = state.key;
  const app = state.app;
  if (!key) return;
  try {
    const res = await request(key, "GET", withApp("/v1/syncs?state=scheduled"));
    if (key !== state.key || app !== state.app) return;
    const list = Array.isArray(res.syncs) ? res.syncs : [];
    const now = new Map(list.map((s) => [String(s.id), s]));
    for (const id of state.scheduled.keys()) {
      if (now.has(id) || state.cancelled.has(id)) continue;
      $("#scheduled-status").textContent = `Scheduled sync ${id} has started.`;
      startSync(id);
    }
    state.scheduled = now;
    renderScheduled();
    $("#scheduled-error").textContent = "";
  } catch (err) {
    if (key !== state.key || app !== state.app) return;
    if (err.isAuth) return signOut(err.status === 401 ? "Your key is no longer accepted. Sign in again." : "This key has no editor role.");
    $("#scheduled-error").textContent = `Could not load the scheduled syncs: ${err.message}`;
  }
  if (state.scheduled.size > 0 && key === state.key) {
    state.scheduledTimer = setTimeout(loadScheduled, SYNC_POLL_MS);
  }
}

function renderScheduled() {
  const items = [...state.scheduled.values()].map((s) => {
    const id = String(s.id);
    const at = parseTime(s.send_at);
    const feeds = Array.isArray(s.feeds) ? s.feeds.join(", ") : "";
    const action = s.state === "starting"
      ? h("span", { class: "hint" }, "Starting…")
      : h("button", { type: "button", "data-action": "cancel-sync", "data-sync-id": id }, "Cancel");
    return h("li", { "data-sync-id": id, "data-state": s.state || "" },
      h("span", {}, `Sync ${id} · ${feeds} · at `, h("time", { datetime: at ? at.toISOString() : "" }, at ? fullTime(at) : DASH), " "),
      action);
  });
  $("#scheduled").replaceChildren(...items);
  $("#scheduled-empty").hidden = items.length > 0;
}

async function onScheduledAction(event) {
  const button = event.target.closest("button[data-action=cancel-sync]");
  if (!button) return;
  const id = button.dataset.syncId;
  button.disabled = true;
  try {
    await request(state.key, "DELETE", `/v1/syncs/${encodeURIComponent(id)}`);
    state.cancelled.add(id);
    state.scheduled.delete(id);
    renderScheduled();
    $("#scheduled-status").textContent = `Sync ${id} is cancelled; it will not be sent.`;
  } catch (err) {
    if (err.status === 401) return signOut("Your key is no longer accepted. Sign in again.");
    button.disabled = false;
    if (err.status === 409) {
      $("#scheduled-status").textContent = `Sync ${id} has already started; it can no longer be cancelled.`;
    } else if (err.status === 404) {
      state.cancelled.add(id);
      $("#scheduled-status").textContent = `Sync ${id} is no longer scheduled.`;
    } else {
      $("#scheduled-error").textContent = `Could not cancel sync ${id}: ${err.message}`;
    }
  }
  loadScheduled();
}

/** audienceOf reads the sync form's audience; null when it narrows nothing. */
function audienceOf(form) {
  const a = {};
  const platforms = [...form.querySelectorAll("input[name=platform]:checked")].map((i) => i.value);
  if (platforms.length) a.platforms = platforms;
  const locales = $("#audience-locales").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (locales.length) a.locales = locales;
  const min = $("#audience-min-version").value.trim();
  const max = $("#audience-max-version").value.trim();
  if (min) a.min_app_version = min;
  if (max) a.max_app_version = max;
  return Object.keys(a).length ? a : null;
}

/** onAudiencePreview asks the API for a dry run: how many devices the
 * sync as filled in would reach now. */
async function onAudiencePreview() {
  const form = $("#sync-form");
  const out = $("#audience-count");
  const feeds = [...form.querySelectorAll("input[name=feed]:checked")].map((i) => i.value);
  if (feeds.length === 0) {
    out.textContent = "Choose at least one feed to count its devices.";
    return;
  }
  const body = { feeds, lane: "breaking" };
  if (scopedApp()) body.app = scopedApp();
  const audience = audienceOf(form);
  if (audience) body.audience = audience;
  out.textContent = "Counting…";
  try {
    const res = await request(state.key, "POST", "/v1/syncs?dry_run=true", body);
    out.textContent = `This sync would reach ${num(Number(res.targeted) || 0)} devices.`;
  } catch (err) {
    if (err.status === 401) return signOut("Your key is no longer accepted. Sign in again.");
    out.textContent = `Could not count: ${err.message}`;
  }
}

function onSyncFeedChange(event) {
  const input = event.target;
  if (input.name !== "feed") return;
  if (input.checked) state.checked.add(input.value);
  else state.checked.delete(input.value);
}

function stopSync() {
  if (state.sync) clearTimeout(state.sync.timer);
  state.sync = null;
}

function startSync(id) {
  stopSync();
  state.sync = { id, timer: 0, done: false, waiting: false, reached: {} };
  $("#sync-progress").hidden = false;
  $("#sync-id").textContent = id;
  setSyncState("planning", "Starting…");
  $("#sync-summary").textContent = "";
  $("#sync-bar").value = 0;
  for (const c of SYNC_COUNTS) $(`[data-count=${c}]`).textContent = "0";
  for (const o of SYNC_OUTCOMES) $(`[data-bar=${o}]`).value = 0;
  for (const m of MILESTONES) $(`[data-milestone="${m}"]`).textContent = DASH;
  pollSync();
}

function setSyncState(kind, text) {
  const el = $("#sync-state");
  el.dataset.state = kind;
  el.textContent = text;
}

/** finished: every targeted device has an outcome (targeted is the sum of
 * the outcomes and in_flight, so done is targeted less in_flight). */
function finished(s) {
  const done = (Number(s.targeted) || 0) - (Number(s.in_flight) || 0);
  return { done, complete: s.state === "done" };
}

/**
 * milestones notes when 50 and 90 % of the devices that get a push
 * (targeted less skipped) were sent, as first seen by a poll, and when the
 * last push went out (100 %: every device has its outcome), counted from
 * the sync's creation.
 */
function milestones(s, res) {
  const created = parseTime(res.created_at);
  const base = (Number(res.targeted) || 0) - (Number(res.skipped) || 0);
  if (!created || base <= 0 || res.state === "planning") return;
  const share = (100 * (Number(res.sent) || 0)) / base;
  for (const m of MILESTONES) {
    if (s.reached[m] !== undefined) continue;
    if (m === 100) {
      // Done: every device has its outcome, the last push is out.
      if (res.state === "done" && res.last_sent_at) s.reached[m] = parseTime(res.last_sent_at) - created;
    } else if (share >= m) {
      s.reached[m] = Date.now() - created;
    }
    if (s.reached[m] !== undefined) $(`[data-milestone="${m}"]`).textContent = millis(Math.max(0, s.reached[m]));
  }
}

async function pollSync() {
  const s = state.sync;
  if (!s || s.done) return;
  if (document.hidden) {
    s.waiting = true; // resumed by the visibilitychange handler
    return;
  }
  s.waiting = false;
  try {
    const res = await request(state.key, "GET", `/v1/syncs/${encodeURIComponent(s.id)}`);
    if (state.sync !== s) return;
    if (s.failedOnce) {
      $("#sync-error").textContent = "";
      s.failedOnce = false;
    }
    const { done, complete } = finished(res);
    for (const c of SYNC_COUNTS) $(`[data-count=${c}]`).textContent = num(Number(res[c]) || 0);
    const targeted = Number(res.targeted) || 0;
    const bar = $("#sync-bar");
    bar.max = Math.max(targeted, 1);
    bar.value = Math.min(done, bar.max);
    for (const o of SYNC_OUTCOMES) {
      const b = $(`[data-bar=${o}]`);
      b.max = Math.max(targeted, 1);
      b.value = Math.min(Number(res[o]) || 0, b.max);
    }
    milestones(s, res);
    if (complete) {
      s.done = true;
      setSyncState("done", "Finished");
      $("#sync-summary").textContent = summaryText(res);
      return;
    }
    setSyncState(res.state === "sending" ? "sending" : "planning", res.state === "sending" ? "Sending…" : "Planning…");
  } catch (err) {
    if (state.sync !== s) return;
    if (err.status === 401) return signOut("Your key is no longer accepted. Sign in again.");
    if (err.status === 404) {
      s.done = true;
      setSyncState("unknown", "Unknown");
      $("#sync-error").textContent = `The server no longer knows sync ${s.id}.`;
      return;
    }
    s.failedOnce = true;
    $("#sync-error").textContent = `Lost track of sync ${s.id}: ${err.message} Retrying…`;
  }
  s.timer = setTimeout(pollSync, SYNC_POLL_MS);
}

function summaryText(r) {
  const targeted = Number(r.targeted) || 0;
  if (targeted === 0) return "Finished: no device subscribes to these feeds.";
  const parts = [["skipped", "skipped (background sync off)"], ["pruned", "pruned (token no longer valid)"], ["failed", "failed"], ["superseded", "superseded (changed since planning)"], ["unresponsive", "held back (device unresponsive)"]]
    .filter(([k]) => Number(r[k]) > 0)
    .map(([k, label]) => `${num(Number(r[k]))} ${label}`);
  const rest = parts.length ? `; ${parts.join(", ")}` : "";
  const held = Number(r.held) > 0 ? ` The alert limit held back the alert on ${num(Number(r.held))} of them: they synced silently.` : "";
  return `Finished: ${num(Number(r.sent) || 0)} of ${num(targeted)} targeted devices were sent a push${rest}.${held}`;
}

// ---------------------------------------------------------------- start

function onVisibility() {
  if (document.hidden || !state.key) return;
  refresh();
  if (state.sync && state.sync.waiting) pollSync();
}

let resizeFrame = 0;
function onResize() {
  cancelAnimationFrame(resizeFrame);
  resizeFrame = requestAnimationFrame(() => {
    renderChart();
    freshness.render();
  });
}

async function boot() {
  $("#login-form").addEventListener("submit", onLogin);
  freshness.init();
  $("#logout").addEventListener("click", () => signOut());
  $("#sync-form").addEventListener("submit", onSyncSubmit);
  $("#sync-feeds").addEventListener("change", onSyncFeedChange);
  $("#audience-preview").addEventListener("click", onAudiencePreview);
  $("#sync-send-at").addEventListener("input", syncButtonText);
  $("#scheduled").addEventListener("click", onScheduledAction);
  $("#app-select").addEventListener("change", onAppChange);
  $("#feeds").addEventListener("click", onFeedAction);
  $("#feed-add").addEventListener("click", () => openFeedForm(null));
  $("#feed-form").addEventListener("submit", onFeedSubmit);
  $("#feed-cancel").addEventListener("click", () => {
    closeFeedForm();
    $("#feed-add").focus();
  });
  document.addEventListener("visibilitychange", onVisibility);
  if (window.ResizeObserver) new ResizeObserver(onResize).observe($("#chart"));

  const saved = sessionStorage.getItem(KEY_STORAGE) || "";
  if (!saved) {
    showLogin();
    return;
  }
  try {
    await loadApps(saved);
    const overview = await request(saved, "GET", withApp("/v1/console/overview"));
    state.key = saved;
    enterConsole(overview);
  } catch (err) {
    if (err.isAuth) {
      sessionStorage.removeItem(KEY_STORAGE);
      showLogin(loginMessage(err));
    } else {
      $("#login-key").value = saved;
      showLogin(`Could not reach the console: ${err.message} Try again.`);
    }
  }
}

boot();
