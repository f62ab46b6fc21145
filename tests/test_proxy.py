"""Upstreams behind proxies: real HTTP CONNECT and SOCKS5 proxy server processes (pproxy, from
PyPI) between Antex and the fake upstream; per-entry `proxy`, and HTTPS_PROXY / NO_PROXY."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession

from antex.app import make_app
from antex.appkeys import KEYS
from antex.upstream.proxy import for_upstream
from tests.conftest import build_config, insert_key, sample_body
from tests.fake_anthropic import DEFAULT_API_KEY
from tests.processes import clean_env, free_port, stop, wait_for

# pproxy installs uvloop's policy when it can, which its own start-up then trips on; plain asyncio it is.
PPROXY = "import sys; sys.modules['uvloop'] = None; from pproxy.server import main; sys.argv[0] = 'pproxy'; main()"


@pytest.fixture
def proxy_server(tmp_path: Path):
    """Start pproxy listening as `scheme` with user:secret; yields (proxy URL without auth, its log)."""
    procs = []

    def start(scheme: str) -> tuple[str, Path]:
        port = free_port()
        log = tmp_path / f"pproxy-{scheme}-{port}.log"
        with log.open("wb") as out:
            procs.append(proc := subprocess.Popen(
                [sys.executable, "-c", PPROXY, "-l", f"{scheme}://127.0.0.1:{port}#user:secret", "-v", "--auth", "0"],
                env=clean_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))
        wait_for(log, proc, "Serving on")
        return f"127.0.0.1:{port}", log

    yield start
    for proc in procs:
        stop(proc)


async def gateway_via(aiohttp_server, fake_upstream, tmp_path: Path, proxy: str = "", environ: dict | None = None,
                      database: str = "antex.db"):
    entry = {"name": "proxied", "base_url": fake_upstream.url, "api_key_env": "KEY_PROXIED", "proxy": proxy}
    config = build_config(tmp_path / database, fake_upstream.url, upstreams=[entry])
    app = make_app(config, upstream_key=DEFAULT_API_KEY, environ=environ)
    server = await aiohttp_server(app)
    key = await insert_key(config.server.database, "p", "pro")
    await app[KEYS].refresh()
    return str(server.make_url("")).rstrip("/"), key


async def post(url: str, key: str) -> tuple[int, bytes]:
    async with ClientSession() as http:
        async with http.post(url + "/v1/messages", json=sample_body(stream=True), headers={"x-api-key": key}) as resp:
            return resp.status, await resp.read()


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_an_upstream_behind_its_own_proxy(scheme, proxy_server, aiohttp_server, fake_upstream, tmp_path) -> None:
    address, log = proxy_server(scheme)
    url, key = await gateway_via(aiohttp_server, fake_upstream, tmp_path, proxy=f"{scheme}://user:secret@{address}")
    for _ in range(3):
        status, body = await post(url, key)
        assert status == 200 and b"message_stop" in body
    target = fake_upstream.url.removeprefix("http://")
    assert f"-> {target}" in log.read_text()  # the proxy carried it
    assert len(fake_upstream.requests) == 3


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_a_proxy_refusing_the_credentials_is_a_clear_error(scheme, proxy_server, aiohttp_server, fake_upstream,
                                                                 tmp_path) -> None:
    address, _ = proxy_server(scheme)
    url, key = await gateway_via(aiohttp_server, fake_upstream, tmp_path, proxy=f"{scheme}://user:wrong@{address}")
    status, body = await post(url, key)
    assert status == 502 and orjson.loads(body)["error"]["type"] == "api_error"
    assert b"wrong" not in body and not fake_upstream.requests


async def test_the_environment_proxy_applies_unless_no_proxy_says_otherwise(proxy_server, aiohttp_server, fake_upstream,
                                                                           tmp_path) -> None:
    address, log = proxy_server("socks5")
    environ = {"HTTP_PROXY": f"socks5://user:secret@{address}"}
    url, key = await gateway_via(aiohttp_server, fake_upstream, tmp_path, environ=environ)
    assert (await post(url, key))[0] == 200
    assert log.read_text().count("->") == 1
    url, key = await gateway_via(aiohttp_server, fake_upstream, tmp_path / "direct" if (tmp_path / "direct").mkdir() is None else tmp_path,
                                 environ=environ | {"NO_PROXY": "localhost,127.0.0.1"})
    assert (await post(url, key))[0] == 200
    assert log.read_text().count("->") == 1  # straight there


@pytest.mark.parametrize("configured, base_url, environ, expected", [
    ("socks5://h:1080", "https://api.anthropic.com", {"HTTPS_PROXY": "http://other:3128"}, "socks5://h:1080"),
    ("", "https://api.anthropic.com", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
    ("", "https://api.anthropic.com", {"https_proxy": "p:3128"}, "http://p:3128"),
    ("", "http://127.0.0.1:9000", {"HTTPS_PROXY": "http://p:3128"}, ""),  # an http:// upstream reads HTTP_PROXY
    ("", "https://api.anthropic.com", {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".anthropic.com"}, ""),
    ("", "https://api.anthropic.com", {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, ""),
    ("", "https://api.anthropic.com", {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "example.com"}, "http://p:3128"),
    ("", "https://api.anthropic.com", {}, ""),
])
def test_which_proxy_applies(configured, base_url, environ, expected) -> None:
    assert for_upstream(configured, base_url, environ) == expected


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_tls_to_the_upstream_runs_inside_the_tunnel(scheme, proxy_server) -> None:
    """As with api.anthropic.com: the proxy sees only CONNECT host:port, TLS is end to end."""
    from tests.test_http_client import OK_HEAD, answering, fetch, tls_server
    from antex.upstream.client import Client

    address, log = proxy_server(scheme)
    async with tls_server(answering(OK_HEAD + b"Content-Length: 2\r\n\r\n{}")) as (url, context):
        client = Client(url, connect_timeout_s=5, idle_timeout_s=5, ssl_context=context,
                        proxy=f"{scheme}://user:secret@{address}")
        assert (await fetch(client))[2] == b"{}"
        await client.close()
    assert "-> localhost:" in log.read_text()
