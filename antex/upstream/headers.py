"""What goes to Anthropic and what comes back: header filtering both ways."""
from __future__ import annotations

from typing import Mapping

from multidict import CIMultiDict

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
