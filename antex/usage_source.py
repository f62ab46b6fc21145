"""Where `antex usage` reads from: the database directly, or a running gateway's /v1/usage."""
from __future__ import annotations

import urllib.error
import urllib.request

import orjson

from antex.catalog import apply_overrides
from antex.config import Config
from antex.report import usage_body
from antex.store import KeyRow, Store
from antex.windows import SEVEN_DAYS_S, both_windows

REMOTE_TIMEOUT_S = 10


class UsageError(Exception):
    """Usage could not be read; the message says why and what to do."""


async def local(store: Store, cfg: Config, ref: str | None, now: float) -> tuple[list[dict], list[str]]:
    """Usage bodies for one key (by name, id or prefix) or every active key, from the database,
    and warnings: a key on a plan the configuration no longer defines is left out of the list of
    every key, said why, rather than hiding everyone else's usage."""
    if ref:
        rows = await store.find_keys(ref)
        if len(rows) != 1:
            raise UsageError(f"No key named {ref!r}." if not rows else f"{ref!r} names {len(rows)} keys; use the name or id.")
        if rows[0].plan not in cfg.plans:
            raise UsageError(_unplanned(rows[0]))
    else:
        rows = [row for row in await store.all_keys() if row.status != "revoked"]
    bodies = [await _body(store, cfg, row, now) for row in rows if row.plan in cfg.plans]
    return bodies, [_unplanned(row) for row in rows if row.plan not in cfg.plans]


def _unplanned(row: KeyRow) -> str:
    return (f"Key {row.name!r} is on plan {row.plan!r}, which the configuration does not define. "
            f"Move it to a plan with: antex keys set {row.id} --plan PLAN")


async def _body(store: Store, cfg: Config, row: KeyRow, now: float) -> dict:
    charges = await store.charges_since(row.id, now - SEVEN_DAYS_S)
    return usage_body(name=row.name, prefix=row.prefix, plan=row.plan,
                      limits=apply_overrides(cfg.plans[row.plan], row.limits), windows=both_windows(charges, now), now=now)


def remote(base_url: str, key: str) -> dict:
    """GET {base_url}/v1/usage with the key; a base URL ending in /v1 works too."""
    url = base_url.rstrip("/")
    url = (url[:-3] if url.endswith("/v1") else url) + "/v1/usage"
    request = urllib.request.Request(url, headers={"x-api-key": key, "accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REMOTE_TIMEOUT_S) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise UsageError(f"{url} answered {exc.code}: {_message(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"Cannot reach {url}: {reason}. Check the URL and that the gateway is running.") from None
    except orjson.JSONDecodeError:
        raise UsageError(f"{url} did not answer with JSON; is it an Antex gateway?") from None


def _message(body: bytes) -> str:
    try:
        return orjson.loads(body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")
