"""``stability-user balances``: many targets, rows on stdout, a summary on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import BinaryIO, Final, TypeVar

import click

from .._bulk import BalanceTarget
from . import INTERRUPTED
from ._context import Settings, open_session, optional_key
from ._failures import Interrupted, UsageFailure, interruptible
from ._options import below_option, concurrency_option
from ._output import FORMATS, Tally, formatter, header
from ._progress import Progress
from ._target_lines import LineBook, numbered_targets, read_target_file

__all__ = ["balances"]

T = TypeVar("T")

_AHEAD: Final = 1024  # targets read from stdin ahead of the checks, at most


async def _from_stdin() -> AsyncIterator[tuple[int, BalanceTarget]]:
    """The targets of standard input, numbered by line, read by a daemon thread as they come.

    Each target is handed over as soon as its line is read: a line typed, or
    written by a slow producer, is checked at once, not when more lines come.
    A daemon thread rather than the loop's executor, so that a read blocked on a
    terminal or an idle pipe never keeps Ctrl-C from ending the program; and on a
    file object of its own (a duplicate of the descriptor), not ``sys.stdin``,
    whose lock the interpreter would wait for at exit while the thread reads.
    """
    stream = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    async for numbered in _from_thread(stream, numbered_targets(stream, name="stdin")):
        yield numbered


async def _from_thread(stream: BinaryIO, targets: Iterator[T]) -> AsyncIterator[T]:
    """``targets``, read from ``stream`` by a daemon thread; it closes ``stream`` when done."""
    loop = asyncio.get_running_loop()
    read: asyncio.Queue[T | BaseException | None] = asyncio.Queue()
    room = threading.Semaphore(_AHEAD)  # the reader waits when this many are not taken yet

    def hand_over(item: T | BaseException | None) -> bool:
        try:
            loop.call_soon_threadsafe(read.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening
            return False
        return True

    def pump() -> None:
        with stream:
            try:
                for target in targets:
                    room.acquire()
                    if not hand_over(target):
                        return
                item: BaseException | None = None
            except Exception as error:  # noqa: BLE001 - handed to the event loop, raised there
                item = error
        hand_over(item)

    threading.Thread(target=pump, name="stability-user targets", daemon=True).start()
    while True:
        got = await read.get()
        if got is None:
            return
        if isinstance(got, BaseException):
            raise got
        room.release()
        yield got


@click.command(short_help="Check many balances, from a file of targets or stdin.")
@click.argument("source", required=False, metavar="[FILE|-]")
@concurrency_option("Checks in flight at once.")
@click.option("--ordered", is_flag=True, help="Print results in input order.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Rows on stdout: a table, JSON (one object per line) or CSV (with a header).",
)
@below_option("Flag balances under this many credits as LOW.")
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
        raise click.UsageError(
            "give a FILE of targets, or - to read them from stdin", click.get_current_context()
        )
    total = None
    if source not in (None, "-"):
        # The whole file once, lines only, so a bad line stops the run before any call.
        total = sum(1 for _ in read_target_file(source))
    key = optional_key(settings)
    progress = Progress(total if source is not None else settings.emulator)
    tally = Tally(total if source is not None else settings.emulator, below)
    render = formatter(fmt, below, lines=source is not None)
    lines = LineBook()  # each row names its target's line: a label may be missing

    async def work() -> None:
        async with open_session(settings, key, on_wait=progress.waiting) as (session, demo):
            targets: Iterable[BalanceTarget] | AsyncIterator[BalanceTarget]
            if source is None:
                targets = demo
            elif source == "-":
                targets = lines.follow_async(_from_stdin())
            else:
                targets = lines.follow(numbered_targets(source))
            # Printed with the first row: no rows, no header.
            first = header(fmt, lines=source is not None)
            results = session.balances(targets, concurrency=concurrency, ordered=ordered)
            async with progress.ticking(), contextlib.aclosing(results):
                async for result in results:
                    if first is not None:
                        progress.line(first)
                        first = None
                    tally.add(result)
                    progress.row(render(result, lines.line(result.index)))

    interrupted = False
    try:
        settings.run(work())
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
