"""Writes that ride along with the ledger's writer (stored responses), kept apart from billing.

Credit events never depend on them: the writer commits the events first, then the ride-alongs in
a transaction of their own, each in a savepoint. One the store refuses on its own account (a value
it cannot hold, a broken constraint) is dropped with one log line naming what it was and the
error's type, never its content or a key; the others go on. While the store is down they wait,
at most MAX_PENDING of them: past that the oldest go, counted, so a long outage costs stored
responses, never memory or billing.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

log = logging.getLogger("antex.ledger")

MAX_PENDING = 10_000  # ride-alongs waiting for the store, at most (a stored response is one)


class RideAlong(NamedTuple):
    """Statements committed together or not at all; `what` names them in the log."""

    what: str
    statements: list[tuple[str, tuple]]


def refused(ride_along: RideAlong, error: BaseException) -> None:
    """Say that one was dropped: its kind and the error's type (SQLSTATE when there is one) only,
    since a message may quote the values."""
    code = getattr(error, "sqlstate", None)
    log.error("dropped %s the store refused on its own account (%s%s); the credit events and other writes went on",
              ride_along.what, type(error).__name__, f", SQLSTATE {code}" if code else "")


class Overflow:
    """Ride-alongs dropped because too many waited: said when dropping starts, and with the count
    once they are written again."""

    def __init__(self) -> None:
        self.dropped = 0

    def trim(self, pending: list[RideAlong]) -> None:
        over = len(pending) - MAX_PENDING
        if over <= 0:
            return
        del pending[:over]
        if not self.dropped:
            log.error("over %d writes wait for the store: dropping the oldest (stored responses) until it "
                      "takes them again", MAX_PENDING)
        self.dropped += over

    def written(self) -> None:
        if self.dropped:
            log.warning("the store takes writes again; %d waiting writes (stored responses) were dropped meanwhile",
                        self.dropped)
            self.dropped = 0
