"""From a request body's bytes to what the gateway sends upstream, one pure job per front door.

Each job parses the body (refusing duplicates of the fields Antex reads), checks its fields and
the model against the key's plan, translates it, and serves max_tokens: everything the routes do
between reading a body and calling the upstream that needs no I/O. Small bodies run it inline;
large ones in a worker process (antex/parse_pool.py), so that parsing 30 MB of tiny content parts
does not stall every other request. The same function runs in both places, so both answer alike,
and its result is small (the upstream bytes and a few fields, never the parsed body) so that the
trip back costs the event loop nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import orjson

from antex import request_body
from antex.admission import allowed_model, max_tokens_to_send
from antex.catalog import Limits, Model
from antex.config import resolve_model
from antex.errors import AntexError
from antex.translate import TranslationError
from antex.translate.chat import chat_to_messages
from antex.translate.request import MIN_THINKING_BUDGET_TOKENS
from antex.translate.response_state import own_items, referenced_ids, with_references
from antex.translate.responses import responses_to_messages
from antex.upstream.pool import body_seed

# The fields Antex reads from a Messages body it forwards as sent: each must appear once, or the
# upstream might read another value than the one Antex checked.
MESSAGES_FIELDS = request_body.quoted("model", "max_tokens", "stream", "messages")
COUNT_FIELDS = request_body.quoted("model")
# Every top-level field the translators read (antex/translate/): each must appear once. The
# upstream gets Antex's own encoding of the translation, but the client must not be able to
# send a request that two parsers read differently.
TRANSLATED_FIELDS = request_body.quoted(
    "model", "messages", "input", "instructions", "max_tokens", "max_completion_tokens", "max_output_tokens", "stream",
    "stream_options", "tools", "tool_choice", "parallel_tool_calls", "stop", "temperature", "top_p", "response_format",
    "reasoning_effort", "reasoning", "text", "n", "user", "metadata", "previous_response_id", "store")
# What the OpenAI doors' answers echo of the request: everything but the conversation itself,
# which a stream must not keep alive for its whole life.
CONVERSATION = ("messages", "input")
# max_tokens when an OpenAI request names none (capped by the key's plan and the model's own
# limit): room for real work.
DEFAULT_MAX_TOKENS = {"haiku": 16000, "sonnet": 32000, "opus": 32000}


@dataclass(frozen=True, slots=True)
class Terms:
    """What a job needs besides the body, all of it picklable: the models by name, the key's limits
    and plan, and whether to name the conversation (only for a pool of upstreams with no session header)."""

    names: dict[str, Model]
    limits: Limits
    plan: str
    name_conversation: bool = False

    def model(self, requested: str) -> Model:
        return allowed_model(resolve_model(self.names, requested), requested, self.limits, self.plan)


@dataclass(frozen=True, slots=True)
class Recalled:
    """The Responses API's stored state a body refers to, read by the route between two runs of
    its job: the items it references by id, and the conversation of its previous_response_id."""

    found: dict[str, dict[str, Any]]
    history: list[dict[str, Any]] | None


@dataclass(slots=True)
class Prepared:
    """A job's result: what the gateway needs to go on, and nothing as large as the parsed body."""

    model_id: str
    upstream: bytes | None  # the body to send; None: the client's own bytes, unchanged
    stream: bool = False
    max_tokens_sent: int | None = None  # set when max_tokens was lowered to the plan's cap
    conversation: bytes | None = None  # body_seed, when Terms.name_conversation
    model_name: str = ""  # as the client named it (the OpenAI doors echo it)
    echo: dict | None = None  # the OpenAI doors: the body without its conversation
    items: list[tuple[str, str]] | None = None  # the Responses API: the input items to store, (id, JSON)
    # the Responses API: (previous_response_id, referenced item ids) to look up, then run again
    recall: tuple[str | None, list[str]] | None = None


def parse_object(raw: bytes, fields: tuple[tuple[str, bytes], ...]) -> dict:
    """The body as a JSON object in which none of `fields` (see request_body.quoted) appears twice."""
    parsed = request_body.parse_object(raw)
    twice = request_body.duplicate_field(raw, parsed, fields)
    if twice is not None:
        raise AntexError("invalid_request_error", f"{twice}: appears more than once in the request body. Send each field once.",
                         param=twice)
    return parsed


def field(body: dict, name: str, kind: type | tuple, *, required: bool = True, what: str = ""):
    """body[name] checked against `kind`; bools never pass as integers."""
    value = body.get(name)
    if value is None:
        if required:
            raise AntexError("invalid_request_error", f"{name}: field required.", param=name)
        return None
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise AntexError("invalid_request_error", f"{name}: must be {what or getattr(kind, '__name__', kind)}.", param=name)
    return value


def upstream_model_name(requested: str, model: Model) -> str:
    """The name to send upstream: dated IDs pass as they are; aliases and `[1m]` become IDs."""
    base = requested.split("[", 1)[0]
    if base == model.id or base.startswith(model.id + "-"):
        return base
    return model.id


def upstream_body(raw: bytes, body: dict, model: Model, max_tokens: int | None = None) -> bytes:
    """The body to send: the client's own bytes, re-encoded only when the model name must change
    or max_tokens was lowered to the plan's cap."""
    requested = body["model"]
    sent = upstream_model_name(requested, model)
    lowered = max_tokens is not None and body.get("max_tokens") != max_tokens
    if sent == requested and not lowered:
        return raw
    body["model"] = sent
    if lowered:
        lower_max_tokens(body, max_tokens)
    return orjson.dumps(body)


def lower_max_tokens(body: dict, max_tokens: int) -> None:
    """Set a Messages body's max_tokens; a thinking budget that no longer fits under it (Anthropic
    wants budget_tokens < max_tokens) takes half, as the OpenAI doors' translation does."""
    body["max_tokens"] = max_tokens
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and not isinstance(budget, bool) and budget >= max_tokens:
            thinking["budget_tokens"] = max(MIN_THINKING_BUDGET_TOKENS, max_tokens // 2)


def _model_field(body: dict) -> str:
    return field(body, "model", str, what="a string naming a model")


def messages(raw: bytes, terms: Terms) -> Prepared:
    """POST /v1/messages: forwarded as sent unless the model name or max_tokens must change."""
    body = parse_object(raw, MESSAGES_FIELDS)
    model_name = _model_field(body)
    field(body, "messages", list, what="a list of messages")
    max_tokens = field(body, "max_tokens", int, what="a positive integer")
    if max_tokens < 1:
        raise AntexError("invalid_request_error", "max_tokens: must be a positive integer.", param="max_tokens")
    stream = field(body, "stream", bool, required=False, what="true or false") or False
    model = terms.model(model_name)
    sent = max_tokens_to_send(terms.limits, model, max_tokens)
    upstream = upstream_body(raw, body, model, sent)
    return Prepared(model.id, None if upstream is raw else upstream, stream, sent if sent != max_tokens else None,
                    body_seed(body) if terms.name_conversation else None)


def count_tokens(raw: bytes, terms: Terms) -> Prepared:
    """POST /v1/messages/count_tokens: forwarded as sent unless the model name must change."""
    body = parse_object(raw, COUNT_FIELDS)
    model = terms.model(_model_field(body))
    upstream = upstream_body(raw, body, model)
    return Prepared(model.id, None if upstream is raw else upstream,
                    conversation=body_seed(body) if terms.name_conversation else None)


def chat_completions(raw: bytes, terms: Terms) -> Prepared:
    """POST /v1/chat/completions, translated to a Messages body."""
    body = parse_object(raw, TRANSLATED_FIELDS)
    del raw
    model_name = _model_field(body)
    model = terms.model(model_name)
    return _translated(body, body, model_name, model, terms, chat_to_messages)


def responses(raw: bytes, terms: Terms, recalled: Recalled | None = None) -> Prepared:
    """POST /v1/responses, translated to a Messages body. A body that refers to stored state
    (previous_response_id, item references) first returns what to `recall`; the route reads it and
    runs the job again with it."""
    body = parse_object(raw, TRANSLATED_FIELDS)
    del raw
    model_name = _model_field(body)
    model = terms.model(model_name)
    store = field(body, "store", bool, required=False, what="true or false") is not False
    previous = field(body, "previous_response_id", str, required=False, what="a response id")
    references = referenced_ids(body.get("input"))
    if (previous or references) and recalled is None:
        return Prepared(model.id, None, model_name=model_name, recall=(previous, references))
    expanded, items = body, None
    if store or previous or references:
        input_value = body.get("input")
        if references:
            input_value = with_references(input_value, recalled.found)
        expanded = {name: value for name, value in body.items() if name != "previous_response_id"}
        expanded["input"] = input_value
        if previous:
            expanded["input"] = _after(recalled.history, input_value)
        if store:
            items = [(str(item.get("id") or ""), orjson.dumps(item).decode()) for item in own_items(input_value)]
    prepared = _translated(body, expanded, model_name, model, terms, responses_to_messages)
    prepared.items = items
    return prepared


def _translated(body: dict, expanded: dict, model_name: str, model: Model, terms: Terms,
                translate: Callable[..., dict]) -> Prepared:
    """The OpenAI doors' common part: translate, serve max_tokens, encode."""
    limits = terms.limits
    default_max = min(DEFAULT_MAX_TOKENS.get(model.tier, 16000), limits.max_tokens, model.max_output_tokens or limits.max_tokens)
    try:
        anthropic = translate(expanded, default_max_tokens=default_max, thinking_supported=True)
    except TranslationError as exc:
        raise AntexError("invalid_request_error", exc.message, param=exc.param) from None
    del expanded
    anthropic["model"] = upstream_model_name(model_name, model)
    requested = anthropic["max_tokens"]
    sent = max_tokens_to_send(limits, model, requested)
    if sent != requested:
        lower_max_tokens(anthropic, sent)
    return Prepared(model.id, orjson.dumps(anthropic), anthropic.get("stream") is True, sent if sent != requested else None,
                    body_seed(body) if terms.name_conversation else None, model_name,
                    {name: value for name, value in body.items() if name not in CONVERSATION})


def _after(history: list[dict[str, Any]], input_value: object) -> object:
    """The stored conversation, then this request's input (a string is one user message; anything
    but a list is left for the translation to refuse). An input item the conversation already holds
    (the same id, e.g. an item_reference to it) is not repeated: OpenAI refuses such duplicates,
    and clients that continue with previous_response_id while referring to the items still send them."""
    if isinstance(input_value, str):
        return history + [{"type": "message", "role": "user", "content": input_value}]
    if input_value is None:
        return history
    if not isinstance(input_value, list):
        return input_value
    held = {item.get("id") for item in history} - {None}
    return history + [item for item in input_value if not (isinstance(item, dict) and item.get("id") in held)]
