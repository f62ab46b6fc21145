"""The write-ahead journal of admitted requests: an append-only file beside the database.

Every admitted request is appended before it goes upstream: one `os.write` on the event loop,
with no commit to wait for and no thread to hop to, which made the SQLite journal the largest
cost Antex added to a request. A completed write sits in the OS page cache, so a SIGKILL cannot
lose it: the same promise SQLite's WAL gives the credit events with `synchronous = NORMAL`
(neither survives a power cut unflushed). Lines, one JSON array each:

    ["a", "18f3c2d4e5a-7", 3, 1764072000.25, "claude-sonnet-4-5", "/v1/messages", 120]   admitted
    ["u", "18f3c2d4e5a-7", {"input_tokens": 120, "output_tokens": 1}]                     usage seen
    ["s", ["18f3c2d4e5a-7", "18f3c2d4e5a-9"]]                                             settled
    ["c", "18f3c2d4e5a-7", [3, 1764072001.5, "claude-sonnet-4-5", ...]]                   charged

A request is settled once its credit event is committed: the ledger writes its `s` line right
after each commit, and the same transaction stores that batch's ids in `journal_settled`, so a
crash between the commit and the `s` line is no double charge. Whatever is left open at the next
start was cut by the crash and is charged then. A stop that finds SQLite unwritable leaves a `c`
line per settled request with its exact credit event, which the next start writes as it is.
The file is rewritten with only the open requests when it grows past ROTATE_BYTES, and emptied
on a clean stop.

Each record is one `os.write`. A write that fails part-way (a full disk, a file-size limit) is cut
back off the file, or, when even that fails, the next record starts on a fresh line: a torn record
never swallows the one after it, which could otherwise be a `s` line (a lost `s` line charges its
requests twice after a crash). Reading skips what does not parse and still finds a record glued
behind a torn one.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from typing import Iterable

import orjson

ROTATE_BYTES = 4 * 1024 * 1024


def path_for(database: str) -> str:
    return database + "-inflight"


def lock_path_for(database: str) -> str:
    return database + "-lock"


@dataclass(frozen=True)
class OpenRequest:
    """A request admitted but never settled: what recovery needs to charge it."""

    id: str
    key_id: int
    model: str
    endpoint: str
    estimated_input: int
    usage: dict | None  # from message_start, when the stream got that far
    charged: list | None = None  # the settled credit event a stop could not commit (an events row)


def read_open(path: str, settled: Iterable[str] = ()) -> list[OpenRequest]:
    """The requests `path` leaves open, minus `settled` (the last committed batch's ids).

    A line cut short by a crash (the last one) or torn by a failed write is skipped; a record
    glued behind a torn one is still read.
    """
    try:
        with open(path, "rb") as file:
            lines = file.read().split(b"\n")
    except FileNotFoundError:
        return []
    admitted: dict[str, list] = {}
    usage: dict[str, dict] = {}
    charged: dict[str, list] = {}
    for line in lines:
        entry = _record(line)
        if entry is None:
            continue
        kind = entry[0]
        if kind == "a":
            admitted[entry[1]] = entry
        elif kind == "u":
            usage.setdefault(entry[1], entry[2])
        elif kind == "c":
            charged[entry[1]] = entry[2]
        else:
            for journal_id in entry[1]:
                admitted.pop(journal_id, None)
    for journal_id in settled:
        admitted.pop(journal_id, None)
    return [OpenRequest(journal_id, key_id, model, endpoint, estimated, usage.get(journal_id), charged.get(journal_id))
            for _, journal_id, key_id, _, model, endpoint, estimated in admitted.values()]


def _record(line: bytes) -> list | None:
    """One journal record, or None. An unreadable line may be a torn record with a whole one glued
    behind it (written after a failed write that could not be cut back): that one is kept."""
    entry = _parse(line)
    start = 0
    while entry is None and (start := line.find(b'["', start + 1)) > 0:
        entry = _parse(line[start:])
    return entry


def _parse(line: bytes) -> list | None:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, list) or not entry or not isinstance(entry[0], str):
        return None
    whole = _SHAPES.get(entry[0])
    return entry if whole is not None and whole(entry) else None


_SHAPES = {  # kind -> whether a record of that kind is whole
    "a": lambda e: len(e) == 7 and isinstance(e[1], str) and isinstance(e[2], int),
    "u": lambda e: len(e) == 3 and isinstance(e[1], str) and isinstance(e[2], dict),
    "s": lambda e: len(e) == 2 and isinstance(e[1], list),
    "c": lambda e: len(e) == 3 and isinstance(e[1], str) and isinstance(e[2], list),
}


class DatabaseInUse(RuntimeError):
    """Another Antex server holds this database (and so its journal)."""


class Journal:
    """The open journal file of a running server; every method runs on the event loop."""

    def __init__(self, database: str) -> None:
        self.path = path_for(database)
        # One server per database: a second one would settle the first one's live requests as
        # crashed. The lock is a file of its own, never the database: closing any descriptor of
        # the database file would drop SQLite's own POSIX locks on it (SQLite's "posix advisory
        # locks are broken" hazard), and the journal file is replaced when it is rewritten.
        self._lock = os.open(lock_path_for(database), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise DatabaseInUse(f"Another Antex server is already using {database}. Stop it first, or give this one "
                                f"its own database.") from None
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except BaseException:
            os.close(self._lock)
            raise
        self._size = os.fstat(self._fd).st_size
        self._kept = 0
        self._inherited = self._size > 0  # what an earlier run left: only recovery may rewrite it away
        self._torn = False  # a failed write left part of a record that could not be cut back
        self._open: dict[str, list[bytes]] = {}  # journal id -> its lines, for rewriting the file

    def admitted(self, journal_id: str, key_id: int, started_at: float, model: str, endpoint: str,
                 estimated_input: int) -> None:
        """Record a request before it goes upstream; raises OSError (e.g. a full disk)."""
        line = orjson.dumps(("a", journal_id, key_id, started_at, model, endpoint, estimated_input)) + b"\n"
        self._append(line)
        self._open[journal_id] = [line]

    def adopt(self, request: OpenRequest) -> None:
        """Keep a request an earlier run left open in this run's file until it is settled (the
        next rewrite writes its lines again)."""
        lines = [orjson.dumps(("a", request.id, request.key_id, 0.0, request.model, request.endpoint,
                               request.estimated_input)) + b"\n"]
        if request.usage is not None:
            lines.append(orjson.dumps(("u", request.id, request.usage)) + b"\n")
        if request.charged is not None:
            lines.append(orjson.dumps(("c", request.id, request.charged)) + b"\n")
        self._open[request.id] = lines

    def usage_seen(self, journal_id: str, usage: dict) -> None:
        lines = self._open.get(journal_id)
        if lines is None:
            return
        line = orjson.dumps(("u", journal_id, usage)) + b"\n"
        self._append(line)
        lines.append(line)

    def charged(self, journal_id: str, row: tuple) -> None:
        """A settled request whose credit event could not be committed before a stop: the next
        start writes `row` as it is instead of charging an estimate."""
        if journal_id in self._open:
            line = orjson.dumps(("c", journal_id, row)) + b"\n"
            self._append(line)
            self._open[journal_id].append(line)

    def settled(self, journal_ids: list[str]) -> None:
        """These requests' credit events are committed: they are no longer open."""
        if not journal_ids:
            return
        for journal_id in journal_ids:
            self._open.pop(journal_id, None)
        self._append(orjson.dumps(("s", journal_ids)) + b"\n")
        if self._size > max(ROTATE_BYTES, 2 * self._kept):
            self.rewrite()

    def rewrite(self) -> None:
        """Replace the file with one holding only the open requests (atomically: a crash leaves
        either the old file or the new one)."""
        temporary = self.path + ".new"
        fd = os.open(temporary, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            data = b"".join(line for lines in self._open.values() for line in lines)
            if data:
                _write_all(fd, data)
            os.replace(temporary, self.path)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fd)
        # What a rewrite keeps (the open requests) is at most half of the next one: many requests
        # open at once never make every settled line a rewrite.
        self._fd, self._size, self._kept, self._inherited = fd, len(data), len(data), False

    def close(self) -> None:
        """Stop journaling; an empty journal is left empty (nothing was open at a clean stop)."""
        if self._fd < 0:
            return
        if not self._open and self._size and not self._inherited:
            with contextlib.suppress(OSError):  # all settled: an unwritable disk may keep the old lines
                self.rewrite()
        os.close(self._fd)
        os.close(self._lock)  # releases the database lock
        self._fd = self._lock = -1

    @property
    def open_count(self) -> int:
        return len(self._open)

    def intact(self) -> bool:
        """Whether the file is still where the next start will look for it (not deleted under us)."""
        try:
            return os.fstat(self._fd).st_nlink > 0 and os.path.samestat(os.fstat(self._fd), os.stat(self.path))
        except OSError:
            return False

    def _append(self, line: bytes) -> None:
        """Write one whole record, or raise OSError with the file as it was (see the module doc)."""
        if self._torn:
            line = b"\n" + line
        try:
            _write_all(self._fd, line)
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._torn = True
                with contextlib.suppress(OSError):
                    self._size = os.fstat(self._fd).st_size  # later cuts stop at the torn bytes' end
            raise
        self._size += len(line)
        self._torn = False


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    while written < len(data):  # a short write (a signal, a nearly full disk): the rest raises or completes
        written += os.write(fd, data[written:])
