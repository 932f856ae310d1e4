"""The ``stability-user`` command group: the global options, and running a command line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import click
from yarl import URL

from .._checks import check_base_url
from .._endpoints import API_VERSIONS, DEFAULT_API_VERSION
from .._errors import StabilityError
from .._ratelimit import RateLimit
from .._secrets import mask_url
from .._version import __version__
from . import INTERRUPTED
from ._balances import balances
from ._context import Settings, load_ca_bundle
from ._exporter import exporter
from ._failures import PROG, Interrupted, usage_line
from ._log import install_log_handler
from ._options import seconds
from ._single import account, balance, emulator, watch

__all__ = ["cli", "run"]

_DEFAULT_LIMIT = RateLimit()
_STORE_HELP = (
    "Where the rate limit's state is kept: 'local' (every stability-user run and "
    "program of yours on this machine shares the window), 'memory' (this run only) "
    "or a redis:// URL (a fleet) [env: STABILITY_RATE_LIMIT_STORE; default local]."
)


def _rate_limit(ctx: click.Context, param: click.Parameter, value: str | None) -> RateLimit:
    if value is None:
        return _DEFAULT_LIMIT
    try:
        return RateLimit.parse(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None


def _base_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        check_base_url(value)  # the library's own check, when the option is read
    except StabilityError as error:
        raise click.BadParameter(str(error).removeprefix("base_url "), ctx, param) from None
    return value


def _url_problem(value: str, schemes: tuple[str, ...], what: str) -> str | None:
    """What is wrong with ``value`` as a URL of one of ``schemes``; its password masked."""
    shown = mask_url(value)
    try:
        url = URL(value)
    except ValueError as error:
        reason = str(error).removeprefix("Invalid URL: ")
        return f"{shown!r} is not a valid URL ({reason[:1].lower()}{reason[1:]})"
    if url.scheme not in schemes:
        return f"must be {what}, got {shown!r}"
    if not (url.host if url.scheme != "unix" else url.path.strip("/")):
        return f"{shown!r} names no {'host' if url.scheme != 'unix' else 'socket'}"
    return None


_STORE_SCHEMES: Final = ("redis", "rediss", "unix")


def _store(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value in ("memory", "local"):
        return value
    problem = _url_problem(value, _STORE_SCHEMES, "memory, local or a redis:// URL")
    if problem is not None:
        raise click.BadParameter(problem, ctx, param)
    return value


def _proxy(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    problem = _url_problem(value, ("http", "https"), "an http:// URL")
    if problem is not None:
        raise click.BadParameter(problem, ctx, param)
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
@click.option(
    "--key-file",
    metavar="FILE",
    help="Read the API key from this file's first line (else STABILITY_API_KEY).",
)
@click.option(
    "--base-url",
    envvar="STABILITY_API_HOST",
    metavar="URL",
    callback=_base_url,
    help="The service's base URL [env: STABILITY_API_HOST; default https://api.stability.ai].",
)
@click.option(
    "--api-version",
    envvar="STABILITY_API_VERSION",
    type=click.Choice(API_VERSIONS),
    default=DEFAULT_API_VERSION,
    help=f"The API's paths [env: STABILITY_API_VERSION; default {DEFAULT_API_VERSION}].",
)
@click.option(
    "--timeout",
    type=float,
    metavar="SECONDS",
    callback=seconds,
    default=30.0,
    show_default=True,
    help="Seconds per attempt.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Attempts per call, the first included.",
)
@click.option(
    "--rate-limit",
    envvar="STABILITY_RATE_LIMIT",
    metavar="REQUESTS/SECONDS",
    callback=_rate_limit,
    help=(
        "Requests per key per window; calls wait for a free slot "
        f"[env: STABILITY_RATE_LIMIT; default {_DEFAULT_LIMIT.requests}/"
        f"{_DEFAULT_LIMIT.window:g}, the service's limit]."
    ),
)
@click.option(
    "--rate-limit-store",
    envvar="STABILITY_RATE_LIMIT_STORE",
    metavar="memory|local|URL",
    default="local",
    callback=_store,
    help=_STORE_HELP,
)
@click.option(
    "--proxy",
    envvar="STABILITY_PROXY",
    metavar="URL",
    callback=_proxy,
    help="An http:// proxy for every request [env: STABILITY_PROXY; else HTTPS_PROXY, NO_PROXY].",
)
@click.option(
    "--ca-bundle",
    envvar="STABILITY_CA_BUNDLE",
    metavar="FILE",
    help="Also trust the CA certificates of this PEM file, e.g. a TLS-inspecting "
    "proxy's [env: STABILITY_CA_BUNDLE].",
)
@click.option(
    "--emulator",
    type=click.IntRange(min=1),
    metavar="N",
    help="Serve N demo accounts in-process and use them: no key, no network.",
)
@click.option("--debug", is_flag=True, help="Show retries, each request, and tracebacks.")
@click.pass_context
def cli(ctx: click.Context, /, **values: Any) -> None:
    """Check Stability AI accounts and credit balances.

    Rows go to stdout; progress, warnings, summaries and errors to stderr.

    Exit codes: 0 success, or a server (`exporter`, `emulator`) stopped; 1 a failed
    call, a failed target of `balances`, a balance below --below with `watch --once`,
    an address a server cannot listen on, or an extra not installed; 2 a usage error
    (no key, a bad option, an unreadable file); 3 `watch --once` could not read the
    balance; 130 interrupted.
    """
    ca_bundle = values["ca_bundle"]
    ctx.obj = Settings(
        key_file=values["key_file"],
        base_url=values["base_url"],
        api_version=values["api_version"],
        timeout=values["timeout"],
        max_attempts=values["max_attempts"],
        rate_limit=values["rate_limit"],
        rate_limit_store=values["rate_limit_store"],
        proxy=values["proxy"],
        ssl_context=load_ca_bundle(ca_bundle) if ca_bundle else None,
        emulator=values["emulator"],
        debug=values["debug"],
    )
    ctx.call_on_close(install_log_handler(debug=values["debug"]))


for _command in (account, balance, balances, watch, emulator, exporter):
    cli.add_command(_command)


# click 8.2 and later answer a bare command with its help, as an error (exit 2).
_SHOWS_HELP: Final = tuple(
    getattr(click.exceptions, name)
    for name in ("NoArgsIsHelpError",)
    if hasattr(click.exceptions, name)
)


def _show(error: click.ClickException) -> int:
    if isinstance(error, click.UsageError) and not isinstance(error, _SHOWS_HELP):
        click.echo(f"{PROG}: error: {usage_line(error)}", err=True)
    else:
        error.show()
    return error.exit_code


def run(argv: Sequence[str] | None) -> int:
    """Run one command line and return its exit code."""
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name=PROG,
            standalone_mode=False,
        )
    except (Interrupted, click.exceptions.Abort):
        click.echo(f"{PROG}: interrupted", err=True)
        return INTERRUPTED
    except click.ClickException as error:
        return _show(error)
    except BrokenPipeError:
        return 1
    if isinstance(code, int):
        return code
    return 0
