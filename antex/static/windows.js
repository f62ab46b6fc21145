// The two rolling windows every key has, as /v1/usage names them, and where "near the limit" starts.

export const WARNING_PERCENT = 80;

export const WINDOWS = [
  { id: "five_hour", title: "5-hour window", subtitle: "Rolling 5-hour total", seconds: 5 * 3600, activity: "Last 5 hours" },
  { id: "seven_day", title: "Weekly window", subtitle: "Rolling 7-day total", seconds: 7 * 86400, activity: "Last 7 days" },
];
