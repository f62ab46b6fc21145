"""Several Antex processes, one gateway: what the other instances sharing a PostgreSQL store do,
applied to this instance's in-memory key states, and what this one tells them.

Admission stays in memory and O(1): a key's windows here hold every instance's charges, its IP
map every instance's sightings, and `remote_in_flight` the sum of the others' requests in flight.
Each instance sends its charges and new client IPs as it counts them (a millisecond or so later
they count everywhere), and again from the transaction that commits them, which is delivered only
if that commits: the second copy is what reaches an instance that missed the first (it was
reconnecting), and a charge is counted once per journal id (Copies: the first copy of either kind
counts, the other kind is then expected however late it comes, e.g. after a long store outage). Its ip_limit_reached refusals go out
at once too, so the automatic quarantine counts every instance's. In-flight counts are sent on every
change and in full every IN_FLIGHT_EVERY_S; a count not refreshed within IN_FLIGHT_STALE_S (a
crashed instance) is dropped. Key changes reload the key cache at once.

After every (re)connect of the feed, a catch-up read rebuilds the windows and IP maps of every
loaded key from the database, plus this instance's own charges not committed yet and whatever
the feed delivered during the read, each charge once (by journal id): nothing another instance
committed while this one was cut off is missed, nothing counted twice.
"""
from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import defaultdict
from typing import Callable

import orjson

from antex.auth import KeyCache
from antex.ledger import IP_WINDOW_S, KeyState, Ledger
from antex.store import feed
from antex.store.postgres import PostgresStore
from antex.windows import SEVEN_DAYS_S

IN_FLIGHT_EVERY_S = 1.0
IN_FLIGHT_STALE_S = 3.5
# After a reconnect, the charges read that were committed this recently may still have copies on
# their way (a charge's ts is when it was counted; its commit may come later)
CATCH_UP_RECENT_S = 300.0
MAX_AWAITED = 200_000  # journal ids waiting for their other copy, at most (see Copies)


class Copies:
    """Each charge reaches the other instances twice: as it is counted ("first") and from the
    transaction that commits it ("committed"). The first copy of either kind counts; its id is then
    remembered until the other kind arrives, however late (a store outage can hold a commit for
    minutes), and forgotten then. Only a copy lost with a cut connection leaves its id behind: past
    MAX_AWAITED the oldest such ids go (their late twin, should one ever come, would count twice;
    a reconnect's catch-up read starts afresh anyway)."""

    def __init__(self) -> None:
        self._awaited: dict[str, bool] = {}  # journal id -> the kind that came (True: committed)

    def counts(self, journal_id: str, committed: bool) -> bool:
        """Whether this copy is the one that counts."""
        came = self._awaited.get(journal_id)
        if came is None:
            self._awaited[journal_id] = committed
            if len(self._awaited) > MAX_AWAITED:
                del self._awaited[next(iter(self._awaited))]
            return True
        if came != committed:
            del self._awaited[journal_id]  # both copies are in: nothing more will come
        return False

    def reset(self, journal_ids: list[str]) -> None:
        """After a catch-up read: these were counted by it, and any copy of them still to come is not."""
        self._awaited = dict.fromkeys(journal_ids, True)
        for _ in range(len(self._awaited) - MAX_AWAITED):
            del self._awaited[next(iter(self._awaited))]


class Cluster:
    def __init__(self, url: str, instance: str, ledger: Ledger, keys: KeyCache, store: PostgresStore,
                 clock: Callable[[], float]) -> None:
        self.instance = instance
        self.ledger = ledger
        self.keys = keys
        self.store = store
        self.clock = clock
        self.feed = feed.Feed(url, self._received, keys.changed.set, self._catch_up)
        # key id -> instance -> (requests in flight, monotonic time heard)
        self.remote: dict[int, dict[str, tuple[int, float]]] = defaultdict(dict)
        self._pending: dict[int, list[tuple]] = defaultdict(list)  # charges for keys still loading
        self._caught: list[tuple] | None = None  # charges arriving during a catch-up read
        self.copies = Copies()
        self._outgoing: list[list] = []  # this instance's charges and IPs, sent on the next loop turn
        self._outgoing_ips: list[list] = []
        self._outgoing_refusals: list[list] = []
        self._dirty: set[int] = set()
        self._flush_soon: asyncio.Handle | None = None
        self._task: asyncio.Task | None = None
        ledger.on_loaded = self._loaded
        ledger.in_flight_changed = self._in_flight_changed
        ledger.charged = self._charged
        ledger.ip_seen = self._ip_seen
        ledger.ip_refused = self._ip_refused

    def start(self) -> None:
        self.feed.start()
        self._task = asyncio.create_task(self._every_second(), name="antex-cluster-in-flight")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.feed.close()

    def health(self) -> dict | None:
        """None while the feed is connected; otherwise since when it is not, for /healthz."""
        if self.feed.connected.is_set():
            return None
        return {"feed_error": self.feed.error, "down_s": round(time.time() - (self.feed.down_since or time.time()), 1)}

    # what the others say

    def _received(self, message: dict) -> None:
        if message["i"] == self.instance:  # counted when settled; only a catch-up read needs it
            if self._caught is not None:
                self._caught.extend(tuple(charge) for charge in message.get("c", ()))
            return
        try:
            committed = message.get("k") == 1
            for key_id, ts, amount, journal_id in message.get("c", ()):
                self._charge((key_id, ts, amount, journal_id), committed)
            for key_id, ip, seen in message.get("p", ()):
                state = self.ledger.states.get(key_id)
                if state is not None and seen > state.ips.get(ip, 0.0):
                    state.ips[ip] = seen
            for key_id, at in message.get("r", ()):  # ip_limit_reached elsewhere: counts towards quarantine
                state = self.ledger.states.get(key_id)
                if state is not None:
                    bisect.insort(state.ip_refusals, at)
            if "f" in message:
                self._counts(message["i"], {int(k): v for k, v in message["f"].items()}, message.get("all", False))
        except (TypeError, ValueError):  # not a message of this version: ignore it, as unknown fields
            return

    def _charge(self, charge: tuple, committed: bool) -> None:
        if self._caught is not None:
            self._caught.append(charge)
        key_id, journal_id = charge[0], charge[3]
        state = self.ledger.states.get(key_id)
        if state is None and not self.ledger.is_loading(key_id):
            return  # a key not loaded here: its first request reads it from the database
        if journal_id is not None and not self.copies.counts(journal_id, committed):
            return  # the other copy of a charge already counted
        if state is not None:
            self.ledger.count(state, charge[1], charge[2])
        else:
            self._pending[key_id].append(charge)

    def _loaded(self, state: KeyState) -> None:
        """A key's history was just read: add what the feed brought meanwhile and the read did not
        see (a charge no older than the newest read was committed before the read, so it is in it)."""
        newest = state.last_ts
        for _, ts, amount, _ in self._pending.pop(state.key_id, ()):
            if ts > newest:
                self.ledger.count(state, ts, amount)
        state.remote_in_flight = self._remote_sum(state.key_id)

    def _counts(self, instance: str, counts: dict[int, int], every_key: bool) -> None:
        now = time.monotonic()
        touched = set(counts)
        if every_key:
            for key_id, by_instance in self.remote.items():
                if instance in by_instance and key_id not in counts:
                    del by_instance[instance]
                    touched.add(key_id)
        for key_id, count in counts.items():
            self.remote[key_id][instance] = (count, now)
        for key_id in touched:
            self._sum(key_id)

    def _sum(self, key_id: int) -> None:
        state = self.ledger.states.get(key_id)
        if state is not None:
            state.remote_in_flight = self._remote_sum(key_id)

    def _remote_sum(self, key_id: int) -> int:
        by_instance = self.remote.get(key_id)
        return sum(count for count, _ in by_instance.values()) if by_instance else 0

    # what this instance says

    def _charged(self, key_id: int, ts: float, amount: int, journal_id: str | None) -> None:
        self._outgoing.append([key_id, ts, amount, journal_id])
        self._send_soon()

    def _ip_seen(self, key_id: int, ip: str, seen: float) -> None:
        self._outgoing_ips.append([key_id, ip, seen])
        self._send_soon()

    def _ip_refused(self, key_id: int, at: float) -> None:
        self._outgoing_refusals.append([key_id, at])
        self._send_soon()

    def _in_flight_changed(self, state: KeyState) -> None:
        self._dirty.add(state.key_id)
        self._send_soon()

    def _send_soon(self) -> None:
        """Everything that changed in this turn of the event loop goes out in one message."""
        if self._flush_soon is None:
            self._flush_soon = asyncio.get_running_loop().call_soon(self._send_changed)

    def _send_changed(self) -> None:
        self._flush_soon = None
        if self._outgoing or self._outgoing_ips:
            self.feed.publish(feed.settled_messages(self.instance, self._outgoing, self._outgoing_ips))
            self._outgoing, self._outgoing_ips = [], []
        if self._outgoing_refusals:
            self.feed.publish([orjson.dumps({"i": self.instance, "r": self._outgoing_refusals}).decode()])
            self._outgoing_refusals = []
        if self._dirty:
            states = self.ledger.states
            counts = {key_id: states[key_id].in_flight for key_id in self._dirty if key_id in states}
            self._dirty.clear()
            self.feed.publish(feed.in_flight_messages(self.instance, counts, every_key=False))

    async def _every_second(self) -> None:
        """Send every count in flight (a lost message heals within a second), drop the counts of
        instances that stopped sending theirs."""
        while True:
            await asyncio.sleep(IN_FLIGHT_EVERY_S)
            counts = {key_id: state.in_flight for key_id, state in self.ledger.states.items() if state.in_flight}
            self.feed.publish(feed.in_flight_messages(self.instance, counts, every_key=True))
            now = time.monotonic()
            stale = now - IN_FLIGHT_STALE_S
            for key_id, by_instance in self.remote.items():
                gone = [instance for instance, (_, heard) in by_instance.items() if heard < stale]
                for instance in gone:
                    del by_instance[instance]
                if gone:
                    self._sum(key_id)

    # after a (re)connect

    async def _catch_up(self) -> None:
        """Rebuild every loaded key's windows and IPs from the database (see the module doc)."""
        self.keys.changed.set()
        self.ledger.store_is_back()
        states = dict(self.ledger.states)
        if not states:
            return
        self._caught = []
        try:
            # This instance's own charges not committed before the read, or settled during it,
            # are in the ledger's batches before or after it, or come back on the feed meanwhile.
            before = self.ledger.unwritten_charges()
            now = self.clock()
            rows = await self.store.recent_charges(list(states), now - SEVEN_DAYS_S)
            ips = await self.store.recent_ips(list(states), now - IP_WINDOW_S)
            caught = self._caught
        finally:
            self._caught = None
        per_key: dict[int, list[tuple[float, int]]] = defaultdict(list)
        seen: set[str] = set()
        recent = now - CATCH_UP_RECENT_S
        self.copies.reset([journal_id for _, ts, _, journal_id in (*rows, *caught)
                           if journal_id is not None and ts > recent])
        for key_id, ts, amount, journal_id in (*rows, *before, *caught, *self.ledger.unwritten_charges()):
            if journal_id is not None:
                if journal_id in seen:
                    continue
                seen.add(journal_id)
            per_key[key_id].append((ts, amount))
        for key_id, state in states.items():
            self.ledger.rebuild(state, per_key.get(key_id, []))
        for key_id, ip, seen_at in ips:
            state = states.get(key_id)
            if state is not None and seen_at > state.ips.get(ip, 0.0):
                state.ips[ip] = seen_at
