"""antex/upstream/pool.py without a server: choice, stickiness, cooldowns, as tables of cases."""
from __future__ import annotations

import json
import logging
import math
from collections import Counter

import pytest

from antex.upstream.config import UpstreamEntry
from antex.upstream.pool import (BINDING_TTL_S, CIRCUIT_AFTER_5XX, MAX_COOLDOWN_S, RATE_LIMIT_DEFAULT_S, Pool, Upstream, conversation_of,
                                 cooldown_s)

NOW = 1_764_576_000.0  # 2025-12-01T08:00:00Z
SONNET, OPUS = "claude-sonnet-4-6", "claude-opus-4-6"


def upstream(name: str, priority: int = 1, models: tuple[str, ...] = ("*",)) -> Upstream:
    return Upstream(UpstreamEntry(name, f"https://{name}.example", f"KEY_{name.upper()}", models, priority, ""), "k")


def pool(*upstreams: Upstream) -> Pool:
    return Pool(list(upstreams) or [upstream("a"), upstream("b"), upstream("c")])


def conversation(n: int) -> bytes:
    return conversation_of(1, {"x-claude-code-session-id": f"session-{n}"}, None)


def first(p: Pool, conv: bytes | None, model: str = SONNET, family: str = "sonnet", now: float = NOW) -> str:
    return p.choose(model, family, conv, now)[0].name


# choice


def test_new_conversations_spread_over_the_best_priority_only() -> None:
    p = pool(upstream("a"), upstream("b"), upstream("backup", priority=2))
    counts = Counter(first(p, conversation(n)) for n in range(3000))
    assert set(counts) == {"a", "b"}
    assert 1200 < counts["a"] < 1800  # an even share, by hashing


def test_rendezvous_moves_only_the_conversations_of_the_upstream_that_left() -> None:
    p = pool()
    before = {n: first(p, conversation(n)) for n in range(600)}
    p.upstreams[1].out_until = NOW + 60  # "b" is taken out
    after = {n: first(p, conversation(n)) for n in range(600)}
    moved = {n for n in before if before[n] != after[n]}
    assert moved == {n for n in before if before[n] == "b"}


def test_every_instance_agrees_without_asking_the_others() -> None:
    one, two = pool(), pool()  # two gateways with the same config
    assert all(first(one, conversation(n)) == first(two, conversation(n)) for n in range(200))


def test_models_go_only_to_upstreams_that_serve_them() -> None:
    p = pool(upstream("sonnets", models=("claude-sonnet-*",)), upstream("all"))
    assert [u.name for u in p.choose(OPUS, "opus", conversation(1), NOW)] == ["all"]


# stickiness


def test_a_conversation_stays_bound_while_healthy_and_moves_once_when_not() -> None:
    p = pool()
    conv = conversation(7)
    home = first(p, conv)
    p.bind(conv, next(u for u in p.upstreams if u.name == home), NOW)
    home_upstream = next(u for u in p.upstreams if u.name == home)
    p.answered(home_upstream, "sonnet", 529, {}, NOW)
    moved = first(p, conv, now=NOW + 1)
    assert moved != home
    p.bind(conv, next(u for u in p.upstreams if u.name == moved), NOW + 1)
    # the old home recovers: the conversation stays where its cache now is
    assert first(p, conv, now=NOW + 600) == moved


def test_bindings_expire_with_the_cache_and_are_renewed_on_use() -> None:
    p = pool()
    conv = conversation(3)
    hashed = first(p, conv)
    other = next(u for u in p.upstreams if u.name != hashed)
    p.bind(conv, other, NOW)
    p.bind(conv, other, NOW + BINDING_TTL_S - 1)  # renewed
    assert first(p, conv, now=NOW + BINDING_TTL_S + 10) == other.name
    assert first(p, conv, now=NOW + 2 * BINDING_TTL_S) == hashed  # expired: hashing again


def test_bindings_are_scoped_to_the_antex_key() -> None:
    headers = {"x-claude-code-session-id": "same-session"}
    assert conversation_of(1, headers, None) != conversation_of(2, headers, None)


@pytest.mark.parametrize("headers, body, same_as", [
    ({"x-claude-code-session-id": "s1"}, {"metadata": {"user_id": "other"}}, ({"x-claude-code-session-id": "s1"}, None)),
    ({}, {"metadata": {"user_id": "user_ab12_account_9f_session_1b2c3d4e-0000"}, "messages": [{"role": "user", "content": "x"}]},
     ({}, {"metadata": {"user_id": "user_zz_account_00_session_1b2c3d4e-0000"}})),
    ({}, {"metadata": {"user_id": json.dumps({"device_id": "d", "account_uuid": "", "session_id": "S-42"})}},
     ({}, {"metadata": {"user_id": json.dumps({"device_id": "other", "session_id": "S-42"})}})),
    ({}, {"prompt_cache_key": "codex-thread-9", "input": "first"}, ({}, {"prompt_cache_key": "codex-thread-9", "input": "later"})),
    ({}, {"system": "You are terse.", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     ({}, {"system": "You are terse.", "messages": [{"role": "user", "content": "hi"}]})),
])
def test_a_conversation_is_named_by_the_first_signal_present(headers, body, same_as) -> None:
    assert conversation_of(5, headers, body) == conversation_of(5, *same_as)


def test_different_sessions_are_different_conversations() -> None:
    assert conversation_of(1, {}, {"metadata": {"user_id": "u_session_a"}}) != \
        conversation_of(1, {}, {"metadata": {"user_id": "u_session_b"}})


def test_the_binding_map_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("antex.upstream.pool.MAX_BINDINGS", 100)
    p = pool()
    for n in range(500):
        p.bind(conversation(n), p.upstreams[0], NOW + n)
    assert len(p.bindings) == 100
    assert conversation(499) in p.bindings and conversation(0) not in p.bindings


# cooldowns


def test_a_429_benches_only_its_model_family_until_retry_after() -> None:
    a, b = upstream("a"), upstream("b")
    p = pool(a, b)
    p.answered(a, "opus", 429, {"retry-after": "30"}, NOW)
    assert not a.available("opus", NOW + 29) and a.available("opus", NOW + 30.5)
    assert a.available("sonnet", NOW + 1)
    assert [u.name for u in p.choose(OPUS, "opus", conversation(1), NOW + 1)] == ["b"]
    assert a.state(NOW + 1)["state"] == "cooling" and a.state(NOW + 1)["models"] == ["opus"]


@pytest.mark.parametrize("headers, seconds", [
    ({"retry-after": "17"}, 17),
    ({"retry-after": "Mon, 01 Dec 2025 08:01:00 GMT"}, 60),
    ({"anthropic-ratelimit-tokens-reset": "2025-12-01T08:00:45Z", "anthropic-ratelimit-tokens-remaining": "0",
      "anthropic-ratelimit-requests-reset": "2025-12-01T08:00:05Z", "anthropic-ratelimit-requests-remaining": "40"}, 45),
    ({"anthropic-ratelimit-requests-reset": "2025-12-01T08:00:05Z"}, 5),
    ({"anthropic-ratelimit-unified-5h-reset": str(int(NOW) + 120)}, 120),
    ({"retry-after": "soon"}, RATE_LIMIT_DEFAULT_S),
    ({"retry-after": "-5"}, RATE_LIMIT_DEFAULT_S),
    ({"retry-after": "1e12"}, MAX_COOLDOWN_S),
    ({"retry-after": "1e400"}, RATE_LIMIT_DEFAULT_S),
    ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, MAX_COOLDOWN_S),
    ({"retry-after": "Fri, 31 Dec 99999 23:59:59 GMT"}, RATE_LIMIT_DEFAULT_S),
    ({"anthropic-ratelimit-requests-reset": str(int(NOW * 1000))}, MAX_COOLDOWN_S),  # a millisecond epoch
    ({}, RATE_LIMIT_DEFAULT_S),
])
def test_a_429_cools_down_for_the_time_the_upstream_names(headers, seconds) -> None:
    assert cooldown_s(headers, NOW) == pytest.approx(seconds)


def test_a_529_cools_briefly_growing_on_repeats_and_capped() -> None:
    a = upstream("a")
    p = pool(a, upstream("b"))
    lengths, now = [], NOW
    for n in range(8):
        p.answered(a, "sonnet", 529, {}, now)
        p.answered(a, "sonnet", 529, {}, now)  # a second request in flight then: the same cooldown
        lengths.append(a.cooling["sonnet"] - now)
        now = a.cooling["sonnet"]  # tried again once it is over, and overloaded again
    assert lengths[:5] == [2, 4, 8, 16, 30] and max(lengths) == 30
    p.answered(a, "sonnet", 200, {}, now + 100)
    p.answered(a, "sonnet", 529, {}, now + 100)
    assert a.cooling["sonnet"] - (now + 100) == 2  # a success resets the growth


def test_repeated_5xx_open_the_circuit_with_one_half_open_probe() -> None:
    a, b = upstream("a"), upstream("b")
    p = pool(a, b)
    for n in range(CIRCUIT_AFTER_5XX - 1):
        p.answered(a, "sonnet", 500, {}, NOW)
    assert a.available("sonnet", NOW)
    p.answered(a, "sonnet", 503, {}, NOW)
    assert not a.available("sonnet", NOW + 1) and a.state(NOW + 1)["state"] == "down"
    later = a.open_until + 0.1
    assert "a" in [u.name for u in p.choose(SONNET, "sonnet", None, later)]  # half-open: a candidate again
    assert "a" in [u.name for u in p.choose(SONNET, "sonnet", None, later)]  # choosing is not sending
    assert a.available("sonnet", later)
    assert p.begin(a, later)  # the probe goes out...
    assert not p.begin(a, later) and not a.available("sonnet", later)  # ...and only one
    p.answered(a, "sonnet", 200, {}, later + 1)
    assert a.available("sonnet", later + 1) and a.state(later + 1)["state"] == "ok"


def test_a_connection_failure_opens_the_circuit_at_once_and_a_failed_probe_longer() -> None:
    a = upstream("a")
    p = pool(a, upstream("b"))
    p.failed(a, "sonnet", "connection refused", NOW)
    first_open = a.open_until - NOW
    assert p.begin(a, a.open_until)
    p.failed(a, "sonnet", "connection refused", a.open_until)
    assert a.open_until - (NOW + first_open) > first_open
    assert a.state(NOW)["last_error"] == "connection refused"


def test_failures_of_requests_in_flight_do_not_stretch_the_circuit() -> None:
    a = upstream("a")
    p = pool(a, upstream("b"))
    for _ in range(10):  # ten requests were in flight when it died
        p.failed(a, "sonnet", "reset", NOW)
    assert a.open_until - NOW == 5


def test_a_429_or_529_from_a_half_open_upstream_closes_its_circuit() -> None:
    a = upstream("a")
    p = pool(a, upstream("b"))
    p.failed(a, "sonnet", "refused", NOW)
    assert p.begin(a, a.open_until)
    p.answered(a, "opus", 429, {"retry-after": "30"}, a.open_until)
    assert a.open_until == 0 and a.available("sonnet", NOW + 6) and not a.available("opus", NOW + 6)


def test_a_refused_key_is_out_loudly_with_a_slow_probe_until_it_works(caplog: pytest.LogCaptureFixture) -> None:
    a = upstream("a")
    p = pool(a, upstream("b"))
    with caplog.at_level(logging.INFO, logger="antex.upstream"):
        p.answered(a, "sonnet", 401, {}, NOW)
        p.answered(a, "sonnet", 403, {}, NOW + 1)  # one in flight meanwhile: the same refusal
        assert [r.levelname for r in caplog.records] == ["ERROR"]  # once, not per request
        assert "OUT" in caplog.text and "KEY_A" in caplog.text and "k" not in caplog.records[0].args
        now, waits = NOW, []
        for _ in range(7):  # refused at every probe: each one comes later, up to a cap
            assert not a.available("sonnet", now + 1) and a.state(now + 1)["state"] == "down"
            waits.append(a.out_until - now)
            now = a.out_until
            assert a.available("sonnet", now) and a.recovers_at("sonnet", now - 1) == now
            assert p.begin(a, now) and not a.available("sonnet", now)  # one probe, no other meanwhile
            p.answered(a, "sonnet", 401, {}, now)
        assert waits == [60, 120, 240, 480, 600, 600, 600]
        assert len(caplog.records) == 1  # refused again and again: said once
        assert p.begin(a, a.out_until)
        p.answered(a, "sonnet", 200, {}, a.out_until)  # the key works again
    assert a.available("sonnet", now) and not a.out and a.state(now)["state"] == "ok"
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING"] and "accepts its key" in caplog.text


def test_an_absurd_cooldown_is_capped_and_logged_without_error(caplog: pytest.LogCaptureFixture) -> None:
    for headers in ({"retry-after": "1e12"}, {"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"},
                    {"anthropic-ratelimit-requests-reset": str(int(NOW * 1000)),  # a millisecond epoch
                     "anthropic-ratelimit-requests-remaining": "0"},
                    {"anthropic-ratelimit-tokens-reset": "9999-12-31T23:59:59Z"}):
        a = upstream("a")
        p = pool(a, upstream("b"))
        with caplog.at_level(logging.WARNING, logger="antex.upstream"):
            p.answered(a, "sonnet", 429, headers, NOW)
        assert a.cooling["sonnet"] == NOW + MAX_COOLDOWN_S, headers
        assert a.state(NOW)["until"] == a.recovers_at("sonnet", NOW) == NOW + MAX_COOLDOWN_S
    assert len(caplog.records) == 4 and all("cooling down" in r.getMessage() for r in caplog.records)


def test_a_429_with_retry_after_0_cools_nothing_and_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    a = upstream("a")
    p = pool(a, upstream("b"))
    with caplog.at_level(logging.DEBUG, logger="antex.upstream"):
        for n in range(3):
            p.answered(a, "sonnet", 429, {"retry-after": "0"}, NOW + n)
    assert a.available("sonnet", NOW + 2) and "sonnet" not in a.cooling and not caplog.records


def test_all_cooling_means_no_candidate_and_the_soonest_recovery() -> None:
    a, b = upstream("a"), upstream("b")
    p = pool(a, b)
    p.answered(a, "sonnet", 429, {"retry-after": "40"}, NOW)
    p.answered(b, "sonnet", 529, {}, NOW)
    assert p.choose(SONNET, "sonnet", None, NOW + 1) == []
    assert p.retry_after_s(SONNET, "sonnet", NOW + 1) == 1  # b's 2 s 529 cooldown
    assert p.retry_after_s(SONNET, "sonnet", NOW) == 2


def test_state_changes_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    a = upstream("a")
    p = pool(a, upstream("b"))
    with caplog.at_level(logging.INFO, logger="antex.upstream"):
        for n in range(5):
            p.answered(a, "opus", 429, {"retry-after": "60"}, NOW + n)
        for n in range(5):
            p.answered(a, "opus", 200, {}, NOW + 100 + n)
    assert len(caplog.records) == 2  # cooling down, healthy again


def test_one_upstream_is_always_tried_whatever_it_said() -> None:
    only = upstream("only")
    p = pool(only)
    p.answered(only, "sonnet", 529, {}, NOW)
    assert p.choose(SONNET, "sonnet", None, NOW) == [only]
