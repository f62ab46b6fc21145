"""Request bodies: read only for admitted keys, within deadlines and byte budgets, decoded in
bounded steps, parsed, and checked for the duplicate fields that would let a client and the
upstream read two different requests in the same bytes.

Every buffer here is dropped on the way out of an error: the exception's traceback keeps the
reading frame alive (aiohttp's payload keeps the exception), and a cycle must not keep a body.
"""
from __future__ import annotations

import asyncio
import json
import re
import zlib

import orjson
from aiohttp import HttpVersion11, web

from antex.config import ServerConfig
from antex.errors import AntexError

READ_CHUNK = 256 * 1024
# Bytes per second, across the gateway, read and thrown away from bodies refused before they were
# read: their clients must get to read the refusal (a connection closed on an unread upload is
# reset, and the SDKs then report a connection error instead), but a flood of refused uploads must
# not cost the gateway more than this much reading.
DISCARD_BYTES_PER_S = 32 * 1024 * 1024
INFLATE_STEP = 1024 * 1024  # decompressed bytes per step; the loop runs between steps
ENCODINGS = "gzip, deflate or identity"


class BodyBudget:
    """Bytes of request bodies held in memory right now, gateway-wide and per key; and the pace at
    which refused bodies are discarded."""

    __slots__ = ("limit", "per_key_limit", "held", "by_key", "discard_allowance", "discard_stamp")

    def __init__(self, limit: int, per_key_limit: int) -> None:
        self.limit = limit
        self.per_key_limit = per_key_limit
        self.held = 0
        self.by_key: dict[int, int] = {}
        self.discard_allowance = float(DISCARD_BYTES_PER_S)
        self.discard_stamp = 0.0

    def discard_wait(self, size: int, now: float) -> float:
        """Seconds to wait after discarding `size` bytes, to stay within DISCARD_BYTES_PER_S."""
        self.discard_allowance = min(float(DISCARD_BYTES_PER_S),
                                     self.discard_allowance + (now - self.discard_stamp) * DISCARD_BYTES_PER_S)
        self.discard_stamp = now
        self.discard_allowance -= size
        return -self.discard_allowance / DISCARD_BYTES_PER_S if self.discard_allowance < 0 else 0.0

    def take(self, key_id: int, size: int) -> None:
        """Count `size` more bytes for `key_id`, or refuse: 429 for the key, 503 for the gateway."""
        mine = self.by_key.get(key_id, 0) + size
        if mine > self.per_key_limit:
            raise AntexError("rate_limit_error",
                             f"This key's requests in flight already hold {self.per_key_limit} bytes of request bodies, "
                             f"the most one key may. Wait for one to finish, or send a smaller request.",
                             headers={"retry-after": "1"})
        if self.held + size > self.limit:
            raise AntexError("service_unavailable",
                             "This gateway is receiving too many large request bodies at once. Try again in a few seconds.",
                             headers={"retry-after": "2"})
        self.by_key[key_id] = mine
        self.held += size

    def give(self, key_id: int, size: int) -> None:
        self.held -= size
        left = self.by_key.get(key_id, 0) - size
        if left > 0:
            self.by_key[key_id] = left
        else:
            self.by_key.pop(key_id, None)


class Held:
    """One request's share of the budget; given back once, when its body is no longer needed."""

    __slots__ = ("budget", "key_id", "size")

    def __init__(self, budget: BodyBudget, key_id: int) -> None:
        self.budget = budget
        self.key_id = key_id
        self.size = 0

    def add(self, size: int) -> None:
        self.budget.take(self.key_id, size)
        self.size += size

    def release(self) -> None:
        if self.size:
            self.budget.give(self.key_id, self.size)
            self.size = 0


def expects_continue(request: web.Request) -> bool:
    """The client waits for a 100 before it sends its body (curl does for large ones)."""
    return request.version == HttpVersion11 and request.headers.get("expect", "").lower() == "100-continue"


async def send_continue(request: web.Request) -> None:
    """The request is admitted and its body about to be read: the 100 a waiting client sends it on."""
    if expects_continue(request) and not request.content.is_eof():
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not part of the response's size


async def read(request: web.Request, held: Held, server: ServerConfig) -> bytes:
    """The whole body, decoded, or a clear error: 413 past max_body_bytes (declared, sent or
    decompressed), 408 past the deadlines, 429/503 past the budgets. Called only once the request
    is admitted: that is when a client expecting a 100 gets it."""
    limit = server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    await send_continue(request)
    content = request.content
    if content.is_eof():  # the whole body has arrived (the usual case): no copy, no await, no timer
        raw = content.read_nowait()
        if len(raw) > limit:
            raise too_large(limit)
        held.add(len(raw))
    else:
        raw = await _read_slowly(content, held, server)
    encoding = request.headers.get("content-encoding")
    if encoding is not None and (encoding := encoding.strip().lower()) != "identity":
        raw = await _inflate(raw, encoding, held, limit)
    return raw


async def _read_slowly(content: web.StreamReader, held: Held, server: ServerConfig) -> bytes:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + server.body_timeout_s
    idle_s, limit = server.body_idle_timeout_s, server.max_body_bytes
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            if content.is_eof():
                chunk = content.read_nowait(READ_CHUNK)
            else:
                wait_s = min(idle_s, deadline - loop.time())
                try:
                    async with asyncio.timeout(wait_s):
                        chunk = await content.read(READ_CHUNK)
                except TimeoutError:
                    if wait_s < idle_s:
                        raise AntexError("request_timeout", f"The request body took longer than {server.body_timeout_s:g} "
                                                            f"seconds to arrive. Send it again, or send a smaller one.") from None
                    raise AntexError("request_timeout", f"The request body stopped arriving for {idle_s:g} seconds. "
                                                        "Send it again.") from None
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            held.add(len(chunk))
            chunks.append(chunk)
        return b"".join(chunks)
    except web.RequestPayloadError:  # e.g. broken chunked framing
        chunks.clear()
        raise AntexError("invalid_request_error", "The request body could not be read: its framing is broken.") from None
    except BaseException:
        chunks.clear()  # the exception's traceback keeps this frame, and so this list, alive
        raise


async def _inflate(raw: bytes, encoding: str, held: Held, limit: int) -> bytes:
    """Decompress in steps of INFLATE_STEP, stopping at `limit`: a bomb costs at most `limit` bytes
    and as much CPU, and the loop serves others between steps."""
    if encoding == "gzip" or encoding == "x-gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":  # zlib-wrapped as the RFC says, or raw as some clients send it
        inflater = zlib.decompressobj(zlib.MAX_WBITS if raw[:1] and raw[0] & 0x0F == 8 else -zlib.MAX_WBITS)
    else:
        raise AntexError("invalid_request_error", f"Content-Encoding {encoding[:40]!r} is not supported: send {ENCODINGS}.")
    pieces: list[bytes] = []
    size = 0
    try:
        data = raw
        del raw
        while data:
            piece = inflater.decompress(data, INFLATE_STEP)
            data = inflater.unconsumed_tail
            size += len(piece)
            if size > limit:
                raise too_large(limit)
            held.add(len(piece))
            pieces.append(piece)
            if data:
                await asyncio.sleep(0)
        if not inflater.eof:
            raise AntexError("invalid_request_error", f"The request body is not complete {encoding} data.")
        return b"".join(pieces)
    except zlib.error:
        pieces.clear()
        raise AntexError("invalid_request_error", f"The request body could not be read: it is not valid {encoding} data.") from None
    except BaseException:
        pieces.clear()
        raise


async def discard(request: web.Request, budget: BodyBudget, server: ServerConfig) -> None:
    """Read and drop the rest of a refused body, at the gateway's discard pace, within
    body_timeout_s; a client that leaves or stalls meanwhile is simply dropped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + server.body_timeout_s
    content = request.content
    try:
        while not content.is_eof():
            async with asyncio.timeout(min(server.body_idle_timeout_s, deadline - loop.time())):
                chunk = await content.readany()
            wait_s = budget.discard_wait(len(chunk), loop.time())
            if wait_s:
                await asyncio.sleep(min(wait_s, deadline - loop.time()))
            if loop.time() >= deadline:
                return
    except (TimeoutError, ConnectionError, web.RequestPayloadError):
        return


def too_large(limit: int) -> AntexError:
    return AntexError("payload_too_large", f"The request body is larger than this gateway's limit of {limit} bytes. Send a smaller request.")


def parse_object(raw: bytes) -> dict:
    """The body as a JSON object, or a clear invalid_request_error.

    orjson holds the GIL while it parses, so a thread would not keep the loop free: large bodies
    are parsed in a worker process instead (antex/prepare.py, antex/parse_pool.py)."""
    if not raw:
        raise AntexError("invalid_request_error", "The request body is empty. Send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise AntexError("invalid_request_error", f"The request body is not valid JSON ({exc.args[0]}).") from None
    if not isinstance(body, dict):
        raise AntexError("invalid_request_error", f"The request body must be a JSON object, not {type(body).__name__}.")
    return body


# An escaped ASCII letter or underscore (within \u0040-\u007f): encoders escape control
# characters, non-ASCII and at most <, >, & and ', never a letter; but a field name spelled with
# one ("mod\u0065l") is the same name to every JSON parser.
_ESCAPED_NAME_CHAR = re.compile(rb"\\u00[4-7][0-9a-fA-F]")


def duplicate_field(raw: bytes, parsed: dict, fields: tuple[tuple[str, bytes], ...]) -> str | None:
    """The first of `fields` (see quoted) that appears more than once among the top-level keys of
    the JSON object `raw` (parsed: `parsed`), whatever the escaping; None when each appears at most once.

    orjson keeps the last of duplicate keys, another parser may keep the first: the upstream must
    not read a request Antex did not check. Only names orjson kept can be duplicated. The fast
    proof (_no_duplicate_anywhere) compares the body with orjson's writing of what it read, and
    holds for compact and pretty-printed bodies alike: a few C scans, about 15 times cheaper than
    scanning a 100 KB body for each name. Otherwise: each name's literal count (a C scan) and,
    when the body holds a backslash at all, one regex search; the exact check (a second parse
    that keeps every pair) only runs when a name could occur twice.
    """
    present = [field for field in fields if field[0] in parsed]
    if not present or _no_duplicate_anywhere(raw, parsed):
        return None
    if not any(raw.count(literal) > 1 for _, literal in present) and not (b"\\" in raw and _ESCAPED_NAME_CHAR.search(raw)):
        return None
    return _exact_duplicate(raw, {name for name, _ in present})


# An escaped colon inside a string: the only way a colon in `raw` is not one in orjson's writing.
_ESCAPED_COLON = re.compile(rb"\\u003[aA]")


def _no_duplicate_anywhere(raw: bytes, parsed: dict) -> bool:
    """True when no object anywhere in `raw` holds a name twice; False when that is not proven.

    Every name/value pair written in `raw` holds one colon outside strings, and orjson writes one
    for each pair it kept; colons inside strings are written literally by orjson and either
    literally or as \\u003a in `raw`. So the pairs a duplicate dropped number
    raw's colons - canonical's colons + raw's escaped colons, and none were dropped when that is 0.
    (The regex may count a "\\\\u003a" too, an escaped backslash before text: counting too many
    can only fail the proof, never pass it.) Two C scans instead of a parse that keeps every pair.
    """
    try:
        canonical = orjson.dumps(parsed)
    except orjson.JSONEncodeError:  # e.g. an integer past 64 bits: the slower checks decide
        return False
    if canonical == raw:
        return True
    missing = canonical.count(b":") - raw.count(b":")
    if missing < 0:
        return False
    if b"\\" not in raw:
        return missing == 0
    return len(_ESCAPED_COLON.findall(raw)) == missing


def _exact_duplicate(raw: bytes, wanted: set[str]) -> str | None:
    """The rare path: stdlib json, whose object_pairs_hook (here `list`, a C call) keeps every pair."""
    try:
        pairs = json.loads(raw, object_pairs_hook=list)
    except (ValueError, RecursionError):
        return None  # orjson accepted it; nothing more to learn here
    seen: set[str] = set()
    if isinstance(pairs, list):
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                return None  # a top-level array, not an object
            name = pair[0]
            if name in wanted:
                if name in seen:
                    return name
                seen.add(name)
    return None


def quoted(*names: str) -> tuple[tuple[str, bytes], ...]:
    """Field names for duplicate_field: each with its literal form, e.g. ("model", b'"model"')."""
    return tuple((name, b'"' + name.encode() + b'"') for name in names)
