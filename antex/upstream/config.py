"""The upstream pool's settings: `[upstream]` (shared timeouts and limits) and the `[[upstreams]]`
entries, checked at start; a bare `[upstream]` is a pool of one."""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from antex.catalog import Model
from antex.config_checks import ConfigError, base_url, strings


@dataclass(frozen=True)
class UpstreamConfig:
    base_url: str
    api_key_env: str
    connect_timeout_s: float
    idle_timeout_s: float
    on_client_disconnect: str
    max_attempts: int
    failover_deadline_s: float
    max_connections: int
    keepalive_s: float


@dataclass(frozen=True)
class UpstreamEntry:
    """One `[[upstreams]]` entry: where to send, with which key (named, never held), for which models."""

    name: str
    base_url: str
    api_key_env: str
    models: tuple[str, ...]
    priority: int
    proxy: str

    def serves(self, model_id: str) -> bool:
        return any(fnmatch.fnmatchcase(model_id, pattern) for pattern in self.models)


UPSTREAM_ENTRY = {"name": (str,), "base_url": (str,), "api_key_env": (str,), "models": (list,), "priority": (int,),
                  "proxy": (str,)}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROXY_SCHEMES = ("http", "socks5", "socks5h", "socks4")


def upstream_entries(document: dict[str, Any], models: dict[str, Model], source: str) -> tuple[UpstreamEntry, ...]:
    """The pool: `[[upstreams]]` entries, or the one `[upstream]` names (base_url + api_key_env, as before)."""
    tables = document.get("upstreams")
    if tables is None:
        upstream = document["upstream"]
        entries = (UpstreamEntry("main", upstream["base_url"], upstream["api_key_env"], ("*",), 1, ""),)
    else:
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            raise ConfigError(f"{source}: [[upstreams]]: must be one or more [[upstreams]] tables")
        entries = tuple(_upstream_entry(table, index, source) for index, table in enumerate(tables))
    names = [entry.name for entry in entries]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f'{source}: [[upstreams]] name: "{name}" is used by more than one entry')
    for model_id in models:
        if not any(entry.serves(model_id) for entry in entries):
            raise ConfigError(f'{source}: [models."{model_id}"]: no [[upstreams]] entry serves it (check their models globs)')
    return entries


def _upstream_entry(table: dict[str, Any], index: int, source: str) -> UpstreamEntry:
    label = f"[[upstreams]] #{index + 1}"
    if isinstance(table.get("name"), str) and table["name"]:
        label = f'[[upstreams]] "{table["name"]}"'
    for key, value in table.items():
        if key not in UPSTREAM_ENTRY:
            raise ConfigError(f"{source}: {label} {key}: unknown setting (known: {', '.join(UPSTREAM_ENTRY)})")
        if isinstance(value, bool) or not isinstance(value, UPSTREAM_ENTRY[key]):
            raise ConfigError(f"{source}: {label} {key}: must be {UPSTREAM_ENTRY[key][0].__name__}, not {type(value).__name__}")
    missing = [key for key in ("name", "base_url", "api_key_env") if key not in table]
    if missing:
        raise ConfigError(f"{source}: {label}: missing {', '.join(missing)}")
    problems = {
        "name": None if _NAME.match(table["name"]) else "must be letters, digits, '_', '.' or '-' (up to 64)",
        "base_url": base_url(table["base_url"]),
        "api_key_env": None if _ENV_NAME.match(table["api_key_env"]) else "must be an environment variable name",
        "priority": None if table.get("priority", 1) >= 0 else "must be 0 or more",
        "proxy": _proxy_url(table.get("proxy", "")),
    }
    for key, problem in problems.items():
        if problem:
            shown = "" if key == "proxy" else f" (got {table.get(key)!r})"  # a proxy URL may hold a password
            raise ConfigError(f"{source}: {label} {key}: {problem}{shown}")
    models = strings(table.get("models", ["*"]), f"{label} models", source)
    if not models:
        raise ConfigError(f"{source}: {label} models: must name at least one model glob")
    return UpstreamEntry(table["name"], table["base_url"], table["api_key_env"], models, table.get("priority", 1),
                         table.get("proxy", ""))


def _proxy_url(value: str) -> str | None:
    if not value:
        return None
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        port = None
    else:
        if url.scheme in PROXY_SCHEMES and url.hostname and port:
            return None
    return f"must be empty or a proxy URL such as http://user:pass@host:3128 or socks5://host:1080 ({', '.join(PROXY_SCHEMES)})"
