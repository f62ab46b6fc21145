"""Several upstreams end to end: fake Anthropic servers, each with its own key, that die, rate-limit
one model family, or answer 529 storms; Antex in front, driven by real clients.

The pool's clock is the app's (a FakeClock here): cooldowns last until the test moves time on.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from multidict import CIMultiDict

from antex.app import make_app
from antex.upstream.pool import Pool as UpstreamPool
from antex.appkeys import KEYS, POOL
from tests.conftest import ROOT, FakeClock, Gateway, build_config, insert_key, sample_body
from tests.fake_anthropic import FakeAnthropic, error_reply, text_reply
from tests.processes import clean_env, stop


@dataclass
class Pool:
    gateway: Gateway
    fakes: dict[str, FakeAnthropic]
    servers: dict[str, Any]
    key: str

    async def post(self, path: str = "/v1/messages", body: dict | None = None, headers: dict | None = None
                   ) -> tuple[int, dict, bytes]:
        async with ClientSession() as http:
            async with http.post(self.gateway.url + path, json=body or sample_body(),
                                 headers={"x-api-key": self.key, **(headers or {})}) as resp:
                return resp.status, CIMultiDict(resp.headers), await resp.read()

    async def answered_by(self) -> list[str]:
        return [event["upstream"] for event in await self.gateway.events()]


def entry(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "base_url": url, "api_key_env": f"KEY_{name.upper()}", **extra}


@pytest.fixture
async def make_pool(aiohttp_server, tmp_path: Path, clock: FakeClock):
    async def start(names: tuple[str, ...] = ("a", "b", "c"), urls: dict[str, str] | None = None,
                    keys: dict[str, str] | None = None, **entry_options: dict[str, Any]) -> Pool:
        fakes, servers, entries = {}, {}, []
        for name in names:
            if urls and name in urls:
                url = urls[name]
            else:
                fakes[name] = FakeAnthropic(f"sk-ant-{name}-key")
                servers[name] = await aiohttp_server(fakes[name].app())
                url = str(servers[name].make_url("")).rstrip("/")
            entries.append(entry(name, url, **entry_options.get(name, {})))
        config = build_config(tmp_path / "antex.db", "http://unused.invalid", upstreams=entries)
        upstream_keys = {name: f"sk-ant-{name}-key" for name in names} | (keys or {})
        app = make_app(config, upstream_key=upstream_keys, clock=clock)
        server = await aiohttp_server(app)
        gateway = Gateway(app, str(server.make_url("")).rstrip("/"), config, None, clock)
        key = await insert_key(config.server.database, "alice", "pro", {"max_concurrent": 0})
        await app[KEYS].refresh()
        return Pool(gateway, fakes, servers, key)

    return start


def fake_process(api_key: str) -> tuple[subprocess.Popen, str]:
    """A fake Anthropic in its own process, to be killed for real."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_anthropic", "--port", "0", "--api-key", api_key],
                            cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    return proc, line.split()[-1]


OPUS = "claude-opus-4-6"


async def test_three_upstreams_one_killed_one_429_one_529_storm_clients_see_no_error(make_pool) -> None:
    proc, url = fake_process("sk-ant-a-key")
    try:
        pool = await make_pool(urls={"a": url})
        b, c = pool.fakes["b"], pool.fakes["c"]
        b.rate_limited = {"opus": 60}  # b: Opus limit reached, Sonnet fine
        c.overloaded = True  # c: a 529 storm
        bodies = [sample_body(model=OPUS if n % 2 else "claude-sonnet-4-6", stream=n % 3 == 0,
                              messages=[{"role": "user", "content": f"conversation {n}"}]) for n in range(40)]
        results = await asyncio.gather(*(pool.post(body=body) for body in bodies))
        assert [status for status, _, _ in results] == [200] * 40, [r[2][:200] for r in results if r[0] != 200]
        assert c.served >= 1  # the storm was met, and routed around

        # The storm ends; time passes (c's cooldown is over, b's Opus limit is not); a dies mid-load.
        c.overloaded = False
        pool.gateway.clock.advance(35)

        async def kill_soon() -> None:
            await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGKILL)

        bodies = [sample_body(model=OPUS if n % 2 else "claude-sonnet-4-6",
                              messages=[{"role": "user", "content": f"conversation {n}"}]) for n in range(60)]
        killer = asyncio.create_task(kill_soon())
        results = []
        for batch in range(6):  # a steady load across the kill
            results += await asyncio.gather(*(pool.post(body=body) for body in bodies[batch * 10:(batch + 1) * 10]))
            await asyncio.sleep(0.02)
        await killer
        assert [status for status, _, _ in results] == [200] * 60, [r[2][:200] for r in results if r[0] != 200]
    finally:
        stop(proc)
        proc.stdout.close()

    events = await pool.gateway.events()
    assert len(events) == 100 and {e["outcome"] for e in events} == {"complete"}  # each request charged once
    opus_by = {e["upstream"] for e in events if e["model"] == OPUS}
    assert "b" not in opus_by  # never answered from the rate-limited family
    assert opus_by <= {"a", "c"} and {e["upstream"] for e in events} <= {"a", "b", "c"}
    assert events[-1]["upstream"] != "a"  # after the kill, others answered
    health = orjson.loads((await _get(pool, "/healthz"))[1])
    states = {u["name"]: u for u in health["upstreams"]}
    assert health["status"] == "degraded" and states["a"]["state"] == "down" and states["a"]["last_error"]
    assert states["b"]["state"] == "cooling" and states["b"]["models"] == ["opus"] and states["b"]["until"]
    assert "sk-ant" not in (await _get(pool, "/healthz"))[1].decode()


async def _get(pool: Pool, path: str) -> tuple[int, bytes]:
    async with ClientSession() as http:
        async with http.get(pool.gateway.url + path) as resp:
            return resp.status, await resp.read()


async def test_a_conversation_stays_on_one_upstream_and_moves_once(make_pool) -> None:
    pool = await make_pool()
    session = {"x-claude-code-session-id": "7b0f6c1e-2f7a-4d8e-9c1b-5e3a2d4f6a8b"}
    messages: list[dict] = []
    home = None
    for turn in range(20):
        messages.append({"role": "user", "content": f"turn {turn}"})
        if turn == 10:  # the conversation's upstream starts failing
            home = (await pool.answered_by())[-1]
            pool.fakes[home].overloaded = True
        if turn == 15:  # and recovers; the conversation stays where its cache now is
            pool.fakes[home].overloaded = False
            pool.gateway.clock.advance(120)
        status, _, body = await pool.post(body=sample_body(messages=messages, stream=turn % 2 == 0), headers=session)
        assert status == 200, body
        messages.append({"role": "assistant", "content": "ok"})
    answered = await pool.answered_by()
    assert len(answered) == 20
    moves = sum(1 for before, after in zip(answered, answered[1:]) if before != after)
    assert moves == 1 and answered[:10] == [home] * 10 and answered[10] != home


async def test_a_stream_opening_with_an_error_event_fails_over(make_pool) -> None:
    pool = await make_pool(names=("a", "b"))
    assert (await pool.post())[0] == 200
    [home] = await pool.answered_by()  # the conversation's upstream, whose next stream opens with an error
    pool.fakes[home].queue(text_reply("never", events=3, error_event_after=0))
    status, _, body = await pool.post(body=sample_body(stream=True))
    assert status == 200 and b"event: error" not in body and b"message_stop" in body
    assert sum(fake.served for fake in pool.fakes.values()) == 3
    answered = await pool.answered_by()
    assert len(answered) == 2 and answered[1] != home


async def test_every_upstream_cooling_is_overloaded_error_with_retry_after_in_the_route_shape(make_pool) -> None:
    pool = await make_pool(names=("a", "b"))
    pool.fakes["a"].overloaded = True
    pool.fakes["b"].rate_limited = {"sonnet": 90}
    status, _, body = await pool.post()  # both tried: the last answer comes back as it came
    assert status in (429, 529) and orjson.loads(body)["type"] == "error"
    served = sum(fake.served for fake in pool.fakes.values())
    status, headers, body = await pool.post()
    assert status == 529 and orjson.loads(body)["error"]["type"] == "overloaded_error"
    assert headers.get("retry-after") == "2", (headers, body)  # a's 529 cooldown is the soonest recovery
    status, headers, body = await pool.post("/v1/chat/completions", {"model": "claude-sonnet-4-6",
                                                                     "messages": [{"role": "user", "content": "hi"}]})
    assert status == 529 and orjson.loads(body)["error"]["type"] == "overloaded_error" and "retry-after" in headers
    assert sum(fake.served for fake in pool.fakes.values()) == served  # nothing more was sent upstream
    assert len(await pool.gateway.events()) == 3  # each admitted request charged once (0 credits)


async def test_no_upstream_left_is_a_clear_error_on_every_door(make_pool) -> None:
    pool = await make_pool(names=("a", "b"))
    await pool.servers["a"].close()  # both gone: connection refused
    await pool.servers["b"].close()
    for path, body in [
        ("/v1/chat/completions", {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/responses", {"model": "claude-sonnet-4-6", "input": "hi"}),
        ("/v1/messages/count_tokens", {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}),
    ]:
        status, _, _ = await pool.post(path, body)
        assert status in (502, 529)  # both gone: a clear error, never a traceback


async def test_openai_doors_and_count_tokens_reach_the_living_upstream(make_pool) -> None:
    pool = await make_pool(names=("a", "b"))
    await pool.servers["a"].close()
    for path, body in [
        ("/v1/chat/completions", {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/responses", {"model": "claude-sonnet-4-6", "input": "hi", "prompt_cache_key": "thread-1"}),
        ("/v1/messages/count_tokens", {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}]}),
        ("/v1/messages", sample_body(messages=[{"role": "user", "content": "other"}])),
    ] * 2:
        status, _, body = await pool.post(path, body)
        assert status == 200, (path, body)
    assert await pool.answered_by() == ["b"] * 6


async def test_a_refused_upstream_key_takes_it_out_loudly_with_a_slow_probe_until_it_works(
        make_pool, caplog: pytest.LogCaptureFixture) -> None:
    pool = await make_pool(names=("a", "b"), keys={"a": "sk-ant-wrong"})
    a = pool.fakes["a"]

    async def round_of_conversations(tag: str) -> None:
        for n in range(8):
            status, _, _ = await pool.post(body=sample_body(messages=[{"role": "user", "content": f"{tag} {n}"}]))
            assert status == 200

    with caplog.at_level(logging.INFO, logger="antex.upstream"):
        await round_of_conversations("first")
        assert len(a.requests) == 1  # out after its first 401
        health = orjson.loads((await _get(pool, "/healthz"))[1])
        assert health["upstreams"][0]["state"] == "down" and health["upstreams"][0]["until"] == pool.gateway.clock() + 60
        pool.gateway.clock.advance(61)
        await round_of_conversations("second")
        assert len(a.requests) == 2  # one probe after a minute, refused again...
        pool.gateway.clock.advance(61)
        await round_of_conversations("third")
        assert len(a.requests) == 2  # ...so the next waits two
        a.api_key = "sk-ant-wrong"  # the key is made good upstream
        pool.gateway.clock.advance(60)
        await round_of_conversations("fourth")
        assert a.served >= 2  # the probe went through, and a serves its share again
    loud = [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
    assert [r.levelname for r in loud] == ["ERROR", "WARNING"] and "KEY_A" in loud[0].getMessage()
    assert "accepts its key again" in loud[1].getMessage() and "sk-ant-wrong" not in caplog.text
    health = orjson.loads((await _get(pool, "/healthz"))[1])
    assert [u["state"] for u in health["upstreams"]] == ["ok", "ok"]


async def test_a_403_from_two_upstreams_is_the_request_refused_not_their_keys(
        make_pool, caplog: pytest.LogCaptureFixture) -> None:
    pool = await make_pool(names=("a", "b"), b={"priority": 2})
    refusal = "This organization has been disabled for this feature."
    with caplog.at_level(logging.WARNING, logger="antex.upstream"):
        for path, body in [("/v1/messages", sample_body()),
                           ("/v1/chat/completions", {"model": "claude-sonnet-4-6",
                                                     "messages": [{"role": "user", "content": "hi"}]})]:
            for fake in pool.fakes.values():
                fake.queue(error_reply(403, "permission_error", refusal))
            status, _, answer = await pool.post(path, body)
            assert status == 403, answer  # the upstreams' own refusal, in the door's shape
            error = orjson.loads(answer)["error"]
            assert refusal in error["message"] and ("type" in error) and (path != "/v1/messages" or
                                                                          error["type"] == "permission_error")
        assert not caplog.records  # no key was said to be refused
        health = orjson.loads((await _get(pool, "/healthz"))[1])
        assert [u["state"] for u in health["upstreams"]] == ["ok", "ok"]
        assert (await pool.post())[0] == 200 and (await pool.answered_by())[-1] == "a"  # a is still first

        pool.fakes["a"].queue(error_reply(403, "permission_error", "Your API key does not have permission."))
        assert (await pool.post())[0] == 200 and (await pool.answered_by())[-1] == "b"  # b took it: a's key
    assert [r.levelname for r in caplog.records] == ["ERROR"] and "KEY_A" in caplog.text
    health = orjson.loads((await _get(pool, "/healthz"))[1])
    assert [u["state"] for u in health["upstreams"]] == ["down", "ok"]


@pytest.mark.parametrize("retry_after", ["1e12", "-3", "soon", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_an_absurd_retry_after_gives_a_sane_cooldown_and_no_error(
        make_pool, retry_after: str, caplog: pytest.LogCaptureFixture) -> None:
    pool = await make_pool(names=("a", "b"), b={"priority": 2})
    pool.fakes["a"].queue(error_reply(429, "rate_limit_error", "Slow down.", headers={"retry-after": retry_after}))
    with caplog.at_level(logging.INFO):
        status, _, body = await pool.post()
    assert status == 200, body
    assert await pool.answered_by() == ["b"]
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
    health = orjson.loads((await _get(pool, "/healthz"))[1])
    a = health["upstreams"][0]
    assert a["state"] == "cooling" and 0 < a["until"] - pool.gateway.clock() <= 86400
    client = pool.gateway.app[POOL].upstreams[0].client
    assert client.in_flight == 0 and len(client._idle) == 1  # the 429's connection went back to the pool


async def test_an_error_after_the_answer_arrived_closes_it(make_pool, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = await make_pool(names=("a", "b"), b={"priority": 2})
    pool.fakes["a"].queue(error_reply(429, "rate_limit_error", "Slow down."))

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug in the pool's bookkeeping")

    monkeypatch.setattr(UpstreamPool, "answered", broken)
    status, _, _ = await pool.post()
    assert status == 500
    client = pool.gateway.app[POOL].upstreams[0].client
    assert client.in_flight == 0  # the answer was closed, its connection not left busy


async def test_priorities_send_work_to_the_best_first(make_pool) -> None:
    pool = await make_pool(names=("main", "backup"), backup={"priority": 2})
    for n in range(8):
        assert (await pool.post(body=sample_body(messages=[{"role": "user", "content": f"q{n}"}])))[0] == 200
    assert pool.fakes["backup"].served == 0
    pool.fakes["main"].overloaded = True
    assert (await pool.post())[0] == 200
    assert (await pool.answered_by())[-1] == "backup"


async def test_never_after_a_byte_reached_the_client(make_pool) -> None:
    pool = await make_pool(names=("a", "b"))
    assert (await pool.post())[0] == 200
    [home] = await pool.answered_by()
    pool.fakes[home].queue(text_reply("a reply cut off half way through", events=8, cut_after=4))
    served = sum(fake.served for fake in pool.fakes.values())
    status, _, body = await pool.post(body=sample_body(stream=True))
    assert status == 200 and b"message_start" in body and b"event: error" in body  # cut, said in the stream
    assert sum(fake.served for fake in pool.fakes.values()) == served + 1  # not sent again elsewhere
    events = await pool.gateway.events()
    assert len(events) == 2 and events[1]["outcome"] == "upstream_error" and events[1]["upstream"] == home
