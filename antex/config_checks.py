"""The checks behind the configuration's settings: each returns what is wrong with a value, or None.
config.py and upstream/config.py name them in their schemas; ConfigError is what a bad file raises."""
from __future__ import annotations

import re
from typing import Any

from antex.catalog import MAX_TOKENS_OVER


class ConfigError(Exception):
    """A bad configuration: says which file, which key and what is wrong."""


NUMBER = (int, float)


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def not_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def database(value: str) -> str | None:
    if not value.strip():
        return "must be an SQLite file path or a PostgreSQL URL (postgresql://user@host/antex)"
    if value.startswith(("postgresql:", "postgres:")) and not value.startswith(("postgresql://", "postgres://")):
        return "a PostgreSQL URL starts with postgresql:// or postgres://"
    return None


def instance_id(value: str) -> str | None:
    if value and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        return "must be 1 to 64 letters, digits, dots, dashes or underscores"
    return None


def header_bytes(value: int) -> str | None:
    return None if value >= 1024 else "must be at least 1024 (real clients send headers of several hundred bytes)"


def port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number from 0 to 65535"


FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")


def forwarded_header(value: str) -> str | None:
    return None if value in FORWARDED_HEADERS else 'must be "x-forwarded-for" or "forwarded"'


def base_url(value: str) -> str | None:
    return None if re.match(r"^https?://[^/\s]+", value) else "must be an http:// or https:// URL"


def disconnect_mode(value: str) -> str | None:
    return None if value in ("finish", "cancel") else 'must be "finish" or "cancel"'


def date(value: str) -> str | None:
    return None if re.match(r"^\d{4}-\d{2}-\d{2}$", value) else "must be a date such as 2025-09-29"


def tier(value: str) -> str | None:
    return None if value in ("haiku", "sonnet", "opus") else 'must be "haiku", "sonnet" or "opus"'


def over_cap(value: str) -> str | None:
    return None if value in MAX_TOKENS_OVER else 'must be "lower" or "refuse"'


DURATION_RE = re.compile(r"^(\d+)(s|m|h|d)$")
DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(value: str) -> float:
    """"3d" -> 259200.0 (units s, m, h, d); the caller checked it with _duration."""
    number, unit = DURATION_RE.match(value).groups()
    return float(int(number) * DURATION_UNITS_S[unit])


def duration(value: str) -> str | None:
    match = DURATION_RE.match(value)
    if match is None or int(match.group(1)) == 0:
        return 'must be a duration such as "90m", "12h" or "3d"'
    return None


def check_events_retention(value: str) -> str | None:
    """What is wrong with an [events] retention (or `antex prune --retention`), or None."""
    problem = duration(value)
    if problem is None and duration_s(value) <= 7 * 86400:
        problem = 'must be more than 7 days, such as "90d" (the weekly window reads raw events)'
    return problem


def strings(value: list[Any], where: str, source: str) -> tuple[str, ...]:
    """`value` as a tuple of non-empty strings, or a ConfigError naming `where`."""
    if not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{source}: {where}: must be a list of non-empty strings")
    return tuple(value)
