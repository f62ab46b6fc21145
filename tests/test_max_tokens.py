"""max_tokens as client libraries send it: the model's own maximum, served lowered to the plan's cap.

Through the real anthropic SDK (streaming) and the real openai SDK on both OpenAI doors; the fake
upstream records the body it received, so the value actually sent is checked, not assumed.
"""
from __future__ import annotations

import anthropic
import openai
import orjson
import pytest
from aiohttp import ClientSession

from antex.admission import max_tokens_to_send
from antex.catalog import apply_overrides
from antex.config import default_document, from_document
from antex.errors import AntexError
from tests.conftest import Gateway, sample_body
from tests.fake_replies import text_reply

SHIPPED = from_document(default_document())
MODEL = "claude-sonnet-4-6"  # its own limit: 128000
LIBRARY_DEFAULT = 128000


@pytest.mark.parametrize("plan, requested, model, sent", [
    ("starter", 1000, MODEL, 1000),  # under the cap: as asked
    ("starter", 32000, MODEL, 32000),
    ("starter", 128000, MODEL, 32000),  # over the cap, within the model's limit: lowered
    ("pro", 128000, MODEL, 64000),
    ("max", 128000, MODEL, 128000),
    ("max", 64000, "claude-haiku-4-5", 64000),
])
def test_max_tokens_to_send(plan: str, requested: int, model: str, sent: int) -> None:
    assert max_tokens_to_send(SHIPPED.plans[plan], SHIPPED.models[model], requested) == sent


@pytest.mark.parametrize("plan, requested, model, fragment", [
    ("max", 128001, MODEL, "claude-sonnet-4-6's output limit of 128000"),
    ("starter", 64001, "claude-haiku-4-5", "claude-haiku-4-5's output limit of 64000"),  # the model's limit first
    ("max", 64001, "claude-haiku-4-5", "claude-haiku-4-5's output limit of 64000"),
])
def test_max_tokens_over_the_models_limit_is_refused(plan: str, requested: int, model: str, fragment: str) -> None:
    with pytest.raises(AntexError) as refused:
        max_tokens_to_send(SHIPPED.plans[plan], SHIPPED.models[model], requested)
    assert refused.value.type == "max_tokens_too_large" and fragment in refused.value.message


def test_a_refusing_plan_refuses_over_its_cap() -> None:
    refusing = apply_overrides(SHIPPED.plans["starter"], {"max_tokens_over": "refuse"})
    with pytest.raises(AntexError) as refused:
        max_tokens_to_send(refusing, SHIPPED.models[MODEL], 32001)
    assert refused.value.message == "max_tokens 32001 is over your plan's cap of 32000. Send max_tokens of 32000 or less."
    assert max_tokens_to_send(refusing, SHIPPED.models[MODEL], 32000) == 32000


def expected(plan: str) -> int:
    return min(SHIPPED.plans[plan].max_tokens, LIBRARY_DEFAULT)


@pytest.mark.parametrize("plan", list(SHIPPED.plans))
async def test_anthropic_sdk_stream_with_the_models_maximum(gateway: Gateway, plan: str) -> None:
    key = await gateway.create_key("alice", plan=plan)
    gateway.fake.queue(text_reply("Long answer.", events=3, input_tokens=10, output_tokens=3))
    async with anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0) as client:
        raw = await client.messages.with_raw_response.create(
            model=MODEL, max_tokens=LIBRARY_DEFAULT, stream=True, messages=[{"role": "user", "content": "hi"}])
        text = "".join([event.delta.text async for event in await raw.parse() if event.type == "content_block_delta"])
    assert text == "Long answer."
    sent = gateway.fake.requests[-1].json
    assert sent["max_tokens"] == expected(plan)
    assert sent["messages"] == [{"role": "user", "content": "hi"}] and sent["stream"] is True
    lowered = expected(plan) < LIBRARY_DEFAULT
    assert raw.headers.get("x-antex-max-tokens") == (str(expected(plan)) if lowered else None)
    (event,) = await gateway.events()
    assert (event["outcome"], event["output_tokens"]) == ("complete", 3)


@pytest.mark.parametrize("plan", list(SHIPPED.plans))
async def test_openai_doors_with_the_models_maximum(gateway: Gateway, plan: str) -> None:
    key = await gateway.create_key("alice", plan=plan)
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as oa:
        chat = await oa.chat.completions.with_raw_response.create(
            model=MODEL, max_tokens=LIBRARY_DEFAULT, messages=[{"role": "user", "content": "hi"}])
        assert gateway.fake.requests[-1].json["max_tokens"] == expected(plan)
        chat_new = await oa.chat.completions.with_raw_response.create(
            model=MODEL, max_completion_tokens=LIBRARY_DEFAULT, stream=True, messages=[{"role": "user", "content": "hi"}])
        assert [chunk async for chunk in chat_new.parse()]
        assert gateway.fake.requests[-1].json["max_tokens"] == expected(plan)
        responses = await oa.responses.with_raw_response.create(
            model=MODEL, max_output_tokens=LIBRARY_DEFAULT, input="hi", store=False)
        assert gateway.fake.requests[-1].json["max_tokens"] == expected(plan)
        assert responses.parse().output_text
    lowered = str(expected(plan)) if expected(plan) < LIBRARY_DEFAULT else None
    for raw in (chat, chat_new, responses):
        assert raw.headers.get("x-antex-max-tokens") == lowered


async def test_refusing_plan_refuses_on_every_door(gateway: Gateway) -> None:
    key = await gateway.create_key("bob", plan="starter", max_tokens_over="refuse")
    async with anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(model=MODEL, max_tokens=LIBRARY_DEFAULT, stream=True,
                                         messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["error"]["type"] == "max_tokens_too_large"
    assert "cap of 32000" in refused.value.body["error"]["message"]
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as oa:
        with pytest.raises(openai.BadRequestError) as chat:
            await oa.chat.completions.create(model=MODEL, max_tokens=LIBRARY_DEFAULT,
                                             messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.BadRequestError) as responses:
            await oa.responses.create(model=MODEL, max_output_tokens=LIBRARY_DEFAULT, input="hi")
        # without a max_tokens of their own, the OpenAI doors pick one within the cap
        await oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert gateway.fake.requests[-1].json["max_tokens"] == 32000
    for error in (chat, responses):
        assert error.value.body["type"] == "max_tokens_too_large" and "cap of 32000" in error.value.body["message"]
    assert len(gateway.fake.requests) == 1


async def test_lowered_body_differs_only_in_max_tokens_and_a_thinking_budget_that_no_longer_fits(gateway: Gateway) -> None:
    key = await gateway.create_key("alice", plan="starter")
    body = sample_body(max_tokens=LIBRARY_DEFAULT, thinking={"type": "enabled", "budget_tokens": 100000},
                       metadata={"user_id": "u1"})
    async with ClientSession() as http:
        async with http.post(gateway.url + "/v1/messages", data=orjson.dumps(body),
                             headers={"x-api-key": key, "content-type": "application/json"}) as resp:
            assert resp.status == 200 and resp.headers["x-antex-max-tokens"] == "32000"
        fits = sample_body(max_tokens=LIBRARY_DEFAULT, thinking={"type": "enabled", "budget_tokens": 8000})
        async with http.post(gateway.url + "/v1/messages", data=orjson.dumps(fits),
                             headers={"x-api-key": key, "content-type": "application/json"}) as resp:
            assert resp.status == 200
    first, second = (request.json for request in gateway.fake.requests)
    assert first == {**body, "max_tokens": 32000, "thinking": {"type": "enabled", "budget_tokens": 16000}}
    assert second == {**fits, "max_tokens": 32000}
