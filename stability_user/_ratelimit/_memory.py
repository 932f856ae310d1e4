"""The rate limiter's state in this process, one store per event loop by default.

``rate_limit_store="memory"`` (the default) is the store of the running event loop
(:meth:`MemoryRateLimitStore.for_loop`): every session of a program on its one
loop shares it, and each test of a suite (pytest-asyncio gives each its own loop)
starts afresh, so a 429 provoked in one test never stalls the next. No lease
here: a request of this process always releases its slot (in a ``finally``), and
if the process dies, this state dies with it.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
import threading
import time
import weakref
from typing import Final

from .._checks import check_count
from .._types import Clock
from ._limit import RateLimit, Wait

__all__ = ["MemoryRateLimitStore"]

_PRUNE_AFTER: Final = 64  # completed slots a key keeps before the expired ones are dropped


class _KeyState:
    __slots__ = ("done", "head", "in_flight", "locked_until")

    def __init__(self) -> None:
        # Times at which completed requests free their slots, in order, from ``head``
        # on (those before it have freed theirs). A list, not a deque: most keys of a
        # bulk run hold one or two, and an empty deque alone costs several hundred bytes.
        self.done: list[float] = []
        self.head = 0
        self.in_flight: set[int] = set()  # tokens of requests not yet completed
        self.locked_until = 0.0

    def busy(self, now: float) -> bool:
        return bool(self.in_flight) or self.locked_until > now


class MemoryRateLimitStore:
    """The limiter's state in this process: shared by every session and thread using it.

    Every session on the default clock uses the store of its event loop
    (:meth:`for_loop`); a store made by hand is shared by whoever is given it, in
    any thread. Memory holds only
    keys used within the last window, at most ``max_keys`` of them (least recently
    used forgotten first, never one in flight or locked out).
    """

    _by_loop: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MemoryRateLimitStore]] = (
        weakref.WeakKeyDictionary()
    )
    _by_loop_lock: Final = threading.Lock()

    def __init__(self, *, clock: Clock = time.monotonic, max_keys: int = 16_384) -> None:
        """Keep state on ``clock``'s time, for at most ``max_keys`` keys at once."""
        self._clock = clock
        self._max_keys = check_count("max_keys", max_keys)
        self._keys: collections.OrderedDict[str, _KeyState] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop | None = None) -> MemoryRateLimitStore:
        """The store of ``loop`` (the running one by default) on :func:`time.monotonic`.

        Made on first use and forgotten with its loop: what ``"memory"`` means.

        Raises:
            RuntimeError: no ``loop`` given and none running.
        """
        loop = loop or asyncio.get_running_loop()
        store = cls._by_loop.get(loop)
        if store is None:
            with cls._by_loop_lock:  # two threads may make a loop's first session at once
                store = cls._by_loop.setdefault(loop, cls())
        return store

    def __len__(self) -> int:
        """How many keys the store currently remembers."""
        return len(self._keys)

    def _state(self, key_id: str, now: float) -> _KeyState:
        state = self._keys.get(key_id)
        if state is None:
            return self._new(key_id, now)
        self._keys.move_to_end(key_id)
        return state

    def _new(self, key_id: str, now: float) -> _KeyState:
        self._forget(now)
        state = self._keys[key_id] = _KeyState()
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
            state = self._keys.get(key_id)
            if state is None:
                state = self._new(key_id, now)
            else:
                self._keys.move_to_end(key_id)  # the least recently used are forgotten first
            if state.locked_until > now:
                return Wait(state.locked_until - now, lockout=True)
            done = state.done
            in_flight = state.in_flight
            head = state.head
            if (
                len(done) - head > _PRUNE_AFTER
                or len(done) - head + len(in_flight) >= limit.requests
            ):
                # Freed slots are passed over when they stand in the way or have piled
                # up: a search, not a list move per call; the list is compacted once
                # half of it is behind.
                head = bisect.bisect_right(done, now, head)
                if head > _PRUNE_AFTER and 2 * head > len(done):
                    del done[:head]
                    head = 0
                state.head = head
            # No lease here: a request of this process always releases its slot (in a
            # `finally`), and if the process dies, this state dies with it.
            if len(done) - head + len(in_flight) < limit.requests:
                token = next(self._tokens)
                in_flight.add(token)
                return token
            # A request still in flight frees its slot no sooner than a window from now.
            return Wait(done[head] - now if head < len(done) else limit.window)

    async def acquire(self, key_id: str, limit: RateLimit, lease: float) -> int | str | Wait:
        """Take a slot now and return its token, or say how long until one may be free."""
        return self.acquire_nowait(key_id, limit, lease)

    def release_nowait(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        """:meth:`release` without an await."""
        with self._lock:
            now = self._clock()
            state = self._keys.get(key_id)
            if state is None:  # forgotten: only a key with nothing in flight is
                return
            if token in state.in_flight:
                state.in_flight.discard(token)
                # One clock, read under the lock: completions come in order.
                state.done.append(now + limit.window)

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
        """Nothing to give back: the state lives as long as the store."""
