"""Retries: a pure, frozen policy and the loop that applies it to one call.

The policy only decides: given the attempt just made and how it ended, it
returns how long to wait before the next one, or ``None`` to stop. It holds no
state, so one policy is safely shared by any number of concurrent calls. The
per-call state (attempt number, start time) lives in :func:`call_with_retries`,
whose sleep, clock and jitter source are parameters so tests never wait.

Each attempt goes: rate limiter -> middlewares and transport -> decode. Decoding
raises the typed error a response stands for (its ``Retry-After`` parsed once,
there), and the loop decides from that error whether to try again, the way
stamina retries on exceptions.
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
from ._errors import APIConnectionError, APIError, APITimeoutError
from ._http import Handler, Request, Response
from ._limiter import LEASE_MARGIN, RateLimiter, Slot
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


def _attempt_request(request: Request, attempt: int, left: float | None) -> Request:
    """The request of ``attempt``: numbered, its timeout cut to the time ``left``."""
    if left is not None and left < request.timeout:
        return attrs.evolve(request, timeout=max(left, 0.001), attempt=attempt)
    if attempt > 1:
        return attrs.evolve(request, attempt=attempt)
    return request


async def _locked_out(
    limiter: RateLimiter, key_id: str, request: Request, retry_after: float | None
) -> float:
    """Lock the key out after a 429; the seconds this call waits for it."""
    await limiter.lock(key_id, request.api_key or "", retry_after)
    # The lockout the limiter now enforces on every call of the key is this call's
    # wait too (the policy's own default is the service's 60 s).
    return limiter.limit.lockout if retry_after is None else retry_after


async def call_with_retries(
    request: Request,
    handler: Handler,
    decode: Callable[[Response], T],
    policy: RetryPolicy,
    *,
    limiter: RateLimiter | None = None,
    key_id: str | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    jitter: Callable[[], float] = random.random,
) -> T:
    """Send ``request`` and decode its response until it succeeds or ``policy`` says stop.

    After the last attempt the last error is raised, its ``attempts`` saying how
    many were made.

    Args:
        request: the first attempt's request; later ones carry their attempt number,
            and each one's ``timeout`` is cut to what the deadline leaves.
        handler: the user middlewares and the transport.
        decode: turns a response into the result, or raises its typed error.
        policy: the retry policy.
        limiter: the session's rate limiter; every attempt takes a slot of ``key_id``.
        key_id: the key's name in the limiter's state (no limiting without one).
        sleep: waits between attempts.
        clock: monotonic seconds, for the deadline and the log.
        jitter: a source of numbers in ``[0, 1)``.
    """
    start = clock()
    deadline = policy.deadline
    debug = logger.isEnabledFor(logging.DEBUG)  # timing each attempt is only for the log
    attempt = 1
    # One coroutine from the caller down to the handler, on purpose: every frame in
    # between would be resumed at each step of every request's I/O.
    while True:
        slot = None
        if limiter is not None and key_id is not None:
            # The slot first: the attempt's timeout then counts from after any wait.
            slot = limiter.take_now(key_id, request.timeout + LEASE_MARGIN)
            if slot is None:
                left = None if deadline is None else deadline - (clock() - start)
                slot = await _wait_for_slot(
                    limiter,
                    key_id=key_id,
                    request=request,
                    policy=policy,
                    left=left,
                    attempt=attempt,
                )
        if deadline is None and attempt == 1:
            sent = request  # the common case: the request as built, no copy
        else:
            left = None if deadline is None else deadline - (clock() - start)
            sent = _attempt_request(request, attempt, left)
        began = clock() if debug else None
        try:
            try:
                response = await handler(sent)
            finally:
                if slot is not None and not limiter.release_now(slot):  # type: ignore[union-attr]
                    await limiter.release(slot)  # type: ignore[union-attr]
            return decode(_answered(response, sent, began, clock))
        except APIError as exc:
            error: APIError | APIConnectionError = exc
            status: int | None = exc.status
            retry_after = getattr(exc, "retry_after", None)
            if status == 429 and limiter is not None and key_id is not None:
                retry_after = await _locked_out(limiter, key_id, request, retry_after)
        except APIConnectionError as exc:
            if began is not None:
                _log_attempt(sent, None, clock() - began)
            error = _retryable(
                exc, cut=sent.timeout < request.timeout, deadline=deadline, attempt=attempt
            )
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


async def _wait_for_slot(
    limiter: RateLimiter,
    *,
    key_id: str,
    request: Request,
    policy: RetryPolicy,
    left: float | None,
    attempt: int,
) -> Slot:
    """Wait for a slot, or refuse at once when the wait is longer than the policy allows."""
    return await limiter.acquire(
        key_id,
        request.api_key or "",
        lease=request.timeout + LEASE_MARGIN,
        max_wait=policy.max_retry_after if left is None else min(policy.max_retry_after, left),
        attempts=attempt - 1,
    )


def _answered(response: Response, request: Request, began: float | None, clock: Clock) -> Response:
    """The response as decoding needs it: numbered with its attempt, its request known."""
    if began is not None:
        _log_attempt(request, response.status, clock() - began)
    if response.attempt != request.attempt or response.request is None:
        # A middleware answered by itself: errors still count the attempt.
        response = attrs.evolve(response, attempt=request.attempt, request=request)
    return response


def _retryable(
    exc: APIConnectionError, *, cut: bool, deadline: float | None, attempt: int
) -> APIConnectionError:
    """The connection failure, if another attempt could help; else raise it (or say why)."""
    if cut and isinstance(exc, APITimeoutError):
        raise APITimeoutError(
            f"the call's deadline of {deadline:g} s ran out during an attempt",
            attempts=attempt,
        ) from exc
    if not exc.retryable:
        raise exc
    return exc


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
