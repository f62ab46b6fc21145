"""The processes a bench run starts: pinned to a CPU, waited for, measured from /proc, stopped.

The proxy under test gets CPU 0 to itself; the upstream and the load generator share CPU 1, so
the proxy is the bottleneck and its CPU use (read from /proc) shows it.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from aiohttp import web

PROXY_CPUS = {0}
LOAD_CPUS = {1} if (os.cpu_count() or 1) > 1 else {0}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


def pinned(cpus: set[int]):
    return lambda: os.sched_setaffinity(0, cpus)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """One child process, its output in a log file, and its CPU time and memory from /proc."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, cpus: set[int], env: dict | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
                                      env={**os.environ, **(env or {})}, preexec_fn=pinned(cpus))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for_url(self, timeout_s: float = 20.0) -> str:
        """The URL from the `listening on http://…` line the fake, bare proxy and paced upstream print."""
        return self.wait_for_line(r"listening on (http://\S+)", timeout_s).group(1)

    def wait_for_line(self, pattern: str, timeout_s: float = 20.0) -> re.Match:
        """The first match of `pattern` in the process's output, once it has printed one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log_path.read_text(errors="replace"))
            if found:
                return found
            self._check_alive()
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    def wait_for_health(self, url: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            self._check_alive()
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer {url}; see {self.log_path}")

    def _check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}: "
                               f"{self.log_path.read_text(errors='replace')[-2000:]}")

    def cpu_s(self) -> float:
        """User plus system CPU seconds so far, every thread included."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def memory_kb(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def busy_jiffies() -> int:
    """Clock ticks every CPU spent on anything but idle and I/O wait, since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


async def serve_until_stopped(app: web.Application, host: str, port: int, **site: int) -> None:
    """Serve `app` until SIGINT or SIGTERM, printing `listening on URL` once bound, like the fake upstream."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, **site).start()
    bound_host, bound_port = runner.addresses[0][:2]
    print(f"listening on http://{bound_host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
