"""What goes to Anthropic and what comes back: header filtering both ways, and every way the
upstream can fail turned into a clear Anthropic-shaped error. The connections themselves are
antex/http_client.py's: one pool, an idle-read timeout and no total one (a healthy stream may run
for as long as it keeps sending bytes).
"""
from __future__ import annotations

import logging
from typing import Mapping

from multidict import CIMultiDict

from antex import http_client
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


def session(config: UpstreamConfig) -> http_client.Client:
    """The pool of keep-alive connections to the upstream, reused across every request."""
    return http_client.Client(config.base_url, connect_timeout_s=config.connect_timeout_s,
                              idle_timeout_s=config.idle_timeout_s)


def request_headers(client: Mapping[str, str], upstream_key: str) -> list[tuple[str, str]]:
    """The client's headers minus credentials, framing and forwarding hints, plus the operator's
    key; compressed answers are accepted (the client gets them decompressed)."""
    headers = [(name, value) for name, value in client.items() if name.lower() not in DROP_REQUEST]
    headers.append(("x-api-key", upstream_key))
    headers.append(("accept-encoding", "gzip, deflate"))
    if "anthropic-version" not in client:
        headers.append(("anthropic-version", "2023-06-01"))
    if "content-type" not in client:
        headers.append(("content-type", "application/json"))
    return headers


def response_headers(upstream: Mapping[str, str]) -> CIMultiDict:
    return CIMultiDict([
        (name, value) for name, value in upstream.items()
        if (lower := name.lower()) not in DROP_RESPONSE and not lower.startswith(DROP_RESPONSE_PREFIXES)
    ])


async def send(client: http_client.Client, path: str, headers: list[tuple[str, str]], body: bytes) -> http_client.Response:
    """POST to the upstream; unreachable or silent upstreams become clear Anthropic-shaped 5xx."""
    try:
        return await client.post(path, headers, body)
    except TimeoutError:
        raise AntexError("timeout_error", "The upstream API did not answer in time. Try again shortly.") from None
    except http_client.TLSFailed as exc:
        log.warning("upstream TLS failure: %s", exc)
        raise AntexError("bad_gateway", "Could not establish a secure connection to the upstream API. The operator should check the upstream URL.") from None
    except http_client.ConnectFailed as exc:
        log.warning("upstream unreachable: %s", exc)
        raise AntexError("bad_gateway", "Could not reach the upstream API. Try again shortly; if it persists, tell the operator.") from None
    except http_client.UpstreamError as exc:
        log.warning("upstream request failed: %s", exc)
        raise AntexError("bad_gateway", "The request to the upstream API failed. Try again shortly.") from None
