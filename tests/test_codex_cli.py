"""The real Codex CLI completes a task through Antex: it reads a file with its shell tool and edits
it with apply_patch, against the fake upstream scripted to ask for exactly those calls.

Codex comes from npm (`@openai/codex`, pinned in tests/tools/package.json and its lock file, which
`make test` installs with `npm ci`). This test never skips: without the binary it fails, with the
way to install it in the message. CODEX_BIN names another binary.

What Codex 0.169 sends to POST /v1/responses (streaming, `Authorization: Bearer <key>`, plus its
session headers): the instructions as developer messages in `input`, `reasoning.effort`,
`include: ["reasoning.encrypted_content"]`, and function tools (exec_command, write_stdin, …), a
`namespace` of sub-agent tools and web_search, which Antex drops, and apply_patch as a custom
(freeform, lark grammar) tool. It offers apply_patch only for models its catalog knows, so the
config names a catalog for claude-sonnet-4-6 (`model_catalog_json`), as a user of Antex would.
It sends `"store": false` and calls no other endpoint of the gateway.
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import ROOT, Gateway
from tests.fake_replies import Reply, text_reply, tool_use_reply

CODEX = Path(os.environ.get("CODEX_BIN") or ROOT / "tests/tools/node_modules/.bin/codex")
INSTALL_HINT = "run make test (it installs it), or: npm ci --prefix tests/tools"
MODEL = "claude-sonnet-4-6"
RUN_TIMEOUT_S = 90
PATCH = "*** Begin Patch\n*** Update File: hello.txt\n@@\n-Hello, world\n+Hello, Antex\n*** End Patch\n"
# What Codex needs to know about a model it has no metadata for; "freeform" makes it offer
# apply_patch as a custom tool, as it does for its own models.
CATALOG = {"models": [{
    "slug": MODEL, "display_name": "Claude Sonnet 4.6", "description": "Claude through Antex",
    "priority": 1, "visibility": "list", "supported_in_api": True,
    "default_reasoning_level": "medium",
    "supported_reasoning_levels": [{"effort": "medium", "description": "Extended thinking"}],
    "shell_type": "shell_command", "apply_patch_tool_type": "freeform",
    "supports_reasoning_summaries": False, "support_verbosity": False, "supports_parallel_tool_calls": True,
    "truncation_policy": {"mode": "tokens", "limit": 10000}, "context_window": 200000,
    "experimental_supported_tools": [], "input_modalities": ["text", "image"],
    "base_instructions": "You are a coding agent. Edit files with apply_patch.",
}]}


def codex_home(path: Path, gateway_url: str) -> Path:
    """A CODEX_HOME that talks to the gateway only: no plugin sync, no analytics, no update check.
    No sandbox: the test is about the gateway, and Codex's Linux sandbox (bubblewrap) needs user
    namespaces that CI containers may not have."""
    path.mkdir()
    (path / "catalog.json").write_text(json.dumps(CATALOG))
    (path / "config.toml").write_text(f"""\
model = "{MODEL}"
model_provider = "antex"
model_catalog_json = "{path / 'catalog.json'}"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.antex]
name = "Antex"
base_url = "{gateway_url}/v1"
env_key = "ANTEX_API_KEY"
wire_api = "responses"

[analytics]
enabled = false

[features]
plugins = false
apps = false
""")
    return path


async def run_codex(prompt: str, *, workdir: Path, home: Path, key: str) -> tuple[int, str, str]:
    """`codex exec` to the end (or RUN_TIMEOUT_S): exit code, stdout, stderr."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home.parent), "CODEX_HOME": str(home), "ANTEX_API_KEY": key}
    proc = await asyncio.create_subprocess_exec(
        str(CODEX), "exec", "--skip-git-repo-check", "--strict-config", "--ephemeral", "--color", "never",
        "--output-last-message", str(home / "last.txt"), prompt,
        cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(f"codex exec did not finish within {RUN_TIMEOUT_S} s:\n{err.decode()[-4000:]}")
    return proc.returncode, out.decode(), err.decode()



def tool_results(request_json: dict) -> dict[str, object]:
    """tool_use_id -> content of every tool_result in an Anthropic request."""
    return {
        block["tool_use_id"]: block["content"]
        for message in request_json["messages"] if isinstance(message["content"], list)
        for block in message["content"] if block["type"] == "tool_result"
    }


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
async def test_codex_reads_and_patches_a_file(gateway: Gateway, tmp_path: Path) -> None:
    assert CODEX.exists(), f"{CODEX} is missing: {INSTALL_HINT}"
    key = await gateway.create_key("codex")
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "hello.txt").write_text("Hello, world\n")
    # Thinking before the first call: Codex must carry it back (reasoning.encrypted_content).
    read = tool_use_reply("exec_command", {"cmd": "cat hello.txt"}, id="toolu_01read")
    thinking = {"type": "thinking", "thinking": "Read the file first.", "signature": "EqCodexSig=="}
    gateway.fake.queue(
        Reply(content=(thinking, *read.content), stop_reason="tool_use", input_tokens=3000, output_tokens=40),
        tool_use_reply("apply_patch", {"input": PATCH}, id="toolu_01patch", input_tokens=3100, output_tokens=60),
        text_reply("hello.txt now says Hello, Antex.", input_tokens=3200, output_tokens=9),
    )

    home = codex_home(tmp_path / "codex-home", gateway.url)
    code, out, err = await run_codex("Change the greeting in hello.txt to Hello, Antex.",
                                     workdir=workdir, home=home, key=key)

    assert code == 0, f"codex exec exited {code}:\n{err[-4000:]}"
    assert (workdir / "hello.txt").read_text() == "Hello, Antex\n"
    assert (home / "last.txt").read_text().strip() == "hello.txt now says Hello, Antex."
    first, second, third = [r.json for r in gateway.fake.requests]

    # What Codex declared, as Antex translated it: its shell tool and apply_patch taking {"input": text}.
    tools = {tool["name"]: tool for tool in first["tools"]}
    assert "cmd" in tools["exec_command"]["input_schema"]["properties"], tools["exec_command"]
    assert tools["apply_patch"]["input_schema"]["required"] == ["input"]
    assert "*** Begin Patch" in tools["apply_patch"]["description"]  # the grammar travels in the description
    assert first["stream"] is True and first["model"] == MODEL
    assert first["thinking"]["type"] == "enabled"  # Codex asks for reasoning effort medium

    # The shell call came back with the file's content, after the thinking Codex replayed.
    assert "Hello, world" in tool_results(second)["toolu_01read"]
    replayed = second["messages"][-2]
    assert replayed["role"] == "assistant" and replayed["content"][0] == thinking
    assert second["thinking"]["type"] == "enabled"
    # The patch went through apply_patch (a custom_tool_call) and Codex reported success.
    results = tool_results(third)
    assert "Success" in results["toolu_01patch"] and "hello.txt" in results["toolu_01patch"]
    patch_call = third["messages"][-2]["content"][-1]
    assert patch_call == {"type": "tool_use", "id": "toolu_01patch", "name": "apply_patch", "input": {"input": PATCH}}

    events = await gateway.events()
    assert [(e["endpoint"], e["model"], e["input_tokens"], e["output_tokens"]) for e in events] == [
        ("/v1/responses", MODEL, 3000, 40), ("/v1/responses", MODEL, 3100, 60), ("/v1/responses", MODEL, 3200, 9)]
    # Codex sends "store": false (it replays the whole conversation itself): nothing is kept.
    db = sqlite3.connect(gateway.database)
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 0
    db.close()
