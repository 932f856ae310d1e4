"""Client-side rate limiting per API key: the limit, and what a store of its state must do.

The service allows 150 requests per 10 seconds per key and, past that, answers
429 and locks the key out for 60 seconds, for every program using it. The
:class:`RateLimiter` keeps a session's calls under the limit and remembers the
lockout; its state lives in a store, which is what decides how widely it is
shared: this process (:class:`MemoryRateLimitStore`), this machine
(:class:`~stability_user.LocalRateLimitStore`) or a fleet
(:class:`~stability_user.RedisRateLimitStore`).

The invariant every store keeps: a slot is taken when a request is sent and held
until ``window`` seconds after its response was read. Whatever the interleaving
and however long requests are in flight, the service, counting arrivals in any
window of ``window`` seconds, never sees more than ``requests`` of them: every
request arriving in a window ``[t, t + window)`` was sent before ``t + window``
and completed at or after ``t``, so all of them held their slots at once, at
the moment the last of them was sent. A slot of a process that died in flight
is freed ``lease + window`` seconds after it was taken.
"""

from __future__ import annotations

from typing import Final, Literal, Protocol

import attrs

from ._checks import check_count, check_seconds

__all__ = [
    "SHARED_CLOCK_MARGIN",
    "RateLimit",
    "RateLimitStore",
    "RateLimitWait",
    "Wait",
    "held_for",
]

SHARED_CLOCK_MARGIN: Final = 0.01
"""Seconds a shared store holds a completed slot past the window.

Processes sharing a store read its clock at different moments (and Redis keeps
milliseconds): the margin covers that, so a slot is never handed on early.
"""


def held_for(limit: RateLimit) -> float:
    """Seconds a shared store holds a completed request's slot: the window and the margin."""
    return limit.window + SHARED_CLOCK_MARGIN


def _count(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    check_count(f"rate limit {attribute.name}", value)


def _seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds(f"rate limit {attribute.name}", value)


@attrs.frozen
class RateLimit:
    """The service's limit for one API key; the defaults are its documented numbers.

    Attributes:
        requests: requests allowed per ``window``.
        window: seconds.
        lockout: seconds a key is locked out after a 429 that names no ``Retry-After``.
    """

    requests: int = attrs.field(default=150, validator=_count)
    window: float = attrs.field(default=10.0, validator=_seconds, converter=float)
    lockout: float = attrs.field(default=60.0, validator=_seconds, converter=float)

    @classmethod
    def parse(cls, text: str, *, lockout: float = 60.0) -> RateLimit:
        """Read ``REQUESTS/SECONDS``, e.g. ``"150/10"``.

        Raises:
            ValueError: naming what is wrong with ``text``.
        """
        requests, _, window = text.partition("/")
        try:
            count, seconds = int(requests), float(window)
        except ValueError:
            raise ValueError(
                f"rate limit must be REQUESTS/SECONDS, e.g. 150/10, got {text!r}"
            ) from None
        return cls(count, seconds, lockout)


@attrs.frozen
class Wait:
    """What a store says when no slot is free: how long until one may be.

    Attributes:
        seconds: the wait.
        lockout: whether the key is locked out after a 429 (else the window is full).
    """

    seconds: float
    lockout: bool = False


@attrs.frozen
class RateLimitWait:
    """A call waits for its key's rate limit; what ``on_rate_limit_wait`` is given.

    Attributes:
        key: the API key, masked (``sk-…abcd``).
        seconds: how long the call waits.
        reason: ``"rate limit"`` (the window is full) or ``"lockout"`` (after a 429).
    """

    key: str
    seconds: float
    reason: Literal["rate limit", "lockout"]


class RateLimitStore(Protocol):
    """Where the limiter's state is kept; every method is atomic for its key.

    Keys are given as :func:`key ids <stability_user._config.key_id_of>`, never in clear.
    """

    async def acquire(self, key_id: str, limit: RateLimit, lease: float) -> int | str | Wait:
        """Take a slot now and return its token, or say how long until one may be free.

        ``lease`` is the longest the request may be in flight: a slot never released
        is freed ``lease + window`` seconds after it was taken.
        """

    async def release(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        """The request of ``token`` completed now: hold its slot ``window`` seconds more."""

    async def lock(self, key_id: str, seconds: float) -> bool:
        """Lock the key out for ``seconds``; ``True`` when it was not locked before."""

    async def aclose(self) -> None:
        """Release what the store holds (connections, files)."""
