"""``stability-user exporter``: every target's balance as Prometheus metrics, around the clock.

Each target is checked once per ``--interval``, through the session's
``balances()``, so the rate limit and its shared store apply as for every other
command. The checks are paced, not burst: target ``i`` of ``n`` is due ``i *
interval / n`` seconds into each interval, so a thousand targets checked every
minute make one request every 60 ms. A check still running when its target is
due again (a stalled service, a long lockout) is not doubled: that round of the
target is skipped. When the checks fall more than a whole interval behind (the
machine slept), the schedule starts afresh instead of bursting to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Final

import click

from .._bulk import BalanceResult, BalanceTarget
from .._errors import StabilityError
from .._secrets import escape_controls
from .._session import StabilitySession
from .._types import Clock, Sleep
from ._context import Settings, open_session, optional_key, read_target_file
from ._failures import PROG, UsageFailure, interruptible, utc_now
from ._options import concurrency_option, interval_option

if TYPE_CHECKING:
    from ._exporter_metrics import ExporterMetrics, Labels

__all__ = ["exporter"]

_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
_NEEDS_EXTRA: Final = (
    "the exporter needs prometheus-client 0.24 or later: pip install 'stability-user[exporter]'"
)


class _Checker:
    """Checks every target once per interval, paced, and records each result."""

    def __init__(
        self,
        targets: Sequence[BalanceTarget],
        labels: Sequence[Labels],
        metrics: ExporterMetrics,
        *,
        interval: float,
        settings: Settings,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.targets = targets
        self.labels = labels
        self.metrics = metrics
        self.interval = interval
        self.settings = settings
        self.clock = clock or asyncio.get_running_loop().time
        self.sleep = sleep or asyncio.sleep
        # Checks in flight, by their position in the stream balances() numbers.
        self.in_flight: dict[int, tuple[int, float]] = {}
        self.busy: set[int] = set()

    async def paced(self) -> AsyncIterator[BalanceTarget]:
        """The targets, each when it is due, round after round, forever."""
        clock = self.clock
        step = self.interval / len(self.targets)
        position = 0
        start = clock()
        while True:
            for number, target in enumerate(self.targets):
                delay = start + number * step - clock()
                if delay > 0:
                    await self.sleep(delay)
                if number in self.busy:
                    continue  # its previous check is still running: never two at once
                self.busy.add(number)
                self.in_flight[position] = (number, clock())
                position += 1
                yield target
            start += self.interval
            if clock() - start > self.interval:
                start = clock()

    async def run(self, session: StabilitySession, concurrency: int) -> None:
        """Check and record until cancelled."""
        results = session.balances(self.paced(), concurrency=concurrency)
        async with contextlib.aclosing(results):
            async for result in results:
                self.record(result)

    def record(self, result: BalanceResult) -> None:
        """Update the metrics with one result; a failure is also a line on stderr."""
        number, started = self.in_flight.pop(result.index)
        self.busy.discard(number)
        seconds = self.clock() - started
        labels = self.labels[number]
        if result.balance is not None:
            self.metrics.succeeded(labels, result.balance.credits, seconds, time.time())
            return
        error = result.error or StabilityError("no balance and no error")
        self.metrics.failed(labels, error, seconds)
        name, organization = labels
        where = f"{name} ({organization})" if organization else name
        text = self.settings.describe(error, result.target.api_key)
        line = f"{utc_now()}  check failed: {escape_controls(where)}: {text}"
        click.echo(line, err=True)


async def _export(
    settings: Settings,
    key: str | None,
    targets: list[BalanceTarget],
    labels: list[Labels],
    *,
    host: str,
    port: int,
    interval: float,
    concurrency: int,
) -> int:
    from ._exporter_metrics import ExporterMetrics, series_labels, serve_metrics  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in _SIGNALS:
        # SIGINT and SIGTERM are how an exporter is stopped: a clean exit, not an error.
        loop.add_signal_handler(number, stop.set)
    try:
        metrics = ExporterMetrics(interval=interval)
        # The session of every command, with the metrics' hooks (429s counted by a middleware).
        async with open_session(
            settings, key, on_wait=metrics.waited, middlewares=[metrics.count_response]
        ) as (session, demo):
            if not targets:
                targets, labels = demo, series_labels(demo, "--emulator")
            metrics.targets.set(len(targets))
            runner, url = await serve_metrics(metrics, host, port)
            try:
                count = f"{len(targets)} target{'s' if len(targets) > 1 else ''}"
                click.echo(
                    f"{PROG}: exporter: serving {url}; checking {count} every {interval:g} s, "
                    f"one every {interval / len(targets):.3g} s",
                    err=True,
                )
                checker = _Checker(targets, labels, metrics, interval=interval, settings=settings)
                checking = asyncio.ensure_future(checker.run(session, concurrency))
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait((checking, stopping), return_when=asyncio.FIRST_COMPLETED)
                if checking.done():
                    stopping.cancel()
                    checking.result()  # it never ends by itself: raise what ended it
                checking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checking
            finally:
                await runner.cleanup()
    finally:
        for number in _SIGNALS:
            loop.remove_signal_handler(number)
    return 0


@click.command(short_help="Serve the balances of many targets as Prometheus metrics.")
@click.argument("targets_file", required=False, metavar="TARGETS_FILE")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Serve /metrics on this address; loopback by default, so only this machine scrapes it.",
)
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=9464,
    show_default=True,
    help="Serve /metrics on this port; 0 picks a free one.",
)
@interval_option(
    "Seconds in which every target is checked once, the checks spread evenly over them.",
    at_most=86400,
)
@concurrency_option("Checks in flight at most (a slow target never holds up the others).")
@click.pass_obj
@interruptible
def exporter(
    settings: Settings,
    *,
    targets_file: str | None,
    host: str,
    port: int,
    interval: float,
    concurrency: int,
) -> int:
    """Serve the targets' balances as Prometheus metrics on http://HOST:PORT/metrics.

    TARGETS_FILE is in the format of `balances` (KEY[,ORGANIZATION[,LABEL]] lines,
    or CSV with a header); a target's label, else its masked key, names its series.
    Every target is checked once per --interval, the checks spread evenly over it;
    a failed check is a line on stderr and keeps the target's last good value.
    Needs the extra: pip install 'stability-user[exporter]'.

    Stop it with SIGINT (Ctrl-C) or SIGTERM: exit 0. Exit 1 when it cannot listen,
    2 for a usage error (a bad or empty TARGETS_FILE, the extra not installed).
    """
    if targets_file is None and settings.emulator is None:
        raise click.UsageError("give a TARGETS_FILE (the format of 'balances')")
    try:
        from . import _exporter_metrics  # noqa: PLC0415 - needs the extra
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("prometheus_client"):
            raise
        raise UsageFailure(_NEEDS_EXTRA) from None
    targets, labels = [], []
    if targets_file is not None:
        targets = [target for _, target in read_target_file(targets_file)]
        # Two targets in one series are a usage error, found before anything is served.
        labels = _exporter_metrics.series_labels(targets, targets_file)
    key = optional_key(settings)
    work = _export(
        settings,
        key,
        targets,
        labels,
        host=host,
        port=port,
        interval=interval,
        concurrency=concurrency,
    )
    return settings.run(work)
