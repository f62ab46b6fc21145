"""Worker processes for the jobs of antex/prepare.py on large bodies.

orjson and the translators hold the GIL, so a thread would not free the event loop: a process
does. The pool uses "forkserver" (workers forked from a clean process that imported
antex.prepare once, never from the serving process with its sockets and threads), is started by
the first large body, in a thread (starting the fork server imports Antex: not on the loop), and
replaced when a worker dies: the requests it held get a 503, the next ones a new pool.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, TypeVar

from antex.errors import AntexError

log = logging.getLogger("antex.parse_pool")

T = TypeVar("T")
MAX_WORKERS = 4


def worker_count() -> int:
    """One CPU is left to the event loop; at most MAX_WORKERS."""
    return max(1, min(MAX_WORKERS, (os.cpu_count() or 2) - 1))


def _ready() -> None:
    """A job that does nothing: run once so that the first real job finds its worker started."""


class ParsePool:
    """Jobs run in worker processes, each within `deadline_s`."""

    def __init__(self, deadline_s: float, workers: int | None = None) -> None:
        self.deadline_s = deadline_s
        self.workers = workers or worker_count()
        self._starting: asyncio.Future[ProcessPoolExecutor] | None = None

    async def run(self, job: Callable[..., T], *args: Any) -> T:
        """job(*args) in a worker; its AntexError as raised there. A 503 if the worker died on it
        or it missed the deadline."""
        executor = await self._executor()
        try:
            future: Future = executor.submit(job, *args)
        except BrokenProcessPool:  # broken since the last job: replace it, try once more
            self._replace(executor)
            executor = await self._executor()
            future = executor.submit(job, *args)
        try:
            async with asyncio.timeout(self.deadline_s):
                return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._replace(executor)
            raise AntexError("service_unavailable", "The process parsing this request body stopped before it finished. "
                             "Send the request again.") from None
        except TimeoutError:
            raise AntexError("service_unavailable", f"The request body could not be parsed within {self.deadline_s:g} "
                             f"seconds: Antex is busy with other large bodies. Send it again later.") from None

    async def _executor(self) -> ProcessPoolExecutor:
        if self._starting is None:
            self._starting = asyncio.ensure_future(asyncio.to_thread(self._start))
        try:
            return await asyncio.shield(self._starting)
        except BaseException:
            if self._starting.done() and self._starting.exception() is not None:
                self._starting = None  # failed to start: the next large body tries again
            raise

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["antex.prepare"])
        executor = ProcessPoolExecutor(self.workers, mp_context=context)
        executor.submit(_ready).result()
        return executor

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """Forget a broken pool (once, however many requests it failed); the next job starts a new one."""
        starting = self._starting
        if starting is None or not starting.done() or starting.cancelled() or starting.exception() is not None \
                or starting.result() is not broken:
            return
        self._starting = None
        log.warning("a parse worker stopped (killed or out of memory); the requests it held got a 503, starting new workers")
        broken.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        starting, self._starting = self._starting, None
        if starting is None:
            return
        try:
            executor = await starting
        except Exception:  # it never started: nothing to stop
            return
        await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
