"""Client-side rate limiting per API key, shared by every call that uses the key.

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

import bisect
import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Final, Literal, Protocol

import attrs

from ._checks import check_count, check_seconds
from ._errors import RateLimitError
from ._secrets import mask_secret
from ._types import Clock, Sleep

__all__ = [
    "MemoryRateLimitStore",
    "RateLimit",
    "RateLimitStore",
    "RateLimitWait",
    "RateLimiter",
    "Slot",
    "Wait",
]

logger = logging.getLogger("stability_user")

MAX_LOCKOUT: Final = 600.0
"""The longest lockout a 429 can impose on the shared state: ten times the documented one."""


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


class _KeyState:
    __slots__ = ("done", "in_flight", "locked_until")

    def __init__(self) -> None:
        # Times at which completed requests free their slots, in order. A list, not a
        # deque: most keys of a bulk run hold one or two, and an empty deque alone
        # costs several hundred bytes.
        self.done: list[float] = []
        self.in_flight: set[int] = set()  # tokens of requests not yet completed
        self.locked_until = 0.0

    def busy(self, now: float) -> bool:
        return bool(self.in_flight) or self.locked_until > now


class MemoryRateLimitStore:
    """The limiter's state in this process: shared by every session and thread using it.

    Every session of the process on the default clock shares one store
    (:meth:`shared`). Memory holds only
    keys used within the last window, at most ``max_keys`` of them (least recently
    used forgotten first, never one in flight or locked out).
    """

    _shared: MemoryRateLimitStore | None = None
    _shared_lock: Final = threading.Lock()

    def __init__(self, *, clock: Clock = time.monotonic, max_keys: int = 16_384) -> None:
        """Keep state on ``clock``'s time, for at most ``max_keys`` keys at once."""
        self._clock = clock
        self._max_keys = check_count("max_keys", max_keys)
        self._keys: collections.OrderedDict[str, _KeyState] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)

    @classmethod
    def shared(cls) -> MemoryRateLimitStore:
        """The process's store on :func:`time.monotonic`, made on first use."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def __len__(self) -> int:
        """How many keys the store currently remembers."""
        return len(self._keys)

    def _state(self, key_id: str, now: float) -> _KeyState:
        keys = self._keys
        state = keys.get(key_id)
        if state is None:
            self._forget(now)
            state = keys[key_id] = _KeyState()
        else:
            keys.move_to_end(key_id)
        return state

    def _forget(self, now: float) -> None:
        # Look at a few of the least recently used keys per new key: amortised O(1).
        keys = self._keys
        for _ in range(8):
            if not keys:
                return
            key_id, state = next(iter(keys.items()))
            if state.busy(now):
                keys.move_to_end(key_id)  # in use: never forgotten
                continue
            idle = not state.done or state.done[-1] <= now
            if not idle and len(keys) < self._max_keys:
                return
            del keys[key_id]

    def acquire_nowait(self, key_id: str, limit: RateLimit, lease: float) -> int | Wait:
        """:meth:`acquire` without an await: the in-process store never blocks."""
        with self._lock:
            now = self._clock()
            state = self._state(key_id, now)
            if state.locked_until > now:
                return Wait(state.locked_until - now, lockout=True)
            done = state.done
            expired = bisect.bisect_right(done, now)
            if expired:
                del done[:expired]
            in_flight = state.in_flight
            # No lease here: a request of this process always releases its slot (in a
            # `finally`), and if the process dies, this state dies with it.
            if len(done) + len(in_flight) < limit.requests:
                token = next(self._tokens)
                in_flight.add(token)
                return token
            # A request still in flight frees its slot no sooner than a window from now.
            return Wait(done[0] - now if done else limit.window)

    async def acquire(self, key_id: str, limit: RateLimit, lease: float) -> int | str | Wait:
        """Take a slot now and return its token, or say how long until one may be free."""
        return self.acquire_nowait(key_id, limit, lease)

    def release_nowait(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        """:meth:`release` without an await."""
        with self._lock:
            now = self._clock()
            state = self._state(key_id, now)
            if token in state.in_flight:
                state.in_flight.discard(token)
                bisect.insort(state.done, now + limit.window)

    async def release(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        """The request of ``token`` completed now: hold its slot ``window`` seconds more."""
        self.release_nowait(key_id, token, limit)

    async def lock(self, key_id: str, seconds: float) -> bool:
        """Lock the key out for ``seconds``; ``True`` when it was not locked before."""
        with self._lock:
            now = self._clock()
            state = self._state(key_id, now)
            fresh = state.locked_until <= now
            state.locked_until = max(state.locked_until, now + seconds)
            return fresh

    async def aclose(self) -> None:
        """Nothing to release."""


@attrs.frozen
class Slot:
    """A slot taken for one request, to be released when it completes."""

    key_id: str
    token: int | str


_SYNC_STORES: Final = (MemoryRateLimitStore,)


class RateLimiter:
    """Keeps every request of a session (and its views) under the limit of its key.

    Args:
        limit: the limit per key.
        store: where the state is kept.
        sleep: how to wait (injected by tests).
        on_wait: called before each wait for the limit or a lockout.
        owns_store: close ``store`` with the limiter (a store made from a name or URL).
    """

    __slots__ = ("_fast", "_on_wait", "_owns_store", "_sleep", "limit", "store")

    def __init__(
        self,
        limit: RateLimit,
        store: RateLimitStore,
        *,
        sleep: Sleep,
        on_wait: Callable[[RateLimitWait], None] | None = None,
        owns_store: bool = False,
    ) -> None:
        """Limit with ``limit``, keeping the state in ``store``."""
        self.limit = limit
        self.store = store
        self._sleep = sleep
        self._on_wait = on_wait
        self._owns_store = owns_store
        # The in-process store answers without an await: the common case costs no coroutine.
        self._fast = store if isinstance(store, _SYNC_STORES) else None

    async def acquire(
        self, key_id: str, api_key: str, *, lease: float, max_wait: float, attempts: int
    ) -> Slot:
        """Wait until the key may send, and take a slot.

        Raises:
            RateLimitError: at once, without waiting, when the wait is longer than
                ``max_wait`` (``retry_after`` says how long it would be).
        """
        limit = self.limit
        while True:
            fast = self._fast
            answer = (
                fast.acquire_nowait(key_id, limit, lease)
                if fast is not None
                else await self.store.acquire(key_id, limit, lease)
            )
            if not isinstance(answer, Wait):
                return Slot(key_id, answer)
            reason: Literal["rate limit", "lockout"] = "lockout" if answer.lockout else "rate limit"
            if answer.seconds > max_wait:
                raise _refused(api_key, answer, attempts, limit)
            if self._on_wait is not None:
                self._on_wait(RateLimitWait(mask_secret(api_key), answer.seconds, reason))
            logger.debug(
                "waiting %.3f s for the %s of %s", answer.seconds, reason, mask_secret(api_key)
            )
            await self._sleep(answer.seconds)
            max_wait -= answer.seconds

    async def release(self, slot: Slot) -> None:
        """The slot's request completed now."""
        fast = self._fast
        if fast is not None:
            fast.release_nowait(slot.key_id, slot.token, self.limit)
        else:
            await self.store.release(slot.key_id, slot.token, self.limit)

    async def lock(self, key_id: str, api_key: str, retry_after: float | None) -> None:
        """The service answered 429: every call on the key waits out the lockout.

        A ``Retry-After`` longer than :data:`MAX_LOCKOUT` is cut to it: a hostile or
        broken answer must not lock a key out of every process for a year.
        """
        seconds = self.limit.lockout if retry_after is None else min(retry_after, MAX_LOCKOUT)
        if seconds > 0 and await self.store.lock(key_id, seconds):
            # One line per lockout, not one per call that meets it.
            logger.warning(
                "the service locked %s out for %.0f s (429): its calls wait until then",
                mask_secret(api_key),
                seconds,
            )

    async def aclose(self) -> None:
        """Close the store if the limiter made it."""
        if self._owns_store:
            await self.store.aclose()


def _refused(api_key: str, wait: Wait, attempts: int, limit: RateLimit) -> RateLimitError:
    key = mask_secret(api_key)
    if wait.lockout:
        why = f"the service locked {key} out"
    else:
        why = f"{key} used its {limit.requests} requests per {limit.window:g} s"
    return RateLimitError(
        429,
        attempts=attempts,
        detail=f"not sent: {why}, and the wait is longer than the retry policy allows",
        retry_after=wait.seconds,
    )
