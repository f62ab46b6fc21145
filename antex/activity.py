"""Requests and credits per model in each window, for /v1/usage/activity, read from SQLite at
most once a second per key however many clients poll it.

That query reads every event of the key's last 7 days (about 200 ms for 300k of them): polled by
dozens of dashboards at once, and repeated for each, it would keep the reader busy for seconds.
"""
from __future__ import annotations

import asyncio
import functools
import time
from typing import Callable

from antex.ledger import Ledger
from antex.store import Store
from antex.windows import WINDOWS

FRESH_S = 1.0  # an answer this young is shared with every caller of the same key...
UNCHANGED_S = 30.0  # ...and one this young too, while the key has not been charged since
MAX_KEYS = 10_000  # answers kept at most (the oldest are dropped first)

PerWindow = dict[str, list[tuple[str, int, int]]]


class ActivityCache:
    """One read in flight per key at a time; its answer shared while it is fresh."""

    def __init__(self, reader: Store, ledger: Ledger, clock: Callable[[], float]) -> None:
        self.reader = reader
        self.ledger = ledger
        self.clock = clock
        # key id -> (monotonic time read, the key's charge version then, the read)
        self._answers: dict[int, tuple[float, int, asyncio.Future[PerWindow]]] = {}

    async def per_window(self, key_id: int) -> PerWindow:
        """(model, requests, micro-credits) per model, busiest first, for each window."""
        now = time.monotonic()
        state = self.ledger.states.get(key_id)
        version = state.version if state is not None else -1
        found = self._answers.get(key_id)
        if found is None or not self._usable(found, now, version):
            self._answers.pop(key_id, None)
            if len(self._answers) >= MAX_KEYS:
                del self._answers[next(iter(self._answers))]
            reading = asyncio.ensure_future(self._read(key_id))
            reading.add_done_callback(functools.partial(self._forget_failed, key_id))
            found = self._answers[key_id] = (now, version, reading)
        return await asyncio.shield(found[2])

    @staticmethod
    def _usable(found: tuple, now: float, version: int) -> bool:
        read_at, read_version, reading = found
        if not reading.done():
            return True
        age = now - read_at
        return age < FRESH_S or (age < UNCHANGED_S and read_version == version)

    def _forget_failed(self, key_id: int, read: asyncio.Future) -> None:
        """A failed read is not shared: the next caller tries again."""
        if (read.cancelled() or read.exception() is not None) and self._answers.get(key_id, (0, 0, None))[2] is read:
            del self._answers[key_id]

    async def _read(self, key_id: int) -> PerWindow:
        now = self.clock()
        with self.ledger.reads.guard():
            return {title: await self.reader.activity(key_id, now - window_s) for title, _, window_s in WINDOWS}
