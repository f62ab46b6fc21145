"""[[upstreams]]: the pool's config, its one-entry compatibility with [upstream], and bad entries
stopping `antex` at start with a message naming the file, the entry and the key."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from antex.cli import cli
from antex.config import ConfigError, load

ENTRIES = """
[[upstreams]]
name = "main"
base_url = "https://api.anthropic.com"
api_key_env = "KEY_MAIN"
models = ["claude-*"]

[[upstreams]]
name = "second-org"
base_url = "https://api.anthropic.com"
api_key_env = "KEY_SECOND"
priority = 2
proxy = "socks5://127.0.0.1:1080"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "antex.toml"
    path.write_text(text + f'\n[server]\ndatabase = "{tmp_path / "antex.db"}"\n', "utf-8")
    return path


def test_upstream_alone_is_a_one_entry_pool(tmp_path: Path) -> None:
    config = load(write(tmp_path, '[upstream]\nbase_url = "http://127.0.0.1:9"\napi_key_env = "MY_KEY"\n'))
    [entry] = config.upstreams
    assert (entry.name, entry.base_url, entry.api_key_env, entry.models, entry.priority, entry.proxy) == (
        "main", "http://127.0.0.1:9", "MY_KEY", ("*",), 1, "")


def test_entries_are_read_with_their_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path, ENTRIES))
    main, second = config.upstreams
    assert (main.name, main.models, main.priority, main.proxy) == ("main", ("claude-*",), 1, "")
    assert (second.name, second.models, second.priority, second.proxy) == (
        "second-org", ("*",), 2, "socks5://127.0.0.1:1080")
    assert config.upstream.idle_timeout_s == 600  # shared settings stay in [upstream]


ENTRY = '[[upstreams]]\nname = "{name}"\nbase_url = "{url}"\napi_key_env = "K"\n'


@pytest.mark.parametrize("text, says", [
    (ENTRY.format(name="a", url="https://x") * 2, '"a" is used by more than one entry'),
    (ENTRY.format(name="a", url="ftp://x"), '[[upstreams]] "a" base_url: must be an http:// or https:// URL'),
    (ENTRY.format(name="a", url="https://x") + 'proxy = "gopher://h:70"\n', '[[upstreams]] "a" proxy: must be empty or a proxy URL'),
    (ENTRY.format(name="a", url="https://x") + 'proxy = "http://user:hunter2@h"\n', "proxy: must be empty or a proxy URL"),
    (ENTRY.format(name="a", url="https://x") + 'colour = "red"\n', '"a" colour: unknown setting'),
    (ENTRY.format(name="a", url="https://x") + 'models = ["claude-haiku-*"]\n',
     '[models."claude-sonnet-4-5"]: no [[upstreams]] entry serves it'),
    (ENTRY.format(name="a", url="https://x") + "priority = -1\n", '"a" priority: must be 0 or more'),
    (ENTRY.format(name="a b", url="https://x"), "name: must be letters"),
    ('[[upstreams]]\nname = "a"\nbase_url = "https://x"\n', '"a": missing api_key_env'),
    ("upstreams = 3\n", "[[upstreams]]: must be one or more [[upstreams]] tables"),
])
def test_a_bad_entry_stops_the_start_with_a_clear_message(tmp_path: Path, text: str, says: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(path) in str(caught.value) and says in str(caught.value)
    assert "hunter2" not in str(caught.value)  # a proxy password is never echoed
    result = CliRunner().invoke(cli, ["--config", str(path), "serve"])
    assert result.exit_code == 1 and says in result.output and "Traceback" not in result.output


def test_serve_names_the_entry_whose_key_variable_is_unset(tmp_path: Path) -> None:
    path = write(tmp_path, ENTRIES)
    result = CliRunner().invoke(cli, ["--config", str(path), "serve"], env={"KEY_MAIN": "sk-ant-1"})
    assert result.exit_code == 1
    assert 'KEY_SECOND' in result.output and '[[upstreams]] "second-org" api_key_env' in result.output
