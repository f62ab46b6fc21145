"""What goes to Anthropic and what comes back: header filtering both ways."""
from __future__ import annotations

from typing import Mapping

from multidict import CIMultiDict

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade",
})
# Request headers sent upstream: only these names and prefixes (what the Anthropic API reads and
# what its SDKs, Claude Code and Codex send), with ASCII values; credentials, framing, forwarding
# hints, cookies and anything unknown stay here.
FORWARD_REQUEST = frozenset({"user-agent", "content-type", "accept", "idempotency-key", "x-client-request-id", "x-app"})
FORWARD_REQUEST_PREFIXES = ("anthropic-", "x-stainless-", "x-claude-code-")
# Query parameters sent upstream, with the only values the API knows (Claude Code adds ?beta=true).
FORWARD_QUERY = {"beta": "true"}
# Response headers never passed to the client: framing we redo, the operator's organisation and
# its own rate limits (the client sees its key's windows instead).
DROP_RESPONSE = HOP_BY_HOP | {"content-encoding", "content-length", "anthropic-organization-id", "set-cookie", "server", "date"}
DROP_RESPONSE_PREFIXES = ("anthropic-ratelimit-",)


def request_headers(client: Mapping[str, str], upstream_key: str) -> list[tuple[str, str]]:
    """The client's headers that the allow-list names (minus any its `Connection` header names),
    plus the operator's key; compressed answers are accepted (the client gets them decompressed)."""
    connection = client.get("connection")
    hop = {token.strip().lower() for token in connection.split(",")} if connection else ()
    headers = [(name, value) for name, value in client.items()
               if ((lower := name.lower()) in FORWARD_REQUEST or lower.startswith(FORWARD_REQUEST_PREFIXES))
               and lower not in hop and value.isascii() and name.isascii()]
    sent = {name.lower() for name, _ in headers}
    headers.append(("x-api-key", upstream_key))
    headers.append(("accept-encoding", "gzip, deflate"))
    if "anthropic-version" not in sent:
        headers.append(("anthropic-version", "2023-06-01"))
    if "content-type" not in sent:
        headers.append(("content-type", "application/json"))
    return headers


def request_query(query: Mapping[str, str]) -> str:
    """The query string to send upstream: the allowed parameters with their allowed values."""
    if not query:
        return ""
    return "&".join(f"{name}={value}" for name, value in FORWARD_QUERY.items() if query.get(name) == value)


def response_headers(upstream: Mapping[str, str]) -> CIMultiDict:
    return CIMultiDict([
        (name, value) for name, value in upstream.items()
        if (lower := name.lower()) not in DROP_RESPONSE and not lower.startswith(DROP_RESPONSE_PREFIXES)
    ])
