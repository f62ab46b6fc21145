// Antex dashboard: reads /v1/usage and /v1/usage/activity with the person's key and shows them.
//
// The key lives in sessionStorage only and leaves the page only in the `x-api-key` header of
// same-origin requests. Everything shown is set with textContent or built with DOM APIs: no data
// ever goes through innerHTML.

const KEY_STORAGE = "antex.key";
const REFRESH_MS = 15000;
const STALE_AFTER_S = 45;
const WARNING_PERCENT = 80;
const DEFAULT_MODEL = "claude-sonnet-4-6";
const SVG_NS = "http://www.w3.org/2000/svg";

const WINDOWS = [
  { id: "five_hour", title: "5-hour window", subtitle: "Rolling 5-hour total", seconds: 5 * 3600, activity: "Last 5 hours" },
  { id: "seven_day", title: "Weekly window", subtitle: "Rolling 7-day total", seconds: 7 * 86400, activity: "Last 7 days" },
];

const STATUS_TEXT = { allowed: "OK", allowed_warning: "Near the limit", rejected: "Full" };
const STATUS_LEVEL = { allowed: "ok", allowed_warning: "warning", rejected: "full" };
const OVERALL_TEXT = { ok: "Requests accepted", warning: "Near the limit", full: "Full: requests paused" };

const state = {
  key: null,
  generation: 0, // bumped on every load and on forget: a stale answer is dropped
  timer: null,
  loading: false,
  usage: null,
  activity: null,
  activityError: null,
  models: null,
  skew_s: 0, // server clock minus browser clock
  lastSuccess_ms: 0,
  showKey: false,
  cards: {},
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- small DOM helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "class") node.setAttribute("class", value);
    else node.setAttribute(name, String(value));
  }
}

function announce(message) {
  const live = $("live");
  live.textContent = "";
  window.setTimeout(() => { live.textContent = message; }, 50);
}

// ---------------------------------------------------------------- formatting

function round1(value) {
  return Math.round(value * 10) / 10;
}

// 42.5 -> "42.5%", 30 -> "30%", 0.04 -> "<0.1%": one decimal at most, none when it is zero.
function fmtPercent(value) {
  const v = Number(value) || 0;
  const r = round1(v);
  if (v > 0 && r === 0) return "<0.1%";
  return `${Number.isInteger(r) ? r.toFixed(0) : r.toFixed(1)}%`;
}

function levelOf(percent) {
  if (percent >= 100) return "full";
  if (percent >= WARNING_PERCENT) return "warning";
  return "ok";
}

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const shortClockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
const weekdayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short" });
const weekdayDayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric" });

function dayIndex(date) {
  return Math.floor(Date.UTC(date.getFullYear(), date.getMonth(), date.getDate()) / 86400000);
}

// "today 14:06:40", "tomorrow 09:12:03", "Tue 2 Dec, 09:12:03" in the browser's time zone.
function fmtWhen(ts, { seconds = true, capital = false } = {}) {
  const date = new Date(ts * 1000);
  const clock = (seconds ? clockFormat : shortClockFormat).format(date);
  const days = dayIndex(date) - dayIndex(new Date(serverNow() * 1000));
  if (days === 0) return `${capital ? "Today" : "today"} ${clock}`;
  if (days === 1) return `${capital ? "Tomorrow" : "tomorrow"} ${clock}`;
  return `${dayFormat.format(date)}, ${clock}`;
}

// 4380 -> "1 h 13 min 00 s", 190000 -> "2 d 4 h 46 min"
function fmtDuration(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const pad = (n) => String(n).padStart(2, "0");
  if (d > 0) return `${d} d ${h} h ${pad(m)} min`;
  if (h > 0) return `${h} h ${pad(m)} min ${pad(sec)} s`;
  if (m > 0) return `${m} min ${pad(sec)} s`;
  return `${sec} s`;
}

function countdownText(at) {
  const left = at - serverNow();
  return left > 0 ? `in ${fmtDuration(left)}` : "now";
}

function serverNow() {
  return Date.now() / 1000 + state.skew_s;
}

function timeElement(ts) {
  const date = new Date(ts * 1000);
  return el("time", { class: "time-value", datetime: date.toISOString(), title: fullFormat.format(date), text: fmtWhen(ts, { capital: true }) });
}

function countdownElement(ts) {
  return el("span", { class: "countdown", "data-at": ts, text: countdownText(ts) });
}

function maskKey(key) {
  return `${key.slice(0, 12)}••••••••`;
}

// ---------------------------------------------------------------- the API

class GatewayError extends Error {
  constructor(kind, status, message) {
    super(message || kind);
    this.kind = kind; // "network", "bad_response" or the error type the server sent
    this.status = status;
    this.serverMessage = message;
  }
}

async function api(path, key) {
  let response;
  try {
    response = await fetch(path, {
      headers: { "x-api-key": key, accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new GatewayError("network", 0, null);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = (body && typeof body.error === "object" && body.error) || {};
    const message = typeof error.message === "string" ? error.message : null;
    throw new GatewayError(typeof error.type === "string" ? error.type : "http", response.status, message);
  }
  if (!body || typeof body !== "object") throw new GatewayError("bad_response", response.status, null);
  return body;
}

function describeError(err) {
  const retry = `Trying again in ${REFRESH_MS / 1000} s.`;
  if (err.kind === "network") {
    return { title: "Can't reach the gateway.", text: `Check your connection, or whether the gateway is running. ${retry}` };
  }
  if (err.status === 401 || err.kind === "authentication_error") {
    return {
      title: "This key was not accepted.",
      text: "Check that you pasted the whole key (it starts with sk_live_). If it was revoked, ask whoever runs this gateway for a new one.",
    };
  }
  if (err.kind === "key_quarantined") {
    return { title: "This key is quarantined.", text: err.serverMessage || "Ask whoever runs this gateway to release it." };
  }
  if (err.status === 403) {
    return { title: "This key can't be used right now.", text: err.serverMessage || "The gateway refused it." };
  }
  if (err.status === 429) {
    return { title: "Too many requests.", text: `${err.serverMessage || "The gateway asked to slow down."} ${retry}`, kind: "warning" };
  }
  if (err.kind === "bad_response") {
    return { title: "Unexpected answer from the gateway.", text: `It did not send usage data. ${retry}` };
  }
  return {
    title: "The gateway had a problem.",
    text: `${err.serverMessage || `It answered with HTTP ${err.status}.`} ${retry}`,
  };
}

// ---------------------------------------------------------------- key storage

function storedKey() {
  try {
    return window.sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

function storeKey(key) {
  try {
    if (key) window.sessionStorage.setItem(KEY_STORAGE, key);
    else window.sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // Storage disabled: the key then lasts as long as the page.
  }
}

// ---------------------------------------------------------------- loading

async function load() {
  const key = state.key;
  if (!key) return;
  const generation = ++state.generation;
  window.clearTimeout(state.timer);
  state.timer = null;
  state.loading = true;
  setBusy(true);

  // Usage first: a wrong key then costs one request. Activity and the model list are extras: if
  // they fail, the bars still show.
  const settle = (promise) => promise.then((value) => ({ value }), (error) => ({ error }));
  try {
    const usage = await api("/v1/usage", key);
    const [activity, models] = await Promise.all([
      settle(api("/v1/usage/activity", key)),
      state.models ? null : settle(api("/v1/models", key)),
    ]);
    if (generation !== state.generation) return;
    onUsage(usage, activity, models);
  } catch (err) {
    if (generation !== state.generation) return;
    onLoadError(err instanceof GatewayError ? err : new GatewayError("bad_response", 0, null));
  } finally {
    if (generation === state.generation) {
      state.loading = false;
      setBusy(false);
      if (state.key && !document.hidden) state.timer = window.setTimeout(load, REFRESH_MS);
    }
  }
}

function setBusy(busy) {
  const submit = $("key-submit");
  submit.disabled = busy;
  submit.textContent = busy ? "Checking…" : "Show my usage";
  $("refresh").disabled = busy;
}

function onUsage(usage, activity, models) {
  const first = !state.usage;
  state.usage = usage;
  state.skew_s = Number(usage.now) ? Number(usage.now) - Date.now() / 1000 : 0;
  state.lastSuccess_ms = Date.now();
  state.activity = activity.value || null;
  state.activityError = activity.error || null;
  if (models && models.value && Array.isArray(models.value.data)) state.models = models.value.data;

  storeKey(state.key);
  hideNotice();
  $("key-card").hidden = true;
  $("dashboard").hidden = false;
  renderWho();
  renderUsage();
  renderActivity();
  if (first || models) renderTools();
  if (first) {
    $("key-input").value = "";
    announce(`Usage loaded: ${WINDOWS.map((w) => `${w.title} ${fmtPercent(usage[w.id].used_percent)} used`).join(", ")}.`);
  }
}

function onLoadError(err) {
  const message = describeError(err);
  if (err.status === 401 || err.kind === "authentication_error") {
    // Wrong or revoked: there is nothing to retry. Forget it and ask again.
    forgetKey({ keepNotice: true });
    showNotice(message);
    $("key-input").setAttribute("aria-invalid", "true");
    return;
  }
  showNotice(message);
  renderWho();
  if (!state.usage) {
    $("key-card").hidden = true;
    $("dashboard").hidden = true;
  }
  renderUpdated();
}

// ---------------------------------------------------------------- notice, who, updated

function showNotice({ title, text, kind }) {
  const notice = $("notice");
  $("notice-title").textContent = title;
  $("notice-text").textContent = text || "";
  notice.dataset.kind = kind || "error";
  notice.hidden = false;
}

function hideNotice() {
  $("notice").hidden = true;
}

function renderWho() {
  const who = $("who");
  if (!state.key) {
    who.hidden = true;
    return;
  }
  const info = (state.usage && state.usage.key) || {};
  $("who-name").textContent = info.name || "Your key";
  const plan = info.plan ? String(info.plan) : "";
  $("who-plan").textContent = plan ? `${plan.charAt(0).toUpperCase()}${plan.slice(1)} plan ·` : "";
  $("who-prefix").textContent = info.prefix ? `${info.prefix}…` : maskKey(state.key);
  who.hidden = false;
}

function renderUpdated() {
  const node = $("updated");
  if (!state.lastSuccess_ms) {
    node.textContent = "";
    return;
  }
  const age_s = (Date.now() - state.lastSuccess_ms) / 1000;
  const when = shortClockFormat.format(new Date(state.lastSuccess_ms));
  if (age_s > STALE_AFTER_S) {
    node.textContent = `Last updated ${when} (${fmtDuration(age_s)} ago)`;
    node.dataset.stale = "true";
  } else {
    node.textContent = `Updated ${clockFormat.format(new Date(state.lastSuccess_ms))}`;
    node.dataset.stale = "false";
  }
}

// ---------------------------------------------------------------- the two windows

function windowCard(spec) {
  if (state.cards[spec.id]) return state.cards[spec.id];
  const card = $("window-template").content.firstElementChild.cloneNode(true);
  card.id = `window-${spec.id}`;
  card.dataset.window = spec.id;
  const q = (cls) => card.querySelector(`.${cls}`);
  const titleId = `window-${spec.id}-title`;
  q("js-title").textContent = spec.title;
  q("js-title").id = titleId;
  card.setAttribute("aria-labelledby", titleId);
  q("js-subtitle").textContent = spec.subtitle;
  q("js-meter").setAttribute("aria-label", `${spec.title}: share used`);
  const parts = {
    card,
    status: q("js-status"),
    percent: q("js-percent"),
    meter: q("js-meter"),
    fill: q("js-fill"),
    release: q("js-release"),
    available: q("js-available"),
    chart: q("js-chart"),
    readout: q("js-readout"),
    lastWidth: 0,
  };
  $("windows").append(card);
  state.cards[spec.id] = parts;
  return parts;
}

function renderUsage() {
  const usage = state.usage;
  let worst = "ok";
  for (const spec of WINDOWS) {
    const w = usage[spec.id] || { used_percent: 0, schedule: [] };
    const level = renderWindow(spec, w);
    if (level === "full" || (level === "warning" && worst === "ok")) worst = level;
  }
  const overall = STATUS_LEVEL[usage.status] || worst;
  const pill = $("overall-status");
  pill.dataset.level = overall;
  pill.textContent = OVERALL_TEXT[overall];
  renderUpdated();
}

function renderWindow(spec, w) {
  const parts = windowCard(spec);
  const percent = Number(w.used_percent) || 0;
  const level = STATUS_LEVEL[w.status] || levelOf(percent);
  const statusText = STATUS_TEXT[w.status] || { ok: "OK", warning: "Near the limit", full: "Full" }[level];

  parts.card.dataset.level = level;
  parts.status.dataset.level = level;
  parts.status.textContent = statusText;
  parts.percent.textContent = fmtPercent(percent);
  parts.fill.style.width = `${Math.min(100, Math.max(0, percent))}%`;
  parts.meter.setAttribute("aria-valuenow", String(Math.min(100, round1(percent))));
  parts.meter.setAttribute("aria-valuetext", `${fmtPercent(percent)} used, ${statusText.toLowerCase()}`);

  renderRelease(parts.release, w);
  renderAvailable(parts.available, w, percent);
  drawChart(parts, spec, w);
  return level;
}

function renderRelease(dd, w) {
  const schedule = Array.isArray(w.schedule) ? w.schedule : [];
  if (w.resets_at === null || w.resets_at === undefined) {
    dd.replaceChildren(
      el("span", { class: "time-empty", text: "Nothing to release" }),
      el("span", { class: "time-note", text: "This window is empty." }),
    );
    return;
  }
  const next = schedule.find((point) => Number(point.at) >= Number(w.resets_at)) || schedule[0];
  const note = next
    ? `The oldest usage leaves the window: down to ${fmtPercent(next.used_percent)}.`
    : "The oldest usage leaves the window then.";
  dd.replaceChildren(timeElement(w.resets_at), countdownElement(w.resets_at), el("span", { class: "time-note", text: note }));
}

function renderAvailable(dd, w, percent) {
  if (w.available_at !== null && w.available_at !== undefined) {
    dd.replaceChildren(
      timeElement(w.available_at),
      countdownElement(w.available_at),
      el("span", { class: "time-note", text: "This window is full: requests are refused until it drops below 100%." }),
    );
    return;
  }
  dd.replaceChildren(
    el("span", { class: "time-value", text: "Now" }),
    el("span", { class: "time-note", text: percent > 0 ? "This window is below its limit." : "Nothing used in this window." }),
  );
}

// ---------------------------------------------------------------- the release chart

// The step function the schedule describes: [{at, p}], starting now.
function stepSeries(w, t0, t1) {
  const series = [{ at: t0, p: Number(w.used_percent) || 0 }];
  for (const point of Array.isArray(w.schedule) ? w.schedule : []) {
    const at = Math.min(Math.max(Number(point.at) || t0, t0), t1);
    series.push({ at, p: Number(point.used_percent) || 0 });
  }
  return series;
}

function valueAt(series, t) {
  let p = series[0].p;
  for (const point of series) {
    if (point.at > t) break;
    p = point.p;
  }
  return p;
}

// Local-time ticks between t0 and t1 that fit in `width` pixels.
function timeTicks(spec, t0, t1, width) {
  const long = spec.seconds > 86400;
  const options = long
    ? [{ days: 1, label: width >= 420 ? weekdayDayFormat : weekdayFormat, px: width >= 420 ? 52 : 34 }, { days: 2, label: weekdayFormat, px: 34 }]
    : [30, 60, 120, 180].map((minutes) => ({ minutes, label: shortClockFormat, px: 46 }));
  const span = t1 - t0;
  const step = options.find((o) => (span / ((o.days || 0) * 86400 + (o.minutes || 0) * 60)) * o.px <= width) || options[options.length - 1];
  const cursor = new Date(t0 * 1000);
  cursor.setHours(0, 0, 0, 0);
  const ticks = [];
  while (cursor.getTime() / 1000 <= t1) {
    const t = cursor.getTime() / 1000;
    if (t > t0) ticks.push({ t, label: step.label.format(cursor) });
    if (step.days) cursor.setDate(cursor.getDate() + step.days);
    else cursor.setMinutes(cursor.getMinutes() + step.minutes);
  }
  return ticks;
}

function drawChart(parts, spec, w) {
  const box = parts.chart;
  const width = Math.max(240, Math.round(box.clientWidth || 320));
  parts.lastWidth = width;
  const height = width < 420 ? 150 : 172;
  const m = { top: 18, right: 12, bottom: 24, left: 40 };
  const iw = width - m.left - m.right;
  const ih = height - m.top - m.bottom;
  const t0 = Number(state.usage.now) || serverNow();
  const t1 = t0 + spec.seconds;
  const series = stepSeries(w, t0, t1);
  const top = Math.max(100, ...series.map((s) => s.p));
  const yMax = top <= 100 ? 100 : Math.ceil(top / 25) * 25;
  const x = (t) => m.left + ((t - t0) / (t1 - t0)) * iw;
  const y = (p) => m.top + ih - (Math.max(0, p) / yMax) * ih;
  const f = (n) => n.toFixed(1);

  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": chartSummary(spec, series) });

  for (const p of [0, 50]) {
    svg.append(svgEl("line", { class: "c-grid", x1: m.left, x2: width - m.right, y1: f(y(p)), y2: f(y(p)) }));
    svg.append(svgEl("text", { class: "c-label", x: m.left - 6, y: f(y(p) + 4), "text-anchor": "end" }));
    svg.lastChild.textContent = `${p}%`;
  }
  const ticks = timeTicks(spec, t0, t1, iw);
  for (const tick of ticks) {
    const tx = x(tick.t);
    svg.append(svgEl("line", { class: "c-grid", x1: f(tx), x2: f(tx), y1: m.top, y2: m.top + ih }));
    if (tx - m.left < 34) continue; // keep clear of the "now" label
    const anchor = width - m.right - tx < 16 ? "end" : "middle";
    const label = svgEl("text", { class: "c-label", x: f(tx), y: height - 6, "text-anchor": anchor });
    label.textContent = tick.label;
    svg.append(label);
  }
  const nowLabel = svgEl("text", { class: "c-label", x: m.left, y: height - 6, "text-anchor": "start" });
  nowLabel.textContent = "now";
  svg.append(nowLabel);
  svg.append(svgEl("line", { class: "c-axis", x1: m.left, x2: width - m.right, y1: f(y(0)), y2: f(y(0)) }));

  // The line at 100%: the limit. Above it, requests are refused.
  svg.append(svgEl("line", { class: "c-limit", x1: m.left, x2: width - m.right, y1: f(y(100)), y2: f(y(100)) }));
  const limitLabel = svgEl("text", { class: "c-label-limit", x: m.left - 6, y: f(y(100) + 4), "text-anchor": "end" });
  limitLabel.textContent = "100%";
  svg.append(limitLabel);

  if (yMax > 100) {
    const topLabel = svgEl("text", { class: "c-label", x: m.left - 6, y: f(y(yMax) + 4), "text-anchor": "end" });
    topLabel.textContent = `${yMax}%`;
    svg.append(topLabel);
  }
  if (w.available_at) {
    const ax = x(Math.min(Math.max(w.available_at, t0), t1));
    svg.append(svgEl("line", { class: "c-marker", x1: f(ax), x2: f(ax), y1: m.top, y2: m.top + ih }));
    const anchor = ax > width - m.right - 40 ? "end" : ax < m.left + 40 ? "start" : "middle";
    const label = svgEl("text", { class: "c-label-marker", x: f(ax), y: m.top - 4, "text-anchor": anchor });
    label.textContent = "available again";
    svg.append(label);
  }

  const line = stepPath(series, x, y, f, t1);
  svg.append(svgEl("path", { class: "c-area", d: `${line}V${f(y(0))}H${f(x(t0))}Z` }));
  svg.append(svgEl("path", { class: "c-line", d: line }));
  svg.append(svgEl("circle", { class: "c-dot", cx: f(x(t0)), cy: f(y(series[0].p)), r: 3.5 }));

  const guide = svgEl("line", { class: "c-guide", y1: m.top, y2: m.top + ih, visibility: "hidden" });
  const guideDot = svgEl("circle", { class: "c-guide-dot", r: 3.5, visibility: "hidden" });
  svg.append(guide, guideDot);

  const idle = milestones(series);
  parts.readout.textContent = idle;
  const onMove = (event) => {
    const rect = svg.getBoundingClientRect();
    const px = ((event.clientX - rect.left) / rect.width) * width;
    const t = t0 + (Math.min(Math.max(px, m.left), m.left + iw) - m.left) / iw * (t1 - t0);
    const p = valueAt(series, t);
    setAttrs(guide, { x1: f(x(t)), x2: f(x(t)), visibility: "visible" });
    setAttrs(guideDot, { cx: f(x(t)), cy: f(y(p)), visibility: "visible" });
    parts.readout.textContent = `At ${fmtWhen(t, { seconds: false })} (in ${fmtDuration(t - serverNow())}): ${fmtPercent(p)} used`;
  };
  const onLeave = () => {
    guide.setAttribute("visibility", "hidden");
    guideDot.setAttribute("visibility", "hidden");
    parts.readout.textContent = idle;
  };
  svg.addEventListener("pointermove", onMove);
  svg.addEventListener("pointerdown", onMove);
  svg.addEventListener("pointerleave", onLeave);
  box.replaceChildren(svg);
}

// A step line: level, then a vertical drop at each release. Drops closer than a pixel are merged,
// so a week of small requests stays a short path.
function stepPath(series, x, y, f, t1) {
  let d = `M${f(x(series[0].at))} ${f(y(series[0].p))}`;
  let cx = x(series[0].at);
  let pendingY = null;
  for (const point of series.slice(1)) {
    const nx = x(point.at);
    if (nx - cx >= 0.75) {
      if (pendingY !== null) d += `V${f(pendingY)}`;
      d += `H${f(nx)}`;
      cx = nx;
    }
    pendingY = y(point.p);
  }
  if (pendingY !== null) d += `V${f(pendingY)}`;
  return `${d}H${f(x(t1))}`;
}

function milestones(series) {
  const start = series[0].p;
  if (start <= 0) return "Nothing in this window: the line stays at 0%.";
  const parts = [];
  for (const threshold of [100, WARNING_PERCENT, 50]) {
    if (start < threshold) continue;
    const point = series.find((s) => s.p < threshold);
    if (point) parts.push(`below ${threshold}% ${fmtWhen(point.at, { seconds: false })}`);
  }
  const empty = series.find((s) => s.p <= 0);
  if (empty) parts.push(`empty ${fmtWhen(empty.at, { seconds: false })}`);
  if (!parts.length) return "";
  const text = parts.join(" · ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function chartSummary(spec, series) {
  const start = series[0].p;
  const end = series[series.length - 1];
  if (start <= 0) return `${spec.title}: nothing used, nothing to release.`;
  return `${spec.title}: ${fmtPercent(start)} used now, falling to ${fmtPercent(end.p)} by ${fmtWhen(end.at, { seconds: false })} if nothing more is used.`;
}

// ---------------------------------------------------------------- activity

function renderActivity() {
  const root = $("activity");
  const cards = WINDOWS.map((spec) => {
    const card = el("article", { class: "card activity-card" },
      el("h3", { text: spec.activity }),
      el("p", { class: "sub", text: `Share of your ${spec.title.toLowerCase()} used by each model` }));
    if (!state.activity) {
      card.append(el("p", { class: "empty", text: "Activity isn't available right now." }));
      return card;
    }
    const rows = ((state.activity[spec.id] || {}).by_model || []).slice()
      .sort((a, b) => (Number(b.percent) || 0) - (Number(a.percent) || 0));
    if (!rows.length) {
      card.append(el("p", { class: "empty", text: "No requests in this window." }));
      return card;
    }
    const list = el("ul", { class: "model-list" });
    for (const row of rows) {
      const percent = Number(row.percent) || 0;
      const requests = Number(row.requests) || 0;
      const fill = el("div", { class: "model-bar-fill" });
      fill.style.width = `${Math.min(100, Math.max(0, percent))}%`;
      list.append(el("li", { class: "model-row" },
        el("span", { class: "model-name", text: String(row.model) }),
        el("span", { class: "model-percent", text: fmtPercent(percent) }),
        el("div", { class: "model-bar", "aria-hidden": "true" }, fill),
        el("span", { class: "model-requests", text: `${requests} ${requests === 1 ? "request" : "requests"} · ${fmtPercent(percent)} of the window` })));
    }
    card.append(list);
    return card;
  });
  root.replaceChildren(...cards);
}

// ---------------------------------------------------------------- connect your tools

function chosenModels() {
  const ids = (state.models || []).map((m) => m && m.id).filter((id) => typeof id === "string");
  const names = Object.fromEntries((state.models || []).filter((m) => m && m.id).map((m) => [m.id, m.display_name || m.id]));
  const main = ids.includes(DEFAULT_MODEL) ? DEFAULT_MODEL : ids.find((id) => id.includes("sonnet")) || ids[0] || DEFAULT_MODEL;
  return { main, ids: ids.length ? ids.slice(0, 12) : [DEFAULT_MODEL], names };
}

function toolSnippets(origin, key) {
  const { main, ids, names } = chosenModels();
  const opencodeModels = Object.fromEntries(ids.map((id) => [id, { name: names[id] || id }]));
  return [
    {
      id: "claude-code",
      label: "Claude Code",
      intro: [
        "Set two environment variables, then start Claude Code. The first time, it asks whether to use this API key: answer yes.",
        "To make it permanent, put the same two variables in Claude Code's settings file (on Windows: %USERPROFILE%\\.claude\\settings.json).",
      ],
      snippets: [
        { title: "Shell (macOS, Linux)", text: `export ANTHROPIC_BASE_URL=${origin}\nexport ANTHROPIC_API_KEY=${key}\nclaude` },
        { title: "PowerShell (Windows)", text: `$env:ANTHROPIC_BASE_URL = "${origin}"\n$env:ANTHROPIC_API_KEY = "${key}"\nclaude` },
        {
          title: "~/.claude/settings.json",
          text: JSON.stringify({ env: { ANTHROPIC_BASE_URL: origin, ANTHROPIC_API_KEY: key } }, null, 2),
        },
      ],
    },
    {
      id: "codex",
      label: "Codex CLI",
      intro: [
        "Codex speaks the OpenAI Responses API, which this gateway serves at /v1. Add a provider to its config and keep the key in an environment variable.",
      ],
      snippets: [
        {
          title: "~/.codex/config.toml",
          text: [
            `model = "${main}"`,
            `model_provider = "antex"`,
            "",
            "[model_providers.antex]",
            `name = "Antex"`,
            `base_url = "${origin}/v1"`,
            `env_key = "ANTEX_API_KEY"`,
            `wire_api = "responses"`,
          ].join("\n"),
        },
        { title: "Shell", text: `export ANTEX_API_KEY=${key}\ncodex` },
      ],
    },
    {
      id: "opencode",
      label: "OpenCode",
      intro: [
        "Add Antex as a provider in opencode.json (in your project, or ~/.config/opencode/opencode.json for every project). It uses the Anthropic Messages API.",
      ],
      snippets: [
        {
          title: "opencode.json",
          text: JSON.stringify({
            $schema: "https://opencode.ai/config.json",
            provider: {
              antex: {
                npm: "@ai-sdk/anthropic",
                name: "Antex",
                options: { baseURL: `${origin}/v1`, apiKey: key },
                models: opencodeModels,
              },
            },
            model: `antex/${main}`,
          }, null, 2),
        },
      ],
    },
    {
      id: "curl",
      label: "curl",
      intro: ["Any HTTP client works: the Anthropic Messages API and the OpenAI Chat Completions API, with either key header."],
      snippets: [
        {
          title: "Anthropic Messages: /v1/messages",
          text: [
            `curl ${origin}/v1/messages \\`,
            `  -H "x-api-key: ${key}" \\`,
            `  -H "anthropic-version: 2023-06-01" \\`,
            `  -H "content-type: application/json" \\`,
            `  -d '{`,
            `    "model": "${main}",`,
            `    "max_tokens": 1024,`,
            `    "messages": [{"role": "user", "content": "hello"}]`,
            `  }'`,
          ].join("\n"),
        },
        {
          title: "OpenAI Chat Completions: /v1/chat/completions",
          text: [
            `curl ${origin}/v1/chat/completions \\`,
            `  -H "Authorization: Bearer ${key}" \\`,
            `  -H "content-type: application/json" \\`,
            `  -d '{`,
            `    "model": "${main}",`,
            `    "messages": [{"role": "user", "content": "hello"}]`,
            `  }'`,
          ].join("\n"),
        },
        { title: "Your usage: /v1/usage", text: `curl ${origin}/v1/usage \\\n  -H "x-api-key: ${key}"` },
      ],
    },
  ];
}

let selectedTool = "claude-code";

function renderTools() {
  if (!state.key) return;
  const origin = window.location.origin;
  const shown = state.showKey ? state.key : maskKey(state.key);
  const real = toolSnippets(origin, state.key);
  const display = toolSnippets(origin, shown);
  const tabs = $("tool-tabs");
  const panels = $("tool-panels");
  const tabButtons = [];
  const panelNodes = [];

  display.forEach((tool, i) => {
    const tabId = `tab-${tool.id}`;
    const panelId = `panel-${tool.id}`;
    const selected = tool.id === selectedTool;
    const tab = el("button", {
      type: "button", class: "tab", role: "tab", id: tabId, "aria-controls": panelId,
      "aria-selected": selected ? "true" : "false", tabindex: selected ? "0" : "-1", text: tool.label,
    });
    tab.addEventListener("click", () => selectTool(tool.id));
    tab.addEventListener("keydown", (event) => onTabKey(event, i, display));
    tabButtons.push(tab);

    const panel = el("div", { class: "tab-panel", role: "tabpanel", id: panelId, "aria-labelledby": tabId, tabindex: "0" });
    panel.hidden = !selected;
    for (const line of tool.intro) panel.append(el("p", { text: line }));
    tool.snippets.forEach((snippet, j) => {
      const copy = el("button", { type: "button", class: "button button-quiet button-small copy", text: "Copy" });
      copy.setAttribute("aria-label", `Copy ${tool.label}: ${snippet.title}`);
      copy.addEventListener("click", () => copySnippet(copy, real[i].snippets[j].text));
      panel.append(el("div", { class: "snippet" },
        el("div", { class: "snippet-head" }, el("span", { class: "snippet-title", text: snippet.title }), copy),
        el("pre", {}, el("code", { text: snippet.text }))));
    });
    panelNodes.push(panel);
  });
  tabs.replaceChildren(...tabButtons);
  panels.replaceChildren(...panelNodes);
  $("base-url").textContent = origin;
  const toggle = $("toggle-key");
  toggle.setAttribute("aria-pressed", state.showKey ? "true" : "false");
  toggle.textContent = state.showKey ? "Hide key" : "Show key";
}

function selectTool(id, focus = false) {
  selectedTool = id;
  for (const tab of $("tool-tabs").children) {
    const selected = tab.id === `tab-${id}`;
    tab.setAttribute("aria-selected", selected ? "true" : "false");
    tab.tabIndex = selected ? 0 : -1;
    if (selected && focus) tab.focus();
  }
  for (const panel of $("tool-panels").children) panel.hidden = panel.id !== `panel-${id}`;
}

function onTabKey(event, index, tools) {
  const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tools.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  const next = (moves[event.key] + tools.length) % tools.length;
  selectTool(tools[next].id, true);
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Fall through to the selection-based copy.
    }
  }
  const area = el("textarea", { class: "offscreen", readonly: "", "aria-hidden": "true", tabindex: "-1" });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

async function copySnippet(button, text) {
  const ok = await copyText(text);
  button.dataset.copied = ok ? "true" : "false";
  button.textContent = ok ? "Copied" : "Select and copy";
  announce(ok ? "Copied to the clipboard, with your full key." : "Copying failed: select the text and copy it.");
  window.setTimeout(() => {
    button.textContent = "Copy";
    delete button.dataset.copied;
  }, 2000);
}

// ---------------------------------------------------------------- key form and controls

function validateKey(key) {
  if (!key) return "Paste your key first.";
  if (key.startsWith("sk-ant-")) return "That is an Anthropic key. Paste the Antex key you were given (it starts with sk_live_).";
  if (!key.startsWith("sk_live_")) return "Antex keys start with sk_live_.";
  if (/\s/.test(key)) return "The key has a space in it: paste it again, on its own.";
  return null;
}

function onSubmit(event) {
  event.preventDefault();
  const input = $("key-input");
  const key = input.value.trim();
  const problem = validateKey(key);
  const error = $("key-error");
  if (problem) {
    error.textContent = problem;
    error.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  error.hidden = true;
  input.removeAttribute("aria-invalid");
  hideNotice();
  state.key = key;
  state.models = null;
  load();
}

function forgetKey({ keepNotice = false } = {}) {
  state.generation += 1;
  window.clearTimeout(state.timer);
  state.timer = null;
  state.key = null;
  state.usage = null;
  state.activity = null;
  state.models = null;
  state.showKey = false;
  state.lastSuccess_ms = 0;
  storeKey(null);
  // Nothing that shows the key or its usage stays in the page.
  $("tool-tabs").replaceChildren();
  $("tool-panels").replaceChildren();
  $("activity").replaceChildren();
  $("windows").replaceChildren();
  state.cards = {};
  $("dashboard").hidden = true;
  $("who").hidden = true;
  $("key-card").hidden = false;
  if (!keepNotice) hideNotice();
  setBusy(false);
  const input = $("key-input");
  input.value = "";
  input.focus();
}

function tick() {
  const now = serverNow();
  for (const node of document.querySelectorAll(".countdown[data-at]")) {
    node.textContent = countdownText(Number(node.dataset.at));
  }
  renderUpdated();
  // A release or the end of a full window just happened: fetch the new state.
  const usage = state.usage;
  if (!usage || state.loading || !state.key || document.hidden) return;
  const due = WINDOWS.flatMap((spec) => [usage[spec.id]?.resets_at, usage[spec.id]?.available_at])
    .filter((at) => typeof at === "number" && at > usage.now);
  if (due.some((at) => now >= at + 1)) load();
}

function redrawCharts() {
  if (!state.usage) return;
  for (const spec of WINDOWS) {
    const parts = state.cards[spec.id];
    if (parts && Math.round(parts.chart.clientWidth) !== parts.lastWidth) drawChart(parts, spec, state.usage[spec.id] || {});
  }
}

function init() {
  $("key-form").addEventListener("submit", onSubmit);
  $("key-input").addEventListener("input", () => {
    $("key-error").hidden = true;
    $("key-input").removeAttribute("aria-invalid");
  });
  $("forget-key").addEventListener("click", () => {
    forgetKey();
    announce("Key forgotten.");
  });
  $("refresh").addEventListener("click", () => load());
  $("toggle-key").addEventListener("click", () => {
    state.showKey = !state.showKey;
    renderTools();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      window.clearTimeout(state.timer);
      state.timer = null;
    } else if (state.key && !state.loading) {
      load();
    }
  });
  let resizeFrame = 0;
  new ResizeObserver(() => {
    window.cancelAnimationFrame(resizeFrame);
    resizeFrame = window.requestAnimationFrame(redrawCharts);
  }).observe($("windows"));
  window.setInterval(tick, 1000);

  const key = storedKey();
  if (key) {
    state.key = key;
    renderWho();
    load();
  } else {
    $("key-card").hidden = false;
    $("key-input").focus();
  }
}

init();
