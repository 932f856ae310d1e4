"""``stability-user exporter``: every target's balance as Prometheus metrics, around the clock.

The checks, paced over each ``--interval``, are :mod:`._exporter_checks`'; the
metrics and their server are :mod:`._exporter_metrics`' (the ``exporter`` extra).

SIGHUP reads the targets file again; the targets it holds then are checked from
the next interval on (a removed target's series go), and a file that cannot be
read keeps the targets as they were, with a line on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Final

import click

from .._secrets import escape_controls
from ._context import Settings, open_session, optional_key
from ._exporter_checks import Checker, Series, read_series
from ._failures import PROG, Failure, interruptible
from ._log import utc_now
from ._masking import mask_keys
from ._options import concurrency_option, interval_option

__all__ = ["exporter"]

_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
_NEEDS_EXTRA: Final = (
    "the exporter needs prometheus-client 0.24 or later: pip install 'stability-user[exporter]'"
)


def _plural(count: int, what: str) -> str:
    return f"{count} {what}{'s' if count != 1 else ''}"


class _Reloader:
    """Reads the targets file again on SIGHUP, one reading at a time."""

    def __init__(self, path: str | None, checker: Checker) -> None:
        self.path = path
        self.checker = checker
        self._reading: asyncio.Task[None] | None = None
        self._again = False

    def requested(self) -> None:
        """SIGHUP came: read the file (again once more, if a reading is under way)."""
        if self._reading is not None and not self._reading.done():
            self._again = True
            return
        self._reading = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            self._again = False
            self._say(await self._reload())
            if not self._again:
                return

    async def _reload(self) -> str:
        before = self.checker.series
        if self.path is None:
            return "nothing to reload: the targets are the demo accounts of --emulator"
        try:
            # In a thread: a file of many thousand targets must not hold up the scrapes.
            series = await asyncio.to_thread(read_series, self.path)
        except (click.ClickException, OSError, ValueError) as error:
            problem = error.message if isinstance(error, click.ClickException) else str(error)
            return (
                f"reload failed: {problem}: still checking the "
                f"{_plural(len(before), 'target')} read before"
            )
        old = {item.labels: item for item in before}
        new = {item.labels: item for item in series}
        added = sum(1 for labels in new if labels not in old)
        removed = sum(1 for labels in old if labels not in new)
        changed = sum(1 for labels, item in new.items() if labels in old and old[labels] != item)
        self.checker.replace(series)
        return (
            f"reloaded {self.path}: {_plural(len(series), 'target')} ({added} added, "
            f"{removed} removed, {changed} changed), checked from the next interval on"
        )

    @staticmethod
    def _say(message: str) -> None:
        click.echo(f"{utc_now()}  {mask_keys(escape_controls(message))}", err=True)

    async def aclose(self) -> None:
        """Wait for a reading under way to end (its outcome is said)."""
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading


async def _export(
    settings: Settings,
    key: str | None,
    series: list[Series],
    *,
    source: str | None,
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
    reloader: _Reloader | None = None
    try:
        metrics = ExporterMetrics(interval=interval)
        # The session of every command, with the metrics' hooks (429s counted by a middleware).
        async with open_session(
            settings, key, on_wait=metrics.waited, middlewares=[metrics.count_response]
        ) as (session, demo):
            if not series:
                pairs = series_labels(demo, "--emulator")
                series = [Series(target, pair) for target, pair in zip(demo, pairs, strict=True)]
            metrics.targets.set(len(series))
            server, url = await serve_metrics(metrics, host, port)
            try:
                checker = Checker(
                    series, metrics, interval=interval, settings=settings, source=source
                )
                reloader = _Reloader(source, checker)
                # SIGHUP reads the targets file again, as daemons (Prometheus among them) do;
                # from the moment the line below says the exporter is there.
                loop.add_signal_handler(signal.SIGHUP, reloader.requested)
                count = _plural(len(series), "target")
                click.echo(
                    f"{PROG}: exporter: serving {url}; checking {count} every {interval:g} s, "
                    f"one every {interval / len(series):.3g} s",
                    err=True,
                )
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
                if reloader is not None:
                    loop.remove_signal_handler(signal.SIGHUP)
                    await reloader.aclose()
                await server.stop()
    finally:
        for number in _SIGNALS:
            loop.remove_signal_handler(number)
    return 0


@click.command(short_help="Serve the balances of many targets as Prometheus metrics.")
@click.argument("targets_file", required=False, metavar="[TARGETS_FILE]")
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
    or CSV with a header) and holds the keys: not STABILITY_API_KEY nor --key-file.
    With --emulator N it may be left out: the N demo accounts are exported. A
    target's label, else its masked key, names its series. Every target is checked
    once per --interval, the checks spread evenly over it; a failed check is a line
    on stderr naming the target's line, and keeps the target's last good value.
    SIGHUP reads TARGETS_FILE again (from the next interval on; a file that cannot
    be read keeps the targets it had). Needs the extra: pip install
    'stability-user[exporter]'.

    Stop it with SIGINT (Ctrl-C) or SIGTERM: exit 0. Exit 1 when it cannot listen
    or the extra is not installed, 2 for a usage error (a bad or empty
    TARGETS_FILE, two targets in one series).
    """
    if targets_file is None and settings.emulator is None:
        raise click.UsageError(
            "give a TARGETS_FILE (the format of 'balances'), or --emulator N for demo accounts"
        )
    try:
        from . import _exporter_metrics  # noqa: F401, PLC0415 - needs the extra
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("prometheus_client"):
            raise
        raise Failure(_NEEDS_EXTRA) from None
    # The whole file first: a bad line, or two targets in one series, is a usage error
    # found before anything is served.
    series = read_series(targets_file) if targets_file is not None else []
    key = optional_key(settings)
    work = _export(
        settings,
        key,
        series,
        source=targets_file,
        host=host,
        port=port,
        interval=interval,
        concurrency=concurrency,
    )
    return settings.run(work)
