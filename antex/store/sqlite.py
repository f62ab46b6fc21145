"""The SQLite store: connections, schema.sql migrations, and every named query and write.

The server opens three connections: a reader (lazy window loads, reports), one for the key
watcher alone (so no slow report delays a revocation), both through aiosqlite, and the ledger's
single `Writer`. The CLI opens its own; WAL mode and a busy timeout let all of them work at once
without "database is locked" ever reaching anyone.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Iterable, Iterator

import aiosqlite
import orjson

from antex.store.interface import DAY_S, EVENT_COLUMNS, KEY_COLUMNS, TOTALS, KeyRow
from antex.store.migrations import migrations

BUSY_TIMEOUT_MS = 30_000
# The writer waits less for a lock: the ledger retries a failed batch with backoff (and says so),
# and a stop never waits longer than this on a database another process holds.
WRITER_BUSY_TIMEOUT_MS = 2_000


async def connect(path: str) -> aiosqlite.Connection:
    """Open `path` in WAL mode and bring its schema up to date."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute("PRAGMA foreign_keys = ON")
    await migrate(conn)
    return conn


async def migrate(conn: aiosqlite.Connection) -> int:
    """Apply the pending migrations, each in its own transaction; returns the schema version."""
    async with conn.execute("PRAGMA user_version") as cursor:
        (version,) = await cursor.fetchone()
    for number, name, sql in migrations():
        if number <= version:
            continue
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the lock: another process may have migrated meanwhile.
            async with conn.execute("PRAGMA user_version") as cursor:
                (current,) = await cursor.fetchone()
            if number > current:
                for statement in _statements(sql):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO migrations (version, name, applied_at) VALUES (?, ?, ?)",
                                   (number, name, time.time()))
                await conn.execute(f"PRAGMA user_version = {number}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        version = number
    return version


def _statements(sql: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


INSERT_EVENT = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
SETTLE_JOURNAL = "UPDATE journal_settled SET ids = ? WHERE id = 1"
CHARGES_SINCE = "SELECT ts, micro_credits FROM events WHERE key_id = ? AND ts > ? ORDER BY ts"
UPSERT_IP = ("INSERT INTO key_ips (key_id, ip, last_seen) VALUES (?, ?, ?) "
             "ON CONFLICT (key_id, ip) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen)")
QUARANTINE = "UPDATE keys SET status = 'quarantined', status_reason = ?, updated_at = ? WHERE id = ? AND status = 'active'"
DELETE_LEGACY = "DELETE FROM inflight WHERE id = ?"
ROLL_UP_DAY = (f"INSERT INTO daily_usage (key_id, day, model, requests, {', '.join(TOTALS)}) "
               f"SELECT key_id, ?, model, COUNT(*), {', '.join(f'SUM({c})' for c in TOTALS)} "
               f"FROM events WHERE ts >= ? AND ts < ? GROUP BY key_id, model "
               f"ON CONFLICT (key_id, day, model) DO UPDATE SET requests = requests + excluded.requests, "
               + ", ".join(f"{c} = {c} + excluded.{c}" for c in TOTALS))


class SqliteStore:
    """Named queries over one connection (antex.store.interface.Store)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        async with self.conn.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> tuple | None:
        async with self.conn.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    # keys

    async def close(self) -> None:
        await self.conn.close()

    async def rows(self, sql: str, params: tuple) -> list[tuple]:
        """A named query of another module (e.g. antex/responses_store.py), in SQLite's dialect."""
        return await self._all(sql, params)

    async def schema_version(self) -> int:
        return (await self._one("PRAGMA user_version"))[0]

    async def keys_version(self) -> int:
        row = await self._one("SELECT value FROM meta WHERE name = 'keys_version'")
        return row[0] if row else 0

    async def all_keys(self) -> list[KeyRow]:
        return [KeyRow.from_row(r) for r in await self._all(f"SELECT {KEY_COLUMNS} FROM keys ORDER BY id")]

    async def find_keys(self, ref: str) -> list[KeyRow]:
        """Keys named by `ref`: a name, a numeric id, or a visible prefix (with or without '…')."""
        ref = ref.strip().rstrip("…").rstrip(".")
        rows = await self._all(f"SELECT {KEY_COLUMNS} FROM keys WHERE name = ?", (ref,))
        if not rows and ref.isdigit():
            rows = await self._all(f"SELECT {KEY_COLUMNS} FROM keys WHERE id = ?", (int(ref),))
        if not rows and ref.startswith("sk_live_"):
            rows = await self._all(f"SELECT {KEY_COLUMNS} FROM keys WHERE prefix = ?", (ref,))
        return [KeyRow.from_row(r) for r in rows]

    async def prefix_taken(self, prefix: str) -> bool:
        return await self._one("SELECT 1 FROM keys WHERE prefix = ?", (prefix,)) is not None

    async def insert_key(self, name: str, prefix: str, key_hash: str, plan: str, now: float) -> int:
        cursor = await self.conn.execute(
            "INSERT INTO keys (name, prefix, hash, plan, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (name, prefix, key_hash, plan, now, now))
        return cursor.lastrowid

    async def update_key(self, key_id: int, now: float, **fields: Any) -> None:
        """Set columns of one key (status, status_reason, plan, limits)."""
        if "limits" in fields:
            fields["limits"] = orjson.dumps(fields["limits"]).decode()
        assignments = ", ".join(f"{column} = ?" for column in fields)
        await self.conn.execute(f"UPDATE keys SET {assignments}, updated_at = ? WHERE id = ?",
                                (*fields.values(), now, key_id))

    # events

    async def charges_since(self, key_id: int, since: float) -> list[tuple[float, int]]:
        """The key's (ts, micro-credits) after `since`, oldest first: one indexed range scan."""
        return await self._all(CHARGES_SINCE, (key_id, since))

    async def charge_chunks(self, key_id: int, since: float, rows: int = 2048) -> AsyncIterator[list[tuple[float, int]]]:
        """The same, `rows` at a time: each chunk is one hop to SQLite's thread and back, so the
        event loop runs between chunks however long the history."""
        async with self.conn.execute(CHARGES_SINCE, (key_id, since)) as cursor:
            while chunk := await cursor.fetchmany(rows):
                yield chunk

    async def insert_events(self, rows: list[tuple]) -> None:
        await self.conn.executemany(INSERT_EVENT, rows)

    async def activity(self, key_id: int, since: float) -> list[tuple[str, int, int]]:
        """(model, requests, micro-credits) per model since `since`, busiest first."""
        return await self._all(
            "SELECT model, COUNT(*), SUM(micro_credits) FROM events WHERE key_id = ? AND ts > ? "
            "GROUP BY model ORDER BY SUM(micro_credits) DESC", (key_id, since))

    async def iter_events(self, key_id: int | None, since: float | None) -> AsyncIterator[dict[str, Any]]:
        """Credit events oldest first, with the key's name, for export (`requests` = 1 each).

        Days past the retention come first, as one daily total per key and model: `requests` of
        them, outcome `daily_total`, no id; a day is included when it ends after `since`."""
        async for row in self._daily_totals(key_id, since):
            yield row
        where, params = _filter("e.key_id", key_id, "e.ts", since)
        columns = ", ".join(f"e.{c}" for c in ("id", *EVENT_COLUMNS))
        sql = f"SELECT {columns}, k.name FROM events e JOIN keys k ON k.id = e.key_id WHERE {where} ORDER BY e.ts, e.id"
        async with self.conn.execute(sql, params) as cursor:
            async for row in cursor:
                yield dict(zip(("id", *EVENT_COLUMNS, "key_name"), row), requests=1)

    async def _daily_totals(self, key_id: int | None, since: float | None) -> AsyncIterator[dict[str, Any]]:
        where, params = _filter("d.key_id", key_id, "d.day", None if since is None else since - DAY_S)
        sql = (f"SELECT d.key_id, d.day, d.model, d.requests, {', '.join(f'd.{c}' for c in TOTALS)}, k.name "
               f"FROM daily_usage d JOIN keys k ON k.id = d.key_id WHERE {where} "
               f"ORDER BY d.day, d.key_id, d.model")
        async with self.conn.execute(sql, params) as cursor:
            async for key, day, model, requests, *totals, name in cursor:
                yield {"id": None, "key_id": key, "ts": day, "model": model, "endpoint": None, **dict(zip(TOTALS, totals)),
                       "request_id": None, "outcome": "daily_total", "estimated": 0, "upstream": None, "key_name": name,
                       "requests": requests}

    async def inflight(self) -> list[tuple]:
        """Requests an older Antex journaled in SQLite and never settled:
        (id, key_id, model, endpoint, estimated_input, usage JSON)."""
        return await self._all("SELECT id, key_id, model, endpoint, estimated_input, usage FROM inflight ORDER BY started_at")

    async def last_settled(self) -> list[str]:
        """The journal ids the last committed batch of credit events settled."""
        row = await self._one("SELECT ids FROM journal_settled WHERE id = 1")
        return orjson.loads(row[0]) if row else []

    # export, for `antex import` (antex/store/importer.py)

    async def keys_for_export(self) -> list[tuple[KeyRow, float]]:
        """Every key with its updated_at."""
        return [(KeyRow.from_row(r), r[9]) for r in await self._all(f"SELECT {KEY_COLUMNS}, updated_at FROM keys ORDER BY id")]

    async def event_chunks_for_export(self, rows: int) -> AsyncIterator[list[tuple]]:
        """Every event as (id, *EVENT_COLUMNS), oldest id first, `rows` at a time."""
        async with self.conn.execute(f"SELECT id, {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id") as cursor:
            while chunk := await cursor.fetchmany(rows):
                yield [tuple(r) for r in chunk]

    async def daily_totals_for_export(self) -> list[tuple]:
        return await self._all(f"SELECT key_id, day, model, requests, {', '.join(TOTALS)} FROM daily_usage")

    async def ips_for_export(self) -> list[tuple[int, str, float]]:
        return await self._all("SELECT key_id, ip, last_seen FROM key_ips")

    async def export_id(self) -> int:
        """A random number this file keeps from the first call on: it names the file's events
        wherever they are imported."""
        await self.conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('export_id', ?)", (secrets.randbits(62),))
        return (await self._one("SELECT value FROM meta WHERE name = 'export_id'"))[0]

    # client IPs

    async def ips_since(self, key_id: int, since: float) -> list[tuple[str, float]]:
        return await self._all("SELECT ip, last_seen FROM key_ips WHERE key_id = ? AND last_seen > ?", (key_id, since))

    async def upsert_ips(self, rows: list[tuple[int, str, float]]) -> None:
        await self.conn.executemany(UPSERT_IP, rows)


def _filter(key_column: str, key_id: int | None, time_column: str, after: float | None) -> tuple[str, list]:
    """A WHERE clause and its parameters: one key (or all), rows after a time (or all)."""
    where, params = ["1 = 1"], []
    if key_id is not None:
        where.append(f"{key_column} = ?")
        params.append(key_id)
    if after is not None:
        where.append(f"{time_column} > ?")
        params.append(after)
    return " AND ".join(where), params


class SqliteWriter:
    QUARANTINE = QUARANTINE
    """The one connection that writes, on a thread of its own; every write goes through it.

    The ledger hands it a whole batch, which is one transaction in one hop from the event loop to
    this thread and back: a statement per await made a commit cycle five round trips between
    threads. Plain sqlite3 on a one-thread executor, because aiosqlite has no public way to run a
    function on its connection's thread; the thread runs one call at a time, in order.
    """

    def __init__(self, conn: sqlite3.Connection, thread: ThreadPoolExecutor, path: str) -> None:
        self._conn = conn
        self._thread = thread
        self._path = path
        self._file = os.stat(path)

    @classmethod
    async def open(cls, path: str) -> "SqliteWriter":
        """Connect to `path` (already migrated by `connect`)."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="antex-sqlite-writer")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(thread, _open_writer, path)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(conn, thread, path)

    async def write(self, events: list[tuple], event_ids: list[str | None], settled: list[str],
                    ips: list[tuple[int, str, float]], statements: list[tuple[str, tuple]],
                    legacy: list[tuple[str]]) -> None:
        """One transaction: credit events, the journal ids they settle, rows an older version left
        in `inflight`, client IPs seen, then other writes (named statements), in order.
        (`event_ids` is for stores that key events by journal id; `settled` does that job here.)"""
        await asyncio.get_running_loop().run_in_executor(
            self._thread, self._write, events, settled, ips, statements, legacy)

    async def ride_along(self, groups: list[list[tuple[str, tuple]]]) -> list[tuple[int, BaseException]]:
        """See antex.store.interface.Writer.ride_along."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._ride_along, groups)

    def _write(self, *writes: list) -> None:
        self._check_file()
        _write(self._conn, *writes)

    def _ride_along(self, groups: list[list[tuple[str, tuple]]]) -> list[tuple[int, BaseException]]:
        self._check_file()
        return _ride_along(self._conn, groups)

    def _check_file(self) -> None:
        # SQLite goes on writing to a database file that was deleted (or replaced) under it, into
        # nothing anyone will read again: that is a failed write too.
        try:
            moved = not os.path.samestat(self._file, os.stat(self._path))
        except FileNotFoundError:
            moved = True
        if moved:
            raise FileNotFoundError(f"the database file {self._path} was removed or replaced")

    async def roll_up_day(self, day: float) -> int:
        """Fold the events of the UTC day starting at `day` into `daily_usage` and delete them,
        in one transaction (a day at a time: the ledger's commits run in between); returns how many."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, _roll_up_day, self._conn, day)

    async def oldest_event(self) -> float | None:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, lambda: self._conn.execute("SELECT MIN(ts) FROM events").fetchone()[0])

    async def forget_ips(self, before: float) -> int:
        """Delete client IPs last seen before `before`; returns how many."""
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, lambda: self._conn.execute("DELETE FROM key_ips WHERE last_seen < ?", (before,)).rowcount)

    async def close(self) -> None:
        """Close once the call in progress, if any, has returned (bounded by the busy timeout)."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        finally:
            self._thread.shutdown(wait=False)


def _open_writer(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {WRITER_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _write(conn: sqlite3.Connection, events: list[tuple], settled: list[str], ips: list[tuple],
           statements: list[tuple[str, tuple]], legacy: list[tuple[str]]) -> None:
    """Writer.write on the writer's thread."""
    with _transaction(conn):
        if events:
            conn.executemany(INSERT_EVENT, events)
        if settled:
            conn.execute(SETTLE_JOURNAL, (orjson.dumps(settled).decode(),))
        if legacy:
            conn.executemany(DELETE_LEGACY, legacy)
        if ips:
            conn.executemany(UPSERT_IP, ips)
        for sql, params in statements:
            conn.execute(sql, params)


# A statement's own fault, not the store's: retrying it would fail the same way for ever. (An
# OperationalError is the store's: locked, full, read-only, an I/O error.)
OWN_FAULTS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


def _ride_along(conn: sqlite3.Connection, groups: list[list[tuple[str, tuple]]]) -> list[tuple[int, BaseException]]:
    """Writer.ride_along on the writer's thread."""
    refused = []
    with _transaction(conn):
        for index, group in enumerate(groups):
            conn.execute("SAVEPOINT ride_along")
            try:
                for sql, params in group:
                    conn.execute(sql, params)
            except OWN_FAULTS as error:
                conn.execute("ROLLBACK TO ride_along")
                refused.append((index, error))
            conn.execute("RELEASE ride_along")
    return refused


def _roll_up_day(conn: sqlite3.Connection, day: float) -> int:
    with _transaction(conn):
        conn.execute(ROLL_UP_DAY, (day, day, day + DAY_S))
        return conn.execute("DELETE FROM events WHERE ts >= ? AND ts < ?", (day, day + DAY_S)).rowcount


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error, so the connection stays usable."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise

