"""`antex plans` and `antex models`: what the configuration offers, with each plan's overshoot bound."""
from __future__ import annotations

import click
import orjson

from antex.cli.base import cli, load_config
from antex.catalog import LIMIT_FIELDS

_OVER_CAP = {"lower": "larger requests lowered to it", "refuse": "larger requests refused"}


def describe_limits(limits) -> str:
    """A plan's or a key's limits on one line (antex plans, antex keys list and set)."""
    return (f"{limits.credits_5h:g} credits / 5 h, {limits.credits_7d:g} credits / 7 d, models {', '.join(limits.models)}, "
            f"max_tokens {limits.max_tokens} ({_OVER_CAP[limits.max_tokens_over]}), "
            f"max_ips {limits.max_ips or 'unlimited'}, max_concurrent {limits.max_concurrent or 'unlimited'}")


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
        click.echo(f"{name}: {describe_limits(plan)}")
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
