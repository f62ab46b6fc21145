"""antex.config: the defaults are config.example.toml, a file merges over them, bad files fail clearly."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest

from antex.catalog import LIMIT_FIELDS, RATE_FIELDS, Limits, apply_overrides
from antex.config import ConfigError, load

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = tomllib.loads((ROOT / "config.example.toml").read_text("utf-8"))
DEFAULTS = load(None)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "antex.toml"
    path.write_text(text, "utf-8")
    return path


# defaults


@pytest.mark.parametrize(
    "read, expected",
    [
        (lambda c: c.server.host, "127.0.0.1"),
        (lambda c: c.server.port, 8080),
        (lambda c: c.server.database, "antex.db"),
        (lambda c: c.server.trusted_proxies, ()),
        (lambda c: c.server.forwarded_header, "x-forwarded-for"),
        (lambda c: c.server.max_body_bytes, 32 * 1024 * 1024),
        (lambda c: c.server.parse_in_worker_bytes, 1024 * 1024),
        (lambda c: c.upstream.base_url, "https://api.anthropic.com"),
        (lambda c: c.upstream.api_key_env, "ANTEX_UPSTREAM_KEY"),
        (lambda c: c.upstream.idle_timeout_s, 600),
        (lambda c: c.upstream.on_client_disconnect, "finish"),
        (lambda c: (c.quarantine.ip_limit_hits, c.quarantine.within_s), (5, 3600)),
        (lambda c: c.events.retention_s, 90 * 86400),
        (lambda c: c.source, "<defaults>"),
        (lambda c: (c.responses.retention_s, c.responses.max_per_key, c.responses.max_bytes_per_key),
         (3 * 86400, 10000, 64 * 1024 * 1024)),
        (lambda c: {p.max_tokens_over for p in c.plans.values()}, {"lower"}),
        (lambda c: {m: c.models[m].max_output_tokens for m in ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6")},
         {"claude-haiku-4-5": 64000, "claude-sonnet-4-6": 128000, "claude-opus-4-6": 128000}),
    ],
)
def test_no_file_gives_the_documented_defaults(read, expected) -> None:
    assert read(DEFAULTS) == expected


def test_every_documented_model_is_served_with_its_rates() -> None:
    assert set(DEFAULTS.models) == set(EXAMPLE["models"]) >= {
        "claude-haiku-4-5", "claude-sonnet-4-5", "claude-sonnet-4-6", "claude-opus-4-5", "claude-opus-4-6"}
    for model_id, table in EXAMPLE["models"].items():
        model = DEFAULTS.models[model_id]
        assert (model.id, model.display_name, model.tier, model.aliases, model.created_at, model.max_output_tokens) == (
            model_id, table["display_name"], table["tier"], tuple(table["aliases"]), table["created_at"],
            table["max_output_tokens"])
        assert vars(model.rates) == {k: table[k] for k in RATE_FIELDS}


def test_every_documented_plan_is_defined() -> None:
    assert set(DEFAULTS.plans) == set(EXAMPLE["plans"]) == {"starter", "pro", "max"}
    for name, table in EXAMPLE["plans"].items():
        plan = DEFAULTS.plans[name]
        assert {field: getattr(plan, field) for field in LIMIT_FIELDS} == {**table, "models": tuple(table["models"])}


@pytest.mark.parametrize("value", [0, 4096])
def test_parse_in_worker_bytes_may_be_0_for_never(tmp_path: Path, value: int) -> None:
    assert load(write(tmp_path, f"[server]\nparse_in_worker_bytes = {value}\n")).server.parse_in_worker_bytes == value


def test_a_file_merges_over_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, """
[server]
port = 9000
trusted_proxies = ["10.0.0.0/8", "::1"]

[plans.pro]
max_ips = 7

[plans.team]
credits_5h = 100
credits_7d = 1000.5
models = ["claude-haiku-*"]
max_tokens = 4096
max_ips = 0
max_concurrent = 2

[models."claude-haiku-4-5"]
aliases = ["haiku", "small"]
""")
    cfg = load(path)
    assert cfg.source == str(path)
    assert (cfg.server.port, cfg.server.host, cfg.server.database) == (9000, "127.0.0.1", "antex.db")
    assert cfg.server.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert cfg.plans["pro"] == Limits(2000, 20000, ("claude-*",), 64000, 7, 8)
    assert cfg.plans["team"] == Limits(100, 1000.5, ("claude-haiku-*",), 4096, 0, 2)
    assert cfg.plans["starter"] == DEFAULTS.plans["starter"]
    assert cfg.resolve_model("small").id == "claude-haiku-4-5"
    assert cfg.models["claude-haiku-4-5"].rates == DEFAULTS.models["claude-haiku-4-5"].rates


# model names


@pytest.mark.parametrize(
    "name, model_id",
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5[1m]", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929[1m]", "claude-sonnet-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-opus-4-6", "claude-opus-4-6"),
        ("sonnet", "claude-sonnet-4-6"),
        ("sonnet[1m]", "claude-sonnet-4-6"),
        ("opus", "claude-opus-4-6"),
        ("haiku", "claude-haiku-4-5"),
        ("gpt-4o", None),
        ("claude-sonnet-4-5-2025", None),
        ("claude-sonnet", None),
        ("Sonnet", None),
        ("", None),
    ],
)
def test_resolve_model(name: str, model_id: str | None) -> None:
    model = DEFAULTS.resolve_model(name)
    assert (model.id if model else None) == model_id


# bad files: each names the file, the key and what is wrong


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ("[serve]\nport = 1", "[serve]", "unknown section"),
        ("port = 8080", "[port]", "unknown section"),
        ("server = 3", "[server]", "must be a table"),
        ("[server]\nprot = 8080", "[server] prot", "unknown setting"),
        ('[server]\nport = "8080"', "[server] port", "must be int, not str"),
        ("[server]\nport = true", "[server] port", "must be int, not bool"),
        ("[server]\nport = 8080.0", "[server] port", "must be int, not float"),
        ("[server]\nport = 70000", "[server] port", "port number"),
        ("[server]\nmax_body_bytes = 0", "[server] max_body_bytes", "greater than 0"),
        ("[server]\nparse_in_worker_bytes = -1", "[server] parse_in_worker_bytes", "must be 0 or more"),
        ("[server]\nparse_in_worker_bytes = 1.5", "[server] parse_in_worker_bytes", "must be int, not float"),
        ('[events]\nretention = "7d"', "[events] retention", "more than 7 days"),
        ('[events]\nretention = "lots"', "[events] retention", "must be a duration"),
        ("[events]\nretention = 90", "[events] retention", "must be str"),
        ('[server]\ntrusted_proxies = ["10.0.0.0/33"]', "[server] trusted_proxies", "not a CIDR"),
        ('[server]\ntrusted_proxies = ["proxy.local"]', "[server] trusted_proxies", "not a CIDR"),
        ("[server]\ntrusted_proxies = [5]", "[server] trusted_proxies", "not a CIDR"),
        ('[server]\ntrusted_proxies = "10.0.0.0/8"', "[server] trusted_proxies", "must be list"),
        ('[server]\nforwarded_header = "x-real-ip"', "[server] forwarded_header", '"x-forwarded-for" or "forwarded"'),
        ('[upstream]\nbase_url = "api.anthropic.com"', "[upstream] base_url", "http:// or https:// URL"),
        ('[upstream]\nbase_url = "ftp://api.anthropic.com"', "[upstream] base_url", "http:// or https:// URL"),
        ("[upstream]\nidle_timeout_s = 0", "[upstream] idle_timeout_s", "greater than 0"),
        ('[upstream]\non_client_disconnect = "abort"', "[upstream] on_client_disconnect", '"finish" or "cancel"'),
        ("[quarantine]\nip_limit_hits = -1", "[quarantine] ip_limit_hits", "greater than 0"),
        ('[models."claude-sonnet-4-6"]\ninput = -1', '[models."claude-sonnet-4-6"] input', "0 or more"),
        ('[models."claude-sonnet-4-6"]\noutput = "15"', '[models."claude-sonnet-4-6"] output', "must be int or float"),
        ('[models."claude-sonnet-4-6"]\ntier = "gpt"', '[models."claude-sonnet-4-6"] tier', '"haiku", "sonnet" or "opus"'),
        ('[models."claude-sonnet-4-6"]\ncreated_at = "soon"', '[models."claude-sonnet-4-6"] created_at', "must be a date"),
        ('[models."claude-sonnet-4-6"]\nprice = 3', '[models."claude-sonnet-4-6"] price', "unknown setting"),
        ('[models."claude-x"]\ninput = 1', '[models."claude-x"]', "missing display_name"),
        ('[models."claude-haiku-4-5"]\naliases = ["claude-opus-4-6"]', '[models."claude-haiku-4-5"] aliases',
         '"claude-opus-4-6" is already the ID of [models."claude-opus-4-6"]'),
        # Two models claim one alias: the message names both sections, whichever the operator edited.
        ('[models."claude-haiku-4-5"]\naliases = ["sonnet"]', '[models."claude-sonnet-4-6"] aliases',
         '"sonnet" is already an alias of [models."claude-haiku-4-5"]'),
        ('[models."claude-haiku-4-5"]\naliases = [1]', '[models."claude-haiku-4-5"] aliases', "non-empty strings"),
        ("[plans.team]\ncredits_5h = 100", "[plans.team]", "missing credits_7d, models, max_tokens"),
        ("[plans.pro]\ncredits_5h = 0", "[plans.pro] credits_5h", "greater than 0"),
        ("[plans.pro]\nmax_ips = -1", "[plans.pro] max_ips", "0 or more"),
        ('[plans.pro]\nmax_tokens_over = "clip"', "[plans.pro] max_tokens_over", '"lower" or "refuse"'),
        ('[models."claude-sonnet-4-6"]\nmax_output_tokens = 0', '[models."claude-sonnet-4-6"] max_output_tokens',
         "greater than 0"),
        ('[responses]\nretention = "3 days"', "[responses] retention", 'a duration such as "90m", "12h" or "3d"'),
        ('[responses]\nretention = "0d"', "[responses] retention", "a duration"),
        ("[responses]\nretention = 3", "[responses] retention", "must be str"),
        ("[responses]\nmax_per_key = 0", "[responses] max_per_key", "greater than 0"),
        ("[responses]\nkeep = true", "[responses] keep", "unknown setting"),
        ("[plans.pro]\nmax_tokens = 1.5", "[plans.pro] max_tokens", "must be int, not float"),
        ('[plans.pro]\nmodels = "claude-*"', "[plans.pro] models", "must be list"),
        ('[plans.pro]\nmodels = ["claude-*", ""]', "[plans.pro] models", "non-empty strings"),
        ("[plans]\npro = 1", "[plans.pro]", "must be a table"),
        ("[server]\nport = ", "", "not valid TOML"),
    ],
)
def test_a_bad_file_names_the_file_the_key_and_the_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: {key}")
    assert reason in message
    assert "\n" not in message  # one line, no traceback


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda tmp: tmp / "missing.toml", "cannot read the file: No such file or directory"),
        (lambda tmp: tmp, "cannot read the file"),
        (lambda tmp: (tmp / "latin1.toml", (tmp / "latin1.toml").write_bytes(b'[server]\nhost = "caf\xe9"\n'))[0],
         "the file is not UTF-8 text"),
    ],
    ids=["missing", "directory", "not utf-8"],
)
def test_an_unreadable_file_says_so(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError, match="^" + str(path).replace("\\", "\\\\") + ": " + reason):
        load(path)


# plans and per-key overrides


def test_apply_overrides_changes_only_what_the_key_sets() -> None:
    pro = DEFAULTS.plans["pro"]
    assert apply_overrides(pro, {}) is pro
    assert apply_overrides(pro, {"credits_5h": 50, "models": ["claude-haiku-*"], "max_ips": 0}) == Limits(
        credits_5h=50, credits_7d=20000, models=("claude-haiku-*",), max_tokens=64000, max_ips=0, max_concurrent=8)
    assert pro == Limits(2000, 20000, ("claude-*",), 64000, 5, 8)  # the plan itself is untouched


@pytest.mark.parametrize(
    "patterns, model_id, allowed",
    [
        (("claude-*",), "claude-opus-4-6", True),
        (("claude-haiku-*", "claude-sonnet-*"), "claude-sonnet-4-5", True),
        (("claude-haiku-*", "claude-sonnet-*"), "claude-opus-4-6", False),
        (("claude-sonnet-4-?",), "claude-sonnet-4-6", True),
        (("claude-sonnet-4-?",), "claude-sonnet-4-10", False),
        (("claude-opus-4-6",), "claude-opus-4-6", True),
        (("claude-opus-4-6",), "claude-opus-4-5", False),
        (("Claude-*",), "claude-opus-4-6", False),
        ((), "claude-opus-4-6", False),
    ],
)
def test_limits_allow_models_by_glob(patterns: tuple[str, ...], model_id: str, allowed: bool) -> None:
    assert Limits(1, 1, patterns, 1, 0, 0).allows(model_id) is allowed


def test_the_starter_plan_keeps_to_haiku_and_sonnet() -> None:
    starter = DEFAULTS.plans["starter"]
    assert [m for m in DEFAULTS.models if starter.allows(m)] == [
        "claude-haiku-4-5", "claude-sonnet-4-5", "claude-sonnet-4-6"]


def test_a_model_or_plan_of_ones_own_may_leave_out_the_newer_settings(tmp_path: Path) -> None:
    """Files written before max_output_tokens, max_tokens_over and the server-tool rates existed
    still load (the model's output limit is then unknown: the plan's cap alone applies; server
    tools are charged Anthropic's published prices)."""
    config = load(write(tmp_path, """
[models."claude-next"]
created_at = "2026-06-01"
display_name = "Claude Next"
tier = "sonnet"
aliases = []
input = 300
output = 1500
cache_write_5m = 375
cache_write_1h = 600
cache_read = 30

[plans.team]
credits_5h = 1
credits_7d = 2
models = ["claude-*"]
max_tokens = 1000
max_ips = 0
max_concurrent = 0

[responses]
retention = "90m"
"""))
    assert config.models["claude-next"].max_output_tokens is None
    assert (config.models["claude-next"].rates.web_search, config.models["claude-next"].rates.web_fetch) == (1.0, 0.0)
    assert config.plans["team"].max_tokens_over == "lower"
    assert config.responses.retention_s == 5400
