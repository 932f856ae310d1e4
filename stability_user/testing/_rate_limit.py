"""The emulated service's per-key rate limit: its numbers, and the window that counts each key."""

from __future__ import annotations

import bisect
import collections
from typing import Final

import attrs

__all__ = ["DOCUMENTED_RATE_LIMIT", "RateLimit", "RateLimiter"]


@attrs.frozen
class RateLimit:
    """The service's per-key rate limit: ``requests`` per ``window`` seconds.

    Past it the key gets 429 with ``Retry-After`` for ``lockout`` seconds.
    The defaults are the service's documented numbers.
    """

    requests: int = 150
    window: float = 10.0
    lockout: float = 60.0


DOCUMENTED_RATE_LIMIT: Final = RateLimit()
"""The service's documented limit (150 requests per 10 s, then 60 s locked out).

Shared as a default: :class:`RateLimit` is frozen.
"""


class RateLimiter:
    """Counts each key's requests in a sliding window, across every connection and client.

    A key's state lasts only as long as it matters: its requests until they leave the
    window, its lockout until it ends. Keys are kept in the order they were last seen,
    so forgetting the ones that no longer matter looks at the oldest few on each request,
    and memory holds the keys of the last window, however many keys a run goes through.

    Attributes:
        limit: the limit in force, or ``None`` for none; it may be changed at any time.
    """

    def __init__(self, limit: RateLimit | None) -> None:
        """Start with no request counted."""
        self.limit = limit
        # Oldest seen first: each key's arrivals in the window (a list, in order: a
        # deque would cost ten times the memory of the one arrival most keys have), and
        # the lockouts, by when they were set.
        self._calls: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._locked_until: collections.OrderedDict[str, float] = collections.OrderedDict()

    @property
    def tracked_keys(self) -> int:
        """How many keys the limiter holds state for: requests in the window, or a lockout."""
        return len(self._calls.keys() | self._locked_until.keys())

    def check(self, key: str, now: float) -> float | None:
        """Count a request of ``key`` at ``now``.

        Returns:
            ``None`` when it is allowed, else the seconds until the key may try again.
        """
        limit = self.limit
        if limit is None:
            return None
        self._forget(now, limit.window)
        locked_until = self._locked_until.get(key)
        if locked_until is not None:
            if now < locked_until:
                return locked_until - now
            del self._locked_until[key]
        calls = self._calls.get(key)
        if calls is None:
            calls = self._calls[key] = []
        else:
            self._calls.move_to_end(key)
            # The arrivals a window ago or more, all at the front: times only grow.
            window = limit.window
            del calls[: bisect.bisect_left(calls, True, key=lambda t: now - t < window)]
        if len(calls) >= limit.requests:
            self._locked_until[key] = now + limit.lockout
            del self._calls[key]  # the lockout starts a fresh window
            return limit.lockout
        calls.append(now)
        return None

    def _forget(self, now: float, window: float) -> None:
        """Drop the keys whose last request has left the window, and the lockouts that ended."""
        calls = self._calls
        while calls:
            times = calls[next(iter(calls))]
            if times and now - times[-1] < window:
                break
            calls.popitem(last=False)
        locks = self._locked_until
        # By when they were set: a lockout set later with a shorter limit waits its turn
        # here, and is dropped at its key's next request in any case.
        while locks and now >= locks[next(iter(locks))]:
            locks.popitem(last=False)
