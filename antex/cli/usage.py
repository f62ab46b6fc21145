"""`antex usage` and `antex events`: each key's two windows, and the credit events behind them."""
from __future__ import annotations

import csv
import os
import re
import sys
import time
from datetime import datetime, timezone

import click
import orjson

from antex.cli.base import cli, load_config, one_key, run
from antex.credits import MICRO
from antex.store import Store
from antex.terminal import render_table, render_usage


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
        key_id = one_key(key_ref, await s.find_keys(key_ref)).id if key_ref else None
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
