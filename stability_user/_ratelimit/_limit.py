"""The limit itself: the service's numbers, what a store answers, what a waiting call is told."""

from __future__ import annotations

from typing import Final, Literal

import attrs

from .._checks import check_count, check_seconds

__all__ = [
    "LEASE_MARGIN",
    "MAX_LEASE",
    "MAX_LOCKOUT",
    "SHARED_CLOCK_MARGIN",
    "RateLimit",
    "RateLimitWait",
    "Wait",
    "held_for",
]

SHARED_CLOCK_MARGIN: Final = 0.01
"""Seconds a shared store holds a completed slot past the window.

Processes sharing a store read its clock at different moments (and Redis keeps
milliseconds): the margin covers that, so a slot is never handed on early.
"""


MAX_LOCKOUT: Final = 600.0
"""The longest lockout a 429 can impose on the shared state: ten times the documented one."""

LEASE_MARGIN: Final = 30.0
"""Seconds a rate-limit slot outlives its attempt's timeout before a shared store frees it.

Only a process that died in flight leaves a slot unreleased; a live one may be
slow to release (a busy event loop), and must not find its slot handed on.
"""


MAX_LEASE: Final = 3600.0
"""The longest lease a shared store records: a slot in flight for longer is freed.

A timeout of hours is allowed, but a slot that could stay taken as long would let
one stored value hold a key for as long (a clock stepped back, a hand-edited
store): a shared store drops a slot in flight further ahead than this as state
that cannot be. Only a request still in flight an hour after it was sent can see
its slot handed on.
"""


def held_for(limit: RateLimit) -> float:
    """Seconds a shared store holds a completed request's slot: the window and the margin."""
    return limit.window + SHARED_CLOCK_MARGIN


def _number(value: float) -> float:
    # Not ``converter=float``: attrs reads a converter's signature, and a builtin's
    # costs milliseconds at import.
    return float(value)


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
    window: float = attrs.field(default=10.0, validator=_seconds, converter=_number)
    lockout: float = attrs.field(default=60.0, validator=_seconds, converter=_number)

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
