"""The commands about one key: ``account``, ``balance``, ``watch``; and ``emulator``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import click

from ._context import Settings, open_session, require_key
from ._failures import PROG, interruptible
from ._log import utc_now
from ._masking import mask_keys
from ._options import below_option, interval_option, organization_option
from ._output import account_lines, balance_line

__all__ = ["account", "balance", "emulator", "watch"]

BELOW = 1  # watch --once: the balance is below --below
CHECK_FAILED = 3  # watch --once: the balance could not be read


@click.command(short_help="Show the account the key belongs to and its organizations.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@interruptible
def account(settings: Settings, *, as_json: bool) -> int:
    """Show the account the key belongs to and its organizations."""
    key = require_key(settings)

    async def work() -> list[str]:
        async with open_session(settings, key) as (session, _):
            account = await session.account()
            return account_lines(account, as_json=as_json, secrets=(key, *settings.secrets))

    lines = settings.run(work())
    for line in lines:
        click.echo(line)
    return 0


@click.command(short_help="Show the credit balance.")
@organization_option("An organization other than the default one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@interruptible
def balance(settings: Settings, *, organization: str | None, as_json: bool) -> int:
    """Show the credit balance."""
    key = require_key(settings)

    async def work() -> str:
        async with open_session(settings, key) as (session, _):
            found = await session.balance(organization=organization)
        return balance_line(found, organization, as_json=as_json)

    click.echo(settings.run(work()))
    return 0


@click.command(short_help="Poll the balance; report when it falls below a threshold.")
@below_option("Flag readings under this many credits.")
@interval_option("Seconds between polls.", at_most=86400 * 365)
@organization_option("Watch this organization instead of the default.")
@click.option(
    "--once",
    is_flag=True,
    help="Check once and exit (for cron): 0 at or above --below, 1 below it, "
    "3 when the balance could not be read.",
)
@click.pass_obj
@interruptible
def watch(
    settings: Settings,
    *,
    below: float | None,
    interval: float,
    organization: str | None,
    once: bool,
) -> int:
    """Poll the balance; report when it falls below a threshold and when it recovers.

    Each reading is a line on stdout; a failed poll is a line on stderr and the
    watch goes on (with --once, it exits 3). Stop it with Ctrl-C (exit 130).
    """
    key = require_key(settings)

    async def work() -> int:
        async with open_session(settings, key) as (session, _):
            readings = session.watch_balance(interval, below, organization)
            async with contextlib.aclosing(readings):
                async for reading in readings:
                    if reading.balance is None:
                        failed = settings.describe(reading.error or Exception(), key)
                        click.echo(f"{utc_now()}  poll failed: {failed}", err=True)
                        if once:
                            return CHECK_FAILED
                        continue
                    text = f"{utc_now()}  {reading.balance.credits:,.2f} credits"
                    if reading.crossing == "below":
                        text += f"  BELOW {below:g}"
                    elif reading.crossing == "recovered":
                        text += f"  RECOVERED (at or above {below:g})"
                    elif reading.below:
                        text += f"  (below {below:g})"
                    click.echo(text)
                    if once:
                        return BELOW if reading.below else 0
        return 0  # pragma: no cover - the watch never ends by itself

    return settings.run(work())


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
    short_help="Serve the bundled emulator of the API on loopback.",
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def emulator(ctx: click.Context, arguments: tuple[str, ...]) -> int:
    """Serve the bundled emulator (python -m stability_user.testing); --help for its options."""
    settings = ctx.find_object(Settings)
    if settings is not None and settings.emulator is not None:
        raise click.UsageError(
            "--emulator N does not apply to the emulator command: "
            "its own --accounts N sets how many demo accounts it serves",
            ctx,
        )
    for argument in arguments:
        if mask_keys(argument) != argument:  # the emulator makes its keys: it takes none
            raise click.UsageError(f"unexpected argument {argument}", ctx)
    from ..testing import __main__ as standalone  # noqa: PLC0415 - only this command needs it

    # The emulator's own command line defines its options; they are handed over as given.
    serve: Callable[..., int] = standalone.main
    return serve(list(arguments), prog=ctx.command_path, program=PROG)
