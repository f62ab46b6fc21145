"""The store on a request's path: when it fails (an unreadable file, a database that is down) or
cannot confirm a write in time, the request is answered 503 with retry-after in its route's error
shape; the log says so once per change of state, never a traceback per request."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from antex.errors import AntexError
from antex.failure import Failure

log = logging.getLogger("antex.store")

RETRY_AFTER_S = 5


class StoreUnavailable(Exception):
    """The store cannot answer this request now (logged where it was found)."""

    def __init__(self, doing: str = "read its database") -> None:
        super().__init__(doing)
        self.doing = doing

    def answer(self) -> AntexError:
        """The 503 the request gets, in its route's shape (the error middleware renders it)."""
        return AntexError("store_unavailable", f"Antex cannot {self.doing} right now (its database is failing or "
                          f"slow); try again in {RETRY_AFTER_S} seconds.", headers={"retry-after": str(RETRY_AFTER_S)})


class Reads:
    """Reads of the store made for requests: `errors` are what the store raises when it fails
    (antex.store.errors); none, and it guards nothing."""

    def __init__(self, errors: tuple[type[BaseException], ...] = (), store_name: str = "the database") -> None:
        self.errors = errors
        self.failure = Failure(f"reading {store_name}", log)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Raise StoreUnavailable for a store error inside; a read that works says the store is back."""
        try:
            yield
        except self.errors as error:
            raise self.failed(error) from None
        if self.failure.error is not None:
            self.failure.recovered()

    def failed(self, error: BaseException) -> StoreUnavailable:
        self.failure.failed(error, "answering 503 to the requests that need it")
        return StoreUnavailable()
