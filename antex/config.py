"""TOML configuration -> frozen dataclasses, validated once at start with clear errors.

The defaults are `config.example.toml` itself (packaged beside this module), so the documented
defaults and the running defaults can never drift apart. An operator's file is merged over them.
"""
from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from antex import config_checks as check
from antex.catalog import RATE_FIELDS, Limits, Model, Rates
from antex.config_checks import ConfigError
from antex.upstream.config import UpstreamConfig, UpstreamEntry, upstream_entries


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
    parse_in_worker_bytes: int  # bodies this large or larger are parsed in a worker process; 0: never
    max_header_bytes: int
    max_headers: int
    head_timeout_s: float
    max_connections: int
    max_connections_per_ip: int


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
    names: dict[str, Model] = field(default_factory=dict, repr=False, compare=False)  # ID or alias -> model

    def __post_init__(self) -> None:
        for model in self.models.values():
            self.names[model.id] = model
            for alias in model.aliases:
                self.names[alias] = model

    def resolve_model(self, name: str) -> Model | None:
        return resolve_model(self.names, name)


def resolve_model(names: dict[str, Model], name: str) -> Model | None:
    """The model a request names: its ID, a dated ID, an alias, or any of those with `[1m]`.
    A function of `names` alone, so parse workers (antex/prepare.py) resolve as the gateway does."""
    found = names.get(name)
    if found is not None:
        return found
    base = _DATE_SUFFIX.sub("", _CONTEXT_SUFFIX.sub("", name))
    return names.get(base)


_CONTEXT_SUFFIX = re.compile(r"\[[0-9a-z]+\]$")
_DATE_SUFFIX = re.compile(r"-\d{8}$")




# section -> key -> (accepted types, optional check returning an error or None)
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "server": {
        "host": ((str,), None),
        "port": ((int,), check.port),
        "database": ((str,), check.database),
        "instance_id": ((str,), check.instance_id),
        "journal_dir": ((str,), None),
        "trusted_proxies": ((list,), None),
        "forwarded_header": ((str,), check.forwarded_header),
        "max_body_bytes": ((int,), check.positive),
        "shutdown_grace_s": (check.NUMBER, check.not_negative),
        "body_timeout_s": (check.NUMBER, check.positive),
        "body_idle_timeout_s": (check.NUMBER, check.positive),
        "max_buffered_body_bytes": ((int,), check.positive),
        "max_buffered_body_bytes_per_key": ((int,), check.positive),
        "parse_in_worker_bytes": ((int,), check.not_negative),
        "max_header_bytes": ((int,), check.header_bytes),
        "max_headers": ((int,), check.positive),
        "head_timeout_s": (check.NUMBER, check.positive),
        "max_connections": ((int,), check.positive),
        "max_connections_per_ip": ((int,), check.positive),
    },
    "upstream": {
        "base_url": ((str,), check.base_url),
        "api_key_env": ((str,), None),
        "connect_timeout_s": (check.NUMBER, check.positive),
        "idle_timeout_s": (check.NUMBER, check.positive),
        "on_client_disconnect": ((str,), check.disconnect_mode),
        "max_attempts": ((int,), check.positive),
        "failover_deadline_s": (check.NUMBER, check.positive),
        "max_connections": ((int,), check.positive),
        "keepalive_s": (check.NUMBER, check.positive),
    },
    "quarantine": {
        "ip_limit_hits": ((int,), check.positive),
        "within_s": (check.NUMBER, check.positive),
    },
    "responses": {
        "retention": ((str,), check.duration),
        "max_per_key": ((int,), check.positive),
        "max_bytes_per_key": ((int,), check.positive),
    },
    "events": {
        "retention": ((str,), check.check_events_retention),
    },
    "models.*": {
        "display_name": ((str,), None),
        "created_at": ((str,), check.date),
        "tier": ((str,), check.tier),
        "aliases": ((list,), None),
        "input": (check.NUMBER, check.not_negative),
        "output": (check.NUMBER, check.not_negative),
        "cache_write_5m": (check.NUMBER, check.not_negative),
        "cache_write_1h": (check.NUMBER, check.not_negative),
        "cache_read": (check.NUMBER, check.not_negative),
        "web_search": (check.NUMBER, check.not_negative),
        "web_fetch": (check.NUMBER, check.not_negative),
        "max_output_tokens": ((int,), check.positive),
    },
    "plans.*": {
        "credits_5h": (check.NUMBER, check.positive),
        "credits_7d": (check.NUMBER, check.positive),
        "models": ((list,), None),
        "max_tokens": ((int,), check.positive),
        "max_ips": ((int,), check.not_negative),
        "max_concurrent": ((int,), check.not_negative),
        "max_tokens_over": ((str,), check.over_cap),
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
            parse_in_worker_bytes=server["parse_in_worker_bytes"],
            max_header_bytes=server["max_header_bytes"],
            max_headers=server["max_headers"],
            head_timeout_s=float(server["head_timeout_s"]),
            max_connections=server["max_connections"],
            max_connections_per_ip=server["max_connections_per_ip"],
        ),
        upstream=UpstreamConfig(**{k: v for k, v in checked["upstream"].items()}),
        quarantine=QuarantineConfig(**checked["quarantine"]),
        responses=ResponsesConfig(check.duration_s(checked["responses"]["retention"]), checked["responses"]["max_per_key"],
                                  checked["responses"]["max_bytes_per_key"]),
        events=EventsConfig(check.duration_s(checked["events"]["retention"])),
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


def _model(model_id: str, table: dict[str, Any]) -> Model:
    rates = Rates(**{k: float(table[k]) for k in RATE_FIELDS if k in table})
    return Model(model_id, table["display_name"], table["tier"], tuple(table["aliases"]), rates, table["created_at"],
                 table.get("max_output_tokens"))


def _plan(table: dict[str, Any], label: str, source: str) -> Limits:
    return Limits(
        credits_5h=float(table["credits_5h"]),
        credits_7d=float(table["credits_7d"]),
        models=check.strings(table["models"], f"[{label}] models", source),
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


