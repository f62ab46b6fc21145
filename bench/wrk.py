"""wrk (C, one thread, on the load CPU) with a Lua script for the POST body and headers.

wrk reports through the script's `done` hook, one line prefixed `WRK `:

    WRK {"requests": 51234, "duration_us": 10000123, "status": 0, ..., "p50_us": 812, "p99_us": 2310}
"""
from __future__ import annotations

import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.processes import LOAD_CPUS, pinned

SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = "{key}"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["User-Agent"] = "antex-bench/wrk"  -- every real client (SDKs, Claude Code, curl) sends one

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


@dataclass(frozen=True)
class Load:
    """One wrk run's result."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_s: float  # wrk's own CPU time, to show it was not the bottleneck

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, body: bytes, key: str, *, connections: int, seconds: float, work_dir: Path) -> Load:
    script = work_dir / "bench.lua"
    script.write_text(SCRIPT.format(body=body.decode(), key=key))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(script), url]
    completed = subprocess.run(argv, capture_output=True, text=True, preexec_fn=pinned(LOAD_CPUS),
                               timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((line for line in completed.stdout.splitlines() if line.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stdout}{completed.stderr}")
    data = orjson.loads(line[4:])
    errors = sum(data[name] for name in ("connect", "read", "write", "status", "timeout"))
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Load(data["requests"], data["duration_us"] / 1e6, errors, data["p50_us"] / 1000, data["p99_us"] / 1000, cpu_s)


def settle(seconds: float = 0.3) -> None:
    """A pause between runs, so the last one's connections are closed before the next starts."""
    time.sleep(seconds)
