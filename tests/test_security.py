"""Nobody gets in: keys nobody can guess or read back, credentials that never leave the gateway,
client addresses nobody can spoof, and a dashboard that gives nothing away.

Each test tries to break one guarantee from the outside, the way an attacker or a careless proxy
would, and then looks at every byte Antex wrote: responses, logs, the database, the CLI.
"""
from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from aiohttp import ClientSession
from click.testing import CliRunner
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from antex import auth
from antex.appkeys import KEYS
from antex.auth import KEY_ALPHABET, KEY_PREFIX, KEY_RANDOM_CHARS, client_ip, hash_key, new_key
from antex.cli import cli
from antex.routes.dashboard import STATIC_FILES
from tests.conftest import Gateway, GatewayFactory, sample_body
from tests.fake_anthropic import DEFAULT_API_KEY
from tests.fake_replies import error_reply, text_reply

KEY_PATTERN = re.compile(r"sk_live_[A-Za-z0-9]{43}")
CHAT = {"model": "claude-sonnet-4-6", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
RESPONSES = {"model": "claude-sonnet-4-6", "max_output_tokens": 32, "input": "hi"}


# keys: randomness, storage, lookup


def test_keys_carry_at_least_192_random_bits_from_the_system_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sorted(KEY_ALPHABET) == sorted(set(KEY_ALPHABET)) == sorted(string.ascii_letters + string.digits)
    bits = KEY_RANDOM_CHARS * math.log2(len(KEY_ALPHABET))
    assert bits >= 192, bits  # 43 base-62 characters: 256 bits

    keys = [new_key() for _ in range(1000)]
    assert len(set(keys)) == 1000
    assert all(KEY_PATTERN.fullmatch(key) for key in keys)
    # 43,000 draws: every symbol shows up, none dominates (a truncated or skewed alphabet would).
    counts = {symbol: 0 for symbol in KEY_ALPHABET}
    for key in keys:
        for symbol in key[len(KEY_PREFIX):]:
            counts[symbol] += 1
    expected = 1000 * KEY_RANDOM_CHARS / len(KEY_ALPHABET)
    assert min(counts.values()) > expected / 2 and max(counts.values()) < expected * 2, counts

    # Every character is one secrets.choice over the whole alphabet: the OS CSPRNG, never `random`.
    drawn: list[str] = []
    monkeypatch.setattr(auth.secrets, "choice", lambda alphabet: drawn.append(alphabet) or alphabet[-1])
    assert new_key() == KEY_PREFIX + KEY_ALPHABET[-1] * KEY_RANDOM_CHARS
    assert drawn == [KEY_ALPHABET] * KEY_RANDOM_CHARS


async def test_keys_are_stored_and_looked_up_by_hash_only(gateway: Gateway) -> None:
    key = await gateway.create_key("alice")
    await gateway.flush()
    for path in database_files(gateway):
        assert key.encode() not in path.read_bytes(), path
    cache = gateway.app[KEYS]
    record = cache.by_hash[hashlib.sha256(key.encode()).hexdigest()]
    assert record.row.hash == hash_key(key) and record.row.prefix == key[:12]
    assert key not in repr(cache.by_hash) + repr(cache.by_id)
    # One character off, or the right key with a different case, is just an unknown key.
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), KEY_PREFIX + key[len(KEY_PREFIX):].swapcase()):
        async with ClientSession() as http:
            async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers={"x-api-key": wrong}) as resp:
                assert resp.status == 401
                assert "Invalid API key" in (await resp.json())["error"]["message"]
    assert gateway.fake.requests == []


def database_files(gateway: Gateway) -> list[Path]:
    database = Path(gateway.database)
    return [path for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), Path(f"{database}-inflight"))
            if path.exists()]


# credentials never leave: not upstream, not in a response, not in a log, not in the database


@dataclass
class Wire:
    """Every request sent to the gateway, and every byte it answered."""

    url: str
    answers: list[tuple[str, int, bytes]] = field(default_factory=list)  # (what, status, headers + body)

    async def send(self, method: str, path: str, key: str | None = None, body: object = None, *,
                   raw: bytes | None = None, bearer: bool = False, headers: dict | None = None) -> tuple[int, bytes]:
        sent = dict(headers or {})
        if key is not None:
            sent["authorization" if bearer else "x-api-key"] = f"Bearer {key}" if bearer else key
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        async with ClientSession() as http:
            async with http.request(method, self.url + path, data=data, headers=sent) as resp:
                payload = await resp.read()
                written = "".join(f"{name}: {value}\n" for name, value in resp.headers.items()).encode() + payload
                self.answers.append((f"{method} {path}", resp.status, written))
                return resp.status, payload


async def test_no_key_in_any_response_log_database_or_cli_output(
        make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = await make_gateway(server={"max_body_bytes": 64 * 1024}, upstream={"idle_timeout_s": 0.5})
    key = await gateway.create_key("alice", credits_5h=5.0)
    starter = await gateway.create_key("bob", plan="starter")
    near_miss = key[:-1] + ("A" if key[-1] != "A" else "B")
    wire = Wire(gateway.url)

    # Success on every door, streaming and not, with either header.
    assert (await wire.send("POST", "/v1/messages", key, sample_body()))[0] == 200
    assert (await wire.send("POST", "/v1/messages?beta=true", key, sample_body(stream=True), bearer=True))[0] == 200
    assert (await wire.send("POST", "/v1/messages/count_tokens", key, {"model": "claude-sonnet-4-6", "messages": []}))[0] == 200
    for path, body in (("/v1/chat/completions", CHAT), ("/v1/responses", RESPONSES)):
        assert (await wire.send("POST", path, key, body, bearer=True))[0] == 200
        assert (await wire.send("POST", path, key, {**body, "stream": True}))[0] == 200
    for path in ("/v1/models", "/v1/models/claude-sonnet-4-6", "/v1/usage", "/v1/usage/activity", "/", "/healthz"):
        assert (await wire.send("GET", path, key))[0] == 200

    # Every refusal Antex makes itself.
    refusals = [
        ("POST", "/v1/messages", None, sample_body(), 401),
        ("POST", "/v1/messages", near_miss, sample_body(), 401),
        ("POST", "/v1/messages", key[:20], sample_body(), 401),
        ("POST", "/v1/chat/completions", near_miss, CHAT, 401),
        ("GET", "/v1/usage", near_miss, None, 401),
        ("POST", "/v1/messages", key, {"model": 5}, 400),
        ("POST", "/v1/chat/completions", key, {**CHAT, "tools": 5}, 400),
        ("POST", "/v1/responses", key, {**RESPONSES, "input": 5}, 400),
        ("POST", "/v1/messages", key, sample_body(model="gpt-4o"), 404),
        ("POST", "/v1/messages", starter, sample_body(model="claude-opus-4-6"), 403),
        ("POST", "/v1/messages", key, sample_body(max_tokens=10**9), 400),
        ("GET", "/v1/nothing", key, None, 404),
        ("DELETE", "/v1/messages", key, None, 405),
    ]
    for method, path, who, body, status in refusals:
        assert (await wire.send(method, path, who, body))[0] == status, (method, path, body)
    assert (await wire.send("POST", "/v1/messages", key, raw=b"x" * (65 * 1024)))[0] == 413

    # Upstream failures, including an upstream that echoes the credentials it was sent.
    echo = f"invalid x-api-key: {DEFAULT_API_KEY}"
    gateway.fake.queue(error_reply(401, "authentication_error", echo, headers={"x-echo": DEFAULT_API_KEY}),
                       error_reply(401, "authentication_error", echo), error_reply(401, "authentication_error", echo),
                       error_reply(529, "overloaded_error", "Overloaded"),
                       text_reply("a b c d", events=4, error_event_after=2),
                       text_reply("stalls", stall_after=1))
    assert (await wire.send("POST", "/v1/messages", key, sample_body()))[0] == 401
    assert (await wire.send("POST", "/v1/chat/completions", key, CHAT))[0] == 401
    assert (await wire.send("POST", "/v1/responses", key, {**RESPONSES, "stream": True}))[0] == 401
    assert (await wire.send("POST", "/v1/messages", key, sample_body()))[0] == 529
    assert (await wire.send("POST", "/v1/messages", key, sample_body(stream=True)))[0] == 200
    assert (await wire.send("POST", "/v1/messages", key, sample_body()))[0] == 504
    # Fill the 5-hour window, then get refused for it.
    gateway.fake.queue(text_reply("big", input_tokens=100_000, output_tokens=100_000))
    await wire.send("POST", "/v1/messages", key, sample_body())
    assert (await wire.send("POST", "/v1/messages", key, sample_body()))[0] == 429

    unreachable = await make_gateway("unreachable.db", upstream={"base_url": "http://127.0.0.1:9"})
    elsewhere = await unreachable.create_key("carol", plan="starter")
    wire.url = unreachable.url
    assert (await wire.send("POST", "/v1/messages", elsewhere, sample_body()))[0] == 502

    # What the operator runs: the CLI, on the same database.
    config = tmp_path / "antex.toml"
    config.write_text(f'[server]\ndatabase = {orjson.dumps(gateway.database).decode()}\n', encoding="utf-8")
    await gateway.flush()
    printed = []
    for args in (["keys", "list"], ["keys", "list", "--json"], ["usage"], ["usage", "--json"], ["usage", "alice"],
                 ["events"], ["events", "--json"]):
        # The CLI runs its own event loop: give it a thread, as a separate process would have.
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["--config", str(config), *args])
        assert result.exit_code == 0, (args, result.output)
        printed.append(result.output)

    logged = "\n".join(logging.Formatter("%(name)s %(levelname)s %(message)s").format(r) for r in caplog.records)
    assert "antex.upstream" in logged and "aiohttp.access" in logged  # the logs were really captured
    for secret in (key, starter, near_miss, elsewhere, DEFAULT_API_KEY):
        assert secret not in logged, secret
        for path in database_files(gateway):
            assert secret.encode() not in path.read_bytes(), (secret, path)
        for output in printed:
            assert secret not in output
    for what, status, written in wire.answers:
        for secret in (key, starter, elsewhere, DEFAULT_API_KEY):
            assert secret.encode() not in written, (what, status, written[:500])
    # The echoed key came back redacted, and the rest of the upstream error with it.
    upstream_401 = [written for what, status, written in wire.answers if status == 401 and b"[redacted]" in written]
    assert len(upstream_401) == 3
    assert b"x-echo" not in upstream_401[0]
    # The upstream only ever saw the operator's key, never a client's.
    for request in gateway.fake.requests:
        assert request.headers.getall("x-api-key") == [DEFAULT_API_KEY]
        everything = "".join(f"{name}: {value}\n" for name, value in request.headers.items()).encode() + request.body
        for secret in (key, starter):
            assert secret.encode() not in everything


@pytest.mark.parametrize("path, body", [
    ("/v1/messages", sample_body()),
    ("/v1/messages", sample_body(stream=True)),
    ("/v1/messages?beta=true", sample_body()),
    ("/v1/messages/count_tokens", {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/chat/completions", CHAT),
    ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}}),
    ("/v1/responses", RESPONSES),
    ("/v1/responses", {**RESPONSES, "stream": True}),
])
@pytest.mark.parametrize("style", ["x-api-key", "bearer", "both"])
async def test_the_client_key_is_never_forwarded_upstream(gateway: Gateway, path: str, body: dict, style: str) -> None:
    key = await gateway.create_key("alice")
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31"}
    if style in ("x-api-key", "both"):
        headers["x-api-key"] = key
    if style in ("bearer", "both"):
        headers["Authorization"] = f"Bearer {key}"
    async with ClientSession() as http:
        async with http.post(gateway.url + path, json=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()
    (sent,) = gateway.fake.requests
    assert sent.headers.getall("x-api-key") == [DEFAULT_API_KEY]
    assert "authorization" not in sent.headers
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert not any(key in value for value in sent.headers.values())
    assert key.encode() not in sent.body


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions", "/v1/responses"])
async def test_an_upstream_error_echoing_the_operator_key_is_redacted(gateway: Gateway, path: str) -> None:
    """Antex passes upstream errors on; if one ever quotes the operator's key, the key is cut out
    (body) or the header dropped, and the rest of the error still reaches the client."""
    key = await gateway.create_key("alice")
    gateway.fake.queue(error_reply(400, "invalid_request_error", f"bad request with key {DEFAULT_API_KEY}",
                                   headers={"x-debug-key": f"key={DEFAULT_API_KEY}", "retry-after": "7"}))
    body = {"/v1/chat/completions": CHAT, "/v1/responses": RESPONSES}.get(path, sample_body())
    async with ClientSession() as http:
        async with http.post(gateway.url + path, json=body, headers={"x-api-key": key}) as resp:
            payload = await resp.read()
            headers = resp.headers
    assert DEFAULT_API_KEY.encode() not in payload
    assert not any(DEFAULT_API_KEY in value for value in headers.values())
    assert "x-debug-key" not in headers
    assert resp.status == 400 and headers["retry-after"] == "7"
    error = orjson.loads(payload)["error"]
    assert error["type"] == "invalid_request_error" and error["message"] == "bad request with key [redacted]"


# client IP: forwarding headers are believed only from trusted proxies


TRUSTED = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


XFF, FWD = "x-forwarded-for", "forwarded"


@pytest.mark.parametrize("peer, header, headers, expected", [
    # Nobody trusted, or an untrusted peer: every forwarding header is the client's own word.
    ("198.51.100.7", XFF, [("X-Forwarded-For", "203.0.113.5")], "198.51.100.7"),
    ("198.51.100.7", FWD, [("Forwarded", "for=203.0.113.5")], "198.51.100.7"),
    ("198.51.100.7", XFF, [("X-Real-IP", "203.0.113.5")], "198.51.100.7"),
    # A trusted proxy: the rightmost hop that is not a trusted proxy, whatever the client put left of it.
    ("127.0.0.1", XFF, [("X-Forwarded-For", "203.0.113.5")], "203.0.113.5"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "6.6.6.6, 203.0.113.5")], "203.0.113.5"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "6.6.6.6, 203.0.113.5, 10.1.2.3, 10.0.0.9")], "203.0.113.5"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "10.1.2.3")], "10.1.2.3"),  # only proxies: the leftmost of them
    ("127.0.0.1", XFF, [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.5")], "203.0.113.5"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "203.0.113.5:4711")], "203.0.113.5"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "6.6.6.6, [2001:db8::1]:443")], "2001:db8::1"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "6.6.6.6, 2001:db8::1")], "2001:db8::1"),
    ("127.0.0.1", FWD, [("Forwarded", 'for=6.6.6.6, for="203.0.113.5:4711";proto=https')], "203.0.113.5"),
    ("127.0.0.1", FWD, [("Forwarded", 'for=6.6.6.6;by=x, for="[2001:db8::1]"')], "2001:db8::1"),
    ("127.0.0.1", FWD, [("Forwarded", 'for=6.6.6.6, for="[2001:db8::1]:4711"')], "2001:db8::1"),
    ("127.0.0.1", FWD, [("Forwarded", 'For="203.0.113.5"')], "203.0.113.5"),  # names are case-insensitive
    ("127.0.0.1", FWD, [("Forwarded", 'proto=https;for=203.0.113.5;by=10.0.0.9')], "203.0.113.5"),
    ("127.0.0.1", FWD, [("Forwarded", 'for="6.6.6.6, for=7.7.7.7", for=203.0.113.5')], "203.0.113.5"),
    ("127.0.0.1", FWD, [("Forwarded", "for=6.6.6.6"), ("Forwarded", "for=203.0.113.5, for=10.0.0.9")], "203.0.113.5"),
    # Only the configured header is read: the other is whatever the client wrote.
    ("127.0.0.1", FWD, [("X-Forwarded-For", "6.6.6.6"), ("Forwarded", "for=203.0.113.5")], "203.0.113.5"),
    ("127.0.0.1", FWD, [("Forwarded", "for=203.0.113.5"), ("X-Forwarded-For", "6.6.6.6")], "203.0.113.5"),
    ("127.0.0.1", XFF, [("Forwarded", "for=6.6.6.6"), ("X-Forwarded-For", "203.0.113.5")], "203.0.113.5"),
    ("127.0.0.1", FWD, [("X-Forwarded-For", "6.6.6.6")], "127.0.0.1"),
    ("127.0.0.1", XFF, [("Forwarded", "for=6.6.6.6")], "127.0.0.1"),
    ("127.0.0.1", XFF, [("X-Real-IP", "203.0.113.5")], "127.0.0.1"),  # not a header Antex reads
    # Hops that are not addresses end the walk: nothing left of them can be believed, and the
    # client is the nearest address a trusted hop vouched for.
    ("127.0.0.1", XFF, [("X-Forwarded-For", "6.6.6.6, unknown")], "127.0.0.1"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "6.6.6.6, 999.1.1.1, 10.0.0.9")], "10.0.0.9"),
    ("127.0.0.1", FWD, [("Forwarded", "for=6.6.6.6, for=unknown")], "127.0.0.1"),
    ("127.0.0.1", FWD, [("Forwarded", "for=6.6.6.6, for=_hidden")], "127.0.0.1"),
    ("127.0.0.1", FWD, [("Forwarded", 'for=6.6.6.6, for="_hidden:_port", for=10.0.0.9')], "10.0.0.9"),
    ("127.0.0.1", FWD, [("Forwarded", "for=6.6.6.6, proto=https")], "127.0.0.1"),  # an element without for
    ("127.0.0.1", FWD, [("Forwarded", "for=6.6.6.6, for=")], "127.0.0.1"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "garbage")], "127.0.0.1"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "")], "127.0.0.1"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", " , ,")], "127.0.0.1"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "<script>alert(1)</script>")], "127.0.0.1"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "6.6.6.6 203.0.113.5")], "127.0.0.1"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "1" * 10000)], "127.0.0.1"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "6.6.6.6, " + ", ".join(f"10.0.0.{n}" for n in range(16)))], "10.0.0.0"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "6.6.6.6, " + ", ".join(["10.0.0.9"] * 15))], "6.6.6.6"),
    ("127.0.0.1", XFF, [("X-Forwarded-For", "6.6.6.6, " + ", ".join(["10.0.0.9"] * 5000))], "10.0.0.9"),
    ("127.0.0.1", FWD, [("Forwarded", 'for="[2001:db8::1')], "127.0.0.1"),
    ("127.0.0.1", FWD, [("Forwarded", "garbage;;;==,,")], "127.0.0.1"),
    ("127.0.0.1", FWD, [("Forwarded", 'for="\\"; for=6.6.6.6')], "127.0.0.1"),
])
def test_client_ip_table(peer: str, header: str, headers: list[tuple[str, str]], expected: str) -> None:
    request = make_mocked_request("POST", "/v1/messages", headers=CIMultiDict(headers))
    hops = auth.forwarded_hops(request, header)
    if peer == "198.51.100.7":  # not a trusted proxy: request_ip never reads the header
        server = SimpleNamespace(trusted_proxies=TRUSTED, forwarded_header=header)
        assert auth.request_ip(SimpleNamespace(remote=peer), server) == peer
    else:
        assert client_ip(peer, hops, TRUSTED) == expected


async def post_from(gateway: Gateway, key: str, headers: list[tuple[str, str]]) -> tuple[int, dict]:
    async with ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages", json=sample_body(),
                             headers=CIMultiDict([("x-api-key", key), *headers])) as resp:
            return resp.status, await resp.json()


@pytest.mark.parametrize("header", ["Forwarded", "X-Real-IP", "X-Forwarded-For"])
async def test_spoofed_forwarding_headers_are_ignored_when_the_peer_is_not_a_trusted_proxy(
        make_gateway: GatewayFactory, header: str) -> None:
    # Proxies are configured, but the peer (127.0.0.1) is not one of them.
    gateway = await make_gateway(server={"trusted_proxies": ["10.0.0.0/8"]})
    key = await gateway.create_key("alice", max_ips=1)
    for address in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
        value = f"for={address}" if header == "Forwarded" else address
        status, _ = await post_from(gateway, key, [(header, value)])
        assert status == 200  # all one address: the real peer


async def test_behind_a_trusted_proxy_the_client_cannot_choose_its_address(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(server={"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]})
    key = await gateway.create_key("alice", max_ips=1)
    # The proxy saw 203.0.113.5; whatever that client wrote to the left is ignored.
    for headers in ([("X-Forwarded-For", "203.0.113.5")],
                    [("X-Forwarded-For", "198.51.100.1, 203.0.113.5")],
                    [("X-Forwarded-For", "198.51.100.2, 203.0.113.5, 10.9.9.9")],
                    [("X-Forwarded-For", "198.51.100.3"), ("X-Forwarded-For", "203.0.113.5")],  # a proxy's own line
                    [("Forwarded", "for=198.51.100.4"), ("X-Forwarded-For", "203.0.113.5")],  # not read
                    [("X-Forwarded-For", "198.51.100.5, unknown")],  # malformed hop: counts as the proxy
                    ):
        status, body = await post_from(gateway, key, headers)
        if "unknown" in headers[0][1]:
            assert status == 403 and body["error"]["type"] == "ip_limit_reached"  # 127.0.0.1 is a second address
        else:
            assert status == 200, (headers, body)
    status, body = await post_from(gateway, key, [("X-Forwarded-For", "203.0.113.5, 198.51.100.9")])
    assert status == 403 and body["error"]["type"] == "ip_limit_reached"


async def test_behind_a_forwarded_proxy_a_client_written_x_forwarded_for_is_ignored(make_gateway: GatewayFactory) -> None:
    """The proxy writes Forwarded; a leaked key's holder adds X-Forwarded-For naming an address the
    key already used, to dodge max_ips. Only the header the operator named counts."""
    gateway = await make_gateway(server={"trusted_proxies": ["127.0.0.1/32"], "forwarded_header": "forwarded"})
    key = await gateway.create_key("alice", max_ips=1)
    status, body = await post_from(gateway, key, [("Forwarded", 'for="203.0.113.5:4711";proto=https')])
    assert status == 200, body
    status, body = await post_from(gateway, key, [("X-Forwarded-For", "203.0.113.5"),
                                                  ("Forwarded", 'for=203.0.113.5, for="[2001:db8::66]"')])
    assert status == 403 and body["error"]["type"] == "ip_limit_reached", body
    status, body = await post_from(gateway, key, [("Forwarded", "for=198.51.100.9;proto=https"),
                                                  ("Forwarded", "for=203.0.113.5")])  # the proxy's own line
    assert status == 200, body


@pytest.mark.parametrize("headers", [
    [("x-api-key", "{a}"), ("x-api-key", "{b}")],
    [("x-api-key", "{a}"), ("Authorization", "Bearer {b}")],
    [("Authorization", "Bearer {b}"), ("x-api-key", "{a}")],
    [("Authorization", "Bearer {a}"), ("Authorization", "Bearer {b}")],
])
async def test_two_different_keys_in_one_request_are_refused(gateway: Gateway, headers: list[tuple[str, str]]) -> None:
    a, b = await gateway.create_key("alice"), await gateway.create_key("bob")
    async with ClientSession() as http:
        for path in ("/v1/messages", "/v1/chat/completions"):
            sent = CIMultiDict((name, value.format(a=a, b=b)) for name, value in headers)
            async with http.post(gateway.url + path, json=sample_body(), headers=sent) as resp:
                assert resp.status == 401, (path, await resp.text())
                body = await resp.json()
                error = body["error"]
                assert "authentication_error" in (error.get("type"), body.get("type"), error.get("code")), body
                assert "two different API keys" in error["message"]
    assert gateway.fake.requests == []


@pytest.mark.parametrize("headers", [
    [("x-api-key", "{a}"), ("Authorization", "Bearer {a}")],
    [("x-api-key", "{a}"), ("x-api-key", " {a}")],
    [("Authorization", "Basic dXNlcjpwYXNz"), ("x-api-key", "{a}")],  # not a credential Antex reads
])
async def test_one_key_given_twice_is_accepted(gateway: Gateway, headers: list[tuple[str, str]]) -> None:
    a = await gateway.create_key("alice")
    async with ClientSession() as http:
        sent = CIMultiDict((name, value.format(a=a)) for name, value in headers)
        async with http.post(gateway.url + "/v1/messages", json=sample_body(), headers=sent) as resp:
            assert resp.status == 200, await resp.text()


# the dashboard: static, self-contained, locked down; a person's data only with their own key


async def test_dashboard_sends_its_security_headers_on_every_answer(gateway: Gateway) -> None:
    async with ClientSession() as http:
        async with http.get(gateway.url + "/") as resp:
            page = await resp.text()
            etag = resp.headers["ETag"]
        release = re.search(r'src="/static/([0-9a-f]{12})/app\.js"', page).group(1)
        answers = []
        for path, headers in (("/", {}), ("/", {"If-None-Match": etag}), ("/static/app.js", {}),
                              ("/static/dashboard.css", {}), (f"/static/{release}/app.js", {}),
                              ("/static/nope.js", {}), ("/static/000000000000/app.js", {}), ("/static/index.html", {})):
            async with http.get(gateway.url + path, headers=headers) as resp:
                answers.append((path, resp.status, resp.headers))
        async with http.head(gateway.url + "/") as resp:
            answers.append(("HEAD /", resp.status, resp.headers))
    assert [status for _, status, _ in answers] == [200, 304, 200, 200, 200, 404, 404, 404, 200]
    for path, _, headers in answers:
        csp = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
        assert csp["default-src"] == "'self'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
        assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'" and csp["base-uri"] == "'none'"
        assert csp["connect-src"] == "'self'" and csp["form-action"] == "'none'"
        assert "unsafe" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer"
        assert "Set-Cookie" not in headers


def test_dashboard_code_never_builds_html_from_data() -> None:
    static = Path(__file__).resolve().parent.parent / "antex" / "static"
    page = (static / "index.html").read_text(encoding="utf-8")
    # No inline script, handler or style (the CSP would refuse them anyway); nothing from elsewhere.
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None
    assert re.search(r"\son[a-z]+\s*=", page) is None and "style=" not in page and "javascript:" not in page
    assert re.search(r"""(src|href)=["']?(https?:)?//""", page) is None
    for name in STATIC_FILES:
        if not name.endswith(".js"):
            continue
        code = (static / name).read_text(encoding="utf-8")
        code = re.sub(r"^\s*//.*$", "", code, flags=re.M)  # comments may name what is avoided
        # Text goes in with textContent; the key lives in sessionStorage only (gone with the tab).
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                     "localStorage", "document.cookie"):
            assert sink not in code, (name, sink)


async def test_dashboard_data_needs_the_persons_own_key(gateway: Gateway) -> None:
    alice = await gateway.create_key("alice")
    bob = await gateway.create_key("bob-the-other")
    async with ClientSession() as http:
        async with http.get(gateway.url + "/") as resp:
            page = await resp.text()
        assert "alice" not in page and "bob-the-other" not in page and "sk_live_" + alice[8:12] not in page
        for path in ("/v1/usage", "/v1/usage/activity", "/v1/models"):
            async with http.get(gateway.url + path) as resp:
                assert resp.status == 401, path
            async with http.get(gateway.url + path, headers={"x-api-key": "sk_live_" + "x" * 43}) as resp:
                assert resp.status == 401, path
        async with http.get(gateway.url + "/v1/usage", headers={"x-api-key": alice}) as resp:
            assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
            text = await resp.text()
    assert "alice" in text and "bob-the-other" not in text and bob[:12] not in text and alice not in text
