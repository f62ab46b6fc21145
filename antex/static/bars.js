// The window cards: one per rolling window, with the percentage bar, its status, when the next
// usage leaves the window, when a full window takes requests again, and the release chart.

import { drawChart } from "./chart.js";
import { $, el } from "./dom.js";
import { countdownText, fmtPercent, fmtWhen, fullFormat, round1 } from "./format.js";
import { WARNING_PERCENT, WINDOWS } from "./windows.js";

const STATUS_TEXT = { allowed: "OK", allowed_warning: "Near the limit", rejected: "Full" };
const STATUS_LEVEL = { allowed: "ok", allowed_warning: "warning", rejected: "full" };
const LEVEL_TEXT = { ok: "OK", warning: "Near the limit", full: "Full" };
const OVERALL_TEXT = { ok: "Requests accepted", warning: "Near the limit", full: "Full: requests paused" };

function levelOf(percent) {
  if (percent >= 100) return "full";
  if (percent >= WARNING_PERCENT) return "warning";
  return "ok";
}

// Draw both windows of a /v1/usage body. `cards` keeps each window's card between refreshes
// (window id -> its parts); an empty object starts afresh.
export function renderUsage(usage, cards) {
  let worst = "ok";
  for (const spec of WINDOWS) {
    const w = usage[spec.id] || { used_percent: 0, schedule: [] };
    const level = renderWindow(windowCard(spec, cards), spec, w, usage.now);
    if (level === "full" || (level === "warning" && worst === "ok")) worst = level;
  }
  const overall = STATUS_LEVEL[usage.status] || worst;
  const pill = $("overall-status");
  pill.dataset.level = overall;
  pill.textContent = OVERALL_TEXT[overall];
  // max_concurrent 0: nothing bounds how far requests in flight take a window past 100 %.
  $("no-cap").hidden = !(usage.key && usage.key.max_concurrent === 0);
}

// Redraw the charts whose box changed width (the page was resized).
export function redrawCharts(usage, cards) {
  for (const spec of WINDOWS) {
    const parts = cards[spec.id];
    if (parts && Math.round(parts.chart.clientWidth) !== parts.lastWidth) {
      drawChart(parts, spec, usage[spec.id] || {}, usage.now);
    }
  }
}

// Count every countdown on the page down to the current second.
export function tickCountdowns() {
  for (const node of document.querySelectorAll(".countdown[data-at]")) {
    node.textContent = countdownText(Number(node.dataset.at));
  }
}

// The times at which a window's numbers change on their own: time to ask the gateway again.
export function dueTimes(usage) {
  return WINDOWS.flatMap((spec) => [usage[spec.id]?.resets_at, usage[spec.id]?.available_at])
    .filter((at) => typeof at === "number" && at > usage.now);
}

function windowCard(spec, cards) {
  if (cards[spec.id]) return cards[spec.id];
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
  cards[spec.id] = parts;
  return parts;
}

function renderWindow(parts, spec, w, now) {
  const percent = Number(w.used_percent) || 0;
  const level = STATUS_LEVEL[w.status] || levelOf(percent);
  const statusText = STATUS_TEXT[w.status] || LEVEL_TEXT[level];

  parts.card.dataset.level = level;
  parts.status.dataset.level = level;
  parts.status.textContent = statusText;
  parts.percent.textContent = fmtPercent(percent);
  parts.fill.style.width = `${Math.min(100, Math.max(0, percent))}%`;
  parts.meter.setAttribute("aria-valuenow", String(Math.min(100, round1(percent))));
  parts.meter.setAttribute("aria-valuetext", `${fmtPercent(percent)} used, ${statusText.toLowerCase()}`);

  renderRelease(parts.release, w);
  renderAvailable(parts.available, w, percent);
  drawChart(parts, spec, w, now);
  return level;
}

function timeElement(ts) {
  const date = new Date(ts * 1000);
  return el("time", { class: "time-value", datetime: date.toISOString(), title: fullFormat.format(date), text: fmtWhen(ts, { capital: true }) });
}

function countdownElement(ts) {
  return el("span", { class: "countdown", "data-at": ts, text: countdownText(ts) });
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
