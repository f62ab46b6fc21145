// The gateway's API as the dashboard uses it: /v1/usage, /v1/usage/activity and /v1/models, read
// with the person's key, and what to tell the person when a call fails.

export class GatewayError extends Error {
  constructor(kind, status, message) {
    super(message || kind);
    this.kind = kind; // "network", "bad_response", "http" or the error type the server sent
    this.status = status;
    this.serverMessage = message;
  }
}

// GET a JSON object from this origin. The key goes in a header, never in the URL, and no cookie
// or referrer goes with it. Anything but a JSON object with a 2xx status throws a GatewayError.
async function getJson(path, key) {
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
    // {"type": "error", "error": {"type": "authentication_error", "message": "..."}}
    const error = (body && typeof body.error === "object" && body.error) || {};
    const message = typeof error.message === "string" ? error.message : null;
    throw new GatewayError(typeof error.type === "string" ? error.type : "http", response.status, message);
  }
  if (!body || typeof body !== "object") throw new GatewayError("bad_response", response.status, null);
  return body;
}

// {"now": 1733140000, "status": "allowed", "key": {...}, "five_hour": {...}, "seven_day": {...}}
export const fetchUsage = (key) => getJson("/v1/usage", key);

// {"five_hour": {"by_model": [{"model": "claude-sonnet-4-6", "requests": 5, "percent": 62.5}]}, ...}
export const fetchActivity = (key) => getJson("/v1/usage/activity", key);

// The models the key may use, newest first: [{"id": "claude-sonnet-4-6", "display_name": "Claude Sonnet 4.6"}]
export async function fetchModels(key) {
  const body = await getJson("/v1/models", key);
  if (!Array.isArray(body.data)) throw new GatewayError("bad_response", 200, null);
  return body.data.filter((m) => m && typeof m.id === "string");
}

export function isWrongKey(err) {
  return err.status === 401 || err.kind === "authentication_error";
}

// {title, text, kind?} for the notice at the top of the page.
export function describeError(err, retry_s) {
  const retry = `Trying again in ${retry_s} s.`;
  if (err.kind === "network") {
    return { title: "Can't reach the gateway.", text: `Check your connection, or whether the gateway is running. ${retry}` };
  }
  if (isWrongKey(err)) {
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
