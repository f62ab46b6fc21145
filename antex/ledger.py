"""The ledger: each key's window state in memory, and the single task that writes SQLite.

SQLite is the durable log, not the hot path. A key's recent charges are loaded once, lazily, then
kept exact in memory; every settled request is added in memory at once and handed to the writer,
which commits whatever has piled up in one transaction, so write batches grow with load. Admitted
requests are journaled in the append-only file of antex/journal.py, which a crash leaves for the
next start to settle.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import orjson

from antex.config import Rates
from antex.credits import Usage, micro_credits
from antex.journal import Journal, OpenRequest, read_open
from antex.store import INSERT_EVENT, SETTLE_JOURNAL, UPSERT_IP, Store
from antex.windows import SEVEN_DAYS_S, RollingWindow, both_windows, extend_both

log = logging.getLogger("antex.ledger")

IP_WINDOW_S = 24 * 3600
IP_WRITE_EVERY_S = 60  # a known IP's last_seen is persisted at most this often
WRITE_RETRY_S = 1.0
# How long a settled charge may wait to be committed: a crash meanwhile still charges it from the
# journal (with the usage seen, or an estimate), and waiting makes one commit serve many requests.
COMMIT_EVERY_S = 0.05


@dataclass
class KeyState:
    """What admission needs to know of one key, kept in memory."""

    five_hour: RollingWindow
    seven_day: RollingWindow
    ips: dict[str, float]  # client IP -> last seen (persisted at most once a minute per IP)
    in_flight: int = 0
    ip_refusals: deque[float] = field(default_factory=deque)
    version: int = 0  # bumped on every charge; caches derived from the windows key on it


class Charge(NamedTuple):
    """One settled request, as written to the `events` table (one per request: a NamedTuple is
    built several times faster than a frozen dataclass)."""

    key_id: int
    ts: float
    model: str
    endpoint: str
    usage: Usage
    micro_credits: int
    request_id: str | None
    outcome: str  # complete, client_disconnected, upstream_error, interrupted
    estimated: bool = False  # no usage was ever seen: tokens guessed from the request
    upstream: str | None = None  # the pool member that answered

    def row(self) -> tuple:
        u = self.usage
        return (self.key_id, self.ts, self.model, self.endpoint, u.input_tokens, u.output_tokens,
                u.cache_write_5m_tokens, u.cache_write_1h_tokens, u.cache_read_tokens, self.micro_credits,
                self.request_id, self.outcome, int(self.estimated), u.web_search_requests, u.web_fetch_requests,
                self.upstream)


@dataclass
class Batch:
    """Writes waiting for the writer, applied in this order in one transaction."""

    events: list[tuple] = field(default_factory=list)  # settled requests...
    settled: list[str] = field(default_factory=list)  # ...and their journal ids
    ips: list[tuple[int, str, float]] = field(default_factory=list)
    statements: list[tuple[str, tuple]] = field(default_factory=list)
    legacy: list[tuple[str]] = field(default_factory=list)  # ids of rows an older version left in `inflight`

    def __bool__(self) -> bool:
        return bool(self.events or self.settled or self.ips or self.statements or self.legacy)

    def put_back(self, newer: "Batch") -> "Batch":
        """This (failed) batch, with what arrived since appended: nothing is dropped."""
        for name in ("events", "settled", "ips", "statements", "legacy"):
            getattr(self, name).extend(getattr(newer, name))
        return self


class Ledger:
    """Key states (lazily loaded, then exact) and the one writer of SQLite."""

    def __init__(self, reader: Store, writer: Store, journal: Journal, clock: Callable[[], float]) -> None:
        self.reader = reader
        self.writer = writer
        self.journal_file = journal
        self.clock = clock
        self.states: dict[int, KeyState] = {}
        self._loading: dict[int, asyncio.Future[KeyState]] = {}
        self._batch = Batch()
        self._journal_ids = itertools.count(1)
        self._boot = f"{int(time.time() * 1000):x}"
        self._wake = asyncio.Event()
        self._soon: asyncio.TimerHandle | None = None  # a pending _kick_soon wake-up
        self._idle = asyncio.Event()
        self._idle.set()
        self._taken = 0  # batches the writer has taken, numbered from 1
        self._committed = 0  # the number of the last batch committed (every earlier one is too)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # flush() calls: (batch number, future)
        self._task: asyncio.Task | None = None

    # reading

    async def state(self, key_id: int) -> KeyState:
        """The key's state; the first call for a key reads its last 7 days once."""
        found = self.states.get(key_id)
        if found is not None:
            return found
        loading = self._loading.get(key_id)
        if loading is None:
            loading = self._loading[key_id] = asyncio.ensure_future(self._load(key_id))
            loading.add_done_callback(lambda _: self._loading.pop(key_id, None))
        return await asyncio.shield(loading)

    async def _load(self, key_id: int) -> KeyState:
        now = self.clock()
        windows = both_windows([], now)
        # In chunks, the loop running between them: a history of a million charges takes about a
        # second to read, and would otherwise hold every stream back for as long.
        async for chunk in self.reader.charge_chunks(key_id, now - SEVEN_DAYS_S):
            extend_both(windows, chunk, now)
        ips = dict(await self.reader.ips_since(key_id, now - IP_WINDOW_S))
        return self.states.setdefault(key_id, KeyState(five_hour=windows[0], seven_day=windows[1], ips=ips))

    @property
    def unwritten(self) -> int:
        """Settled charges not yet committed to SQLite."""
        return len(self._batch.events)

    # writing

    def journal(self, key_id: int, model: str, endpoint: str, estimated_input: int) -> str:
        """Record an admitted request before it goes upstream; returns its journal id.

        Written through at once (see antex/journal.py), so a crash at any later moment leaves an
        entry the next start settles. Raises OSError when the journal cannot be written.
        """
        journal_id = f"{self._boot}-{next(self._journal_ids)}"
        self.journal_file.admitted(journal_id, key_id, self.clock(), model, endpoint, estimated_input)
        return journal_id

    def usage_seen(self, journal_id: str, usage: dict) -> None:
        """Remember a stream's first usage, so a crash mid-stream still charges what it knew."""
        try:
            self.journal_file.usage_seen(journal_id, usage)
        except OSError:  # the request is journaled already; a crash would charge an estimate
            log.exception("journaling the usage seen failed")

    def charge(self, state: KeyState, charge: Charge, journal_id: str | None = None) -> None:
        """Count a settled request now, and queue it (and its journal row's removal) for the writer."""
        if charge.micro_credits > 0:
            state.five_hour.add(charge.ts, charge.micro_credits)
            state.seven_day.add(charge.ts, charge.micro_credits)
            state.version += 1
        self._batch.events.append(charge.row())
        if journal_id is not None:
            self._batch.settled.append(journal_id)
        self._kick_soon()

    def seen_ip(self, key_id: int, state: KeyState, ip: str, now: float) -> None:
        previous = state.ips.get(ip)
        state.ips[ip] = now
        if previous is None or now - previous >= IP_WRITE_EVERY_S:
            self._batch.ips.append((key_id, ip, now))
            self._kick_soon()

    def execute(self, sql: str, params: tuple) -> None:
        """Queue any other write (e.g. an automatic quarantine) behind the pending ones."""
        self._batch.statements.append((sql, params))
        self._kick()

    def execute_soon(self, statements: list[tuple[str, tuple]]) -> None:
        """Queue writes that may ride along with the next commit (within COMMIT_EVERY_S), as
        settled charges do: e.g. a stored response; whoever must read them back calls flush()."""
        self._batch.statements += statements
        self._kick_soon()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    def _kick_soon(self) -> None:
        """Wake the writer within COMMIT_EVERY_S: settled charges are safe in the journal until
        then, and under load one commit then carries every request settled meanwhile."""
        self._idle.clear()
        if self._soon is None and not self._wake.is_set():
            self._soon = asyncio.get_running_loop().call_later(COMMIT_EVERY_S, self._wake.set)

    async def recover(self, rates_of: Callable[[str], Rates | None]) -> int:
        """Settle the requests a crash left open; returns how many. Run before serving."""
        left = read_open(self.journal_file.path, await self.reader.last_settled())
        legacy = await self.reader.inflight()
        left += [OpenRequest(journal_id, key_id, model, endpoint, estimated, orjson.loads(usage) if usage else None)
                 for journal_id, key_id, model, endpoint, estimated, usage in legacy]
        if left:
            now = self.clock()
            for request in left:
                seen = request.usage
                usage = Usage.from_anthropic(seen) if seen else Usage(input_tokens=request.estimated_input)
                rates = rates_of(request.model)
                self._batch.events.append(Charge(
                    key_id=request.key_id, ts=now, model=request.model, endpoint=request.endpoint, usage=usage,
                    micro_credits=micro_credits(usage, rates) if rates else 0, request_id=None,
                    outcome="interrupted", estimated=not seen).row())
                self._batch.settled.append(request.id)
            self._batch.legacy += [(row[0],) for row in legacy]
            log.warning("settled %d requests left open by an earlier stop", len(left))
            batch, self._batch = self._batch, Batch()
            await self._commit(batch)
        self.journal_file.rewrite()  # whatever the old file held is settled now
        return len(left)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="antex-ledger-writer")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._soon is not None:
                self._soon.cancel()
                self._soon = None
            batch, self._batch = self._batch, Batch()
            self._taken += 1
            number = self._taken
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                self._batch = batch.put_back(self._batch)
                raise
            except Exception:
                log.exception("writing %d credit events failed; retrying in %.0fs", len(batch.events), WRITE_RETRY_S)
                self._batch = batch.put_back(self._batch)  # committed later, with a later batch number
                await asyncio.sleep(WRITE_RETRY_S)
                self._wake.set()
                continue
            self._committed = number
            self._release_waiters()
            if not self._batch:
                self._idle.set()

    def _release_waiters(self) -> None:
        waiting = []
        for number, waiter in self._waiters:
            if number <= self._committed:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                waiting.append((number, waiter))
        self._waiters = waiting

    async def _commit(self, batch: Batch) -> None:
        # The whole transaction is one call on the writer connection's thread: each await on
        # aiosqlite is a round trip between threads (two GIL hand-offs and a loop wake-up), and
        # a statement per await made a commit cycle five of them.
        conn = self.writer.conn
        await conn._execute(_apply, conn._conn, batch)
        try:
            self.journal_file.settled(batch.settled)
        except OSError:
            # journal_settled holds these ids until the next commit, which carries them again.
            log.exception("journaling %d settled requests failed", len(batch.settled))
            self._batch.settled[:0] = batch.settled

    async def flush(self) -> None:
        """Wait until every write handed in so far is committed: not for those handed in meanwhile,
        so a flush returns even while a busy gateway keeps the writer going without a pause."""
        if self._idle.is_set():
            return
        if self._batch:  # it will be the next batch taken; now, not when a ride-along wait would end
            number = self._taken + 1
            self._wake.set()
        else:  # only the batch being committed
            number = self._taken
        if number <= self._committed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((number, waiter))
        await waiter

    async def close(self) -> None:
        """Flush, then stop the writer: nothing settled is lost on a graceful stop."""
        if self._task is None:
            self.journal_file.close()
            return
        if not self._task.done():
            await self.flush()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        self.journal_file.close()


def _apply(conn: sqlite3.Connection, batch: Batch) -> None:
    """Write `batch` in one transaction, on the writer connection's own thread."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if batch.events:
            conn.executemany(INSERT_EVENT, batch.events)
        if batch.settled:
            conn.execute(SETTLE_JOURNAL, (orjson.dumps(batch.settled).decode(),))
        if batch.legacy:
            conn.executemany("DELETE FROM inflight WHERE id = ?", batch.legacy)
        if batch.ips:
            conn.executemany(UPSERT_IP, batch.ips)
        for sql, params in batch.statements:
            conn.execute(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
