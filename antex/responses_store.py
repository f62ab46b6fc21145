"""Stored responses (POST /v1/responses with store): every query behind named methods.

The statements here are SQLite's (json_each, window functions, numbered parameters);
antex/store/postgres_responses.py has the same names in PostgreSQL's, and a ResponseStore takes
the set that fits its store (`dialect`).

Reads go through the reader connection. Writes never touch SQLite on the request's path: they
are handed to the ledger's single writer (antex/ledger.py), which commits them right after the next
batch of credit events, in a transaction of their own (antex/ride_along.py), after the response
has gone out. A read that misses waits for that writer once before it answers 404, so a client that
continues a conversation the moment its last response ended still finds it; while the store fails,
it answers 503 instead (antex/store_reads.py), as does a deletion the writer cannot confirm in time.

NULs: a response and its items are kept as JSON text, where a NUL is the escape \u0000, never the
byte PostgreSQL's text refuses; so both stores hold them alike and give them back intact, with no
bytea or jsonb (jsonb refuses \u0000 too). The one raw text taken from the client, an item's id, is
stored as a search key with NUL made U+FFFD (`search_key`); the item's JSON holds its true id, and
a lookup keeps only items whose true id was asked for. Antex's response ids never hold a NUL: one
asked for with a NUL is unknown, without a query.

Every query is scoped to the key: another key's ids are as unknown as ids that never existed.
A response lives `retention` after it was made or last continued (a response continued by
previous_response_id keeps its whole conversation alive); past a key's bounds its oldest go first.
"""
from __future__ import annotations

import asyncio
import sys
from types import ModuleType
from typing import Any, Callable

import orjson

from antex.config import ResponsesConfig
from antex.ledger import Ledger
from antex.store import Store
from antex.store_reads import StoreUnavailable

FLUSH_WAIT_S = 5.0  # the longest a missed read waits for pending writes
MAX_CHAIN = 10_000  # previous_response_id links followed at most (a guard, never reached in practice)

INSERT_RESPONSE = ("INSERT INTO responses (id, key_id, created_at, touched_at, previous_response_id, bytes, body) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING")
INSERT_ITEM = ("INSERT INTO response_items (response_id, position, is_output, key_id, item_id, item) "
               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (response_id, position) DO NOTHING")
TOUCH_CHAIN = ("UPDATE responses SET touched_at = MAX(touched_at, ?) "
               "WHERE key_id = ? AND id IN (SELECT value FROM json_each(?))")
# Past the key's bounds (response_totals, kept by triggers), its oldest response goes, never the one
# just kept: one indexed step, run EVICT_PER_KEEP times per kept response, so a key's storage comes
# back under its bounds as it grows (and EVICT_ALL, on each prune, takes whatever is left over).
EVICT_OLDEST = ("DELETE FROM responses WHERE id = (SELECT r.id FROM responses r JOIN response_totals t "
                "ON t.key_id = r.key_id WHERE r.key_id = ?1 AND r.id != ?2 AND (t.responses > ?3 OR t.bytes > ?4) "
                "ORDER BY r.touched_at, r.id LIMIT 1)")
EVICT_PER_KEEP = 2
EVICT_ALL = ("DELETE FROM responses WHERE id IN (SELECT id FROM ("
             "SELECT id, ROW_NUMBER() OVER newest AS n, SUM(bytes) OVER newest AS running FROM responses "
             "WHERE key_id IN (SELECT key_id FROM response_totals WHERE responses > ?1 OR bytes > ?2) "
             "WINDOW newest AS (PARTITION BY key_id ORDER BY touched_at DESC, id DESC)) "
             "WHERE n > 1 AND (n > ?1 OR running > ?2))")
DELETE_RESPONSE = "DELETE FROM responses WHERE key_id = ? AND id = ?"
PRUNE = "DELETE FROM responses WHERE touched_at <= ?"
LIVE = "key_id = ? AND touched_at > ?"
GET_BODY = f"SELECT body FROM responses WHERE id = ? AND {LIVE}"
GET_ITEMS = ("SELECT i.item FROM response_items i JOIN responses r ON r.id = i.response_id "
             "WHERE i.response_id = ? AND i.is_output = ? AND r.key_id = ? AND r.touched_at > ? ORDER BY i.position")
FIND_ITEMS = ("SELECT i.item_id, i.item FROM response_items i JOIN responses r ON r.id = i.response_id "
              "WHERE i.key_id = ? AND i.item_id IN (SELECT value FROM json_each(?)) AND r.touched_at > ? "
              "ORDER BY r.touched_at, i.position")
CONVERSATION = f"""
WITH RECURSIVE chain (id, previous, depth) AS (
    SELECT id, previous_response_id, 0 FROM responses WHERE id = ? AND {LIVE}
    UNION ALL
    SELECT r.id, r.previous_response_id, c.depth + 1 FROM responses r JOIN chain c ON r.id = c.previous
    WHERE r.key_id = ? AND r.touched_at > ? AND c.depth < {MAX_CHAIN}
)
SELECT c.id, c.previous, c.depth, i.item FROM chain c LEFT JOIN response_items i ON i.response_id = c.id
ORDER BY c.depth DESC, i.position"""


class Conversation:
    """A stored response and every one it continues: their items in order, and their ids."""

    def __init__(self, items: list[dict[str, Any]], response_ids: list[str]) -> None:
        self.items = items
        self.response_ids = response_ids


class ResponseStore:
    def __init__(self, reader: Store, ledger: Ledger, settings: ResponsesConfig, clock: Callable[[], float],
                 dialect: ModuleType | None = None) -> None:
        self.reader = reader
        self.sql = dialect or sys.modules[__name__]  # the module holding the statements, by name
        self.ledger = ledger
        self.settings = settings
        self.clock = clock

    def _horizon(self) -> float:
        """Responses last touched at or before this have expired."""
        return self.clock() - self.settings.retention_s

    async def _rows(self, sql: str, params: tuple) -> list[tuple]:
        with self.ledger.reads.guard():
            return await self.reader.rows(sql, params)

    async def _fresh_rows(self, sql: str, params: Callable[[], tuple]) -> list[tuple]:
        """The rows, or, when there are none, the rows once the writes handed in so far are committed."""
        rows = await self._rows(sql, params())
        if not rows:
            await self._writes_committed()
            rows = await self._rows(sql, params())
        return rows

    async def _writes_committed(self, doing: str = "read its database") -> None:
        """Wait (a bounded while) until the ledger's writer has committed what it was handed.
        Past that, StoreUnavailable while the store fails: what is asked for may be waiting."""
        try:
            async with asyncio.timeout(FLUSH_WAIT_S):
                await self.ledger.flush()
        except TimeoutError:
            if self.ledger.store_failure.error is not None:
                raise StoreUnavailable(doing) from None

    # reading

    async def response(self, key_id: int, response_id: str) -> dict[str, Any] | None:
        """The response object as it was answered, or None (unknown, another key's, expired)."""
        if "\0" in response_id:
            return None
        rows = await self._fresh_rows(self.sql.GET_BODY, lambda: (response_id, key_id, self._horizon()))
        return orjson.loads(rows[0][0]) if rows else None

    async def input_items(self, key_id: int, response_id: str) -> list[dict[str, Any]]:
        """The items of the request that made the response, in order (the response must exist)."""
        rows = await self._rows(self.sql.GET_ITEMS, (response_id, 0, key_id, self._horizon()))
        return [orjson.loads(row[0]) for row in rows]

    async def items(self, key_id: int, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Stored items by id, input or output of any of the key's live responses (the newest wins)."""
        wanted = set(item_ids)
        found = await self._items(key_id, wanted)
        if len(found) < len(wanted):  # some may be in a batch still being written
            await self._writes_committed()
            found = await self._items(key_id, wanted)
        return found

    async def _items(self, key_id: int, wanted: set[str]) -> dict[str, dict[str, Any]]:
        keys = orjson.dumps(sorted({search_key(item_id) for item_id in wanted})).decode()
        found = {}
        for _, encoded in await self._rows(self.sql.FIND_ITEMS, (key_id, keys, self._horizon())):
            item = orjson.loads(encoded)
            if str(item.get("id") or "") in wanted:  # (another id with the same search key is not)
                found[str(item["id"])] = item
        return found

    async def conversation(self, key_id: int, response_id: str) -> Conversation | None:
        """The conversation a new response continues (previous_response_id): each stored response's
        input then output, oldest first. None when the response, or one it continues, is gone."""
        if "\0" in response_id:
            return None
        horizon = self._horizon
        rows = await self._fresh_rows(self.sql.CONVERSATION, lambda: (response_id, key_id, horizon(), key_id, horizon()))
        if not rows or rows[0][1] is not None:  # the oldest link still names one: it is gone
            return None
        response_ids: list[str] = []
        items = []
        for stored_id, _, _, item in rows:
            if not response_ids or response_ids[-1] != stored_id:
                response_ids.append(stored_id)
            if item is not None:
                items.append(orjson.loads(item))
        return Conversation(items, response_ids)

    # writing, through the ledger's single writer

    def keep(self, key_id: int, response: dict[str, Any], input_items: list[tuple[str, str]],
             continues: list[str]) -> None:
        """Keep a finished response and the input that made it, as (id, JSON) pairs (encoded with the
        request's job, antex/prepare.py); `continues` are the ids of the conversation it continues,
        kept alive as long as it is."""
        now = self.clock()
        response_id = response["id"]
        body = orjson.dumps(response)
        encoded = input_items + [(str(item.get("id") or ""), orjson.dumps(item).decode()) for item in response.get("output") or []]
        rows = [(response_id, position, int(position >= len(input_items)), key_id, search_key(item_id), item)
                for position, (item_id, item) in enumerate(encoded)]
        size = len(body) + sum(len(row[5]) for row in rows)
        statements = [(self.sql.INSERT_RESPONSE, (response_id, key_id, now, now, response.get("previous_response_id"), size,
                                         body.decode()))]
        statements += [(self.sql.INSERT_ITEM, row) for row in rows]
        if continues:
            statements.append((self.sql.TOUCH_CHAIN, (now, key_id, orjson.dumps(continues).decode())))
        bounds = (key_id, response_id, self.settings.max_per_key, self.settings.max_bytes_per_key)
        statements += [(self.sql.EVICT_OLDEST, bounds)] * EVICT_PER_KEEP
        self.ledger.execute_soon(statements, "a stored response")

    async def delete(self, key_id: int, response_id: str) -> bool:
        """Delete a live response of the key's; False when there was none. Committed on return;
        StoreUnavailable when the writer cannot confirm it within FLUSH_WAIT_S (it stays queued)."""
        if await self.response(key_id, response_id) is None:
            return False
        self.ledger.execute_soon([(self.sql.DELETE_RESPONSE, (key_id, response_id))], "a stored-response deletion")
        try:
            async with asyncio.timeout(FLUSH_WAIT_S):
                await self.ledger.flush()
        except TimeoutError:
            raise StoreUnavailable("confirm the deletion (it is queued)") from None
        return True

    def prune(self) -> None:
        """Drop every expired response (its items go with it), and whatever keeps a key over its bounds."""
        self.ledger.execute_soon([(self.sql.PRUNE, (self._horizon(),)),
                                  (self.sql.EVICT_ALL, (self.settings.max_per_key, self.settings.max_bytes_per_key))],
                                 "a prune of stored responses")


def search_key(item_id: str) -> str:
    """An item id as its column holds it: any NUL made U+FFFD, which PostgreSQL's text (and jsonb)
    can hold; lookups compare the item's own id after."""
    return item_id.replace("\0", "\ufffd")
