"""Client connections: counted in all and per client address, closed at once past a cap, and the
open-file limit raised so that the caps, not the descriptors, are what runs out.

Each accepted connection gets aiohttp's own protocol (from the runner's public protocol
factory, `runner.server()`) wrapped in a counter; the counter only passes calls through.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource

from antex.client_noise import LineBudget

log = logging.getLogger("antex.connections")

# Descriptors kept for everything but client connections (the upstream pool, SQLite, the journal):
# this many, or a quarter of a small limit.
RESERVED_DESCRIPTORS = 256


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


class Connections:
    """Open client connections, in all and per address group; past a cap a new one is closed."""

    def __init__(self, limit: int, per_ip_limit: int, exempt: tuple = ()) -> None:
        self.limit = limit
        self.per_ip_limit = per_ip_limit
        self.exempt = exempt  # trusted proxies: every client behind one shares its address
        self.open = 0
        self.by_group: dict[str, int] = {}
        self.refused = 0
        self.budget = LineBudget()

    def protocol(self, inner: asyncio.BaseProtocol) -> "Counted":
        return Counted(inner, self)

    def enter(self, ip: str) -> str | None:
        """The connection's address group if it may stay, else None (and a rate-limited line)."""
        group = address_group(ip)
        mine = self.by_group.get(group, 0)
        if self.open >= self.limit:
            why = f"{self.open} connections are open, the most this gateway allows"
        elif mine >= self.per_ip_limit and not self._exempt(ip):
            why = f"{group} has {mine} connections open, the most one address may"
        else:
            self.open += 1
            self.by_group[group] = mine + 1
            return group
        self.refused += 1
        dropped = self.budget.allow()
        if dropped is not None:
            log.warning("connection refused: %s%s", why, f" ({dropped} more refused)" if dropped else "")
        return None

    def leave(self, group: str) -> None:
        self.open -= 1
        left = self.by_group[group] - 1
        if left:
            self.by_group[group] = left
        else:
            del self.by_group[group]

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

    __slots__ = ("inner", "connections", "group")

    def __init__(self, inner: asyncio.BaseProtocol, connections: Connections) -> None:
        self.inner = inner
        self.connections = connections
        self.group: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.group = self.connections.enter(peer[0] if isinstance(peer, tuple) and peer else "unknown")
        if self.group is None:
            transport.abort()
            return
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.group is None:
            return
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
