"""`antex upstreams [--json]`: the configured pool, and a running server's live state of it."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
from click.testing import CliRunner

from antex.cli import cli
from tests.conftest import ROOT
from tests.processes import clean_env, free_port, stop, wait_for


def upstreams(config: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(cli, ["--config", str(config), "upstreams", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_configured_pool_and_its_live_state(tmp_path: Path) -> None:
    fake_log = tmp_path / "fake.log"
    with fake_log.open("wb") as out:
        fake = subprocess.Popen([sys.executable, "-m", "tests.fake_anthropic", "--port", "0", "--api-key", "sk-ant-live-1"],
                                cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    server = None
    try:
        fake_url = wait_for(fake_log, fake, r"listening on (http://\S+)").group(1)
        port = free_port()
        config = tmp_path / "antex.toml"
        config.write_text(
            f'[server]\nport = {port}\ndatabase = {json.dumps(str(tmp_path / "antex.db"))}\nshutdown_grace_s = 1\n'
            f'[[upstreams]]\nname = "live"\nbase_url = "{fake_url}"\napi_key_env = "KEY_LIVE"\n'
            f'[[upstreams]]\nname = "gone"\nbase_url = "http://127.0.0.1:{free_port()}"\napi_key_env = "KEY_GONE"\n'
            f'proxy = "http://user:hunter2@127.0.0.1:3128"\n')
        offline = upstreams(config, env={"KEY_LIVE": "x"})
        assert "live  priority 1" in offline and "$KEY_GONE (NOT SET)" in offline and "configuration only" in offline
        assert "hunter2" not in offline and "http://127.0.0.1:3128" in offline

        created = orjson.loads(CliRunner().invoke(cli, ["--config", str(config), "keys", "create", "u", "--plan", "pro",
                                                        "--json"]).output)
        server_log = tmp_path / "server.log"
        with server_log.open("wb") as out:
            server = subprocess.Popen([sys.executable, "antex.py", "--config", str(config), "serve"], cwd=ROOT,
                                      env=clean_env(KEY_LIVE="sk-ant-live-1", KEY_GONE="sk-ant-gone-2"),
                                      stdout=out, stderr=subprocess.STDOUT)
        wait_for(server_log, server, "Running on|serving")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, server_log.read_text()
                time.sleep(0.05)
        for n in range(6):  # different conversations: some go to "gone" first, and fail over
            body = orjson.dumps({"model": "claude-sonnet-4-6", "max_tokens": 5,
                                 "messages": [{"role": "user", "content": f"question {n}"}]})
            request = urllib.request.Request(url + "/v1/messages", data=body, method="POST",
                                             headers={"x-api-key": created["key"], "content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        rows = [orjson.loads(line) for line in upstreams(config, "--json").splitlines()]
        assert [(r["name"], r["state"]) for r in rows] == [("live", "ok"), ("gone", "down")]
        assert rows[1]["last_error"] and rows[1]["until"] and rows[1]["key_set"] is False  # not in *this* env
        text = upstreams(config)
        assert f"Live state from {url}" in text and "down until" in text
        assert "sk-ant" not in text and "hunter2" not in text
        log = server_log.read_text()
        assert log.count("upstream gone is down") == 1  # a state change, said once
        assert "sk-ant-gone-2" not in log and "sk-ant-live-1" not in log
    finally:
        if server is not None:
            stop(server)
        stop(fake)
