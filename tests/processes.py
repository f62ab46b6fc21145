"""Real processes for tests: a clean environment, free ports, waiting on logs, stopping for sure."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTEX_", "ANTHROPIC_", "OPENAI_")) and k != "NO_COLOR"}
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, a bounded wait, then SIGKILL: no process outlives its test."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(log: Path, proc: subprocess.Popen, pattern: str, timeout_s: float = 15) -> re.Match:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text(errors='replace')}"
        time.sleep(0.02)
    raise AssertionError(f"no {pattern!r} within {timeout_s} s:\n{log.read_text(errors='replace')}")
