"""The ledger: each key's window state in memory, and the single task that writes SQLite.

SQLite is the durable log, not the hot path. A key's recent charges are loaded once, lazily, then
kept exact in memory; every settled request is added in memory at once and handed to the writer,
which commits whatever has piled up in one transaction, so write batches grow with load. Admitted
requests are journaled in the append-only file of antex/journal.py, which a crash leaves for the
next start to settle.
Other writes (stored responses) ride along in a transaction of their own after the credit
events', so billing never waits on them or fails with them (antex/ride_along.py).

When SQLite stops taking writes (a full disk, a lock held for minutes, a removed file) the ledger
keeps serving from memory and the journal, retries with backoff, says so in the log once per
change of state and through `health()` (/healthz); it refuses new requests only once the journal
cannot take them either. A stop waits a bounded time for the writer, then leaves what is unwritten
in the journal for the next start.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import orjson

from antex.catalog import Rates
from antex.credits import Usage, micro_credits
from antex.failure import Failure
from antex.journal import Journal, OpenRequest, read_open
from antex.ride_along import Overflow, RideAlong, refused
from antex.store import Store, Writer, prune
from antex.store_reads import Reads
from antex.windows import SEVEN_DAYS_S, RollingWindow, both_windows, extend_both

log = logging.getLogger("antex.ledger")

IP_WINDOW_S = 24 * 3600
IP_WRITE_EVERY_S = 60  # a known IP's last_seen is persisted at most this often
# How long a settled charge may wait to be committed: a crash meanwhile still charges it from the
# journal (with the usage seen, or an estimate), and waiting makes one commit serve many requests.
COMMIT_EVERY_S = 0.05
WRITE_RETRY_S = 0.5  # the first retry of a failed commit; each next one waits twice as long...
WRITE_RETRY_MAX_S = 10.0  # ...up to this: a store that is back is written within seconds
STALLED_AFTER_S = 5.0  # charges unwritten this long make the ledger unhealthy, failed commit or not
FLUSH_ON_STOP_S = 5.0  # how long a stop waits for the writer before leaving the rest to the journal
# Settled charges held in memory while SQLite fails, at most (a row is a few hundred bytes): past
# this, requests are refused as when the journal is full.
MAX_UNWRITTEN = 200_000


class LedgerUnavailable(Exception):
    """An admitted request cannot be recorded (the journal cannot be written): refuse it."""


@dataclass
class KeyState:
    """What admission needs to know of one key, kept in memory."""

    five_hour: RollingWindow
    seven_day: RollingWindow
    ips: dict[str, float]  # client IP -> last seen (persisted at most once a minute per IP)
    in_flight: int = 0
    ip_refusals: deque[float] = field(default_factory=deque)
    version: int = 0  # bumped on every charge; caches derived from the windows key on it
    last_ts: float = 0.0  # the newest charge's time: no charge of this key is ever older
    key_id: int = 0
    remote_in_flight: int = 0  # requests other instances sharing the database have in flight


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
    """Writes waiting for the writer, applied in this order in one transaction; then, in a
    transaction of their own, the ride-alongs (antex/ride_along.py)."""

    events: list[tuple] = field(default_factory=list)  # settled requests...
    event_ids: list[str | None] = field(default_factory=list)  # ...each one's journal id (a stop journals the rows)
    settled: list[str] = field(default_factory=list)  # journal ids the transaction settles
    ips: list[tuple[int, str, float]] = field(default_factory=list)
    statements: list[tuple[str, tuple]] = field(default_factory=list)  # other writes (named in antex.store)
    legacy: list[tuple[str]] = field(default_factory=list)  # ids of rows an older version left in `inflight`
    ride_alongs: list[RideAlong] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.billing() or self.ride_alongs)

    def billing(self) -> bool:
        """Whether it holds anything for the first transaction."""
        return bool(self.events or self.settled or self.ips or self.statements or self.legacy)

    def put_back(self, newer: "Batch") -> "Batch":
        """This (failed) batch, with what arrived since appended: nothing is dropped."""
        for name in ("events", "event_ids", "settled", "ips", "statements", "legacy", "ride_alongs"):
            getattr(self, name).extend(getattr(newer, name))
        return self


class Ledger:
    """Key states (lazily loaded, then exact) and the one writer of SQLite."""

    def __init__(self, reader: Store, writer: Writer, journal: Journal, clock: Callable[[], float], *,
                 instance: str = "", store_name: str = "SQLite", reads: Reads | None = None) -> None:
        self.reader = reader
        self.reads = reads or Reads()  # a key's first load is on a request's path
        self.writer = writer
        self.journal_file = journal
        self.clock = clock
        self.states: dict[int, KeyState] = {}
        self._loading: dict[int, asyncio.Future[KeyState]] = {}
        self._batch = Batch()
        self._writing = Batch()  # the batch of the commit under way
        self._journal_ids = itertools.count(1)
        # Journal ids name a request among every instance's: "instance/boot-n" when several share a store.
        self._boot = (f"{instance}/" if instance else "") + f"{int(time.time() * 1000):x}"
        # Called when a key's state has been loaded, when a key's count in flight changes, when a
        # charge is counted and when a client IP is recorded (set by antex/cluster.py when other
        # instances share the store, to tell them at once).
        self.on_loaded: Callable[[KeyState], None] | None = None
        self.in_flight_changed: Callable[[KeyState], None] | None = None
        self.charged: Callable[[int, float, int, str | None], None] | None = None
        self.ip_seen: Callable[[int, str, float], None] | None = None
        self.ip_refused: Callable[[int, float], None] | None = None  # an ip_limit_reached, for the quarantine rule
        self._wake = asyncio.Event()
        self._retry_now = asyncio.Event()  # cuts a retry's backoff short (a flush, a stop)
        self._soon: asyncio.TimerHandle | None = None  # a pending _kick_soon wake-up
        self._idle = asyncio.Event()
        self._idle.set()
        self._taken = 0  # batches the writer has taken, numbered from 1
        self._committed = 0  # the number of the last batch committed (every earlier one is too)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # flush() calls: (batch number, future)
        self._task: asyncio.Task | None = None
        self._pending_since: float | None = None  # monotonic time of the oldest uncommitted charge
        self.store_failure = Failure(f"writing to {store_name}", log)
        self.overflow = Overflow()
        self.journal_failure = Failure(f"writing the journal {journal.path}", log)

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
        newest = 0.0
        # In chunks, the loop running between them: a history of a million charges takes about a
        # second to read, and would otherwise hold every stream back for as long.
        with self.reads.guard():
            async for chunk in self.reader.charge_chunks(key_id, now - SEVEN_DAYS_S):
                extend_both(windows, chunk, now)
                newest = chunk[-1][0]
            ips = dict(await self.reader.ips_since(key_id, now - IP_WINDOW_S))
        state = self.states.setdefault(key_id, KeyState(five_hour=windows[0], seven_day=windows[1], ips=ips,
                                                        last_ts=newest, key_id=key_id))
        if self.on_loaded is not None:
            self.on_loaded(state)
        return state

    def is_loading(self, key_id: int) -> bool:
        return key_id in self._loading

    def unwritten_charges(self) -> list[tuple[int, float, int, str | None]]:
        """(key id, ts, micro-credits, journal id) of every settled charge not yet committed."""
        return [(row[0], row[1], row[9], journal_id) for batch in (self._writing, self._batch)
                for row, journal_id in zip(batch.events, batch.event_ids)]

    def count(self, state: KeyState, ts: float, amount: int) -> float:
        """Add a charge to the key's windows now; returns its time, never before the key's newest
        (a wall clock stepping back, or another instance's clock, would otherwise put it out of order)."""
        if ts < state.last_ts:
            ts = state.last_ts
        state.last_ts = ts
        if amount > 0:
            state.five_hour.add(ts, amount)
            state.seven_day.add(ts, amount)
            state.version += 1
        return ts

    def rebuild(self, state: KeyState, charges: list[tuple[float, int]]) -> None:
        """Replace the key's windows with these charges (ts, micro-credits), in any order."""
        charges.sort()
        windows = both_windows(charges, self.clock())
        state.five_hour, state.seven_day = windows
        state.last_ts = max(state.last_ts, charges[-1][0]) if charges else state.last_ts
        state.version += 1

    @property
    def unwritten(self) -> int:
        """Settled charges not yet committed to SQLite (those of a commit under way included)."""
        return len(self._batch.events) + len(self._writing.events)

    def health(self) -> dict | None:
        """None while charges reach SQLite; otherwise what is wrong, for /healthz."""
        stalled = self._pending_since is not None and time.monotonic() - self._pending_since > STALLED_AFTER_S
        if not stalled and self.store_failure.error is None and self.journal_failure.error is None:
            return None
        problem = {"unwritten_charges": self.unwritten, "journal_open": self.journal_file.open_count,
                   "store_error": self.store_failure.error, "journal_error": self.journal_failure.error}
        if self._pending_since is not None:
            problem["oldest_unwritten_s"] = round(time.monotonic() - self._pending_since, 1)
        return problem

    # writing

    def journal(self, key_id: int, model: str, endpoint: str, estimated_input: int) -> str:
        """Record an admitted request before it goes upstream; returns its journal id.

        Written through at once (see antex/journal.py), so a crash at any later moment leaves an
        entry the next start settles. Raises LedgerUnavailable when the journal cannot take it, or
        when SQLite is failing and the charges held for it are too many or have nowhere to go.
        """
        if self.store_failure.error is not None:
            self._check_room()
        journal_id = f"{self._boot}-{next(self._journal_ids)}"
        try:
            self.journal_file.admitted(journal_id, key_id, self.clock(), model, endpoint, estimated_input)
        except OSError as error:
            self.journal_failure.failed(error, "refusing requests (503) until it can be written")
            raise LedgerUnavailable(str(error)) from None
        if self.journal_failure.error is not None:
            self.journal_failure.recovered("accepting requests again")
        return journal_id

    def _check_room(self) -> None:
        """While SQLite fails, charges live in memory and the journal: refuse when either is gone."""
        if self.unwritten >= MAX_UNWRITTEN:
            raise LedgerUnavailable(f"{self.unwritten} charges are waiting for SQLite")
        if not self.journal_file.intact():
            error = FileNotFoundError(f"{self.journal_file.path} was removed")
            self.journal_failure.failed(error, "refusing requests (503): nothing unwritten would survive a restart")
            raise LedgerUnavailable(str(error))

    def usage_seen(self, journal_id: str, usage: dict) -> None:
        """Remember a stream's first usage, so a crash mid-stream still charges what it knew."""
        try:
            self.journal_file.usage_seen(journal_id, usage)
        except OSError as error:  # the request is journaled already; a crash would charge an estimate
            self.journal_failure.failed(error, "refusing new requests (503) until it can be written")

    def charge(self, state: KeyState, charge: Charge, journal_id: str | None = None) -> None:
        """Count a settled request now, and queue it (and its journal row's removal) for the writer.

        A charge is never older than the key's newest (see `count`)."""
        ts = self.count(state, charge.ts, charge.micro_credits)
        if ts != charge.ts:
            charge = charge._replace(ts=ts)
        batch = self._batch
        batch.events.append(charge.row())
        batch.event_ids.append(journal_id)
        if journal_id is not None:
            batch.settled.append(journal_id)
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        self._kick_soon()
        if self.charged is not None:
            self.charged(charge.key_id, ts, charge.micro_credits, journal_id)

    def seen_ip(self, key_id: int, state: KeyState, ip: str, now: float) -> None:
        previous = state.ips.get(ip)
        state.ips[ip] = now
        if previous is None or now - previous >= IP_WRITE_EVERY_S:
            self._batch.ips.append((key_id, ip, now))
            self._kick_soon()
            if self.ip_seen is not None:
                self.ip_seen(key_id, ip, now)

    def quarantine(self, key_id: int, reason: str, now: float) -> None:
        """Quarantine an active key (the key watcher then refuses it), behind the pending writes."""
        self.execute(self.writer.QUARANTINE, (reason, now, key_id))

    def execute(self, sql: str, params: tuple) -> None:
        """Queue any other write (one of antex.store's named statements) behind the pending ones."""
        self._batch.statements.append((sql, params))
        self._kick()

    def execute_soon(self, statements: list[tuple[str, tuple]], what: str = "a stored-response write") -> None:
        """Queue writes that ride along with the next commit (within COMMIT_EVERY_S), in a
        transaction after the credit events': e.g. a stored response, all or nothing. Whoever must
        read them back calls flush(). See antex/ride_along.py for what happens when they fail."""
        self._batch.ride_alongs.append(RideAlong(what, statements))
        self.overflow.trim(self._batch.ride_alongs)
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
        """Settle the requests a crash (or a stop SQLite refused) left open; returns how many.
        Run before serving. When SQLite refuses the write now, they stay open in the journal and
        the writer retries them with everything else once it runs."""
        left = read_open(self.journal_file.path, await self.reader.last_settled())
        for request in left:
            self.journal_file.adopt(request)
        self.journal_file.rewrite()  # only what is still open, as this run's own
        legacy = await self.reader.inflight()  # (settled in SQLite itself: never copied into the journal)
        left += [OpenRequest(journal_id, key_id, model, endpoint, estimated, orjson.loads(usage) if usage else None)
                 for journal_id, key_id, model, endpoint, estimated, usage in legacy]
        if left:
            now = self.clock()
            for request in left:
                self._batch.events.append(tuple(request.charged) if request.charged else _interrupted(request, now, rates_of))
                self._batch.event_ids.append(request.id)
                self._batch.settled.append(request.id)
            self._batch.legacy += [(row[0],) for row in legacy]
            log.warning("settling %d requests left open by an earlier stop (%d with the charge it had settled)",
                        len(left), sum(1 for request in left if request.charged))
            batch, self._batch = self._batch, Batch()
            try:
                await self._commit(batch)
            except Exception as error:  # sqlite3.Error or OSError
                self._batch = batch.put_back(self._batch)
                self._pending_since = time.monotonic()
                self._idle.clear()
                self._wake.set()  # the writer's first attempt, as soon as it runs
                self.store_failure.failed(error, f"{self.unwritten} charges from the last run kept in the journal; "
                                                 f"retrying with backoff")
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
            batch = self._batch
            self._batch = Batch()
            self._taken += 1
            number = self._taken
            charges = len(batch.events)
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                self._batch = batch.put_back(self._batch)
                raise
            except Exception as error:  # sqlite3.Error or OSError: a full disk, a lock, a removed file
                self._batch = batch.put_back(self._batch)  # (what was committed is no longer in it)
                self.overflow.trim(self._batch.ride_alongs)
                delay = min(WRITE_RETRY_MAX_S, WRITE_RETRY_S * 2 ** self.store_failure.attempts)
                self.store_failure.failed(error, f"{self.unwritten} charges kept in memory and in the journal; "
                                                 f"retrying with backoff up to {WRITE_RETRY_MAX_S:.0f} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._retry_now.wait(), delay)
                self._retry_now.clear()
                self._wake.set()
                continue
            self._committed = number
            self._release_waiters()
            self.store_failure.recovered(f"wrote {charges} charges")
            self._pending_since = time.monotonic() if self._batch.events else None
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
        """The credit events' transaction, then the ride-alongs'. What is committed leaves `batch`:
        when the second fails, only the ride-alongs are left to put back and retry."""
        if batch.billing():
            self._writing = batch
            try:
                await self.writer.write(batch.events, batch.event_ids, batch.settled, batch.ips, batch.statements,
                                        batch.legacy)
            finally:
                self._writing = Batch()
            settled = batch.settled
            batch.events, batch.event_ids, batch.settled = [], [], []
            batch.ips, batch.statements, batch.legacy = [], [], []
            try:
                self.journal_file.settled(settled)
            except OSError as error:
                # journal_settled holds these ids until the next commit, which carries them again.
                self.journal_failure.failed(error, "refusing new requests (503) until it can be written")
                self._batch.settled[:0] = settled
        if batch.ride_alongs:
            for index, error in await self.writer.ride_along([ride.statements for ride in batch.ride_alongs]):
                refused(batch.ride_alongs[index], error)
            batch.ride_alongs = []
            self.overflow.written()

    def store_is_back(self) -> None:
        """The store answers again (e.g. the cross-instance feed reconnected): retry a failed
        write now rather than at the end of its backoff."""
        self._retry_now.set()

    async def flush(self) -> None:
        """Wait until every write handed in so far is committed: not for those handed in meanwhile,
        so a flush returns even while a busy gateway keeps the writer going without a pause."""
        if self._idle.is_set():
            return
        if self._batch:  # it will be the next batch taken; now, not when a ride-along wait would end
            number = self._taken + 1
            self._wake.set()
            self._retry_now.set()  # a failed batch waiting out its backoff: try it now
        else:  # only the batch being committed
            number = self._taken
        if number <= self._committed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((number, waiter))
        await waiter

    async def prune(self, keep_s: float) -> tuple[int, int]:
        """Forget what no limit needs: client IPs unseen for 24 h (in memory and in SQLite), and
        raw events past the retention (rolled up into daily totals). Returns (events, IPs)."""
        now = self.clock()
        horizon = now - IP_WINDOW_S
        for state in self.states.values():
            for ip in [ip for ip, seen in state.ips.items() if seen <= horizon]:
                del state.ips[ip]
        return await prune(self.writer, now, keep_s, IP_WINDOW_S)

    async def close(self) -> None:
        """Flush for at most FLUSH_ON_STOP_S, then stop the writer. What SQLite did not take stays
        in the journal, each settled charge as it was, for the next start to write."""
        if self._task is None:
            self.journal_file.close()
            return
        if not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), FLUSH_ON_STOP_S)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if self._batch.events:
            self._leave_in_journal(self._batch)
        self.journal_file.close()

    def _leave_in_journal(self, batch: Batch) -> None:
        kept = 0
        try:
            for row, journal_id in zip(batch.events, batch.event_ids):
                if journal_id is not None:
                    self.journal_file.charged(journal_id, row)
                    kept += 1
        except OSError as error:
            log.error("stopping with %d charges SQLite did not take; the journal took %d of them (%s): the next "
                      "start charges the rest from what the journal knows", len(batch.events), kept, error)
            return
        log.error("stopping with %d charges SQLite did not take: they stay in the journal %s, and the next start "
                  "writes them", len(batch.events), self.journal_file.path)


def _interrupted(request: OpenRequest, now: float, rates_of: Callable[[str], Rates | None]) -> tuple:
    """The credit event of a request a crash cut: the usage seen, or an estimate marked as such."""
    seen = request.usage
    usage = Usage.from_anthropic(seen) if seen else Usage(input_tokens=request.estimated_input)
    rates = rates_of(request.model)
    return Charge(key_id=request.key_id, ts=now, model=request.model, endpoint=request.endpoint, usage=usage,
                  micro_credits=micro_credits(usage, rates) if rates else 0, request_id=None,
                  outcome="interrupted", estimated=not seen).row()
