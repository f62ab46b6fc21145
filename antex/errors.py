"""The error catalogue: every error Antex answers with, and how it is rendered per front door.

Handlers and admission raise `AntexError`; one middleware renders it in the route's shape:
Anthropic `{"type":"error","error":{"type","message"},"request_id"}` on Anthropic routes,
OpenAI `{"error":{"message","type","param","code"}}` on OpenAI routes.
"""
from __future__ import annotations

import orjson

# type -> HTTP status
CATALOGUE: dict[str, int] = {
    "invalid_request_error": 400,
    "max_tokens_too_large": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "key_quarantined": 403,
    "ip_limit_reached": 403,
    "not_found_error": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "payload_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "bad_gateway": 502,
    "ledger_unavailable": 503,
    "store_unavailable": 503,
    "service_unavailable": 503,
    "overloaded_error": 529,
    "timeout_error": 504,
}

# Types a client sees; a few internal names map onto Anthropic's own.
WIRE_TYPE = {"bad_gateway": "api_error", "timeout_error": "api_error", "ledger_unavailable": "api_error",
             "store_unavailable": "api_error", "method_not_allowed": "not_found_error",
             "request_timeout": "invalid_request_error", "service_unavailable": "overloaded_error"}


class AntexError(Exception):
    """An error answered to the client: a catalogue type, a plain message and extra headers."""

    def __init__(self, type_: str, message: str, *, headers: dict[str, str] | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.type = type_
        self.status = CATALOGUE[type_]
        self.message = message
        self.headers = headers or {}
        self.param = param

    def __reduce__(self):
        """Pickled whole (type, message, headers, param): errors raised in a parse worker
        (antex/parse_pool.py) reach the client exactly as if raised inline."""
        return _rebuild, (self.type, self.message, self.headers, self.param)

    @property
    def wire_type(self) -> str:
        return WIRE_TYPE.get(self.type, self.type)


def _rebuild(type_: str, message: str, headers: dict[str, str], param: str | None) -> AntexError:
    return AntexError(type_, message, headers=headers, param=param)


def anthropic_body(error_type: str, message: str, request_id: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message},
                         "request_id": request_id})


def openai_body(error_type: str, message: str, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": error_type}})


def render(error: AntexError, *, openai_shape: bool, request_id: str) -> bytes:
    if openai_shape:
        return openai_body(error.wire_type, error.message, error.param)
    return anthropic_body(error.wire_type, error.message, request_id)


def translate_upstream_error(body: bytes) -> tuple[str, str]:
    """(type, message) from an upstream Anthropic error body, for re-rendering in OpenAI shape.

    Example: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}
    """
    try:
        error = orjson.loads(body).get("error")
        return str(error.get("type") or "api_error"), str(error.get("message") or "upstream error")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return "api_error", "The upstream API returned an error without a readable body."
