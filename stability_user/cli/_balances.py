"""``stability-user balances``: many targets, rows on stdout, a summary on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Final

import click

from .._bulk import BalanceTarget
from .._targets import TargetFileError, read_targets
from ._context import Settings, open_session, optional_key
from ._failures import Interrupted, UsageFailure, interruptible, run_async
from ._output import FORMATS, Tally, formatter, header
from ._progress import Progress
from ._single import finite

__all__ = ["balances"]

INTERRUPTED: Final = 130
_BATCH: Final = 256  # targets read from stdin per hand-over from the reader thread


def _count(path: str) -> int:
    """Read the whole file once, lines only, so a bad line stops the run before any call."""
    try:
        return sum(1 for _ in read_targets(path))
    except TargetFileError as error:
        raise UsageFailure(str(error)) from None
    except OSError as error:
        raise UsageFailure(
            f"cannot read {path}: {(error.strerror or str(error)).lower()}"
        ) from None


async def _from_thread(targets: Iterator[BalanceTarget]) -> AsyncIterator[BalanceTarget]:
    """Targets read by a daemon thread, so a slow stdin never blocks the event loop.

    A daemon thread rather than the loop's executor: a read blocked on a terminal
    or an idle pipe must not keep Ctrl-C from ending the program.
    """
    loop = asyncio.get_running_loop()
    batches: asyncio.Queue[list[BalanceTarget] | BaseException | None] = asyncio.Queue(2)

    def pump() -> None:
        try:
            while batch := list(itertools.islice(targets, _BATCH)):
                asyncio.run_coroutine_threadsafe(batches.put(batch), loop).result()
            item: BaseException | None = None
        except Exception as error:  # noqa: BLE001 - handed to the event loop, raised there
            item = error
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            asyncio.run_coroutine_threadsafe(batches.put(item), loop).result()

    threading.Thread(target=pump, name="stability-user targets", daemon=True).start()
    while True:
        got = await batches.get()
        if got is None:
            return
        if isinstance(got, BaseException):
            raise got
        for target in got:
            yield target


@click.command()
@click.argument("source", required=False, metavar="[FILE|-]")
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1, max=10_000),
    default=32,
    show_default=True,
    help="Checks in flight at once.",
)
@click.option("--ordered", is_flag=True, help="Print results in input order.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Rows on stdout: a table, JSON (one object per line) or CSV (with a header).",
)
@click.option(
    "--below", type=float, callback=finite, help="Flag balances under this many credits as LOW."
)
@click.option(
    "--summary",
    type=click.Choice(["text", "json", "none"]),
    default="text",
    show_default=True,
    help="The summary on stderr after the rows: a line, one JSON object, or nothing.",
)
@click.pass_obj
@interruptible
def balances(
    settings: Settings,
    *,
    source: str | None,
    concurrency: int,
    ordered: bool,
    fmt: str,
    below: float | None,
    summary: str,
) -> int:
    """Check many balances: one target per line of FILE, or of stdin with -.

    A line is KEY, KEY,ORGANIZATION or KEY,ORGANIZATION,LABEL; a CSV file whose
    header names api_key (or key), organization (or org) and label (or name) works
    too; blank lines and # comments are skipped. A FILE is read through once
    first: a bad line anywhere stops the run (exit 2) before any call. With
    --emulator and no FILE, the emulator's demo accounts are checked.

    Rows go to stdout, the summary to stderr. Exit 0 when every check succeeded,
    1 when any failed, 2 for a bad or empty FILE, 130 when interrupted.
    """
    if source is None and settings.emulator is None:
        raise click.UsageError("give a FILE of targets, or - to read them from stdin")
    total = None
    if source not in (None, "-"):
        total = _count(source)
        if total == 0:
            raise UsageFailure(f"no targets in {source}: it holds only blank lines and comments")
    key = optional_key(settings)
    progress = Progress(total if source is not None else settings.emulator)
    tally = Tally(total if source is not None else settings.emulator, below)
    render = formatter(fmt, below)

    async def work() -> None:
        async with open_session(settings, key, on_wait=progress.waiting) as (session, demo):
            targets: Iterable[BalanceTarget] | AsyncIterator[BalanceTarget]
            if source is None:
                targets = demo
            elif source == "-":
                targets = _from_thread(read_targets(sys.stdin.buffer, name="stdin"))
            else:
                targets = read_targets(source)
            first = header(fmt)
            if first is not None:
                click.echo(first)
            results = session.balances(targets, concurrency=concurrency, ordered=ordered)
            async with progress.ticking(), contextlib.aclosing(results):
                async for result in results:
                    tally.add(result)
                    progress.row(render(result))

    interrupted = False
    try:
        run_async(
            work(), debug=settings.debug, api_version=settings.api_version, secrets=settings.secrets
        )
    except Interrupted:
        interrupted = True
    finally:
        progress.close()
    if tally.checked == 0 and not interrupted and source == "-":
        raise UsageFailure("no targets on stdin")
    if summary == "json":
        click.echo(tally.json(interrupted=interrupted), err=True)
    elif summary == "text":
        click.echo(tally.text(interrupted=interrupted), err=True)
    if interrupted:
        return INTERRUPTED
    return 1 if tally.failed else 0
