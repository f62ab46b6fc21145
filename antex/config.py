"""TOML configuration -> frozen dataclasses, validated once at start with clear errors.

The defaults are `config.example.toml` itself (packaged beside this module), so the documented
defaults and the running defaults can never drift apart. An operator's file is merged over them.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A bad configuration: says which file, which key and what is wrong."""


@dataclass(frozen=True)
class Rates:
    """Credits per million tokens, by token kind; and credits per use of a server tool."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    # Per use; a model table that names neither (an operator's own model) is charged Anthropic's
    # published prices at the shipped scale of one credit per cent: $10 per 1,000 searches, fetches free.
    web_search: float = 1.0  # per search (usage.server_tool_use.web_search_requests)
    web_fetch: float = 0.0  # per fetch (usage.server_tool_use.web_fetch_requests)


RATE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "web_search", "web_fetch")


@dataclass(frozen=True)
class Model:
    id: str
    display_name: str
    tier: str
    aliases: tuple[str, ...]
    rates: Rates
    created_at: str  # release date, YYYY-MM-DD
    max_output_tokens: int | None = None  # the model's own output limit (None: unknown, the plan's cap alone)


@dataclass(frozen=True)
class Limits:
    """A plan's limits; also the shape of a key's effective limits after its overrides."""

    credits_5h: float
    credits_7d: float
    models: tuple[str, ...]
    max_tokens: int
    max_ips: int
    max_concurrent: int
    max_tokens_over: str = "lower"  # a larger max_tokens: "lower" it to the cap, or "refuse" it
    # model ID -> allowed: glob matching on every request would cost more than the rest of admission
    _allowed: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def allows(self, model_id: str) -> bool:
        allowed = self._allowed.get(model_id)
        if allowed is None:
            allowed = self._allowed[model_id] = any(fnmatch.fnmatchcase(model_id, pattern) for pattern in self.models)
        return allowed


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    database: str
    instance_id: str
    journal_dir: str
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    forwarded_header: str  # "x-forwarded-for" or "forwarded": the one header the trusted proxy sets
    max_body_bytes: int
    shutdown_grace_s: float
    body_timeout_s: float
    body_idle_timeout_s: float
    max_buffered_body_bytes: int
    max_buffered_body_bytes_per_key: int
    max_header_bytes: int
    max_headers: int
    head_timeout_s: float
    max_connections: int
    max_connections_per_ip: int


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


@dataclass(frozen=True)
class QuarantineConfig:
    ip_limit_hits: int
    within_s: float


@dataclass(frozen=True)
class ResponsesConfig:
    """Stored responses (POST /v1/responses with store): how long, and how much per key."""

    retention_s: float  # after the response was made or last continued
    max_per_key: int
    max_bytes_per_key: int


@dataclass(frozen=True)
class EventsConfig:
    """Raw credit events: how long they are kept before whole days are rolled up."""

    retention_s: float


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    upstream: UpstreamConfig
    quarantine: QuarantineConfig
    models: dict[str, Model]
    plans: dict[str, Limits]
    responses: ResponsesConfig
    events: EventsConfig
    source: str = "<defaults>"
    upstreams: tuple[UpstreamEntry, ...] = ()  # the pool; [upstream] alone makes it one entry
    _lookup: dict[str, Model] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for model in self.models.values():
            self._lookup[model.id] = model
            for alias in model.aliases:
                self._lookup[alias] = model

    def resolve_model(self, name: str) -> Model | None:
        """The model a request names: its ID, a dated ID, an alias, or any of those with `[1m]`."""
        found = self._lookup.get(name)
        if found is not None:
            return found
        base = _DATE_SUFFIX.sub("", _CONTEXT_SUFFIX.sub("", name))
        return self._lookup.get(base)


_CONTEXT_SUFFIX = re.compile(r"\[[0-9a-z]+\]$")
_DATE_SUFFIX = re.compile(r"-\d{8}$")

LIMIT_FIELDS = ("credits_5h", "credits_7d", "models", "max_tokens", "max_ips", "max_concurrent", "max_tokens_over")


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _database(value: str) -> str | None:
    if not value.strip():
        return "must be an SQLite file path or a PostgreSQL URL (postgresql://user@host/antex)"
    if value.startswith(("postgresql:", "postgres:")) and not value.startswith(("postgresql://", "postgres://")):
        return "a PostgreSQL URL starts with postgresql:// or postgres://"
    return None


def _instance_id(value: str) -> str | None:
    if value and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        return "must be 1 to 64 letters, digits, dots, dashes or underscores"
    return None


def _header_bytes(value: int) -> str | None:
    return None if value >= 1024 else "must be at least 1024 (real clients send headers of several hundred bytes)"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number from 0 to 65535"


FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")


def _forwarded_header(value: str) -> str | None:
    return None if value in FORWARDED_HEADERS else 'must be "x-forwarded-for" or "forwarded"'


def _base_url(value: str) -> str | None:
    return None if re.match(r"^https?://[^/\s]+", value) else "must be an http:// or https:// URL"


def _disconnect_mode(value: str) -> str | None:
    return None if value in ("finish", "cancel") else 'must be "finish" or "cancel"'


def _date(value: str) -> str | None:
    return None if re.match(r"^\d{4}-\d{2}-\d{2}$", value) else "must be a date such as 2025-09-29"


def _tier(value: str) -> str | None:
    return None if value in ("haiku", "sonnet", "opus") else 'must be "haiku", "sonnet" or "opus"'


MAX_TOKENS_OVER = ("lower", "refuse")


def _over_cap(value: str) -> str | None:
    return None if value in MAX_TOKENS_OVER else 'must be "lower" or "refuse"'


_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(value: str) -> float:
    """"3d" -> 259200.0 (units s, m, h, d); the caller checked it with _duration."""
    number, unit = _DURATION.match(value).groups()
    return float(int(number) * _DURATION_UNITS_S[unit])


def _duration(value: str) -> str | None:
    match = _DURATION.match(value)
    if match is None or int(match.group(1)) == 0:
        return 'must be a duration such as "90m", "12h" or "3d"'
    return None


def check_events_retention(value: str) -> str | None:
    """What is wrong with an [events] retention (or `antex prune --retention`), or None."""
    problem = _duration(value)
    if problem is None and duration_s(value) <= 7 * 86400:
        problem = 'must be more than 7 days, such as "90d" (the weekly window reads raw events)'
    return problem


NUMBER = (int, float)
# section -> key -> (accepted types, optional check returning an error or None)
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "server": {
        "host": ((str,), None),
        "port": ((int,), _port),
        "database": ((str,), _database),
        "instance_id": ((str,), _instance_id),
        "journal_dir": ((str,), None),
        "trusted_proxies": ((list,), None),
        "forwarded_header": ((str,), _forwarded_header),
        "max_body_bytes": ((int,), _positive),
        "shutdown_grace_s": (NUMBER, _not_negative),
        "body_timeout_s": (NUMBER, _positive),
        "body_idle_timeout_s": (NUMBER, _positive),
        "max_buffered_body_bytes": ((int,), _positive),
        "max_buffered_body_bytes_per_key": ((int,), _positive),
        "max_header_bytes": ((int,), _header_bytes),
        "max_headers": ((int,), _positive),
        "head_timeout_s": (NUMBER, _positive),
        "max_connections": ((int,), _positive),
        "max_connections_per_ip": ((int,), _positive),
    },
    "upstream": {
        "base_url": ((str,), _base_url),
        "api_key_env": ((str,), None),
        "connect_timeout_s": (NUMBER, _positive),
        "idle_timeout_s": (NUMBER, _positive),
        "on_client_disconnect": ((str,), _disconnect_mode),
        "max_attempts": ((int,), _positive),
        "failover_deadline_s": (NUMBER, _positive),
        "max_connections": ((int,), _positive),
        "keepalive_s": (NUMBER, _positive),
    },
    "quarantine": {
        "ip_limit_hits": ((int,), _positive),
        "within_s": (NUMBER, _positive),
    },
    "responses": {
        "retention": ((str,), _duration),
        "max_per_key": ((int,), _positive),
        "max_bytes_per_key": ((int,), _positive),
    },
    "events": {
        "retention": ((str,), check_events_retention),
    },
    "models.*": {
        "display_name": ((str,), None),
        "created_at": ((str,), _date),
        "tier": ((str,), _tier),
        "aliases": ((list,), None),
        "input": (NUMBER, _not_negative),
        "output": (NUMBER, _not_negative),
        "cache_write_5m": (NUMBER, _not_negative),
        "cache_write_1h": (NUMBER, _not_negative),
        "cache_read": (NUMBER, _not_negative),
        "web_search": (NUMBER, _not_negative),
        "web_fetch": (NUMBER, _not_negative),
        "max_output_tokens": ((int,), _positive),
    },
    "plans.*": {
        "credits_5h": (NUMBER, _positive),
        "credits_7d": (NUMBER, _positive),
        "models": ((list,), None),
        "max_tokens": ((int,), _positive),
        "max_ips": ((int,), _not_negative),
        "max_concurrent": ((int,), _not_negative),
        "max_tokens_over": ((str,), _over_cap),
    },
}
# Settings a table may leave out (an operator's own model or plan written before they existed).
OPTIONAL = {"max_output_tokens", "max_tokens_over", "web_search", "web_fetch"}


def default_document() -> dict[str, Any]:
    """The parsed `config.example.toml`: the defaults, documented and in force."""
    text = resources.files("antex").joinpath("config.example.toml").read_text("utf-8")
    return tomllib.loads(text)


def load(path: str | Path | None) -> Config:
    """Read `path` (or nothing: the defaults) into a validated Config; raises ConfigError."""
    document = default_document()
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the file: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{source}: the file is not UTF-8 text") from None
        try:
            overrides = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        document = merge_documents(document, overrides)
    return from_document(document, source)


def merge_documents(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_documents(merged[key], value)
        else:
            merged[key] = value
    return merged


def from_document(document: dict[str, Any], source: str = "<defaults>") -> Config:
    """Validate a parsed TOML document (defaults already merged in)."""
    for section in document:
        if section not in ("server", "upstream", "upstreams", "quarantine", "responses", "events", "models", "plans"):
            raise ConfigError(f"{source}: [{section}]: unknown section")
    checked = {name: _section(document, name, name, source)
               for name in ("server", "upstream", "quarantine", "responses", "events")}
    models = {
        model_id: _model(model_id, _section(document["models"], model_id, f'models."{model_id}"', source, "models.*"))
        for model_id in _table(document, "models", source)
    }
    plans = {
        name: _plan(_section(document["plans"], name, f"plans.{name}", source, "plans.*"), f"plans.{name}", source)
        for name in _table(document, "plans", source)
    }
    if not models:
        raise ConfigError(f"{source}: [models]: at least one model is needed")
    if not plans:
        raise ConfigError(f"{source}: [plans]: at least one plan is needed")
    _check_aliases(models, source)
    server = checked["server"]
    return Config(
        server=ServerConfig(
            host=server["host"],
            port=server["port"],
            database=server["database"],
            instance_id=server["instance_id"],
            journal_dir=server["journal_dir"],
            trusted_proxies=_networks(server["trusted_proxies"], source),
            forwarded_header=server["forwarded_header"],
            max_body_bytes=server["max_body_bytes"],
            shutdown_grace_s=float(server["shutdown_grace_s"]),
            body_timeout_s=float(server["body_timeout_s"]),
            body_idle_timeout_s=float(server["body_idle_timeout_s"]),
            max_buffered_body_bytes=server["max_buffered_body_bytes"],
            max_buffered_body_bytes_per_key=server["max_buffered_body_bytes_per_key"],
            max_header_bytes=server["max_header_bytes"],
            max_headers=server["max_headers"],
            head_timeout_s=float(server["head_timeout_s"]),
            max_connections=server["max_connections"],
            max_connections_per_ip=server["max_connections_per_ip"],
        ),
        upstream=UpstreamConfig(**{k: v for k, v in checked["upstream"].items()}),
        quarantine=QuarantineConfig(**checked["quarantine"]),
        responses=ResponsesConfig(duration_s(checked["responses"]["retention"]), checked["responses"]["max_per_key"],
                                  checked["responses"]["max_bytes_per_key"]),
        events=EventsConfig(duration_s(checked["events"]["retention"])),
        models=models,
        plans=plans,
        source=source,
        upstreams=upstream_entries(document, models, source),
    )


def _table(document: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    table = document.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}]: must be a table")
    return table


def _section(parent: dict[str, Any], name: str, label: str, source: str, schema_name: str | None = None) -> dict[str, Any]:
    table = parent.get(name)
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{label}]: must be a table")
    schema = SCHEMA[schema_name or name]
    for key, value in table.items():
        if key not in schema:
            raise ConfigError(f"{source}: [{label}] {key}: unknown setting (known: {', '.join(schema)})")
        types, check = schema[key]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{source}: [{label}] {key}: must be {wanted}, not {type(value).__name__}")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{source}: [{label}] {key}: {problem} (got {value!r})")
    missing = [key for key in schema if key not in table and key not in OPTIONAL]
    if missing:
        raise ConfigError(f"{source}: [{label}]: missing {', '.join(missing)}")
    return table


def _strings(value: list[Any], where: str, source: str) -> tuple[str, ...]:
    if not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{source}: {where}: must be a list of non-empty strings")
    return tuple(value)


def _model(model_id: str, table: dict[str, Any]) -> Model:
    rates = Rates(**{k: float(table[k]) for k in RATE_FIELDS if k in table})
    return Model(model_id, table["display_name"], table["tier"], tuple(table["aliases"]), rates, table["created_at"],
                 table.get("max_output_tokens"))


def _plan(table: dict[str, Any], label: str, source: str) -> Limits:
    return Limits(
        credits_5h=float(table["credits_5h"]),
        credits_7d=float(table["credits_7d"]),
        models=_strings(table["models"], f"[{label}] models", source),
        max_tokens=table["max_tokens"],
        max_ips=table["max_ips"],
        max_concurrent=table["max_concurrent"],
        max_tokens_over=table.get("max_tokens_over", "lower"),
    )


def _check_aliases(models: dict[str, Model], source: str) -> None:
    owner = {model_id: model_id for model_id in models}  # IDs first: the error names the alias
    for model in models.values():
        for alias in model.aliases:
            if not isinstance(alias, str) or not alias:
                raise ConfigError(f'{source}: [models."{model.id}"] aliases: must be non-empty strings')
            other = owner.setdefault(alias, model.id)
            if other != model.id:
                what = "the ID" if alias == other else "an alias"
                raise ConfigError(f'{source}: [models."{model.id}"] aliases: "{alias}" is already {what} '
                                  f'of [models."{other}"]')


def _networks(values: list[Any], source: str) -> tuple:
    networks = []
    for value in values:
        if not isinstance(value, str):  # ip_network(5) would quietly mean 0.0.0.5/32
            raise ConfigError(f"{source}: [server] trusted_proxies: {value!r} is not a CIDR such as 10.0.0.0/8")
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: [server] trusted_proxies: {value!r} is not a CIDR such as 10.0.0.0/8") from None
    return tuple(networks)


def apply_overrides(plan: Limits, overrides: dict[str, Any]) -> Limits:
    """A key's effective limits: its plan's, with the key's own overrides on top."""
    if not overrides:
        return plan
    values = {name: overrides.get(name, getattr(plan, name)) for name in LIMIT_FIELDS}
    values["models"] = tuple(values["models"])
    return Limits(**values)


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
        "base_url": _base_url(table["base_url"]),
        "api_key_env": None if _ENV_NAME.match(table["api_key_env"]) else "must be an environment variable name",
        "priority": None if table.get("priority", 1) >= 0 else "must be 0 or more",
        "proxy": _proxy_url(table.get("proxy", "")),
    }
    for key, problem in problems.items():
        if problem:
            shown = "" if key == "proxy" else f" (got {table.get(key)!r})"  # a proxy URL may hold a password
            raise ConfigError(f"{source}: {label} {key}: {problem}{shown}")
    models = _strings(table.get("models", ["*"]), f"{label} models", source)
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
