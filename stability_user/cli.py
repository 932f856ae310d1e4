"""The ``stability-user`` command line; it needs the extra: ``pip install stability-user[cli]``.

Keys come from ``STABILITY_API_KEY`` or a file, never from the command line
itself (arguments leak into shell history and ``ps``), and any key printed is
masked. Errors are one line on stderr; ``--debug`` shows the traceback.

Exit codes: 0 success, 1 a failed call (or a balance below ``--below`` with
``watch --once``, or any failed target of ``balances``), 2 a usage error.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime
import io
import itertools
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import IO, Any, NoReturn, TextIO, TypeVar

try:
    import click
    from tqdm import tqdm
except ImportError as exc:  # pragma: no cover - only without the cli extra
    raise SystemExit(
        "stability-user's command line needs its extra: pip install 'stability-user[cli]'"
    ) from exc

from ._bulk import BalanceResult, BalanceTarget
from ._errors import AuthenticationError, StabilityError
from ._retry import RetryPolicy
from ._secrets import mask_secret
from ._session import StabilitySession
from ._version import __version__
from .testing import StabilityEmulator

__all__ = ["main"]

T = TypeVar("T")

_BATCH = 1000  # target lines read per trip to the reader thread


class _Options:
    """What the global options said, handed to every command."""

    def __init__(self, **values: Any) -> None:
        self.key_file: IO[str] | None = values["key_file"]
        self.base_url: str | None = values["base_url"]
        self.api_version: str | None = values["api_version"]
        self.timeout: float = values["timeout"]
        self.max_attempts: int = values["max_attempts"]
        self.emulator: int | None = values["emulator"]
        self.debug: bool = values["debug"]


def _fail(message: str) -> NoReturn:
    click.echo(f"stability-user: error: {message}", err=True)
    raise SystemExit(1)


def _hint(error: Exception) -> str:
    if isinstance(error, AuthenticationError):
        return f"{error} (check STABILITY_API_KEY or --key-file)"
    return str(error)


def _run(options: _Options, work: Callable[[_Options], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` in a fresh event loop; errors become one line unless ``--debug``."""
    try:
        return asyncio.run(work(options))
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None
    except (StabilityError, ValueError, OSError) as error:
        if options.debug:
            raise
        _fail(_hint(error))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _read_key(options: _Options) -> str | None:
    if options.key_file is not None:
        key = options.key_file.readline().strip()
        if not key:
            raise click.UsageError(f"{options.key_file.name} holds no API key on its first line")
        return key
    return os.environ.get("STABILITY_API_KEY") or None


@contextlib.asynccontextmanager
async def _session(
    options: _Options, *, require_key: bool = True
) -> AsyncIterator[tuple[StabilitySession, list[BalanceTarget]]]:
    """A session per the options; with ``--emulator N``, on N in-process demo accounts."""
    retry = RetryPolicy(max_attempts=options.max_attempts)
    common: dict[str, Any] = {
        "api_version": options.api_version,
        "timeout": options.timeout,
        "retry": retry,
    }
    if options.emulator is None:
        key = _read_key(options)
        if key is None and require_key:
            raise StabilityError("no API key: set STABILITY_API_KEY or pass --key-file")
        async with StabilitySession(key, base_url=options.base_url, **common) as session:
            yield session, []
        return
    async with StabilityEmulator() as emulator:
        targets = []
        for number in range(1, options.emulator + 1):
            # A spread of balances, a few of them low, so the summary has something to say.
            credits = round((number * 37.5) % 250 + (number % 7) * 0.25, 2)
            key = emulator.add_account(email=f"demo-{number}@example.com", credits=credits)
            targets.append(BalanceTarget(api_key=key, label=f"demo-{number}"))
        first_key = targets[0].api_key if targets else None
        async with StabilitySession(first_key, base_url=emulator.base_url, **common) as session:
            yield session, targets


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stability-user")
@click.option(
    "--key-file",
    type=click.File("r"),
    help="Read the API key from this file's first line (else STABILITY_API_KEY).",
)
@click.option(
    "--base-url",
    envvar="STABILITY_API_HOST",
    help="The service's base URL [env: STABILITY_API_HOST; default https://api.stability.ai].",
)
@click.option(
    "--api-version",
    envvar="STABILITY_API_VERSION",
    type=click.Choice(["v1alpha", "v1"]),
    help="The API's paths [env: STABILITY_API_VERSION; default v1alpha].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
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
    "--emulator",
    type=click.IntRange(min=1),
    metavar="N",
    help="Serve N demo accounts in-process and use them: no key, no network.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, /, **values: Any) -> None:
    """Check Stability AI accounts and credit balances."""
    ctx.obj = _Options(**values)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def account(options: _Options, *, as_json: bool) -> None:
    """Show the account the key belongs to and its organizations."""

    async def work(options: _Options) -> None:
        async with _session(options) as (session, _):
            found = await session.account()
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "id": found.id,
                        "email": found.email,
                        "profile_picture": found.profile_picture,
                        "organizations": [
                            {"id": o.id, "name": o.name, "role": o.role, "is_default": o.is_default}
                            for o in found.organizations
                        ],
                    },
                    indent=2,
                )
            )
            return
        click.echo(f"{found.email} ({found.id})")
        for org in found.organizations:
            default = "  (default)" if org.is_default else ""
            click.echo(f"  {org.id}  {org.name}  [{org.role}]{default}")

    _run(options, work)


@cli.command()
@click.option("--organization", "-o", help="An organization other than the default one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def balance(options: _Options, *, organization: str | None, as_json: bool) -> None:
    """Show the credit balance."""

    async def work(options: _Options) -> None:
        async with _session(options) as (session, _):
            found = await session.balance(organization=organization)
        if as_json:
            click.echo(json.dumps({"organization": organization, "credits": found.credits}))
        else:
            click.echo(f"{found.credits:,.2f} credits")

    _run(options, work)


class _TargetParser:
    """Reads target lines of a bulk check.

    A line is ``key``, ``key,organization`` or ``key,organization,label``; or the
    file is CSV whose first line is a header naming ``api_key``, ``organization``, ``label``.

    Blank lines and lines starting with ``#`` are skipped. Fed a batch at a time,
    so a file of any length is read in bounded memory.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.line_number = 0
        self.columns: dict[str, int] | None = None
        self.seen_first = False

    def _column(self, fields: list[str], *names: str) -> str | None:
        assert self.columns is not None  # noqa: S101 - only called in header mode
        for name in names:
            index = self.columns.get(name)
            if index is not None and index < len(fields) and fields[index]:
                return fields[index]
        return None

    def feed(self, lines: Sequence[str]) -> list[BalanceTarget]:
        """The targets in ``lines``.

        Raises:
            click.UsageError: naming the file and line of a malformed target.
        """
        targets = []
        for line in lines:
            self.line_number += 1
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = [field.strip() for field in next(csv.reader([line]))]
            if not self.seen_first:
                self.seen_first = True
                if {"api_key", "key"} & {field.lower() for field in fields}:
                    self.columns = {field.lower(): n for n, field in enumerate(fields)}
                    continue
            if self.columns is not None:
                key = self._column(fields, "api_key", "key")
                organization = self._column(fields, "organization", "org")
                label = self._column(fields, "label", "name")
            elif len(fields) > 3:
                raise click.UsageError(
                    f"{self.name}:{self.line_number}: expected key[,organization[,label]]"
                )
            else:
                key, organization, label = [*fields, "", ""][:3]
            if not key:
                raise click.UsageError(f"{self.name}:{self.line_number}: no API key")
            targets.append(
                BalanceTarget(api_key=key, organization=organization or None, label=label or None)
            )
        return targets


async def _read_targets(stream: TextIO) -> AsyncIterator[BalanceTarget]:
    """Read targets lazily, a batch of lines at a time in a thread: stdin never blocks the loop."""
    parser = _TargetParser(getattr(stream, "name", "-"))
    while True:
        batch = await asyncio.to_thread(lambda: list(itertools.islice(stream, _BATCH)))
        if not batch:
            return
        for target in parser.feed(batch):
            yield target


def _row(result: BalanceResult, below: float | None) -> dict[str, Any]:
    target = result.target
    error = result.error
    return {
        "index": result.index,
        "label": target.label,
        "key": mask_secret(target.api_key) if target.api_key else None,
        "organization": target.organization,
        "credits": result.balance.credits if result.balance else None,
        "ok": result.ok,
        "low": _is_low(result, below),
        "error_type": type(error).__name__ if error else None,
        "error": str(error) if error else None,
    }


_CSV_FIELDS = (
    "index",
    "label",
    "key",
    "organization",
    "credits",
    "ok",
    "low",
    "error_type",
    "error",
)


def _formatter(fmt: str, below: float | None) -> Callable[[BalanceResult], str]:
    if fmt == "json":
        return lambda result: json.dumps(_row(result, below))
    if fmt == "csv":

        def as_csv(result: BalanceResult) -> str:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, _CSV_FIELDS, lineterminator="")
            writer.writerow(_row(result, below))
            return buffer.getvalue()

        return as_csv

    def as_table(result: BalanceResult) -> str:
        target = result.target
        lead = f"{target.display_name:<24} {target.organization or '(default)':<16}"
        if result.balance is None:
            return f"{lead} {'-':>14}  {type(result.error).__name__}: {result.error}"
        status = "LOW" if _is_low(result, below) else "ok"
        return f"{lead} {result.balance.credits:>14,.2f}  {status}"

    return as_table


def _is_low(result: BalanceResult, below: float | None) -> bool:
    return below is not None and result.balance is not None and result.balance.credits < below


@cli.command()
@click.argument("source", type=click.File("r"), required=False)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Checks in flight at once.",
)
@click.option("--ordered", is_flag=True, help="Print results in input order.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Output format (json: one object per line).",
)
@click.option("--below", type=float, help="Flag balances under this many credits as LOW.")
@click.pass_obj
def balances(
    options: _Options,
    *,
    source: TextIO | None,
    concurrency: int,
    ordered: bool,
    fmt: str,
    below: float | None,
) -> None:
    """Check many balances: one target per line of SOURCE (a file, or - for stdin).

    A line is KEY, KEY,ORGANIZATION or KEY,ORGANIZATION,LABEL; a CSV file with a
    header row (api_key,organization,label) works too. With --emulator and no
    SOURCE, the emulator's demo accounts are checked.
    """
    if source is None and options.emulator is None:
        raise click.UsageError("give a file of targets, or - to read them from stdin")
    render = _formatter(fmt, below)

    async def work(options: _Options) -> tuple[int, int, int, float]:
        checked = failed = low = 0
        total = 0.0
        async with _session(options, require_key=False) as (session, demo_targets):
            targets: Any = _read_targets(source) if source is not None else demo_targets
            if fmt == "csv":
                click.echo(",".join(_CSV_FIELDS))
            elif fmt == "table":
                click.echo(f"{'TARGET':<24} {'ORGANIZATION':<16} {'CREDITS':>14}  STATUS")
            interactive = sys.stderr.isatty()
            with tqdm(
                total=len(demo_targets) if source is None else None,
                unit=" checks",
                file=sys.stderr,
                disable=not interactive,
                leave=False,
            ) as progress:
                results = session.balances(targets, concurrency=concurrency, ordered=ordered)
                async with contextlib.aclosing(results):
                    async for result in results:
                        checked += 1
                        if result.balance is not None:
                            total += result.balance.credits
                            low += _is_low(result, below)
                        else:
                            failed += 1
                        line = render(result)
                        if interactive:
                            tqdm.write(line, file=sys.stdout)
                        else:
                            click.echo(line)
                        progress.update(1)
        return checked, failed, low, total

    checked, failed, low, total = _run(options, work)
    summary = f"checked {checked}, failed {failed}, total credits {total:,.2f}"
    if below is not None:
        summary += f", {low} below {below:g}"
    click.echo(summary, err=True)
    if failed:
        raise SystemExit(1)


@cli.command()
@click.option("--below", type=float, help="Flag readings under this many credits.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds between polls.",
)
@click.option("--organization", "-o", help="Watch this organization instead of the default.")
@click.option("--once", is_flag=True, help="Check once; exit 1 when below --below (for cron).")
@click.pass_obj
def watch(
    options: _Options, *, below: float | None, interval: float, organization: str | None, once: bool
) -> None:
    """Poll the balance and report when it falls below a threshold and recovers."""

    async def work(options: _Options) -> bool:
        async with _session(options) as (session, _):
            readings = session.watch_balance(interval, below, organization)
            async with contextlib.aclosing(readings):
                async for reading in readings:
                    now = datetime.datetime.now(datetime.timezone.utc).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    )
                    if reading.balance is None:
                        click.echo(
                            f"{now}  poll failed: {_hint(reading.error or Exception())}", err=True
                        )
                        if once:
                            raise SystemExit(1)
                        continue
                    text = f"{now}  {reading.balance.credits:,.2f} credits"
                    if reading.crossing == "below":
                        text += f"  BELOW {below:g}"
                    elif reading.crossing == "recovered":
                        text += f"  RECOVERED (at or above {below:g})"
                    elif reading.below:
                        text += f"  (below {below:g})"
                    click.echo(text)
                    if once:
                        return bool(reading.below)
        return False  # pragma: no cover - the watch never ends by itself

    if _run(options, work):
        raise SystemExit(1)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address.")
@click.option("--port", type=int, default=8700, show_default=True, help="Port; 0 picks one.")
@click.option(
    "--accounts",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Demo accounts to create.",
)
@click.option(
    "--credits", type=float, default=100.0, show_default=True, help="Credits of each demo account."
)
@click.option("--no-rate-limit", is_flag=True, help="Turn the 150 per 10 s limit off.")
@click.option("--retire-v1alpha", is_flag=True, help="Answer the v1alpha paths with 404.")
def emulator(**values: Any) -> None:
    """Serve the bundled emulator (same as python -m stability_user.testing)."""
    from .testing.__main__ import main as serve  # noqa: PLC0415 - only this command needs it

    args = [
        "--host",
        values["host"],
        "--port",
        str(values["port"]),
        "--accounts",
        str(values["accounts"]),
        "--credits",
        str(values["credits"]),
    ]
    args += ["--no-rate-limit"] if values["no_rate_limit"] else []
    args += ["--retire-v1alpha"] if values["retire_v1alpha"] else []
    raise SystemExit(serve(args))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (the ``stability-user`` console script)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="stability-user")


if __name__ == "__main__":
    main()
