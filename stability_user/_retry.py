"""Retries: a pure, frozen policy and the loop that applies it to one call.

The policy only decides: given the attempt just made and how it ended, it
returns how long to wait before the next one, or ``None`` to stop. It holds no
state, so one policy is safely shared by any number of concurrent calls. The
per-call state (attempt number, start time) lives in :func:`call_with_retries`,
whose sleep, clock and jitter source are parameters so tests never wait.

Each attempt goes: middlewares -> sender (a connection, the key's rate-limit
slot, the transport) -> decode. Decoding raises the typed error a response
stands for (its ``Retry-After`` parsed there), and the loop decides from that
error whether to try again, the way stamina retries on exceptions. Every attempt
carries the call's deadline, so the sender waits for nothing past it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Final, TypeVar

import attrs

from ._checks import check_count, check_optional_seconds, check_seconds
from ._errors import APIConnectionError, APIError
from ._http import Handler, Request, Response
from ._types import Clock, Sleep

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "RATE_LIMIT_LOCKOUT",
    "RetryPolicy",
    "call_with_retries",
]

T = TypeVar("T")

logger = logging.getLogger("stability_user")

DEFAULT_RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})

RATE_LIMIT_LOCKOUT: Final = 60.0
"""Seconds the service locks a key out after a 429, per its documentation."""

_RETRY_AFTER_STATUSES: Final = frozenset({429, 503})


def _seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds(attribute.name, value, zero=True)


def _attempts(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    check_count(attribute.name, value)


def _statuses(values: Iterable[int]) -> frozenset[int]:
    return frozenset(values)


def _deadline(_: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    check_optional_seconds("deadline", value)


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
    lockout (:data:`RATE_LIMIT_LOCKOUT`, or the session's ``RateLimit.lockout``)
    instead of burning the remaining attempts inside it. When a wait named by the
    service exceeds ``max_retry_after``, or any wait would end past ``deadline``, the
    call does not wait at all: it raises at once (with ``retry_after`` set), so a
    bulk job can reschedule instead of blocking.

    Attributes:
        max_attempts: attempts in all, the first included (1 disables retries).
        backoff_base: seconds; the first computed wait and the jitter's scale.
        backoff_max: seconds; the cap of a computed wait.
        max_retry_after: seconds; the longest wait the service may impose.
        retry_statuses: the statuses worth another attempt.
        deadline: seconds for the whole call, attempts and waits included, or ``None``.
    """

    max_attempts: int = attrs.field(default=3, validator=_attempts)
    backoff_base: float = attrs.field(default=0.5, validator=_seconds)
    backoff_max: float = attrs.field(default=8.0, validator=_seconds)
    max_retry_after: float = attrs.field(default=60.0, validator=_seconds)
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


def _describe(error: Exception) -> str:
    if isinstance(error, APIError):
        return f"status {error.status}"
    return f"{type(error).__name__}: {error.args[0] if error.args else ''}"


async def call_with_retries(
    request: Request,
    handler: Handler,
    decode: Callable[[Response], T],
    policy: RetryPolicy,
    *,
    lockout: float = RATE_LIMIT_LOCKOUT,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    jitter: Callable[[], float] = random.random,
) -> T:
    """Send ``request`` and decode its response until it succeeds or ``policy`` says stop.

    After the last attempt the last error is raised, its ``attempts`` saying how
    many were made. A call the rate limiter refused (unsent) and a call whose
    deadline ran out are not tried again.

    Args:
        request: the first attempt's request; every attempt carries its number, the
            call's deadline and the longest rate-limit wait the policy allows.
        handler: the user middlewares and the sender (connection, rate limit, transport).
        decode: turns a response into the result, or raises its typed error.
        policy: the retry policy.
        lockout: the wait after a 429 that names no ``Retry-After``.
        sleep: waits between attempts.
        clock: monotonic seconds, for the deadline and the log.
        jitter: a source of numbers in ``[0, 1)``.
    """
    start = clock()
    deadline = policy.deadline
    debug = logger.isEnabledFor(logging.DEBUG)  # timing each attempt is only for the log
    if deadline is not None or policy.max_retry_after != request.max_retry_after:
        request = attrs.evolve(
            request,
            deadline=None if deadline is None else start + deadline,
            max_retry_after=policy.max_retry_after,
        )
    sent = request  # the common case: the request as built, no copy
    attempt = 1
    # One coroutine from the caller down to the handler, on purpose: every frame in
    # between would be resumed at each step of every request's I/O.
    while True:
        began = clock() if debug else None
        try:
            response = await handler(sent)
            return decode(_answered(response, sent, began, clock))
        except APIError as exc:
            if exc.status == 429 and not getattr(exc, "sent", True):
                raise  # refused by the limiter, unsent: its wait is longer than allowed
            error: APIError | APIConnectionError = exc
            status: int | None = exc.status
            retry_after = getattr(exc, "retry_after", None)
            if status == 429 and retry_after is None:
                # The service locks the key out after every 429: without a Retry-After
                # (or with a date already past, no answer) the wait is its lockout.
                retry_after = lockout
        except APIConnectionError as exc:
            if began is not None:
                _log_attempt(sent, None, clock() - began)
            if not exc.retryable:
                raise
            error = exc
            status = retry_after = None
        delay = policy.next_delay(
            attempt,
            status=status,
            retry_after=retry_after,
            elapsed=clock() - start,
            jitter=jitter(),
        )
        if delay is None:
            raise error
        logger.warning(
            "retrying %s %s after %s (attempt %d of %d) in %.3f s",
            request.method,
            _path(request.url),
            _describe(error),
            attempt,
            policy.max_attempts,
            delay,
        )
        await sleep(delay)
        attempt += 1
        sent = attrs.evolve(request, attempt=attempt)


def _answered(response: Response, request: Request, began: float | None, clock: Clock) -> Response:
    """The response as decoding needs it: numbered with its attempt, its request known."""
    if began is not None:
        _log_attempt(request, response.status, clock() - began)
    if response.attempt != request.attempt or response.request is None:
        # A middleware answered by itself: errors still count the attempt.
        response = response.answering(request)
    return response


def _path(url: str) -> str:
    # Only the path is logged: hosts and queries are the caller's business.
    scheme_end = url.find("//")
    slash = url.find("/", scheme_end + 2 if scheme_end >= 0 else 0)
    return url[slash:] if slash >= 0 else "/"


def _log_attempt(request: Request, status: int | None, elapsed: float) -> None:
    logger.debug(
        "%s %s -> %s in %.1f ms (attempt %d)",
        request.method,
        _path(request.url),
        "no response" if status is None else status,
        elapsed * 1000,
        request.attempt,
    )
