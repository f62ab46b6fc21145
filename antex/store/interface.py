"""What the rest of Antex asks of a store, whichever database is behind it.

Two implementations: antex/store/sqlite.py (the embedded default, one process) and
antex/store/postgres.py (any number of processes on one database). The ledger, the key watcher,
the CLI and the reports only ever see these two shapes: `Store` answers questions and takes the
CLI's changes, `Writer` is the ledger's single writer of credit events, client IPs and quarantines.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Protocol

import orjson

DAY_S = 86400

EVENT_COLUMNS = ("key_id", "ts", "model", "endpoint", "input_tokens", "output_tokens", "cache_write_5m_tokens",
                 "cache_write_1h_tokens", "cache_read_tokens", "micro_credits", "request_id", "outcome", "estimated",
                 "web_search_requests", "web_fetch_requests", "upstream")
TOTALS = ("input_tokens", "output_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
          "web_search_requests", "web_fetch_requests", "micro_credits")
KEY_FIELDS = ("id", "name", "prefix", "hash", "plan", "limits", "status", "status_reason", "created_at")
KEY_COLUMNS = ", ".join(KEY_FIELDS)


@dataclass(frozen=True)
class KeyRow:
    id: int
    name: str
    prefix: str
    hash: str
    plan: str
    limits: dict[str, Any]
    status: str
    status_reason: str | None
    created_at: float

    @classmethod
    def from_row(cls, row: tuple) -> "KeyRow":
        return cls(row[0], row[1], row[2], row[3], row[4], orjson.loads(row[5]), row[6], row[7], row[8])


class Store(Protocol):
    """Named queries, and the CLI's changes to keys."""

    async def close(self) -> None: ...
    async def schema_version(self) -> int: ...
    async def rows(self, sql: str, params: tuple) -> list[tuple]: ...
    async def keys_version(self) -> int: ...
    async def all_keys(self) -> list[KeyRow]: ...
    async def find_keys(self, ref: str) -> list[KeyRow]: ...
    async def prefix_taken(self, prefix: str) -> bool: ...
    async def insert_key(self, name: str, prefix: str, key_hash: str, plan: str, now: float) -> int: ...
    async def update_key(self, key_id: int, now: float, **fields: Any) -> None: ...
    async def charges_since(self, key_id: int, since: float) -> list[tuple[float, int]]: ...
    def charge_chunks(self, key_id: int, since: float, rows: int = 2048) -> AsyncIterator[list[tuple[float, int]]]: ...
    async def insert_events(self, rows: list[tuple]) -> None: ...
    async def activity(self, key_id: int, since: float) -> list[tuple[str, int, int]]: ...
    def iter_events(self, key_id: int | None, since: float | None) -> AsyncIterator[dict[str, Any]]: ...
    async def inflight(self) -> list[tuple]: ...
    async def last_settled(self) -> list[str]: ...
    async def ips_since(self, key_id: int, since: float) -> list[tuple[str, float]]: ...
    async def upsert_ips(self, rows: list[tuple[int, str, float]]) -> None: ...


class Writer(Protocol):
    """The ledger's one writer: each call is one transaction. Other writes come as named
    statements in the writer's own dialect (its QUARANTINE; antex/responses_store.py's)."""

    QUARANTINE: str  # (reason, at, key id): quarantine a key that is active

    async def write(self, events: list[tuple], event_ids: list[str | None], settled: list[str],
                    ips: list[tuple[int, str, float]], statements: list[tuple[str, tuple]],
                    legacy: list[tuple[str]]) -> None: ...
    async def ride_along(self, groups: list[list[tuple[str, tuple]]]) -> list[tuple[int, BaseException]]:
        """Each group of named statements in a savepoint, all in one transaction of their own;
        returns (index, error) of the groups the store refused on their own account (rolled back,
        the others kept). Raises, keeping none, when the store itself fails."""
        ...
    async def roll_up_day(self, day: float) -> int: ...
    async def oldest_event(self) -> float | None: ...
    async def forget_ips(self, before: float) -> int: ...
    async def close(self) -> None: ...


async def prune(writer: Writer, now: float, keep_s: float, ip_window_s: float) -> tuple[int, int]:
    """Roll every whole UTC day that ended `keep_s` ago up into daily totals, and forget client
    IPs no limit looks at any more; returns (events rolled up, IPs forgotten)."""
    keep_from = (now - keep_s) // DAY_S * DAY_S
    rolled = 0
    while (oldest := await writer.oldest_event()) is not None and oldest < keep_from:
        rolled += await writer.roll_up_day(oldest // DAY_S * DAY_S)
    return rolled, await writer.forget_ips(now - ip_window_s)
