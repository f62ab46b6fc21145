"""`antex upstreams`: the configured pool, merged with a running server's live state (/healthz).

Never a key: only the name of the variable that holds it, and whether it is set. Proxy URLs are
shown without their credentials.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from datetime import datetime
from urllib.parse import urlsplit

import orjson

from antex.config import Config

LIVE_TIMEOUT_S = 2.0


def configured(cfg: Config) -> list[dict]:
    return [{"name": entry.name, "base_url": entry.base_url, "models": list(entry.models), "priority": entry.priority,
             "proxy": without_credentials(entry.proxy) or None, "api_key_env": entry.api_key_env,
             "key_set": bool(os.environ.get(entry.api_key_env, "").strip())} for entry in cfg.upstreams]


def live(base_url: str) -> list[dict] | None:
    """Each upstream's state from the server at `base_url`, or None when none answers there."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/healthz", timeout=LIVE_TIMEOUT_S) as response:
            body = orjson.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    upstreams = body.get("upstreams") if isinstance(body, dict) else None
    return upstreams if isinstance(upstreams, list) else None


def merged(cfg: Config, base_url: str) -> tuple[list[dict], bool]:
    """(rows, whether a live server answered): configuration, plus state/until/in_flight/last_error."""
    rows = configured(cfg)
    states = live(base_url)
    if states is not None:
        by_name = {state.get("name"): state for state in states if isinstance(state, dict)}
        for row in rows:
            state = by_name.get(row["name"], {})
            row.update({"state": state.get("state", "unknown"), "until": state.get("until"),
                        "cooling_models": state.get("models", []), "in_flight": state.get("in_flight"),
                        "last_error": state.get("last_error")})
    return rows, states is not None


def render(rows: list[dict], live_from: str | None) -> str:
    lines = []
    for row in rows:
        lines.append(f"{row['name']}  priority {row['priority']}  {row['base_url']}  models {', '.join(row['models'])}")
        key = "set" if row["key_set"] else "NOT SET"
        lines.append(f"  key from ${row['api_key_env']} ({key})" + (f"  via proxy {row['proxy']}" if row["proxy"] else ""))
        if "state" in row:
            state = row["state"]
            if row.get("until"):
                state += " until " + datetime.fromtimestamp(row["until"]).astimezone().strftime("%H:%M:%S")
            if row.get("cooling_models"):
                state += f" ({', '.join(row['cooling_models'])} models)"
            lines.append(f"  {state}, {row.get('in_flight') or 0} in flight"
                         + (f", last error: {row['last_error']}" if row.get("last_error") else ""))
    lines.append(f"Live state from {live_from}." if live_from else "No server answered: configuration only.")
    return "\n".join(lines)


def without_credentials(url: str) -> str:
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
