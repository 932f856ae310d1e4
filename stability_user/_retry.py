"""Retries: a pure, frozen policy and the loop that applies it to one call.

The policy only decides: given the attempt just made and how it ended, it
returns how long to wait before the next one, or ``None`` to stop. It holds no
state, so one policy is safely shared by any number of concurrent calls. The
per-call state (attempt number, start time, last outcome) lives in
:func:`send_with_retries`, whose sleep, clock and jitter source are parameters
so tests never wait.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import attrs

from ._checks import check_count
from ._errors import APIConnectionError, APITimeoutError
from ._http import Handler, Request, Response

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "RATE_LIMIT_LOCKOUT",
    "RetryPolicy",
    "Sleep",
    "send_with_retries",
]

logger = logging.getLogger("stability_user")

Sleep = Callable[[float], Awaitable[None]]
"""An awaitable sleep, :func:`asyncio.sleep` by default; tests pass one that records."""

DEFAULT_RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})

RATE_LIMIT_LOCKOUT: Final = 60.0
"""Seconds the service locks a key out after a 429, per its documentation."""

_RETRY_AFTER_STATUSES: Final = frozenset({429, 503})


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _attempts(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    check_count(attribute.name, value)


def _statuses(values: Iterable[int]) -> frozenset[int]:
    return frozenset(values)


def _deadline(_: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"deadline must be a positive number of seconds or None, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """When to try a call again, and how long to wait first.

    Retried: connection failures (refused, reset, dropped), attempts that time out,
    and responses whose status is in ``retry_statuses``. Never retried: other
    statuses, 2xx bodies that fail validation, bodies over the size cap, cancellation.

    The wait before attempt ``n + 1``, after attempt ``n`` (attempts count from 1), is::

        min(backoff_max, backoff_base * 2 ** (n - 1) + jitter * backoff_base)

    with ``jitter`` drawn uniformly from ``[0, 1)``, so concurrent callers spread out.

    A ``Retry-After`` on a 429 or 503 (seconds or an HTTP-date) replaces that wait.
    A 429 *without* ``Retry-After`` waits out the service's documented 60-second
    lockout (:data:`RATE_LIMIT_LOCKOUT`) instead of burning the remaining attempts
    inside it. When a wait named by the service exceeds ``max_retry_after``, or any
    wait would end past ``deadline``, the call does not wait at all: it raises at
    once (with ``retry_after`` set), so a bulk job can reschedule instead of blocking.

    Attributes:
        max_attempts: attempts in all, the first included (1 disables retries).
        backoff_base: seconds; the first computed wait and the jitter's scale.
        backoff_max: seconds; the cap of a computed wait.
        max_retry_after: seconds; the longest wait the service may impose.
        retry_statuses: the statuses worth another attempt.
        deadline: seconds for the whole call, attempts and waits included, or ``None``.
    """

    max_attempts: int = attrs.field(default=3, validator=_attempts)
    backoff_base: float = attrs.field(default=0.5, validator=_positive)
    backoff_max: float = attrs.field(default=8.0, validator=_positive)
    max_retry_after: float = attrs.field(default=60.0, validator=_positive)
    retry_statuses: frozenset[int] = attrs.field(
        default=DEFAULT_RETRY_STATUSES, converter=_statuses
    )
    deadline: float | None = attrs.field(default=None, validator=_deadline)

    def backoff(self, attempt: int, jitter: float) -> float:
        """The computed wait after ``attempt`` (from 1), given ``jitter`` in ``[0, 1)``."""
        # min() before the power would overflow: 2 ** 1100 is fine for ints, not floats.
        exponent = min(attempt - 1, 64)
        return min(self.backoff_max, self.backoff_base * 2.0**exponent + jitter * self.backoff_base)

    def next_delay(
        self,
        attempt: int,
        *,
        status: int | None,
        retry_after: float | None = None,
        elapsed: float = 0.0,
        jitter: float = 0.0,
    ) -> float | None:
        """Decide what follows ``attempt``: seconds to wait, or ``None`` to stop.

        Args:
            attempt: the attempt just made, counted from 1.
            status: its response's status, or ``None`` when it failed to connect or timed out.
            retry_after: seconds the response's ``Retry-After`` named, if any.
            elapsed: seconds since the call started.
            jitter: a number in ``[0, 1)``.
        """
        if attempt >= self.max_attempts:
            return None
        if status is not None and status not in self.retry_statuses:
            return None
        if status in _RETRY_AFTER_STATUSES and retry_after is not None:
            wait = retry_after
        elif status == 429:
            wait = RATE_LIMIT_LOCKOUT
        else:
            wait = self.backoff(attempt, jitter)
        if wait > self.max_retry_after:
            return None
        if self.deadline is not None and elapsed + wait >= self.deadline:
            return None
        return wait


def _describe(outcome: Response | APIConnectionError) -> str:
    if isinstance(outcome, Response):
        return f"status {outcome.status}"
    return f"{type(outcome).__name__}: {outcome.args[0] if outcome.args else ''}"


async def send_with_retries(
    request: Request,
    handler: Handler,
    policy: RetryPolicy,
    *,
    retry_after: Callable[[Response], float | None],
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    jitter: Callable[[], float] = random.random,
) -> Response:
    """Send ``request`` through ``handler`` until ``policy`` says stop.

    Returns the first response that is not retried, or the last one; the caller
    turns a failing status into an error. A connection failure on the last
    attempt is raised with ``attempts`` set.

    Args:
        request: the first attempt's request; ``timeout`` is cut to the deadline.
        handler: the user middlewares and the transport.
        policy: the retry policy.
        retry_after: reads a response's ``Retry-After`` into seconds, or ``None``.
        sleep: waits between attempts.
        clock: monotonic seconds, for the deadline and the log.
        jitter: a source of numbers in ``[0, 1)``.
    """
    start = clock()
    deadline = policy.deadline
    # Timing each attempt is only for the debug log: skip the clock when it is off.
    debug = logger.isEnabledFor(logging.DEBUG)
    attempt = 1
    while True:
        attempt_request = request
        cut_by_deadline = False
        if deadline is not None:
            left = deadline - (clock() - start)
            if left < request.timeout:
                cut_by_deadline = True
                attempt_request = attrs.evolve(request, timeout=max(left, 0.001))
        sent = clock() if debug else 0.0
        try:
            response = await handler(attempt_request)
        except APIConnectionError as exc:
            exc.attempts = attempt
            if cut_by_deadline and isinstance(exc, APITimeoutError):
                exc.args = (f"the call's deadline of {deadline:g} s ran out during an attempt",)
            outcome: Response | APIConnectionError = exc
            status = None
            wait_hint = None
        else:
            if response.attempt != attempt:
                response = attrs.evolve(response, attempt=attempt)
            outcome = response
            status = response.status
            if status not in policy.retry_statuses:
                if debug:
                    _log_attempt(request, status, clock() - sent, attempt)
                return response
            wait_hint = retry_after(response)
        if debug:
            _log_attempt(request, status, clock() - sent, attempt)
        delay = policy.next_delay(
            attempt,
            status=status,
            retry_after=wait_hint,
            elapsed=clock() - start,
            jitter=jitter(),
        )
        if delay is None:
            if isinstance(outcome, Response):
                return outcome
            raise outcome
        logger.warning(
            "retrying %s %s after %s (attempt %d of %d) in %.3f s",
            request.method,
            _path(request.url),
            _describe(outcome),
            attempt,
            policy.max_attempts,
            delay,
        )
        await sleep(delay)
        attempt += 1


def _path(url: str) -> str:
    # Only the path is logged: hosts and queries are the caller's business.
    scheme_end = url.find("//")
    slash = url.find("/", scheme_end + 2 if scheme_end >= 0 else 0)
    return url[slash:] if slash >= 0 else "/"


def _log_attempt(request: Request, status: int | None, elapsed: float, attempt: int) -> None:
    logger.debug(
        "%s %s -> %s in %.1f ms (attempt %d)",
        request.method,
        _path(request.url),
        "no response" if status is None else status,
        elapsed * 1000,
        attempt,
    )
