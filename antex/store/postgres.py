"""The PostgreSQL store: a pool of connections, schema-postgres.sql migrations, every named query
and the ledger's writer, for any number of Antex processes sharing one database.

asyncpg (a maintained driver, and the fastest for asyncio) over a small pool: a query waits for a
free connection instead of a lock, and a broken connection is replaced on the next acquire, so a
PostgreSQL restart costs the queries in flight, not the process. The writer inserts each batch
with one statement and ON CONFLICT on the journal id, so writing a batch again (its commit's
answer was lost, or a restarted instance settles its journal) inserts nothing twice, and it
announces exactly the rows it inserted on the cross-instance feed in the same transaction
(antex/store/feed.py): a notification goes out only if its rows are committed.
"""
from __future__ import annotations

import time
from typing import Any, AsyncIterator

import asyncpg
import orjson

from antex.store import feed
from antex.store.interface import DAY_S, EVENT_COLUMNS, KEY_COLUMNS, TOTALS, KeyRow
from antex.store.migrations import POSTGRES, migrations

CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 15.0  # a statement longer than this is a failed one: the ledger retries it
MIGRATION_LOCK = 0x616E7465  # pg_advisory_lock id: one instance migrates at a time
ROLL_UP_LOCK = 0x616E7466  # ...and one rolls events up at a time

_COLUMN_TYPES = ("bigint", "float8", "text", "text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "text",
                 "text", "integer", "bigint", "bigint", "text")  # EVENT_COLUMNS' types, in order
INSERT_EVENTS = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}, journal_id) "
                 f"SELECT * FROM unnest({', '.join(f'${i + 1}::{t}[]' for i, t in enumerate((*_COLUMN_TYPES, 'text')))}) "
                 f"ON CONFLICT (journal_id) DO NOTHING RETURNING key_id, ts, micro_credits, journal_id")
UPSERT_IP = ("INSERT INTO key_ips (key_id, ip, last_seen) VALUES ($1, $2, $3) "
             "ON CONFLICT (key_id, ip) DO UPDATE SET last_seen = GREATEST(key_ips.last_seen, excluded.last_seen)")
QUARANTINE = ("UPDATE keys SET status = 'quarantined', status_reason = $1, updated_at = $2 "
              "WHERE id = $3 AND status = 'active'")
CHARGES_SINCE = "SELECT ts, micro_credits FROM events WHERE key_id = $1 AND ts > $2 ORDER BY ts"
ROLL_UP_DAY = (f"INSERT INTO daily_usage (key_id, day, model, requests, {', '.join(TOTALS)}) "
               f"SELECT key_id, $1, model, COUNT(*), {', '.join(f'SUM({c})' for c in TOTALS)} "
               f"FROM events WHERE ts >= $2 AND ts < $3 GROUP BY key_id, model "
               f"ON CONFLICT (key_id, day, model) DO UPDATE SET requests = daily_usage.requests + excluded.requests, "
               + ", ".join(f"{c} = daily_usage.{c} + excluded.{c}" for c in TOTALS))


# A statement's own fault, not the store's (retrying would fail the same way for ever): a value
# it cannot hold (a NUL in text), a broken constraint, a program limit (an index row too big).
OWN_FAULTS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.ProgramLimitExceededError)


def is_url(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


async def connect(url: str, *, max_size: int = 4) -> asyncpg.Pool:
    """A pool on `url` (the password from the URL or PGPASSWORD), its schema brought up to date."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size, timeout=CONNECT_TIMEOUT_S,
                                     command_timeout=COMMAND_TIMEOUT_S)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    except BaseException:
        await pool.close()
        raise
    return pool


async def schema_version(conn: asyncpg.Connection) -> int:
    if await conn.fetchval("SELECT to_regclass('migrations')") is None:
        return 0
    return await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM migrations")


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply the pending migrations, each in its own transaction; returns the schema version."""
    version = await schema_version(conn)
    pending = [m for m in migrations(POSTGRES) if m[0] > version]
    if not pending:
        return version
    # A session lock taken before each transaction begins (a transaction that waited for the lock
    # inside itself could still see the catalog as it was before another instance migrated).
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        for number, name, sql in pending:
            if number <= await schema_version(conn):  # another instance migrated meanwhile
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                                   number, name, time.time())
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return await schema_version(conn)


class PostgresStore:
    """Named queries over a pool (antex.store.interface.Store)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def close(self) -> None:
        await self.pool.close()

    async def rows(self, sql: str, params: tuple) -> list[tuple]:
        """A named query of another module (e.g. postgres_responses.py), in PostgreSQL's dialect."""
        return [tuple(r) for r in await self.pool.fetch(sql, *params)]

    async def schema_version(self) -> int:
        async with self.pool.acquire() as conn:
            return await schema_version(conn)

    # keys

    async def keys_version(self) -> int:
        return await self.pool.fetchval("SELECT value FROM meta WHERE name = 'keys_version'") or 0

    async def all_keys(self) -> list[KeyRow]:
        return [KeyRow.from_row(r) for r in await self.pool.fetch(f"SELECT {KEY_COLUMNS} FROM keys ORDER BY id")]

    async def find_keys(self, ref: str) -> list[KeyRow]:
        """Keys named by `ref`: a name, a numeric id, or a visible prefix (with or without '…')."""
        ref = ref.strip().rstrip("…").rstrip(".")
        rows = await self.pool.fetch(f"SELECT {KEY_COLUMNS} FROM keys WHERE name = $1", ref)
        if not rows and ref.isdigit() and len(ref) < 19:
            rows = await self.pool.fetch(f"SELECT {KEY_COLUMNS} FROM keys WHERE id = $1", int(ref))
        if not rows and ref.startswith("sk_live_"):
            rows = await self.pool.fetch(f"SELECT {KEY_COLUMNS} FROM keys WHERE prefix = $1", ref)
        return [KeyRow.from_row(r) for r in rows]

    async def prefix_taken(self, prefix: str) -> bool:
        return await self.pool.fetchval("SELECT 1 FROM keys WHERE prefix = $1", prefix) is not None

    async def insert_key(self, name: str, prefix: str, key_hash: str, plan: str, now: float) -> int:
        return await self.pool.fetchval(
            "INSERT INTO keys (name, prefix, hash, plan, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) "
            "RETURNING id", name, prefix, key_hash, plan, now)

    async def update_key(self, key_id: int, now: float, **fields: Any) -> None:
        """Set columns of one key (status, status_reason, plan, limits)."""
        if "limits" in fields:
            fields["limits"] = orjson.dumps(fields["limits"]).decode()
        assignments = ", ".join(f"{column} = ${i + 1}" for i, column in enumerate(fields))
        await self.pool.execute(f"UPDATE keys SET {assignments}, updated_at = ${len(fields) + 1} "
                                f"WHERE id = ${len(fields) + 2}", *fields.values(), now, key_id)

    async def insert_imported_key(self, row: KeyRow, updated_at: float) -> bool:
        """A key from another store, with its id; False when that id or name is already here."""
        inserted = await self.pool.fetchval(
            f"INSERT INTO keys ({KEY_COLUMNS}, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            f"ON CONFLICT DO NOTHING RETURNING id", row.id, row.name, row.prefix, row.hash, row.plan,
            orjson.dumps(row.limits).decode(), row.status, row.status_reason, row.created_at, updated_at)
        await self.pool.execute("SELECT setval(pg_get_serial_sequence('keys', 'id'), "
                                "GREATEST((SELECT MAX(id) FROM keys), 1))")
        return inserted is not None

    # events

    async def charges_since(self, key_id: int, since: float) -> list[tuple[float, int]]:
        return [tuple(r) for r in await self.pool.fetch(CHARGES_SINCE, key_id, since)]

    async def charge_chunks(self, key_id: int, since: float, rows: int = 2048) -> AsyncIterator[list[tuple[float, int]]]:
        """The key's charges `rows` at a time, through a cursor: the loop runs between chunks."""
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            cursor = await conn.cursor(CHARGES_SINCE, key_id, since)
            while chunk := await cursor.fetch(rows):
                yield [tuple(r) for r in chunk]

    async def recent_charges(self, key_ids: list[int], since: float) -> list[tuple[int, float, int, str | None]]:
        """(key id, ts, micro-credits, journal id) of these keys after `since`, oldest first: the
        catch-up read after the feed reconnects."""
        return [tuple(r) for r in await self.pool.fetch(
            "SELECT key_id, ts, micro_credits, journal_id FROM events WHERE key_id = ANY($1::bigint[]) AND ts > $2 "
            "ORDER BY ts", key_ids, since)]

    async def recent_ips(self, key_ids: list[int], since: float) -> list[tuple[int, str, float]]:
        return [tuple(r) for r in await self.pool.fetch(
            "SELECT key_id, ip, last_seen FROM key_ips WHERE key_id = ANY($1::bigint[]) AND last_seen > $2",
            key_ids, since)]

    async def insert_events(self, rows: list[tuple], journal_ids: list[str | None] | None = None) -> int:
        """Insert credit events (rows in EVENT_COLUMNS order); returns how many were new."""
        ids = journal_ids if journal_ids is not None else [None] * len(rows)
        async with self.pool.acquire() as conn:
            return len(await conn.fetch(INSERT_EVENTS, *_columns(rows, ids)))

    async def activity(self, key_id: int, since: float) -> list[tuple[str, int, int]]:
        """(model, requests, micro-credits) per model since `since`, busiest first."""
        return [tuple(r) for r in await self.pool.fetch(
            "SELECT model, COUNT(*), SUM(micro_credits)::bigint FROM events WHERE key_id = $1 AND ts > $2 "
            "GROUP BY model ORDER BY SUM(micro_credits) DESC", key_id, since)]

    async def iter_events(self, key_id: int | None, since: float | None) -> AsyncIterator[dict[str, Any]]:
        """Credit events oldest first, with the key's name, for export; rolled-up days first (see
        the SQLite store)."""
        where, params = _filters("d.key_id", "d.day", key_id, None if since is None else since - DAY_S)
        sql = (f"SELECT d.key_id, d.day, d.model, d.requests, {', '.join(f'd.{c}' for c in TOTALS)}, k.name "
               f"FROM daily_usage d JOIN keys k ON k.id = d.key_id WHERE {where} ORDER BY d.day, d.key_id, d.model")
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            async for key, day, model, requests, *totals, name in conn.cursor(sql, *params):
                yield {"id": None, "key_id": key, "ts": day, "model": model, "endpoint": None,
                       **dict(zip(TOTALS, totals)), "request_id": None, "outcome": "daily_total", "estimated": 0,
                       "upstream": None, "key_name": name, "requests": requests}
            where, params = _filters("e.key_id", "e.ts", key_id, since)
            columns = ", ".join(f"e.{c}" for c in ("id", *EVENT_COLUMNS))
            sql = f"SELECT {columns}, k.name FROM events e JOIN keys k ON k.id = e.key_id WHERE {where} ORDER BY e.ts, e.id"
            async for row in conn.cursor(sql, *params):
                yield dict(zip(("id", *EVENT_COLUMNS, "key_name"), row), requests=1)

    async def inflight(self) -> list[tuple]:
        """Nothing: the `inflight` table is an older SQLite version's, never PostgreSQL's."""
        return []

    async def last_settled(self) -> list[str]:
        """Nothing to skip: events are keyed by journal id, so settling one again inserts nothing."""
        return []

    async def insert_daily_totals(self, rows: list[tuple]) -> int:
        """Daily totals (key id, day, model, requests, TOTALS...) not already here; returns how many."""
        columns = ("key_id", "day", "model", "requests", *TOTALS)
        inserted = 0
        for row in rows:
            status = await self.pool.execute(
                f"INSERT INTO daily_usage ({', '.join(columns)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))}) "
                f"ON CONFLICT DO NOTHING", *row)
            inserted += int(status.split()[-1])
        return inserted

    async def count_ips(self) -> int:
        return await self.pool.fetchval("SELECT COUNT(*) FROM key_ips")

    # client IPs

    async def ips_since(self, key_id: int, since: float) -> list[tuple[str, float]]:
        return [tuple(r) for r in await self.pool.fetch(
            "SELECT ip, last_seen FROM key_ips WHERE key_id = $1 AND last_seen > $2", key_id, since)]

    async def upsert_ips(self, rows: list[tuple[int, str, float]]) -> None:
        await self.pool.executemany(UPSERT_IP, rows)


def _filters(key_column: str, time_column: str, key_id: int | None, since: float | None) -> tuple[str, list]:
    where, params = ["TRUE"], []
    if key_id is not None:
        params.append(key_id)
        where.append(f"{key_column} = ${len(params)}")
    if since is not None:
        params.append(since)
        where.append(f"{time_column} > ${len(params)}")
    return " AND ".join(where), params


def _columns(rows: list[tuple], journal_ids: list[str | None]) -> list[list]:
    """Rows as one list per column, for INSERT_EVENTS' unnest."""
    if not rows:
        return [[] for _ in range(len(EVENT_COLUMNS) + 1)]
    return [list(column) for column in zip(*rows)] + [list(journal_ids)]


class PostgresWriter:
    """The ledger's writer (antex.store.interface.Writer): one pooled connection, a transaction per
    batch, and the batch announced to the other instances when it commits."""

    QUARANTINE = QUARANTINE

    def __init__(self, pool: asyncpg.Pool, instance: str) -> None:
        self.pool = pool
        self.instance = instance

    @classmethod
    async def open(cls, url: str, instance: str) -> "PostgresWriter":
        return cls(await asyncpg.create_pool(url, min_size=1, max_size=1, timeout=CONNECT_TIMEOUT_S,
                                             command_timeout=COMMAND_TIMEOUT_S), instance)

    async def write(self, events: list[tuple], event_ids: list[str | None], settled: list[str],
                    ips: list[tuple[int, str, float]], statements: list[tuple[str, tuple]],
                    legacy: list[tuple[str]]) -> None:
        """One transaction: the credit events not written before, client IPs seen, other writes
        (named statements in PostgreSQL's dialect), and the notifications that tell the other
        instances of the events and IPs. `settled` and `legacy` are SQLite's (see last_settled)."""
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetch(INSERT_EVENTS, *_columns(events, event_ids)) if events else []
            if ips:
                await conn.executemany(UPSERT_IP, ips)
            for sql, params in statements:
                await conn.execute(sql, *params)
            for payload in feed.settled_messages(self.instance, inserted, ips, committed=True):
                await conn.execute("SELECT pg_notify($1, $2)", feed.CHANNEL, payload)

    async def ride_along(self, groups: list[list[tuple[str, tuple]]]) -> list[tuple[int, BaseException]]:
        """See antex.store.interface.Writer.ride_along: a nested transaction is a savepoint."""
        refused = []
        async with self.pool.acquire() as conn, conn.transaction():
            for index, group in enumerate(groups):
                try:
                    async with conn.transaction():
                        for sql, params in group:
                            await conn.execute(sql, *params)
                except OWN_FAULTS as error:
                    refused.append((index, error))
        return refused

    async def roll_up_day(self, day: float) -> int:
        """Fold a day's events into daily_usage and delete them. Every instance prunes: one at a
        time (a second would otherwise add up the events the first is deleting, twice)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ROLL_UP_LOCK)
            await conn.execute(ROLL_UP_DAY, day, day, day + DAY_S)
            status = await conn.execute("DELETE FROM events WHERE ts >= $1 AND ts < $2", day, day + DAY_S)
        return int(status.split()[-1])

    async def oldest_event(self) -> float | None:
        return await self.pool.fetchval("SELECT MIN(ts) FROM events")

    async def forget_ips(self, before: float) -> int:
        status = await self.pool.execute("DELETE FROM key_ips WHERE last_seen < $1", before)
        return int(status.split()[-1])

    async def close(self) -> None:
        await self.pool.close()
