"""`antex keys …`: issue sk_live_… keys (shown once), list, revoke, quarantine, release, and set limits."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import click
import orjson

from antex.auth import hash_key, new_key, visible_prefix
from antex.cli.base import cli, load_config, one_key, run
from antex.cli.catalog import describe_limits
from antex.catalog import MAX_TOKENS_OVER, apply_overrides
from antex.store import KeyRow, Store


@cli.group()
def keys() -> None:
    """Issue and manage sk_live_… keys."""


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
        row = one_key(ref, await s.find_keys(ref))
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
        row = one_key(key, await s.find_keys(key))
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
        row = one_key(key, await s.find_keys(key))
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
    click.echo(f"Key {row.name!r} ({row.prefix}…) now: plan {plan or row.plan}, " + describe_limits(effective))
