"""`antex init`, `serve`, `upstreams`, `prune` and `import`: the server and its database."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time

import click
import orjson

from antex import config_checks, store
from antex.cli.base import cli, load_config, run
from antex.config import Config


@cli.command()
@click.option("--write-config", type=click.Path(dir_okay=False), help="Also write a starter config file here.")
@click.pass_context
def init(ctx: click.Context, write_config: str | None) -> None:
    """Create (or migrate) the database, and optionally write a starter config file."""
    cfg = load_config(ctx)
    if write_config:
        if os.path.exists(write_config):
            raise click.ClickException(f"{write_config} already exists; not overwriting it.")
        from importlib import resources

        text = resources.files("antex").joinpath("config.example.toml").read_text("utf-8")
        with open(write_config, "w", encoding="utf-8") as handle:
            handle.write(text)
        click.echo(f"Wrote {write_config}. Use it with: antex --config {write_config} serve")
    version = run(lambda s: s.schema_version(), cfg)
    click.echo(f"Database {store.display(cfg.server.database)} is ready (schema version {version}).")
    click.echo("Next: antex keys create NAME --plan " + next(iter(cfg.plans)))


@cli.command()
@click.option("--host", help="Override [server] host.")
@click.option("--port", type=int, help="Override [server] port.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the gateway until SIGINT or SIGTERM (then finish streams and flush the ledger)."""
    from antex import server
    from antex.journal import DatabaseInUse

    cfg = load_config(ctx)
    # The instance id defaults to the host name and the port this process listens on.
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, host=host or cfg.server.host,
                                                              port=cfg.server.port if port is None else port))
    keys = upstream_keys(cfg)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server.serve(cfg, keys, host=cfg.server.host, port=cfg.server.port)
    except DatabaseInUse as exc:
        raise click.ClickException(str(exc)) from None
    except store.errors(cfg.server.database) as exc:  # at start: what the last run left stays in its journal
        raise click.ClickException(f"Cannot open or write the database {store.display(cfg.server.database)} "
                                   f"({type(exc).__name__}: {exc}). Fix it and start again.") from None


def upstream_keys(cfg: Config) -> dict[str, str]:
    """Each upstream's key, read from the variable its entry names; a missing one stops the start."""
    keys = {}
    for entry in cfg.upstreams:
        key = os.environ.get(entry.api_key_env, "").strip()
        if not key:
            where = "[upstream] api_key_env" if entry.name == "main" else f'[[upstreams]] "{entry.name}" api_key_env'
            raise click.ClickException(
                f"No upstream API key: set the environment variable {entry.api_key_env} to your Anthropic API key "
                f"(the name comes from {where}).")
        keys[entry.name] = key
    return keys


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per upstream.")
@click.option("--url", envvar="ANTEX_BASE_URL", help="The running gateway to ask (default: [server] host and port).")
@click.pass_context
def upstreams(ctx: click.Context, as_json: bool, url: str | None) -> None:
    """Show the upstream pool and, when a server is running, each upstream's live state."""
    from antex.upstream import status

    cfg = load_config(ctx)
    host = cfg.server.host if cfg.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    url = url or f"http://{host}:{cfg.server.port}"
    rows, answered = status.merged(cfg, url)
    if as_json:
        click.echo("\n".join(orjson.dumps(row).decode() for row in rows))
    else:
        click.echo(status.render(rows, url if answered else None))


@cli.command()
@click.option("--retention", help='Keep raw events this long, e.g. "30d" (default: [events] retention; more than 7 days).')
@click.pass_context
def prune(ctx: click.Context, retention: str | None) -> None:
    """Roll credit events older than the retention up into daily totals, and forget client IPs unseen for 24 h.

    A running server does the same once a day; this does it now. `antex events` still exports the
    rolled-up days, one row per key, model and day (outcome daily_total, `requests` of them).
    """
    from antex.ledger import IP_WINDOW_S

    cfg = load_config(ctx)
    if retention is not None and (problem := config_checks.check_events_retention(retention)):
        raise click.BadParameter(f"{retention!r} {problem}", param_hint="--retention")
    keep_s = cfg.events.retention_s if retention is None else config_checks.duration_s(retention)
    days = keep_s / 86400

    async def run_prune() -> tuple[int, int]:
        opened = await store.open_store(cfg.server.database, pool_size=1)  # creates or migrates it
        await opened.close()
        writer = await store.open_writer(cfg.server.database, "cli")
        try:
            return await store.prune(writer, time.time(), keep_s, IP_WINDOW_S)
        finally:
            await writer.close()

    events_rolled, ips = asyncio.run(run_prune())
    click.echo(f"Rolled up {events_rolled} events older than {days:g} days into daily totals; "
               f"forgot {ips} client IPs unseen for 24 h.")


@cli.command(name="import")
@click.argument("sqlite_file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def import_command(ctx: click.Context, sqlite_file: str) -> None:
    """Copy an SQLite database (keys, credit events, daily totals, client IPs) into the configured
    PostgreSQL database. Running it again changes nothing.

    The SQLite file is migrated to the latest schema first, and keeps a random id that names its
    events in the target. Stop the single-process server using it first: what it has not written
    yet would be left behind.
    """
    from antex.store import importer

    cfg = load_config(ctx)
    if not store.is_postgres(cfg.server.database):
        raise click.ClickException(f"[server] database is {cfg.server.database!r}, not a PostgreSQL URL: import copies "
                                   f"an SQLite database into the configured PostgreSQL one.")

    async def copy() -> importer.Imported:
        source = store.SqliteStore(await store.connect(sqlite_file))
        try:
            target = await store.open_store(cfg.server.database, pool_size=1)
            try:
                return await importer.import_sqlite(source, target)
            finally:
                await target.close()
        finally:
            await source.close()

    try:
        done = asyncio.run(copy())
    except importer.ImportConflict as exc:
        raise click.ClickException(str(exc)) from None
    except store.errors(cfg.server.database) + store.errors(sqlite_file) as exc:
        raise click.ClickException(f"Cannot import ({type(exc).__name__}: {exc}).") from None
    click.echo(f"Imported from {sqlite_file} into {store.display(cfg.server.database)}: {done.keys} keys, {done.events} credit "
               f"events, {done.daily_totals} daily totals, {done.ips} client IPs (already there: left as they were).")
