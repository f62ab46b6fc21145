"""The `antex` command group and what every command shares: the configuration, the store, keys by name.

Thin: each command parses its options, calls the store or the server, and prints.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import click

from antex import __version__, config as config_module, store
from antex.config import Config
from antex.store import KeyRow, Store


def run(work: Callable[[Store], Awaitable[Any]], cfg: Config) -> Any:
    """Run `work` against the configured database (migrated first) and close it."""

    async def main() -> Any:
        try:
            opened = await store.open_store(cfg.server.database, pool_size=1)
        except store.errors(cfg.server.database) as exc:
            raise click.ClickException(f"Cannot open the database {store.display(cfg.server.database)} "
                                       f"({type(exc).__name__}: {exc}).") from None
        try:
            return await work(opened)
        finally:
            await opened.close()

    return asyncio.run(main())


@click.group()
@click.version_option(__version__, prog_name="antex")
@click.option("--config", "config_path", envvar="ANTEX_CONFIG", type=click.Path(dir_okay=False),
              help="TOML config file (default: built-in defaults; env ANTEX_CONFIG).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Antex: a self-hosted Anthropic-compatible gateway with rolling credit windows."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


def load_config(ctx: click.Context) -> Config:
    """The configuration, loaded once per invocation; a bad file is a clean error, never a traceback."""
    if "config" not in ctx.obj:
        try:
            ctx.obj["config"] = config_module.load(ctx.obj.get("config_path"))
        except config_module.ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    return ctx.obj["config"]


def one_key(ref: str, rows: list[KeyRow]) -> KeyRow:
    """The one key `ref` names (name, id or visible prefix), or a clear error."""
    if not rows:
        raise click.ClickException(f"No key named {ref!r} (give a name, an id or a visible prefix such as sk_live_AbCd).")
    if len(rows) > 1:
        raise click.ClickException(f"{ref!r} names {len(rows)} keys; use the name or id instead.")
    return rows[0]
