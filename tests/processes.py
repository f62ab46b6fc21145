"""Real processes for tests: a clean environment, free ports, waiting on logs, stopping for sure."""
from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
from click.testing import CliRunner

from antex.cli import cli

ROOT = Path(__file__).resolve().parent.parent


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


def start_fake_upstream(work: Path, api_key: str, procs: list[subprocess.Popen]) -> str:
    """tests/fake_anthropic.py as its own process (appended to `procs`); returns its URL."""
    log = work / "fake.log"
    with log.open("wb") as out:
        procs.append(fake := subprocess.Popen(
            [sys.executable, "-m", "tests.fake_anthropic", "--port", "0", "--api-key", api_key],
            cwd=ROOT, env=clean_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))
    return wait_for(log, fake, r"listening on (http://\S+)").group(1)


def live_config(work: Path, upstream_url: str, server: str = "") -> tuple[Path, int]:
    """An antex.toml in `work`: its own database and free port, `server` lines added to [server],
    the upstream at `upstream_url`; returns (path, port)."""
    port = free_port()
    config = work / "antex.toml"
    config.write_text(f'[server]\ndatabase = "{work / "antex.db"}"\nport = {port}\nshutdown_grace_s = 1\n{server}'
                      f'[upstream]\nbase_url = "{upstream_url}"\nidle_timeout_s = 5\n')
    return config, port


def start_antex(config: Path, upstream_key: str, log: Path, procs: list[subprocess.Popen],
                open_files: int | None = None) -> subprocess.Popen:
    """`antex serve` on `config` (appended to `procs`), once it logs that it listens; with
    `open_files`, under that open-file limit (soft and hard)."""
    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with log.open("wb") as out:
        procs.append(server := subprocess.Popen(
            [sys.executable, "antex.py", "--config", str(config), "serve"], cwd=ROOT,
            env=clean_env(ANTEX_UPSTREAM_KEY=upstream_key), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, preexec_fn=limit_files if open_files else None))
    wait_for(log, server, r"Running on|serving")
    return server


def rss_bytes(pid: int) -> int:
    """The resident memory of process `pid`, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def cli_key(config: Path, name: str, *limits: str) -> str:
    """A key on the `max` plan made by `antex keys create` (then `keys set` with `limits`, if any)."""
    created = CliRunner().invoke(cli, ["--config", str(config), "keys", "create", name, "--plan", "max", "--json"])
    assert created.exit_code == 0, created.output
    if limits:
        changed = CliRunner().invoke(cli, ["--config", str(config), "keys", "set", name, *limits])
        assert changed.exit_code == 0, changed.output
    return orjson.loads(created.stdout)["key"]
