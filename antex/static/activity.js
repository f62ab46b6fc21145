// Recent activity: per window, requests per model and the share of the window each accounts for.
// Shares only, never credits: people see percentages.

import { $, el } from "./dom.js";
import { fmtPercent } from "./format.js";
import { WINDOWS } from "./windows.js";

// `activity` is a /v1/usage/activity body, or null when it could not be read.
export function renderActivity(activity) {
  $("activity").replaceChildren(...WINDOWS.map((spec) => activityCard(spec, activity)));
}

function activityCard(spec, activity) {
  const card = el("article", { class: "card activity-card" },
    el("h3", { text: spec.activity }),
    el("p", { class: "sub", text: `Share of your ${spec.title.toLowerCase()} used by each model` }));
  if (!activity) {
    card.append(el("p", { class: "empty", text: "Activity isn't available right now." }));
    return card;
  }
  const rows = ((activity[spec.id] || {}).by_model || []).slice()
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
}
