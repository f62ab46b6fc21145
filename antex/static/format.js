// How numbers and times are written: percentages, clock times in the browser's time zone, and
// durations for countdowns.

import { serverNow } from "./clock.js";

export function round1(value) {
  return Math.round(value * 10) / 10;
}

// 42.5 -> "42.5%", 30 -> "30%", 0.04 -> "<0.1%": one decimal at most, none when it is zero.
export function fmtPercent(value) {
  const v = Number(value) || 0;
  const r = round1(v);
  if (v > 0 && r === 0) return "<0.1%";
  return `${Number.isInteger(r) ? r.toFixed(0) : r.toFixed(1)}%`;
}

export const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
export const shortClockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
export const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
export const weekdayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short" });
export const weekdayDayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric" });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });

function dayIndex(date) {
  return Math.floor(Date.UTC(date.getFullYear(), date.getMonth(), date.getDate()) / 86400000);
}

// "today 14:06:40", "tomorrow 09:12:03", "Tue 2 Dec, 09:12:03" in the browser's time zone.
export function fmtWhen(ts, { seconds = true, capital = false } = {}) {
  const date = new Date(ts * 1000);
  const clock = (seconds ? clockFormat : shortClockFormat).format(date);
  const days = dayIndex(date) - dayIndex(new Date(serverNow() * 1000));
  if (days === 0) return `${capital ? "Today" : "today"} ${clock}`;
  if (days === 1) return `${capital ? "Tomorrow" : "tomorrow"} ${clock}`;
  return `${dayFormat.format(date)}, ${clock}`;
}

// 4380 -> "1 h 13 min 00 s", 190000 -> "2 d 4 h 46 min"
export function fmtDuration(seconds) {
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

// "in 1 h 13 min 00 s", or "now" once the moment has passed.
export function countdownText(at) {
  const left = at - serverNow();
  return left > 0 ? `in ${fmtDuration(left)}` : "now";
}
