// The gateway's clock as seen from this browser: every "now" on the page is the server's.
//
// /v1/usage says what time it is on the gateway (`now`, Unix seconds); countdowns and charts use
// that, so a browser whose clock is off still counts down to the right second.

let skew_s = 0; // server clock minus browser clock

export function syncClock(serverNow_s) {
  skew_s = Number(serverNow_s) ? Number(serverNow_s) - Date.now() / 1000 : 0;
}

export function serverNow() {
  return Date.now() / 1000 + skew_s;
}
