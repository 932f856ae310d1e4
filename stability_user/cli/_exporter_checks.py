"""The exporter's checks: every target once per interval, paced, and each result recorded.

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
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import attrs
import click

from .._bulk import BalanceResult, BalanceTarget
from .._errors import AuthenticationError, PermissionDeniedError, StabilityError
from .._secrets import escape_controls
from .._session import StabilitySession
from .._types import Clock, Sleep
from ._context import Settings
from ._describe import Hints
from ._log import utc_now
from ._target_lines import read_target_file

if TYPE_CHECKING:
    from ._exporter_metrics import ExporterMetrics, Labels

__all__ = ["Checker", "Series", "read_series"]


@attrs.frozen
class Series:
    """A target, the labels of its series, and its line in the targets file (if any)."""

    target: BalanceTarget
    labels: Labels
    line: int | None = None


def read_series(path: str) -> list[Series]:
    """The targets of ``path``, each with its series' labels and its line.

    Raises:
        UsageFailure: the file cannot be read, holds a line that is not a target or
            no target at all, or two targets that would share one series.
    """
    from ._exporter_metrics import series_labels  # noqa: PLC0415 - needs the extra

    numbered = list(read_target_file(path))
    targets = [target for _, target in numbered]
    labels = series_labels(targets, path)
    return [
        Series(target, pair, line) for (line, target), pair in zip(numbered, labels, strict=True)
    ]


class Checker:
    """Checks every target once per interval, paced, and records each result."""

    def __init__(
        self,
        series: Sequence[Series],
        metrics: ExporterMetrics,
        *,
        interval: float,
        settings: Settings,
        source: str | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.series = list(series)
        self.metrics = metrics
        self.interval = interval
        self.settings = settings
        self.source = source  # the targets file, for the lines about failed checks
        self.clock = clock or asyncio.get_running_loop().time
        self.sleep = sleep or asyncio.sleep
        # Checks in flight, by their position in the stream balances() numbers.
        self.in_flight: dict[int, tuple[Series, float]] = {}
        self.busy: set[Labels] = set()
        self._current = frozenset(self.series)
        self._next: list[Series] | None = None

    def replace(self, series: Sequence[Series]) -> None:
        """Check ``series`` instead from the next interval on (the file was reloaded)."""
        self._next = list(series)

    def _start_round(self) -> list[Series]:
        """The targets of the round that starts: the reloaded ones, if a reload came."""
        if self._next is not None:
            kept = {item.labels for item in self._next}
            for item in self.series:
                if item.labels not in kept:
                    self.metrics.forget(item.labels)
            self.series, self._next = self._next, None
            self._current = frozenset(self.series)
            self.metrics.targets.set(len(self.series))
        return self.series

    async def paced(self) -> AsyncIterator[BalanceTarget]:
        """The targets, each when it is due, round after round, forever."""
        clock = self.clock
        position = 0
        start = clock()
        while True:
            series = self._start_round()
            step = self.interval / len(series)
            for number, item in enumerate(series):
                delay = start + number * step - clock()
                if delay > 0:
                    await self.sleep(delay)
                if item.labels in self.busy:
                    continue  # its previous check is still running: never two at once
                self.busy.add(item.labels)
                self.in_flight[position] = (item, clock())
                position += 1
                yield item.target
            start += self.interval
            if clock() - start > self.interval:
                start = clock()

    async def run(self, session: StabilitySession, concurrency: int) -> None:
        """Check and record until cancelled."""
        results = session.balances(self.paced(), concurrency=concurrency)
        async with contextlib.aclosing(results):
            async for result in results:
                self.record(result)

    def _hints(self, item: Series) -> Hints:
        """What to do about a failed check: a target's key is on its line of the file."""
        if self.source is None or item.line is None:
            return ()
        where = f"line {item.line} of {self.source}"
        return (
            (AuthenticationError, f"check the key on {where}"),
            (PermissionDeniedError, f"check the organization on {where}: is it the key's?"),
        )

    def record(self, result: BalanceResult) -> None:
        """Update the metrics with one result; a failure is also a line on stderr."""
        item, started = self.in_flight.pop(result.index)
        self.busy.discard(item.labels)
        if item not in self._current:
            return  # a target a reload removed or changed while it was checked
        seconds = self.clock() - started
        labels = item.labels
        if result.balance is not None:
            self.metrics.succeeded(labels, result.balance.credits, seconds, time.time())
            return
        error = result.error or StabilityError("no balance and no error")
        self.metrics.failed(labels, error, seconds)
        name, organization = labels
        where = f"{name} ({organization})" if organization else name
        if item.line is not None:
            where += f" on line {item.line}"
        text = self.settings.describe(error, result.target.api_key, hints=self._hints(item))
        line = f"{utc_now()}  check failed: {escape_controls(where)}: {text}"
        click.echo(line, err=True)
