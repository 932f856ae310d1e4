"""The exporter's metrics and its ``/metrics`` server, on the official ``prometheus-client``.

Imported only by the ``exporter`` command, so the rest of the command line runs
without the ``exporter`` extra installed.

Every label value is made here from what is safe to show: a target's label, else
its masked key (``sk-…abcd``), and its organization, each with every key of the
target file redacted should one have been put there by mistake. No value is ever
a key either: credits, times, counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Final, cast

from aiohttp import web
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.aiohttp import make_aiohttp_handler

from .._bulk import BalanceTarget
from .._http import Handler, Request, Response
from .._ratelimit import RateLimitWait
from .._secrets import mask_secret, redact
from .._version import __version__
from ._exporter_server import GuardedServer, ListenError
from ._failures import Failure, UsageFailure
from ._masking import mask_keys

__all__ = ["ExporterMetrics", "Labels", "series_labels", "serve_metrics"]

Labels = tuple[str, str]
"""A target's ``target`` and ``organization`` label values."""

# A check is one call: its retries, their backoff and rate-limit waits (up to the
# service's 60 s lockout) included, hence buckets well past a single request's.
_DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_WAIT_REASONS: Final = ("rate limit", "lockout")
_TARGET_LABELS: Final = ("target", "organization")

# Untyped in prometheus-client: typed here, for mypy --strict.
_disable_created_metrics = cast(Callable[[], None], disable_created_metrics)

_LANDING: Final = (
    "<!doctype html><html><head><title>stability-user exporter</title></head><body>"
    "<h1>stability-user exporter</h1><p><a href='/metrics'>Metrics</a></p></body></html>"
)


def series_labels(targets: Sequence[BalanceTarget], source: str) -> list[Labels]:
    """The ``target`` and ``organization`` label values of each target, in order.

    ``target`` is the target's label, else its masked key; ``organization`` is
    empty for the key's default organization.

    Raises:
        UsageFailure: two targets would share one series: their numbers in ``source``.
    """
    # A label or organization holding a key (columns swapped in a spreadsheet) must
    # not publish it: the target's own key is redacted in any form, every other key of
    # the file as it is written (a set lookup per token: linear in the file), and any
    # other key-looking token masked.
    keys = frozenset(target.api_key for target in targets if target.api_key)

    def published(text: str, own_key: str | None) -> str:
        return mask_keys(redact(text, (own_key,)), keys)

    seen: dict[Labels, int] = {}
    labels = []
    for number, target in enumerate(targets, 1):
        if target.label:
            name = published(target.label, target.api_key)
        elif target.api_key:
            name = mask_secret(target.api_key)
        else:
            name = "(session key)"
        pair = (name, published(target.organization or "", target.api_key))
        first = seen.setdefault(pair, number)
        if first != number:
            raise UsageFailure(
                f"{source}: targets {first} and {number} would both be reported as "
                f"target={pair[0]!r}, organization={pair[1]!r}: give each its own label"
            )
        labels.append(pair)
    return labels


class ExporterMetrics:
    """The exporter's metrics, in a registry of their own with the process's."""

    def __init__(self, *, interval: float) -> None:
        """Create every metric; ``interval`` is exported as it is."""
        # No *_created series beside each counter and histogram: the text format shows
        # them as series of their own, doubling what is stored for nothing an alert uses.
        # A setting of the whole process: the exporter's process is its own.
        _disable_created_metrics()
        registry = self.registry = CollectorRegistry()
        self._errors: dict[Labels, set[str]] = {}  # the error types of each target's failures
        # The usual process_*, python_info and python_gc_* series of a Python exporter.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        labels = _TARGET_LABELS
        self.credits = Gauge(
            "stability_credits",
            "Credits left, as of the target's last successful check.",
            labels,
            registry=registry,
        )
        self.last_success = Gauge(
            "stability_last_success_timestamp_seconds",
            "Unix time of the target's last successful check.",
            labels,
            registry=registry,
        )
        self.success = Gauge(
            "stability_check_success",
            "1 when the target's last check succeeded, 0 when it failed.",
            labels,
            registry=registry,
        )
        self.failures = Counter(
            "stability_check_failures",
            "Failed checks, by target and error type.",
            (*labels, "error"),
            registry=registry,
        )
        self.duration = Histogram(
            "stability_check_duration_seconds",
            "How long a check took, its retries and rate-limit waits included.",
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.waits = Counter(
            "stability_rate_limit_waits",
            "Times a check waited for its key's rate limit or lockout, by reason.",
            ("reason",),
            registry=registry,
        )
        self.wait_seconds = Counter(
            "stability_rate_limit_wait_seconds",
            "Seconds checks waited for their key's rate limit or lockout, by reason.",
            ("reason",),
            registry=registry,
        )
        self.responses = Counter(
            "stability_http_responses",
            "Responses of the service, by HTTP status code (429: rate limited).",
            ("code",),
            registry=registry,
        )
        # Known label values start at 0, so that rate() and increase() see the first one.
        for reason in _WAIT_REASONS:
            self.waits.labels(reason)
            self.wait_seconds.labels(reason)
        self.responses.labels("429")
        Gauge(
            "stability_check_interval_seconds",
            "Seconds between two checks of one target (--interval).",
            registry=registry,
        ).set(interval)
        self.targets = Gauge("stability_targets", "Targets checked.", registry=registry)
        Info("stability_exporter_build", "The exporter's version.", registry=registry).info(
            {"version": __version__}
        )

    def succeeded(self, labels: Labels, credits: float, seconds: float, now: float) -> None:
        """A check read ``credits`` at Unix time ``now`` in ``seconds``."""
        self.credits.labels(*labels).set(credits)
        self.last_success.labels(*labels).set(now)
        self.success.labels(*labels).set(1)
        self.duration.observe(seconds)

    def failed(self, labels: Labels, error: BaseException, seconds: float) -> None:
        """A check failed with ``error``: the last good value and its time stay as they are."""
        name = type(error).__name__
        self.failures.labels(*labels, name).inc()
        self._errors.setdefault(labels, set()).add(name)
        self.success.labels(*labels).set(0)
        self.duration.observe(seconds)

    def forget(self, labels: Labels) -> None:
        """A target is no longer checked (the targets file was reloaded): drop its series."""
        for gauge in (self.credits, self.last_success, self.success):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        for error in self._errors.pop(labels, ()):
            with contextlib.suppress(KeyError):
                self.failures.remove(*labels, error)

    def waited(self, wait: RateLimitWait) -> None:
        """``on_rate_limit_wait``: a call waits for its key's limit (the key is not kept)."""
        self.waits.labels(wait.reason).inc()
        self.wait_seconds.labels(wait.reason).inc(wait.seconds)

    async def count_response(self, request: Request, handler: Handler) -> Response:
        """A middleware counting every response of the service by status, retries included."""
        response = await handler(request)
        self.responses.labels(str(response.status)).inc()
        return response


async def _landing(request: web.Request) -> web.Response:
    return web.Response(text=_LANDING, content_type="text/html")


async def serve_metrics(
    metrics: ExporterMetrics, host: str, port: int, *, cap: int | None = None
) -> tuple[GuardedServer, str]:
    """Serve ``/metrics`` on ``host`` and ``port``; returns the server and the URL.

    The server keeps itself reachable (:mod:`._exporter_server`, :mod:`._exporter_guard`):
    header and idle timeouts, at most ``cap`` connections (from the file limit by default).

    Raises:
        Failure: the address cannot be listened on (exit 1).
    """
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    app.router.add_get("/", _landing)
    server = GuardedServer(app, cap=cap)
    try:
        await server.start(host, port)
    except ListenError as error:
        raise Failure(str(error)) from None
    address, bound = server.address
    shown = f"[{address}]" if ":" in address else address
    return server, f"http://{shown}:{bound}/metrics"
