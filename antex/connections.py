"""Client connections: counted in all and per client address, refused past a cap, and the
open-file limit raised so that the caps, not the descriptors, are what runs out.

Past the per-address cap a connection is answered, not reset: a reset reaches an HTTP client as a
connection error it cannot tell from a crash (aiohttp: "Can not write request body"), while a 503
with a retry-after is a refusal every SDK retries. A few per address get that answer (the app
refuses every request on a connection in `over_cap`, then closes it); past those, and past the
gateway-wide cap (which guards the descriptors), the connection is closed at once.

Each accepted connection gets aiohttp's own protocol (from the runner's public protocol
factory, `runner.server()`) wrapped in a counter; the counter only passes calls through.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource

from antex.client_noise import LineBudget
from antex.errors import AntexError

log = logging.getLogger("antex.connections")

# Descriptors kept for everything but client connections (the upstream pool, SQLite, the journal):
# this many, or a quarter of a small limit.
RESERVED_DESCRIPTORS = 256
# Connections per address group past its cap that are answered 503 (then closed) rather than reset:
# enough for a client a little over, few enough that a flood costs no more than a reset would.
ANSWERED_PAST_CAP = 16


def connection_limit(configured: int, open_files: int) -> int:
    """max_connections, lowered if needed so that client connections cannot take every descriptor."""
    return max(1, min(configured, open_files - min(RESERVED_DESCRIPTORS, open_files // 4)))


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20  # Linux's default nr_open
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard


def address_group(ip: str) -> str:
    """What the per-address cap counts: an IPv4 address, or an IPv6 /64 (one host's share)."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    except ValueError:
        return ip


def past_cap_error() -> AntexError:
    """What a request on a connection past its address's cap is answered (then the connection closes)."""
    return AntexError("service_unavailable", "This address has as many connections open as this gateway allows one "
                      "address. Reuse an open connection, or try again in a moment.", headers={"retry-after": "1"})


class Connections:
    """Open client connections, in all and per address group; past a cap a new one is refused."""

    def __init__(self, limit: int, per_ip_limit: int, exempt: tuple = (), over_cap: set | None = None) -> None:
        self.limit = limit
        self.per_ip_limit = per_ip_limit
        self.exempt = exempt  # trusted proxies: every client behind one shares its address
        self.open = 0  # every connection let in, the ones being refused with an answer too
        self.by_group: dict[str, int] = {}
        self.past_cap: dict[str, int] = {}  # per group: connections being answered 503
        self.over_cap = set() if over_cap is None else over_cap  # their transports, read by the app
        self.refused = 0
        self.budget = LineBudget()

    def protocol(self, inner: asyncio.BaseProtocol) -> "Counted":
        return Counted(inner, self)

    def enter(self, ip: str) -> tuple[str, bool] | None:
        """(address group, past its cap) if the connection may stay, else None (close it now).
        Either refusal logs a rate-limited line."""
        group = address_group(ip)
        mine = self.by_group.get(group, 0)
        past = False
        if self.open >= self.limit:
            why = f"{self.open} connections are open, the most this gateway allows"
        elif mine >= self.per_ip_limit and not self._exempt(ip):
            why = f"{group} has {mine} connections open, the most one address may"
            past = self.past_cap.get(group, 0) < ANSWERED_PAST_CAP
        else:
            self.open += 1
            self.by_group[group] = mine + 1
            return group, False
        self.refused += 1
        dropped = self.budget.allow()
        if dropped is not None:
            log.warning("connection refused%s: %s%s", " (answered 503)" if past else "", why,
                        f" ({dropped} more refused)" if dropped else "")
        if not past:
            return None
        self.open += 1
        self.past_cap[group] = self.past_cap.get(group, 0) + 1
        return group, True

    def leave(self, group: str, past_cap: bool = False) -> None:
        self.open -= 1
        counts = self.past_cap if past_cap else self.by_group
        left = counts[group] - 1
        if left:
            counts[group] = left
        else:
            del counts[group]

    def _exempt(self, ip: str) -> bool:
        if not self.exempt:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.exempt)


class Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted while it is open."""

    __slots__ = ("inner", "connections", "group", "transport")

    def __init__(self, inner: asyncio.BaseProtocol, connections: Connections) -> None:
        self.inner = inner
        self.connections = connections
        self.group: str | None = None
        self.transport: asyncio.BaseTransport | None = None  # set only while past its cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        entry = self.connections.enter(peer[0] if isinstance(peer, tuple) and peer else "unknown")
        if entry is None:
            transport.abort()
            return
        self.group, past_cap = entry
        if past_cap:
            self.transport = transport
            self.connections.over_cap.add(transport)
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.group is None:
            return
        if self.transport is not None:
            self.connections.over_cap.discard(self.transport)
            self.transport = None
            self.connections.leave(self.group, past_cap=True)
        else:
            self.connections.leave(self.group)
        self.group = None
        self.inner.connection_lost(exc)
        self.inner = None  # the protocol holds its request buffers: let them go with the connection

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
