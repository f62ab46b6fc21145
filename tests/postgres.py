"""A real PostgreSQL server for the tests: Debian's binaries, a temporary data directory, trust
on a unix socket for the suite's own admin work and a password over loopback TCP for Antex.

initdb refuses to run as root, which CI is: then the server runs as Debian's `postgres` user
(runuser), in a directory made for it. One server per test session; each test gets a database of
its own, copied from a template (CREATE DATABASE ... TEMPLATE), which takes milliseconds.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from itertools import count

from tests.processes import free_port

INSTALL_HINT = ("The PostgreSQL tests need Debian's postgresql server binaries (/usr/lib/postgresql/*/bin/initdb). "
                "Run `make test` (it installs them), or: apt-get install -y postgresql")
USER = "antex"
PASSWORD = "antex-test-password"


def binaries() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError(INSTALL_HINT)
    return os.path.dirname(found[-1])


@dataclass
class PostgresServer:
    """One running server; `stop()`/`start()` for the fault tests (same data, same port)."""

    bin: str
    data: str
    port: int
    socket_dir: str
    log: str
    as_user: str | None  # run the binaries as this user (when the suite runs as root)
    _names: "count[int]" = field(default_factory=lambda: count(1))

    def _command(self, *args: str) -> list[str]:
        return (["runuser", "-u", self.as_user, "--"] if self.as_user else []) + list(args)

    def start(self) -> None:
        subprocess.run(self._command(
            os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log, "-w", "-t", "30", "-o",
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=300", "start"),
            check=True, stdout=subprocess.DEVNULL)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(self._command(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop"),
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` as the superuser over the unix socket; returns psql's output."""
        done = subprocess.run(self._command(os.path.join(self.bin, "psql"), "-h", self.socket_dir, "-p",
                                            str(self.port), "-U", USER, "-d", database, "-v", "ON_ERROR_STOP=1",
                                            "-Atqc", sql), check=True, capture_output=True, text=True)
        return done.stdout

    def url(self, database: str, *, password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def new_database(self, template: str = "template0") -> str:
        """A fresh database copied from `template`; returns its name."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name


def start_server() -> PostgresServer:
    bin_dir = binaries()
    root = tempfile.mkdtemp(prefix="antex-pg-")
    as_user = None
    if os.geteuid() == 0:
        as_user = "postgres"
        try:
            user = pwd.getpwnam(as_user)
        except KeyError:
            raise RuntimeError(f"No `postgres` user to run the test server as. {INSTALL_HINT}") from None
        os.chown(root, user.pw_uid, user.pw_gid)
    os.chmod(root, 0o755)  # the suite (root or not) reads the log
    data, socket_dir = os.path.join(root, "data"), root
    password_file = os.path.join(root, "password")
    with open(password_file, "w") as handle:
        handle.write(PASSWORD + "\n")
    if as_user:
        os.chown(password_file, pwd.getpwnam(as_user).pw_uid, -1)
    server = PostgresServer(bin_dir, data, free_port(), socket_dir, os.path.join(root, "server.log"), as_user)
    subprocess.run(server._command(os.path.join(bin_dir, "initdb"), "-D", data, "-U", USER, "--pwfile", password_file,
                                   "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"),
                   check=True, stdout=subprocess.DEVNULL)
    if as_user:  # the log file, written by the server
        open(server.log, "a").close()
        os.chown(server.log, pwd.getpwnam(as_user).pw_uid, -1)
    server.start()
    return server


def remove_server(server: PostgresServer) -> None:
    server.stop("immediate")
    deadline = time.monotonic() + 10
    pid_file = os.path.join(server.data, "postmaster.pid")
    while os.path.exists(pid_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    if os.path.exists(pid_file):
        with open(pid_file) as handle:
            os.kill(int(handle.readline()), signal.SIGKILL)
    shutil.rmtree(os.path.dirname(server.data), ignore_errors=True)
