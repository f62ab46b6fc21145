// Antex dashboard, the entry point: holds the page's state, loads /v1/usage (then activity and the
// model list) with the person's key, refreshes on a timer and when a window's numbers change on
// their own, and wires the key form and the buttons. The other modules draw; this one decides when.

import { describeError, fetchActivity, fetchModels, fetchUsage, GatewayError, isWrongKey } from "./api.js";
import { renderActivity } from "./activity.js";
import { dueTimes, redrawCharts, renderUsage, tickCountdowns } from "./bars.js";
import { serverNow, syncClock } from "./clock.js";
import { clearTools, renderTools } from "./connect.js";
import { $, announce } from "./dom.js";
import { clockFormat, fmtDuration, fmtPercent, shortClockFormat } from "./format.js";
import { maskKey, storedKey, storeKey, validateKey } from "./key.js";
import { WINDOWS } from "./windows.js";

const REFRESH_MS = 15000;
const STALE_AFTER_S = 45;

const state = {
  key: null,
  generation: 0, // bumped on every load and on forget: a stale answer is dropped
  timer: null,
  loading: false,
  usage: null,
  models: null, // the /v1/models list, read once per key
  lastSuccess_ms: 0,
  showKey: false,
  cards: {}, // window id -> its card's parts (bars.js)
};

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
    const usage = await fetchUsage(key);
    const [activity, models] = await Promise.all([
      settle(fetchActivity(key)),
      state.models ? null : settle(fetchModels(key)),
    ]);
    if (generation !== state.generation) return;
    onUsage(usage, activity.value || null, models && models.value);
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
  syncClock(usage.now);
  state.lastSuccess_ms = Date.now();
  if (models) state.models = models;

  storeKey(state.key);
  hideNotice();
  $("key-card").hidden = true;
  $("dashboard").hidden = false;
  renderWho();
  renderUsage(usage, state.cards);
  renderUpdated();
  renderActivity(activity);
  if (first || models) renderTools(state);
  if (first) {
    $("key-input").value = "";
    announce(`Usage loaded: ${WINDOWS.map((w) => `${w.title} ${fmtPercent(usage[w.id].used_percent)} used`).join(", ")}.`);
  }
}

function onLoadError(err) {
  const message = describeError(err, REFRESH_MS / 1000);
  if (isWrongKey(err)) {
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

// ---------------------------------------------------------------- key form and controls

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
  state.models = null;
  state.showKey = false;
  state.lastSuccess_ms = 0;
  storeKey(null);
  // Nothing that shows the key or its usage stays in the page.
  clearTools();
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

// Every second: count down, age the "Updated" line, and reload once a release or the end of a
// full window has passed.
function tick() {
  tickCountdowns();
  renderUpdated();
  const usage = state.usage;
  if (!usage || state.loading || !state.key || document.hidden) return;
  const now = serverNow();
  if (dueTimes(usage).some((at) => now >= at + 1)) load();
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
    if (state.key) renderTools(state);
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
    resizeFrame = window.requestAnimationFrame(() => {
      if (state.usage) redrawCharts(state.usage, state.cards);
    });
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
