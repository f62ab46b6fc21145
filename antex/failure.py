"""A part of the server that can fail and recover (SQLite, the journal, the key watcher's reads).

Said in the log once when it starts failing, again only when the error changes, and once when it
works again: never a line (or a traceback) per retry.
"""
from __future__ import annotations

import logging
import time


class Failure:
    """The state of one part: `error` is None while it works."""

    def __init__(self, what: str, log: logging.Logger) -> None:
        self.what = what
        self.log = log
        self.error: str | None = None
        self.since: float | None = None  # wall-clock seconds
        self.attempts = 0

    def failed(self, error: BaseException, consequence: str) -> None:
        self.attempts += 1
        text = f"{type(error).__name__}: {error}"
        if text != self.error:
            self.log.error("%s failed (%s); %s", self.what, text, consequence)
            self.error = text
            self.since = self.since or time.time()

    def recovered(self, detail: str = "") -> None:
        if self.error is not None:
            self.log.warning("%s works again after %.0f s (%d failed attempts)%s", self.what, time.time() - self.since,
                             self.attempts, f"; {detail}" if detail else "")
        self.error, self.since, self.attempts = None, None, 0
