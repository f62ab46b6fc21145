"""antex.journal: the append-only file of admitted requests, read back as a crash leaves it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
from pathlib import Path

import pytest

from antex import journal
from antex.journal import Journal, OpenRequest, read_open


@pytest.fixture
def database(tmp_path: Path) -> str:
    path = tmp_path / "antex.db"
    path.touch()
    return str(path)


def admit(file: Journal, journal_id: str, estimated: int = 10) -> None:
    file.admitted(journal_id, 1, 1764072000.5, "claude-sonnet-4-6", "/v1/messages", estimated)


def test_what_is_admitted_stays_open_until_settled(database: str) -> None:
    file = Journal(database)
    admit(file, "b-1")
    admit(file, "b-2", estimated=20)
    file.usage_seen("b-2", {"input_tokens": 9})
    file.usage_seen("b-9", {"input_tokens": 1})  # never admitted here: ignored
    file.settled(["b-1"])
    # Read as a crash would leave it: the file alone, without a clean close.
    assert read_open(file.path) == [OpenRequest("b-2", 1, "claude-sonnet-4-6", "/v1/messages", 20, {"input_tokens": 9})]
    assert read_open(file.path, settled=["b-2"]) == []  # committed, its line not yet written
    assert file.open_count == 1
    file.close()


def test_the_file_is_rewritten_with_only_open_requests_past_its_size(database: str, monkeypatch) -> None:
    monkeypatch.setattr(journal, "ROTATE_BYTES", 2000)
    file = Journal(database)
    admit(file, "keep")
    file.usage_seen("keep", {"input_tokens": 3})
    for n in range(40):
        admit(file, f"done-{n}")
        file.settled([f"done-{n}"])
    size = Path(file.path).stat().st_size
    assert size < 2000 + 200  # rewritten on the way, not grown to 40 requests' worth
    assert read_open(file.path) == [OpenRequest("keep", 1, "claude-sonnet-4-6", "/v1/messages", 10, {"input_tokens": 3})]
    admit(file, "after")  # still appending to the new file
    assert [request.id for request in read_open(file.path)] == ["keep", "after"]
    file.close()
    assert [request.id for request in read_open(file.path)] == ["keep", "after"]  # open requests survive a stop


def test_a_clean_stop_with_nothing_open_leaves_it_empty(database: str) -> None:
    file = Journal(database)
    admit(file, "b-1")
    file.settled(["b-1"])
    file.close()
    assert Path(file.path).read_bytes() == b""


def test_damaged_lines_are_skipped(database: str) -> None:
    Path(journal.path_for(database)).write_bytes(
        b'["a","b-1",1,1.0,"m","/v1/messages",5]\nnot json\n[]\n{"a":1}\n["s","b-1"]\n["u","b-1",5]\n["a","b-2",1,2.0')
    assert read_open(journal.path_for(database)) == [OpenRequest("b-1", 1, "m", "/v1/messages", 5, None)]


def test_one_server_per_database(database: str) -> None:
    first = Journal(database)
    with pytest.raises(journal.DatabaseInUse):
        Journal(database)
    first.close()
    Journal(database).close()  # free again once the first has stopped


def test_the_lock_is_a_file_of_its_own_never_the_database(database: str) -> None:
    """Closing any descriptor of the database file drops SQLite's POSIX locks on it: the server's
    lock lives in antex.db-lock, and the journal never opens the database file."""
    first = Journal(database)
    database_file = os.stat(database)
    opened = [os.stat(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]
    assert not any(os.path.samestat(found, database_file) for found in opened)
    with open(journal.lock_path_for(database), "rb") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    first.close()


@contextlib.contextmanager
def file_size_limit(limit: int):
    """RLIMIT_FSIZE on this process for a moment: a write past `limit` fails part-way (Python
    ignores SIGXFSZ, so it is EFBIG, not death)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_write_that_fails_part_way_leaves_no_torn_record(database: str) -> None:
    """A torn record would swallow the next line: here the `s` line, and b-1 would be charged twice."""
    file = Journal(database)
    admit(file, "b-1")
    size = Path(file.path).stat().st_size
    with file_size_limit(size + 20), pytest.raises(OSError):
        admit(file, "b-2")  # 20 bytes of it fit, the rest does not
    assert Path(file.path).stat().st_size == size  # cut back
    file.settled(["b-1"])
    assert read_open(file.path) == []
    file.close()


def test_a_record_glued_behind_a_torn_one_is_still_read(database: str) -> None:
    """As an older version could leave it: b-2's record torn, and b-1's `s` line glued behind it."""
    path = journal.path_for(database)
    Path(path).write_bytes(b'["a","b-1",1,1.0,"m","/v1/messages",5]\n["a","b-2",1,2.0,"m","/v1/mes["s",["b-1"]]\n')
    assert read_open(path) == []


def test_a_charge_a_stop_could_not_commit_is_read_back_whole(database: str) -> None:
    file = Journal(database)
    admit(file, "b-1")
    admit(file, "b-2")
    row = (1, 3.0, "claude-sonnet-4-6", "/v1/messages", 1, 2, 0, 0, 0, 700, None, "complete", 0)
    file.charged("b-1", row)
    file.close()  # b-1 and b-2 stay open: the next start writes b-1's row, and charges b-2 as interrupted
    assert [(request.id, request.charged) for request in read_open(file.path)] == [("b-1", list(row)), ("b-2", None)]
