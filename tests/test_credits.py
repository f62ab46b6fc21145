"""antex.credits: Anthropic usage objects -> token counts -> integer micro-credits, no server."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antex import catalog, config
from antex.credits import MICRO, Usage, micro_credits, to_micro

DEFAULTS = config.load(None)
FULL = {"input_tokens": 12, "output_tokens": 30, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000}


@pytest.mark.parametrize(
    "usage, expected",
    [
        pytest.param({}, Usage(), id="empty"),
        pytest.param(
            {**FULL, "cache_creation": {"ephemeral_5m_input_tokens": 60, "ephemeral_1h_input_tokens": 40}},
            Usage(12, 30, 60, 40, 2000),
            id="split present",
        ),
        pytest.param(FULL, Usage(12, 30, 100, 0, 2000), id="split absent: all 5m"),
        pytest.param({**FULL, "cache_creation": None}, Usage(12, 30, 100, 0, 2000), id="split null: all 5m"),
        pytest.param({**FULL, "cache_creation": [40]}, Usage(12, 30, 100, 0, 2000), id="split not an object"),
        pytest.param(
            {**FULL, "cache_creation": {"ephemeral_1h_input_tokens": 100}}, Usage(12, 30, 0, 100, 2000), id="all 1h"
        ),
        pytest.param(
            {**FULL, "cache_creation": {"ephemeral_1h_input_tokens": 500}},
            Usage(12, 30, 0, 100, 2000),
            id="1h capped at the total",
        ),
        pytest.param(
            {"input_tokens": 5, "cache_creation": {"ephemeral_5m_input_tokens": 60, "ephemeral_1h_input_tokens": 40}},
            Usage(5, 0, 60, 40, 0),
            id="split without a total",
        ),
        pytest.param(
            {"input_tokens": "12", "output_tokens": 1.5, "cache_creation_input_tokens": -3,
             "cache_read_input_tokens": None},
            Usage(),
            id="bogus types count 0",
        ),
        pytest.param(
            {"input_tokens": True, "output_tokens": False, "cache_creation_input_tokens": 10,
             "cache_creation": {"ephemeral_1h_input_tokens": True}},
            Usage(0, 0, 10, 0, 0),
            id="bools are not counts",
        ),
        pytest.param({**FULL, "service_tier": "standard", "inference_geo": "us"}, Usage(12, 30, 100, 0, 2000),
                     id="extra fields"),
        pytest.param({**FULL, "server_tool_use": {"web_search_requests": 2}}, Usage(12, 30, 100, 0, 2000, 2, 0),
                     id="web searches"),
        pytest.param({"server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 4, "code_execution_requests": 9}},
                     Usage(web_search_requests=3, web_fetch_requests=4), id="searches and fetches, others ignored"),
        pytest.param({"server_tool_use": {"web_search_requests": "2", "web_fetch_requests": -1}}, Usage(),
                     id="bogus tool counts count 0"),
        pytest.param({"server_tool_use": [2]}, Usage(), id="server tool use not an object"),
        pytest.param({"server_tool_use": None}, Usage(), id="server tool use null"),
    ],
)
def test_usage_from_anthropic(usage: dict, expected: Usage) -> None:
    assert Usage.from_anthropic(usage) == expected


KINDS = ("input_tokens", "output_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens")


@pytest.mark.parametrize(
    "model_id, per_token",
    [
        ("claude-haiku-4-5", (100, 500, 125, 200, 10)),
        ("claude-sonnet-4-5", (300, 1500, 375, 600, 30)),
        ("claude-sonnet-4-6", (300, 1500, 375, 600, 30)),
        ("claude-opus-4-5", (500, 2500, 625, 1000, 50)),
        ("claude-opus-4-6", (500, 2500, 625, 1000, 50)),
    ],
)
def test_one_token_of_each_kind_costs_the_default_rate_in_micro_credits(model_id: str, per_token: tuple) -> None:
    rates = DEFAULTS.models[model_id].rates
    for kind, expected in zip(KINDS, per_token):
        cost = micro_credits(Usage(**{kind: 1}), rates)
        assert (kind, cost, type(cost)) == (kind, expected, int)


@pytest.mark.parametrize(
    "usage, expected",
    [
        (Usage(), 0),
        (Usage(input_tokens=1_000_000), 300 * MICRO),  # a million input tokens: 300 credits
        (Usage(1000, 200), 600_000),
        (Usage(1000, 200, 100, 10, 2000), 300_000 + 300_000 + 37_500 + 6_000 + 60_000),
        (Usage.from_anthropic({**FULL, "cache_creation": {"ephemeral_1h_input_tokens": 40}}),
         12 * 300 + 30 * 1500 + 60 * 375 + 40 * 600 + 2000 * 30),
    ],
)
def test_sonnet_micro_credits_are_exact_integers(usage: Usage, expected: int) -> None:
    assert micro_credits(usage, DEFAULTS.models["claude-sonnet-4-5"].rates) == expected


@pytest.mark.parametrize("model_id", ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"])
def test_server_tool_uses_cost_anthropics_published_price_in_credits(model_id: str) -> None:
    """Web search: $10 per 1,000 searches, one cent each: 1 credit. Web fetch: no fee beyond tokens."""
    rates = DEFAULTS.models[model_id].rates
    assert micro_credits(Usage(web_search_requests=1), rates) == 1 * MICRO
    assert micro_credits(Usage(web_search_requests=1000), rates) == 1000 * MICRO  # $10
    assert micro_credits(Usage(web_fetch_requests=5), rates) == 0
    assert micro_credits(Usage(input_tokens=1000, web_search_requests=3), rates) == 1000 * rates.input + 3 * MICRO


def test_server_tool_rates_are_configurable() -> None:
    rates = catalog.Rates(input=0, output=0, cache_write_5m=0, cache_write_1h=0, cache_read=0, web_search=2.5, web_fetch=0.1)
    assert micro_credits(Usage(web_search_requests=2, web_fetch_requests=3), rates) == 5_300_000


def test_fractional_rates_round_to_whole_micro_credits() -> None:
    rates = catalog.Rates(input=0.5, output=0.25, cache_write_5m=0, cache_write_1h=0, cache_read=0.1)
    cost = micro_credits(Usage(input_tokens=3, output_tokens=2, cache_read_tokens=7), rates)
    assert cost == 3 and isinstance(cost, int)  # 1.5 + 0.5 + 0.7 = 2.7


@pytest.mark.parametrize("credits, micro", [(0, 0), (500, 500_000_000), (0.1, 100_000), (2.5, 2_500_000)])
def test_to_micro(credits: float, micro: int) -> None:
    assert to_micro(credits) == micro


TIERS = ("haiku", "sonnet", "opus")
counts = st.integers(0, 10**7)


@settings(deadline=None, database=None)
# Token counts only: a web search costs the same credit on every model, as it costs Anthropic the same.
@given(usage=st.builds(Usage, counts, counts, counts, counts, counts, web_search_requests=st.just(0),
                       web_fetch_requests=st.just(0)).filter(lambda u: u != Usage()))
def test_opus_costs_more_than_sonnet_and_sonnet_more_than_haiku(usage: Usage) -> None:
    by_tier = {
        tier: [micro_credits(usage, m.rates) for m in DEFAULTS.models.values() if m.tier == tier] for tier in TIERS
    }
    assert all(by_tier.values())
    for cheaper, dearer in itertools.pairwise(TIERS):
        assert max(by_tier[cheaper]) < min(by_tier[dearer])
