"""The one connection pool to Anthropic: header filtering both ways, and idle-read timeouts.

There is no total timeout: a healthy stream may run for as long as it keeps sending bytes.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Mapping

import aiohttp
from multidict import CIMultiDict

from antex.config import UpstreamConfig
from antex.errors import AntexError

log = logging.getLogger("antex.upstream")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade",
})
# Request headers never sent upstream: credentials, the client's framing (aiohttp has already decoded
# a Content-Encoding, so the body sent is plain), and forwarding hints.
DROP_REQUEST = HOP_BY_HOP | {
    "host", "content-length", "content-encoding", "x-api-key", "authorization", "cookie", "accept-encoding", "expect",
    "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded", "x-real-ip", "origin", "referer",
}
# Response headers never passed to the client: framing we redo, the operator's organisation and
# its own rate limits (the client sees its key's windows instead).
DROP_RESPONSE = HOP_BY_HOP | {"content-encoding", "content-length", "anthropic-organization-id", "set-cookie", "server", "date"}
DROP_RESPONSE_PREFIXES = ("anthropic-ratelimit-",)
NO_USER_AGENT = ("User-Agent",)


def session(config: UpstreamConfig) -> aiohttp.ClientSession:
    """A pooled session; keep-alive connections are reused across every request."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=None, connect=config.connect_timeout_s, sock_read=config.idle_timeout_s)
    return aiohttp.ClientSession(base_url=None, connector=connector, timeout=timeout, auto_decompress=True)


def request_headers(client: Mapping[str, str], upstream_key: str) -> CIMultiDict:
    """The client's headers minus credentials and framing, plus the operator's key."""
    # Built from a list, not a generator, and without setdefault: half the cost, on every request.
    headers = CIMultiDict([(name, value) for name, value in client.items() if name.lower() not in DROP_REQUEST])
    headers["x-api-key"] = upstream_key
    if "anthropic-version" not in headers:
        headers["anthropic-version"] = "2023-06-01"
    return headers


def response_headers(upstream: Mapping[str, str]) -> CIMultiDict:
    return CIMultiDict([
        (name, value) for name, value in upstream.items()
        if (lower := name.lower()) not in DROP_RESPONSE and not lower.startswith(DROP_RESPONSE_PREFIXES)
    ])


async def send(client: aiohttp.ClientSession, url: str, headers: CIMultiDict, body: bytes) -> aiohttp.ClientResponse:
    """POST to the upstream; unreachable or silent upstreams become clear Anthropic-shaped 5xx."""
    # aiohttp's own User-Agent never goes upstream; skipped per request, only when the client sent
    # none, because a skip list sends every request down aiohttp's slow header-merging path.
    skip = None if "user-agent" in headers else NO_USER_AGENT
    try:
        return await client.post(url, data=body, headers=headers, allow_redirects=False, skip_auto_headers=skip)
    except asyncio.TimeoutError:
        raise AntexError("timeout_error", "The upstream API did not answer in time. Try again shortly.") from None
    except aiohttp.ClientSSLError as exc:
        log.warning("upstream TLS failure: %s", exc)
        raise AntexError("bad_gateway", "Could not establish a secure connection to the upstream API. The operator should check the upstream URL.") from None
    except aiohttp.ClientConnectionError as exc:
        log.warning("upstream unreachable: %s", exc)
        raise AntexError("bad_gateway", "Could not reach the upstream API. Try again shortly; if it persists, tell the operator.") from None
    except aiohttp.ClientError as exc:
        log.warning("upstream request failed: %s", exc)
        raise AntexError("bad_gateway", "The request to the upstream API failed. Try again shortly.") from None
