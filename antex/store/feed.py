"""The cross-instance feed: how Antex processes sharing one PostgreSQL database tell each other
of charges, client-IP sightings, in-flight counts and key changes, within milliseconds.

Why LISTEN/NOTIFY, and not polling a table or a broker of our own: PostgreSQL is already there
and already the source of truth; a notification sent inside the transaction that writes a batch
is delivered when, and only if, that batch commits, to every listening instance in commit order,
typically a millisecond later; it needs no table to clean up and no extra service to run. Its
one weakness is that a session that is not connected misses what was sent meanwhile: so after
every (re)connect the listener first LISTENs and then does a catch-up read of the state it keeps
(antex/cluster.py), deduplicating by journal id what arrives during that read. Polling would
need a query per instance every few milliseconds to meet the 100 ms promise; a broker would be
one more thing to run and keep consistent with the database.

Messages are JSON, under PostgreSQL's 8000-byte payload limit (a big batch is split):

    {"i": "web-1", "c": [[3, 1764072000.25, 1500000, "web-1/18f3c2d4e5a-7"]], "p": [[3, "203.0.113.7", 1764072000.2]]}
    {"i": "web-1", "f": {"3": 2}, "all": true}      in-flight counts (all: every key this instance has in flight)

`i` is the sending instance (its own messages come back to it and are skipped), `c` settled
charges (key id, ts, micro-credits, journal id), `p` client IPs seen, `f` requests in flight,
`r` ip_limit_reached refusals ([key id, ts]).
Key changes are a bare notification on KEYS_CHANNEL, sent by a trigger on the keys table.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Awaitable, Callable, Iterable

import asyncpg
import orjson

log = logging.getLogger("antex.feed")

CHANNEL = "antex"
APPLICATION_NAME = "antex-feed"  # how the feed's connection shows in pg_stat_activity
KEYS_CHANNEL = "antex_keys"
MAX_PAYLOAD_BYTES = 7000  # PostgreSQL refuses payloads of 8000 bytes or more
CONNECT_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 5.0
RECONNECT_S = 0.2  # the first retry after a lost connection; doubled each time...
RECONNECT_MAX_S = 5.0  # ...up to this


def settled_messages(instance: str, charges: Iterable[tuple], ips: Iterable[tuple], committed: bool = False) -> list[str]:
    """The notifications for charges (key id, ts, micro-credits, journal id) and IPs (key id, ip,
    last seen), split to fit the payload limit: as counted, or `committed` ("k": 1, sent from the
    transaction that commits them; see cluster.Copies)."""
    messages: list[str] = []
    head: dict[str, Any] = {"i": instance, "k": 1} if committed else {"i": instance}
    part: dict[str, Any] = {**head, "c": [], "p": []}
    size = 0
    for name, items in (("c", charges), ("p", ips)):
        for item in items:
            encoded = list(item)
            size += len(orjson.dumps(encoded)) + 1
            if size > MAX_PAYLOAD_BYTES - 100 - len(instance):
                messages.append(orjson.dumps(part).decode())
                part, size = {**head, "c": [], "p": []}, len(orjson.dumps(encoded)) + 1
            part[name].append(encoded)
    if part["c"] or part["p"]:
        messages.append(orjson.dumps(part).decode())
    return messages


def in_flight_messages(instance: str, counts: dict[int, int], every_key: bool) -> list[str]:
    """In-flight counts per key, split to fit; `every_key`: keys left out have none in flight."""
    messages, items = [], list(counts.items())
    step = max(1, (MAX_PAYLOAD_BYTES - 100 - len(instance)) // 24)
    for start in range(0, max(len(items), 1), step):
        chunk = {str(key): count for key, count in items[start:start + step]}
        messages.append(orjson.dumps({"i": instance, "f": chunk, "all": every_key and start == 0}).decode())
    return messages


def parse(payload: str) -> dict | None:
    """A message from another instance, or None for anything that is not one."""
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, dict) and isinstance(message.get("i"), str) else None


class Feed:
    """One connection that listens (and sends this instance's in-flight counts), reconnecting with
    backoff; after each connect, `on_connected` runs (the catch-up read) before it counts as up."""

    def __init__(self, url: str, on_message: Callable[[dict], None], on_keys: Callable[[], None],
                 on_connected: Callable[[], Awaitable[None]]) -> None:
        self.url = url
        self.on_message = on_message
        self.on_keys = on_keys
        self.on_connected = on_connected
        self.connected = asyncio.Event()
        self.error: str | None = None
        self.down_since: float | None = time.time()
        self._outbox: list[str] = []
        self._send = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="antex-feed")

    def publish(self, payloads: list[str]) -> None:
        """Send soon; dropped while disconnected (the counts are sent again in full every second)."""
        if self.connected.is_set():
            self._outbox.extend(payloads)
            self._send.set()

    async def _run(self) -> None:
        delay = RECONNECT_S
        while True:
            try:
                conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S,
                                             server_settings={"application_name": APPLICATION_NAME})
            except Exception as error:  # refused, unreachable, not accepting connections: try again
                self._failed(error)
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX_S, delay * 2)
                continue
            try:
                await self._serve(conn)
                delay = RECONNECT_S
            except Exception as error:  # whatever a cut connection raises (asyncpg has several): reconnect
                self._failed(error)
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX_S, delay * 2)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)

    async def _serve(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._notified)
        await conn.add_listener(KEYS_CHANNEL, lambda *_: self.on_keys())
        await self.on_connected()
        self.connected.set()
        if self.error is not None:
            log.warning("the cross-instance feed is connected again after %.1f s", time.time() - (self.down_since or 0))
        self.error, self.down_since = None, None
        while not lost.is_set():
            waiter = asyncio.ensure_future(self._send.wait())
            ended = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({waiter, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                ended.cancel()
            self._send.clear()
            outbox, self._outbox = self._outbox, []
            if outbox:  # all of it in one round trip; what comes meanwhile goes in the next
                await conn.execute("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload", CHANNEL, outbox,
                                   timeout=SEND_TIMEOUT_S)
        raise ConnectionResetError("the connection to PostgreSQL was closed")

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        message = parse(payload)
        if message is not None:
            self.on_message(message)

    def _failed(self, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"
        if text != self.error:
            log.error("the cross-instance feed failed (%s); serving from memory, reconnecting with backoff", text)
        self.error = text
        self.down_since = self.down_since or time.time()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
