"""The progress bar of a bulk run: on stderr, and only when stderr is a terminal.

With a known total it shows the percentage and the time left. While calls wait
for the rate limit or a lockout it says so (``waiting 7 s: rate limit, sk-…abcd``),
and its clock keeps running: a ticker redraws it while no result comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import AsyncIterator

import click
from tqdm import tqdm

from .._ratelimit import RateLimitWait
from .._secrets import escape_controls

__all__ = ["Progress"]

_TICK = 0.5  # seconds between redraws while nothing else happens


class Progress:
    """A progress bar (or, off a terminal, none) that rows are written around."""

    def __init__(self, total: int | None, *, enabled: bool | None = None) -> None:
        """A bar counting to ``total`` (``None``: unknown) if stderr is a terminal."""
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = tqdm(
            total=total,
            unit=" checks",
            file=sys.stderr,
            disable=not self.enabled,
            leave=False,
            dynamic_ncols=True,
        )
        self._wait: RateLimitWait | None = None
        self._wait_ends = 0.0

    def waiting(self, wait: RateLimitWait) -> None:
        """A call waits for its key's limit: say so until the wait is over."""
        ends = time.monotonic() + wait.seconds
        if self._wait is None or ends >= self._wait_ends:
            self._wait, self._wait_ends = wait, ends
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        wait = self._wait
        left = self._wait_ends - time.monotonic()
        if wait is not None and left > 0:
            self._bar.set_description_str(
                escape_controls(f"waiting {math.ceil(left)} s: {wait.reason}, {wait.key}"),
                refresh=False,
            )
        elif wait is not None:
            self._wait = None
            self._bar.set_description_str("", refresh=False)
        self._bar.refresh()

    def line(self, line: str) -> None:
        """Write a line on stdout, above the bar."""
        if self.enabled:
            tqdm.write(line, file=sys.stdout)
        else:
            click.echo(line)

    def row(self, line: str) -> None:
        """Write one result line on stdout and count it."""
        self.line(line)
        self._bar.update(1)

    @contextlib.asynccontextmanager
    async def ticking(self) -> AsyncIterator[None]:
        """Keep the bar's clock and any wait's countdown moving while the run lasts."""
        if not self.enabled:
            yield
            return

        async def tick() -> None:
            while True:
                await asyncio.sleep(_TICK)
                self._draw()

        ticker = asyncio.ensure_future(tick())
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    def close(self) -> None:
        """Remove the bar from the terminal."""
        self._bar.close()
