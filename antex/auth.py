"""Who is calling: the key from the headers, its record, and the client's IP address.

Keys are looked up by SHA-256 hash in an in-memory map of every key, reloaded whenever the
database's `keys_version` counter moves (the CLI bumps it through a trigger), which the server
polls a few times a second: a key revoked from the CLI is refused within a second.
"""
from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import secrets
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from aiohttp import web

from antex.catalog import Limits, apply_overrides
from antex.config import Config, ServerConfig
from antex.errors import AntexError
from antex.store import KeyRow, Store

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy  # request.headers

log = logging.getLogger("antex.auth")

KEY_PREFIX = "sk_live_"
KEY_ALPHABET = string.ascii_letters + string.digits
KEY_RANDOM_CHARS = 43  # 43 base-62 characters: 256 bits of randomness
VISIBLE_CHARS = 4  # sk_live_AbCd…
KEY_POLL_S = 0.25
MAX_PROXY_HOPS = 16  # trusted hops walked at most: a real chain is a few; a header of thousands costs CPU


def new_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_RANDOM_CHARS))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def visible_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + VISIBLE_CHARS]


@dataclass(frozen=True)
class KeyRecord:
    """A key as the server sees it: its row plus its effective limits."""

    row: KeyRow
    limits: Limits | None  # None when the key's plan is no longer configured

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def label(self) -> str:
        """How a key appears in logs: name and visible prefix, never the key."""
        return f"{self.row.name} ({self.row.prefix}…)"


def key_from_headers(headers: CIMultiDictProxy[str]) -> str:
    """The caller's key from `x-api-key` or `Authorization: Bearer`; raises authentication_error.

    The same key may come in both headers (some clients send both); two different credentials in
    one request are refused rather than guessing which one the caller meant to be billed to."""
    api_keys, authorizations = headers.getall("x-api-key", ()), headers.getall("authorization", ())
    if len(api_keys) == 1 and not authorizations:  # the usual request: one x-api-key, nothing else
        key = api_keys[0].strip()
    else:
        presented = {value.strip() for value in api_keys}
        for authorization in authorizations:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                presented.add(value.strip())
        presented.discard("")
        if len(presented) > 1:
            raise AntexError("authentication_error",
                             "This request carries two different API keys (in x-api-key and Authorization, or one "
                             "header twice). Send one key.")
        key = presented.pop() if presented else ""
    if not key:
        raise AntexError("authentication_error",
                         "No API key. Send your sk_live_… key in the x-api-key header or as Authorization: Bearer.")
    if not key.startswith(KEY_PREFIX) or len(key) != len(KEY_PREFIX) + KEY_RANDOM_CHARS or not key.isascii():
        raise AntexError("authentication_error", "Malformed API key. Antex keys look like sk_live_ followed by 43 letters and digits.")
    return key


class KeyCache:
    """Every key by hash, in memory, kept in step with the database."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.by_hash: dict[str, KeyRecord] = {}
        self.by_id: dict[int, KeyRecord] = {}
        self.version = -1
        self.changed = asyncio.Event()  # set when the keys are known to have changed: reload now

    async def refresh(self) -> bool:
        """Reload every key if the database says they changed; True when it did."""
        version = await self.store.keys_version()
        if version == self.version:
            return False
        rows = await self.store.all_keys()
        records = [KeyRecord(row, self._limits(row)) for row in rows]
        self.by_hash = {record.row.hash: record for record in records}
        self.by_id = {record.id: record for record in records}
        self.version = version
        return True

    def _limits(self, row: KeyRow) -> Limits | None:
        plan = self.config.plans.get(row.plan)
        if plan is None:
            log.warning("key %s (%s…) is on plan %r, which the configuration does not define", row.name, row.prefix, row.plan)
            return None
        return apply_overrides(plan, row.limits)

    def authenticate(self, headers: CIMultiDictProxy[str]) -> KeyRecord:
        """The record for the caller's key; raises authentication_error for any unknown key."""
        key = key_from_headers(headers)
        record = self.by_hash.get(hash_key(key))
        if record is None:
            raise AntexError("authentication_error", "Invalid API key. Check the key you were given, or ask the operator for a new one.")
        if record.row.status == "revoked":
            raise AntexError("authentication_error", "This API key has been revoked. Ask the operator for a new one.")
        return record


def request_ip(request: web.Request, server: ServerConfig) -> str:
    """The client's address of a request: see client_ip; the header is read only from a trusted peer."""
    peer = request.remote or "unknown"
    trusted = server.trusted_proxies
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    return client_ip(peer, forwarded_hops(request, server.forwarded_header), trusted)


def forwarded_hops(request: web.Request, header: str) -> list[str]:
    """The hops of the one header the operator's proxy sets, oldest first, every line of it (a proxy
    may append its own line after the client's):

        X-Forwarded-For: 198.51.100.1, 203.0.113.5
        Forwarded: for=198.51.100.1;proto=https, for="[2001:db8::1]:4711"

    Forwarded is parsed by aiohttp (RFC 7239: quoted strings, escapes); an element without a
    well-formed `for` is an empty hop, which ends the walk."""
    if header == "forwarded":
        return [element.get("for", "") for element in request.forwarded]
    return [hop.strip() for line in request.headers.getall("x-forwarded-for", ()) for hop in line.split(",")]


def client_ip(peer: str, hops: Sequence[str], trusted: tuple) -> str:
    """The client's address: walk the hops from the right, skipping trusted proxies; the first
    address that is not a trusted proxy is the client, whatever it wrote further left.

    A hop that is not an address (`unknown`, an obfuscated `_name`, an empty or garbled element)
    ends the walk: the client cannot be told apart, so the last address a trusted hop vouched for
    is used (the nearest proxy), as after MAX_PROXY_HOPS trusted hops. `peer` must itself be trusted
    (see request_ip).
    """
    address = peer
    for hop in hops[:-MAX_PROXY_HOPS - 1:-1]:
        hop = _without_port(hop)
        if not _valid_ip(hop):
            break
        address = hop
        if not _is_trusted(hop, trusted):
            break
    return address


def _without_port(value: str) -> str:
    """`203.0.113.7:4711` -> `203.0.113.7`, `[2001:db8::1]:443` -> `2001:db8::1`; others as they are."""
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        return value.split(":")[0]
    return value


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _is_trusted(address: str, trusted: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
