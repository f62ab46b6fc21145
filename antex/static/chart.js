// The release chart: an SVG step line of how a window empties if nothing more is used, drawn from
// the window's `schedule` in /v1/usage, with the 100% limit, "available again", and a readout that
// follows the pointer.

import { serverNow } from "./clock.js";
import { setAttrs, svgEl } from "./dom.js";
import { fmtDuration, fmtPercent, fmtWhen, shortClockFormat, weekdayDayFormat, weekdayFormat } from "./format.js";
import { WARNING_PERCENT } from "./windows.js";

// Draw window `w` (a /v1/usage window) into parts.chart, as the gateway saw it at `now`.
export function drawChart(parts, spec, w, now) {
  const box = parts.chart;
  const width = Math.max(240, Math.round(box.clientWidth || 320));
  parts.lastWidth = width;
  const height = width < 420 ? 150 : 172;
  const m = { top: 18, right: 12, bottom: 24, left: 40 };
  const iw = width - m.left - m.right;
  const ih = height - m.top - m.bottom;
  const t0 = Number(now) || serverNow();
  const t1 = t0 + spec.seconds;
  const series = stepSeries(w, t0, t1);
  const top = Math.max(100, ...series.map((s) => s.p));
  const yMax = top <= 100 ? 100 : Math.ceil(top / 25) * 25;
  const x = (t) => m.left + ((t - t0) / (t1 - t0)) * iw;
  const y = (p) => m.top + ih - (Math.max(0, p) / yMax) * ih;
  const f = (n) => n.toFixed(1);
  const text = (attrs, content) => {
    const node = svgEl("text", attrs);
    node.textContent = content;
    return node;
  };

  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": chartSummary(spec, series) });

  for (const p of [0, 50]) {
    svg.append(svgEl("line", { class: "c-grid", x1: m.left, x2: width - m.right, y1: f(y(p)), y2: f(y(p)) }));
    svg.append(text({ class: "c-label", x: m.left - 6, y: f(y(p) + 4), "text-anchor": "end" }, `${p}%`));
  }
  for (const tick of timeTicks(spec, t0, t1, iw)) {
    const tx = x(tick.t);
    svg.append(svgEl("line", { class: "c-grid", x1: f(tx), x2: f(tx), y1: m.top, y2: m.top + ih }));
    if (tx - m.left < 34) continue; // keep clear of the "now" label
    const anchor = width - m.right - tx < 16 ? "end" : "middle";
    svg.append(text({ class: "c-label", x: f(tx), y: height - 6, "text-anchor": anchor }, tick.label));
  }
  svg.append(text({ class: "c-label", x: m.left, y: height - 6, "text-anchor": "start" }, "now"));
  svg.append(svgEl("line", { class: "c-axis", x1: m.left, x2: width - m.right, y1: f(y(0)), y2: f(y(0)) }));

  // The line at 100%: the limit. Above it, requests are refused.
  svg.append(svgEl("line", { class: "c-limit", x1: m.left, x2: width - m.right, y1: f(y(100)), y2: f(y(100)) }));
  svg.append(text({ class: "c-label-limit", x: m.left - 6, y: f(y(100) + 4), "text-anchor": "end" }, "100%"));
  if (yMax > 100) {
    svg.append(text({ class: "c-label", x: m.left - 6, y: f(y(yMax) + 4), "text-anchor": "end" }, `${yMax}%`));
  }
  if (w.available_at) {
    const ax = x(Math.min(Math.max(w.available_at, t0), t1));
    svg.append(svgEl("line", { class: "c-marker", x1: f(ax), x2: f(ax), y1: m.top, y2: m.top + ih }));
    const anchor = ax > width - m.right - 40 ? "end" : ax < m.left + 40 ? "start" : "middle";
    svg.append(text({ class: "c-label-marker", x: f(ax), y: m.top - 4, "text-anchor": anchor }, "available again"));
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

// "Below 80% today 16:40 · below 50% today 18:10 · empty today 19:30", under the chart.
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
