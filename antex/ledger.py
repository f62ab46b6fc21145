"""The ledger: each key's window state in memory, and the single task that writes SQLite.

SQLite is the durable log, not the hot path. A key's recent charges are loaded once, lazily, then
kept exact in memory; every settled request is added in memory at once and handed to the writer,
which commits whatever has piled up in one transaction, so write batches grow with load.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from antex.credits import Usage
from antex.store import Store
from antex.windows import FIVE_HOURS_S, SEVEN_DAYS_S, RollingWindow

log = logging.getLogger("antex.ledger")

IP_WINDOW_S = 24 * 3600
IP_WRITE_EVERY_S = 60  # a known IP's last_seen is persisted at most this often
WRITE_RETRY_S = 1.0


@dataclass
class KeyState:
    """What admission needs to know of one key, kept in memory."""

    five_hour: RollingWindow
    seven_day: RollingWindow
    ips: dict[str, float]  # client IP -> last seen (persisted at most once a minute per IP)
    in_flight: int = 0
    ip_refusals: deque[float] = field(default_factory=deque)
    version: int = 0  # bumped on every charge; caches derived from the windows key on it


@dataclass(frozen=True)
class Charge:
    """One settled request, as written to the `events` table."""

    key_id: int
    ts: float
    model: str
    endpoint: str
    usage: Usage
    micro_credits: int
    request_id: str | None
    outcome: str  # complete, client_disconnected, upstream_error

    def row(self) -> tuple:
        u = self.usage
        return (self.key_id, self.ts, self.model, self.endpoint, u.input_tokens, u.output_tokens,
                u.cache_write_5m_tokens, u.cache_write_1h_tokens, u.cache_read_tokens, self.micro_credits,
                self.request_id, self.outcome)


class Ledger:
    """Key states (lazily loaded, then exact) and the one writer of SQLite."""

    def __init__(self, reader: Store, writer: Store, clock: Callable[[], float]) -> None:
        self.reader = reader
        self.writer = writer
        self.clock = clock
        self.states: dict[int, KeyState] = {}
        self._loading: dict[int, asyncio.Future[KeyState]] = {}
        self._events: list[tuple] = []
        self._ips: list[tuple[int, str, float]] = []
        self._statements: list[tuple[str, tuple]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
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
        charges = await self.reader.charges_since(key_id, now - SEVEN_DAYS_S)
        ips = dict(await self.reader.ips_since(key_id, now - IP_WINDOW_S))
        state = KeyState(
            five_hour=RollingWindow(FIVE_HOURS_S, (c for c in charges if c[0] > now - FIVE_HOURS_S)),
            seven_day=RollingWindow(SEVEN_DAYS_S, charges),
            ips=ips,
        )
        return self.states.setdefault(key_id, state)

    @property
    def unwritten(self) -> int:
        """Settled charges not yet committed to SQLite."""
        return len(self._events)

    # writing

    def charge(self, state: KeyState, charge: Charge) -> None:
        """Count a settled request now, and queue it for the writer."""
        if charge.micro_credits > 0:
            state.five_hour.add(charge.ts, charge.micro_credits)
            state.seven_day.add(charge.ts, charge.micro_credits)
            state.version += 1
        self._events.append(charge.row())
        self._kick()

    def seen_ip(self, key_id: int, state: KeyState, ip: str, now: float) -> None:
        previous = state.ips.get(ip)
        state.ips[ip] = now
        if previous is None or now - previous >= IP_WRITE_EVERY_S:
            self._ips.append((key_id, ip, now))
            self._kick()

    def execute(self, sql: str, params: tuple) -> None:
        """Queue any other write (e.g. an automatic quarantine) behind the pending ones."""
        self._statements.append((sql, params))
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="antex-ledger-writer")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            events, ips, statements = self._events, self._ips, self._statements
            self._events, self._ips, self._statements = [], [], []
            try:
                await self._commit(events, ips, statements)
            except asyncio.CancelledError:
                self._events[:0], self._ips[:0], self._statements[:0] = events, ips, statements
                raise
            except Exception:
                log.exception("writing %d credit events failed; retrying in %.0fs", len(events), WRITE_RETRY_S)
                self._events[:0], self._ips[:0], self._statements[:0] = events, ips, statements
                await asyncio.sleep(WRITE_RETRY_S)
                self._wake.set()
                continue
            if not (self._events or self._ips or self._statements):
                self._idle.set()

    async def _commit(self, events: list[tuple], ips: list[tuple], statements: list[tuple]) -> None:
        conn = self.writer.conn
        await conn.execute("BEGIN IMMEDIATE")
        try:
            if events:
                await self.writer.insert_events(events)
            if ips:
                await self.writer.upsert_ips(ips)
            for sql, params in statements:
                await conn.execute(sql, params)
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise

    async def flush(self) -> None:
        """Wait until every charge handed in so far is committed."""
        await self._idle.wait()

    async def close(self) -> None:
        """Flush, then stop the writer: nothing settled is lost on a graceful stop."""
        if self._task is None:
            return
        if not self._task.done():
            await self.flush()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
