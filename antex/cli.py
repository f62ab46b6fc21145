"""The `antex` command: serve the gateway, issue and manage keys, and read usage.

Thin: each command parses its options, calls the store or the server, and prints.
"""
from __future__ import annotations

import asyncio
import csv
import dataclasses
import logging
import os
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import click
import orjson

from antex import __version__, config as config_module, store
from antex.auth import hash_key, new_key, visible_prefix
from antex.config import LIMIT_FIELDS, MAX_TOKENS_OVER, Config, apply_overrides
from antex.credits import MICRO
from antex.store import KeyRow, Store
from antex.terminal import render_table, render_usage


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


# keys


@cli.group()
def keys() -> None:
    """Issue and manage sk_live_… keys."""


def _one_key(ref: str, rows: list[KeyRow]) -> KeyRow:
    if not rows:
        raise click.ClickException(f"No key named {ref!r} (give a name, an id or a visible prefix such as sk_live_AbCd).")
    if len(rows) > 1:
        raise click.ClickException(f"{ref!r} names {len(rows)} keys; use the name or id instead.")
    return rows[0]


@keys.command(name="create")
@click.argument("name")
@click.option("--plan", required=True, help="Plan name (see: antex plans).")
@click.option("--json", "as_json", is_flag=True, help="Print {id, name, plan, prefix, key} as JSON.")
@click.pass_context
def keys_create(ctx: click.Context, name: str, plan: str, as_json: bool) -> None:
    """Create a key; the full key is printed this once and never again."""
    cfg = load_config(ctx)
    if plan not in cfg.plans:
        raise click.ClickException(f"No plan {plan!r}. Plans: {', '.join(cfg.plans)}.")
    if not name.strip() or len(name) > 100:
        raise click.ClickException("The key name must be 1 to 100 characters.")
    if name.isdigit() or name.startswith("sk_live_") or name != name.strip() or name.endswith((".", "…")):
        # Keys are named by name, id or visible prefix: a name must not read as an id or a prefix,
        # nor carry what `keys ... REF` strips from a reference.
        raise click.ClickException("The key name must not be a number, start with sk_live_, "
                                   "or start or end with a space or a dot.")

    async def create(s: Store) -> tuple[int, str]:
        if await s.find_keys(name):
            raise click.ClickException(f"A key named {name!r} already exists.")
        while True:
            key = new_key()
            if not await s.prefix_taken(visible_prefix(key)):
                break
        return await s.insert_key(name, visible_prefix(key), hash_key(key), plan, time.time()), key

    key_id, key = run(create, cfg)
    if as_json:
        click.echo(orjson.dumps({"id": key_id, "name": name, "plan": plan, "prefix": visible_prefix(key), "key": key}))
        return
    click.echo(f"Created key {name!r} (id {key_id}, plan {plan}).")
    click.echo("Copy it now: it is shown only once.\n")
    click.echo(f"  {key}\n")


@keys.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """List keys: id, name, visible prefix, plan, status."""
    rows = run(lambda s: s.all_keys(), load_config(ctx))
    if as_json:
        for row in rows:
            click.echo(orjson.dumps(_key_json(row)))
        return
    if not rows:
        click.echo("No keys yet. Create one with: antex keys create NAME --plan PLAN")
        return
    width = max(len(r.name) for r in rows)
    click.echo(f"{'ID':>4}  {'NAME':<{width}}  {'PREFIX':<13} {'PLAN':<8} {'STATUS':<12} CREATED")
    for r in rows:
        created = datetime.fromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M")
        status = r.status + (f" ({r.status_reason})" if r.status_reason else "")
        overrides = f"  overrides: {orjson.dumps(r.limits).decode()}" if r.limits else ""
        click.echo(f"{r.id:>4}  {r.name:<{width}}  {r.prefix + '…':<13} {r.plan:<8} {status:<12} {created}{overrides}")


def _key_json(row: KeyRow) -> dict:
    return {"id": row.id, "name": row.name, "prefix": row.prefix, "plan": row.plan, "status": row.status,
            "status_reason": row.status_reason, "limits": row.limits, "created_at": row.created_at}


def _change_key(ctx: click.Context, ref: str, describe: str, **fields: Any) -> KeyRow:
    async def change(s: Store) -> KeyRow:
        row = _one_key(ref, await s.find_keys(ref))
        if fields.get("status") != "revoked":
            _not_revoked(row)
        await s.update_key(row.id, time.time(), **fields)
        return row

    row = run(change, load_config(ctx))
    click.echo(f"Key {row.name!r} ({row.prefix}…) {describe}.")
    return row


@keys.command(name="revoke")
@click.argument("key")
@click.pass_context
def keys_revoke(ctx: click.Context, key: str) -> None:
    """Revoke a key for good (a running server refuses it within a second)."""
    _change_key(ctx, key, "revoked", status="revoked", status_reason=None)


@keys.command(name="quarantine")
@click.argument("key")
@click.option("--reason", required=True, help="Why; shown to the key's user.")
@click.pass_context
def keys_quarantine(ctx: click.Context, key: str, reason: str) -> None:
    """Suspend a key until released (a running server refuses it within a second)."""
    _change_key(ctx, key, "quarantined", status="quarantined", status_reason=reason)


def _not_revoked(row: KeyRow) -> None:
    """Revocation is for good: a revoked key is never quarantined (then released) back to life."""
    if row.status == "revoked":
        raise click.ClickException(f"Key {row.name!r} is revoked for good: it cannot be quarantined or released. "
                                   "Create a new key instead.")


@keys.command(name="release")
@click.argument("key")
@click.pass_context
def keys_release(ctx: click.Context, key: str) -> None:
    """Release a quarantined key."""

    async def release(s: Store) -> KeyRow:
        row = _one_key(key, await s.find_keys(key))
        _not_revoked(row)
        await s.update_key(row.id, time.time(), status="active", status_reason=None)
        return row

    row = run(release, load_config(ctx))
    click.echo(f"Key {row.name!r} ({row.prefix}…) released.")


@keys.command(name="set")
@click.argument("key")
@click.option("--plan", help="Move the key to this plan.")
@click.option("--credits-5h", type=click.FloatRange(min=0, min_open=True), help="Override credits per 5-hour window.")
@click.option("--credits-7d", type=click.FloatRange(min=0, min_open=True), help="Override credits per 7-day window.")
@click.option("--models", help="Override allowed models: comma-separated globs.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Override the max_tokens cap.")
@click.option("--max-tokens-over", type=click.Choice(MAX_TOKENS_OVER),
              help="Override what a larger max_tokens gets: lowered to the cap, or refused.")
@click.option("--max-ips", type=click.IntRange(min=0), help="Override distinct IPs per 24 h (0 = unlimited).")
@click.option("--max-concurrent", type=click.IntRange(min=0), help="Override requests in flight (0 = unlimited).")
@click.option("--clear", "clear", is_flag=True, help="Drop every override first (back to the plan's limits).")
@click.pass_context
def keys_set(ctx: click.Context, key: str, plan: str | None, clear: bool, **limits: Any) -> None:
    """Change a key's plan or override any of its plan's limits."""
    cfg = load_config(ctx)
    if plan is not None and plan not in cfg.plans:
        raise click.ClickException(f"No plan {plan!r}. Plans: {', '.join(cfg.plans)}.")
    changes = {name: value for name, value in limits.items() if value is not None}
    if "models" in changes:
        changes["models"] = [m.strip() for m in changes["models"].split(",") if m.strip()]
    if not changes and plan is None and not clear:
        raise click.ClickException("Nothing to change: give --plan, --clear or a limit such as --credits-5h.")

    async def change(s: Store) -> KeyRow:
        row = _one_key(key, await s.find_keys(key))
        if plan is None and row.plan not in cfg.plans:
            raise click.ClickException(f"Key {row.name!r} is on plan {row.plan!r}, which the configuration does not "
                                       f"define; give --plan too. Plans: {', '.join(cfg.plans)}.")
        overrides = ({} if clear else dict(row.limits)) | changes
        fields: dict[str, Any] = {"limits": overrides}
        if plan is not None:
            fields["plan"] = plan
        await s.update_key(row.id, time.time(), **fields)
        return row

    row = run(change, cfg)
    effective = apply_overrides(cfg.plans[plan or row.plan], ({} if clear else row.limits) | changes)
    click.echo(f"Key {row.name!r} ({row.prefix}…) now: plan {plan or row.plan}, " + _describe_limits(effective))


_OVER_CAP = {"lower": "larger requests lowered to it", "refuse": "larger requests refused"}


def _describe_limits(limits) -> str:
    return (f"{limits.credits_5h:g} credits / 5 h, {limits.credits_7d:g} credits / 7 d, models {', '.join(limits.models)}, "
            f"max_tokens {limits.max_tokens} ({_OVER_CAP[limits.max_tokens_over]}), "
            f"max_ips {limits.max_ips or 'unlimited'}, max_concurrent {limits.max_concurrent or 'unlimited'}")


# catalogue


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@click.pass_context
def plans(ctx: click.Context, as_json: bool) -> None:
    """List the configured plans and their limits."""
    cfg = load_config(ctx)
    if as_json:
        click.echo(orjson.dumps({name: {f: getattr(p, f) for f in LIMIT_FIELDS} for name, p in cfg.plans.items()}))
        return
    for name, plan in cfg.plans.items():
        click.echo(f"{name}: {_describe_limits(plan)}")
        click.echo(f"  {_overshoot(plan, cfg.models.values())}")


def _overshoot(plan, models) -> str:
    """How far requests in flight can take a key on `plan` past 100 % (README: "How far past 100 %")."""
    if not plan.max_concurrent:
        return ("no concurrency cap: nothing bounds how far requests in flight when a window fills take "
                "a key past 100 % (set max_concurrent)")
    def most_output(model) -> int:  # the plan's cap, or the model's own limit when that is lower
        return min(plan.max_tokens, model.max_output_tokens or plan.max_tokens)

    priciest = max((m for m in models if plan.allows(m.id)), key=lambda m: most_output(m) * m.rates.output, default=None)
    if priciest is None:
        return f"past 100 %: at most {plan.max_concurrent} requests in flight (the plan allows no configured model)"
    tokens = most_output(priciest)
    output = tokens * priciest.rates.output / 1_000_000
    share = 100 * plan.max_concurrent * output / plan.credits_5h
    return (f"past 100 %: at most {plan.max_concurrent} requests in flight, each up to {output:g} credits of "
            f"output ({tokens} tokens of {priciest.id}) plus its input: {plan.max_concurrent * output:g} "
            f"credits, {share:.0f} % of the 5-hour window, before input")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List the models served, their aliases, output limits, and credit rates per million tokens and
    per server-tool use."""
    cfg = load_config(ctx)
    if as_json:
        click.echo(orjson.dumps([{"id": m.id, "display_name": m.display_name, "tier": m.tier, "aliases": m.aliases,
                                  "max_output_tokens": m.max_output_tokens, "rates": m.rates.__dict__}
                                 for m in cfg.models.values()]))
        return
    for m in cfg.models.values():
        r = m.rates
        aliases = f" (aliases: {', '.join(m.aliases)})" if m.aliases else ""
        limit = f"max output {m.max_output_tokens} tokens" if m.max_output_tokens else "max output unknown"
        click.echo(f"{m.id:<20} {m.tier:<7} {m.display_name}{aliases}, {limit}\n"
                   f"{'':<20} credits/MTok: input {r.input:g}, output {r.output:g}, cache write 5m {r.cache_write_5m:g}, "
                   f"1h {r.cache_write_1h:g}, cache read {r.cache_read:g}\n"
                   f"{'':<20} credits/use: web search {r.web_search:g}, web fetch {r.web_fetch:g}")


# usage and events


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
@click.argument("key", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the same body as GET /v1/usage.")
@click.option("--remote", envvar="ANTEX_BASE_URL", help="Read /v1/usage from a running gateway at this URL (env ANTEX_BASE_URL).")
@click.option("--key", "api_key", envvar="ANTEX_API_KEY", help="Your sk_live_… key, with --remote (env ANTEX_API_KEY).")
@click.option("--watch", is_flag=True, help="Redraw every few seconds until interrupted.")
@click.option("--interval", default=5.0, type=click.FloatRange(min=0.5), show_default=True, help="Seconds between redraws with --watch.")
@click.pass_context
def usage(ctx: click.Context, key: str | None, as_json: bool, remote: str | None, api_key: str | None,
          watch: bool, interval: float) -> None:
    """Show each key's 5-hour and weekly windows: percent used and when capacity frees up."""
    from antex import usage_source

    colour = sys.stdout.isatty() and not as_json and "NO_COLOR" not in os.environ
    if remote:
        if key and not api_key and key.startswith("sk_live_"):
            api_key, key = key, None  # `antex usage --remote URL sk_live_…`: the key itself, given as KEY
        if key:
            raise click.ClickException(f"With --remote the gateway shows the key given with --key; {key!r} would "
                                       f"only name a key in the local database. Drop it, or drop --remote.")
        if not api_key:
            raise click.ClickException("--remote needs --key (or ANTEX_API_KEY) with your sk_live_… key.")
        fetch = lambda: ([usage_source.remote(remote, api_key)], [])  # noqa: E731
    else:
        cfg = load_config(ctx)
        fetch = lambda: run(lambda s: usage_source.local(s, cfg, key, time.time()), cfg)  # noqa: E731
    try:
        while True:
            click.echo(_draw(fetch, key=key, remote=remote, as_json=as_json, colour=colour, clear=watch and colour))
            if not watch:
                return
            time.sleep(interval)
    except KeyboardInterrupt:  # the way out of --watch: end quietly, never a traceback
        return


def _draw(fetch, *, key: str | None, remote: str | None, as_json: bool, colour: bool, clear: bool) -> str:
    """One screenful of usage: JSON lines, one key's bars, or the table of every key."""
    from antex import usage_source

    try:
        bodies, warnings = fetch()
    except usage_source.UsageError as exc:
        raise click.ClickException(str(exc)) from None
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    if as_json:
        output = "\n".join(orjson.dumps(b).decode() for b in bodies)
    elif key or remote:
        output = "\n\n".join(render_usage(b, colour=colour) for b in bodies)
    elif bodies or not warnings:  # with only warnings, they say it all: "no keys yet" would not be true
        output = render_table(bodies, colour=colour)
    else:
        output = ""
    return ("\x1b[2J\x1b[H" if clear else "") + output


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: float) -> float:
    """'24h', '7d', '30m', a unix time, or an ISO date/time (UTC unless it says otherwise)."""
    value = value.strip()
    match = _RELATIVE.match(value)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: use 24h, 7d, a unix time or an ISO date such as 2026-11-01") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


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
    if retention is not None and (problem := config_module.check_events_retention(retention)):
        raise click.BadParameter(f"{retention!r} {problem}", param_hint="--retention")
    keep_s = cfg.events.retention_s if retention is None else config_module.duration_s(retention)
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


@cli.command()
@click.option("--key", "key_ref", help="Only this key (name, id or visible prefix).")
@click.option("--since", help="Only events after this: 24h, 7d, a unix time or an ISO date.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of CSV.")
@click.pass_context
def events(ctx: click.Context, key_ref: str | None, since: str | None, as_json: bool) -> None:
    """Export credit events (one per metered request) as CSV, or JSON lines."""
    cfg = load_config(ctx)
    since_ts = parse_since(since, time.time()) if since else None
    columns = ["id", "time", "key_name", "key_id", "model", "endpoint", "input_tokens", "output_tokens",
               "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens", "web_search_requests",
               "web_fetch_requests", "credits", "request_id", "outcome",
               "upstream", "requests"]

    async def export(s: Store) -> None:
        key_id = _one_key(key_ref, await s.find_keys(key_ref)).id if key_ref else None
        writer = None if as_json else csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        if writer:
            writer.writeheader()
        async for event in s.iter_events(key_id, since_ts):
            event["time"] = datetime.fromtimestamp(event["ts"], timezone.utc).isoformat(timespec="milliseconds")
            event["credits"] = event.pop("micro_credits") / MICRO
            row = {name: event[name] for name in columns}
            if writer:
                writer.writerow(row)
            else:
                sys.stdout.write(orjson.dumps(row).decode() + "\n")
        sys.stdout.flush()

    run(export, cfg)


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
