"""What hostile or broken clients make the server log: one short line each, rate-limited, with
none of their bytes (a malformed header may hold a key) and no traceback for their mistakes.

aiohttp logs a request it cannot parse, and a handler cut by a client that left, as "Error
handling request" with a traceback and the parser's message (which quotes the offending header);
asyncio logs every failed accept() with a traceback when descriptors run out. A filter on
aiohttp's logger and the loop's exception handler turn both into counted one-liners.
"""
from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import http_exceptions

log = logging.getLogger("antex.clients")

LINES_PER_PERIOD = 20
PERIOD_S = 10.0
# A client's fault: it sent something HTTP does not allow, or left while being answered.
CLIENT_FAULTS = (http_exceptions.HttpProcessingError, ConnectionResetError, BrokenPipeError)


class LineBudget:
    """At most LINES_PER_PERIOD lines per PERIOD_S; the next allowed line says how many were dropped."""

    __slots__ = ("period_started", "lines", "dropped")

    def __init__(self) -> None:
        self.period_started = 0.0
        self.lines = 0
        self.dropped = 0

    def allow(self) -> int | None:
        """None when this line must be dropped, else how many were dropped before it."""
        now = time.monotonic()
        if now - self.period_started >= PERIOD_S:
            self.period_started, self.lines = now, 0
        if self.lines >= LINES_PER_PERIOD:
            self.dropped += 1
            return None
        self.lines += 1
        dropped, self.dropped = self.dropped, 0
        return dropped


def describe(exc: BaseException) -> str:
    """An exception as a client may have caused it, without a byte of what the client sent."""
    status = getattr(exc, "code", None) if isinstance(exc, http_exceptions.HttpProcessingError) else None
    return f"{type(exc).__name__} ({status})" if status else type(exc).__name__


class ClientFaults(logging.Filter):
    """On aiohttp's server logger: a client's fault becomes one line without traceback or content."""

    def __init__(self) -> None:
        super().__init__()
        self.budget = LineBudget()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, CLIENT_FAULTS):
            return True
        dropped = self.budget.allow()
        if dropped is None:
            return False
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "malformed or abandoned request from %s: %s%s"
        record.args = (peer, describe(exc), f" ({dropped} more not logged)" if dropped else "")
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install_filter() -> None:
    """Once per process, on aiohttp's own logger (its handlers stay the application's)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, ClientFaults) for existing in server_log.filters):
        server_log.addFilter(ClientFaults())


class LoopErrors:
    """The loop's exception handler: OS errors (no descriptors left for accept(), a reset socket)
    become one rate-limited line each; anything else goes to asyncio's default handler."""

    def __init__(self) -> None:
        self.budget = LineBudget()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if not isinstance(exc, OSError):
            loop.default_exception_handler(context)
            return
        dropped = self.budget.allow()
        if dropped is not None:
            log.warning("%s: %s%s", context.get("message", "event loop"), exc.strerror or type(exc).__name__,
                        f" ({dropped} more not logged)" if dropped else "")
