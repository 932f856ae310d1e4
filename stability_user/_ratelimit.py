"""Client-side rate limiting per API key, as a middleware that sees every attempt.

The service allows 150 requests per 10 seconds per key and locks a key out for
60 seconds past that. This limiter keeps each key under the limit on the
client's side, so a bulk run never triggers the lockout.

A request holds a slot from the moment it is sent until its response has been
read, and is then logged at that completion time. Logging at completion, not at
sending, makes the count conservative: the service saw the request no later
than that, so a new request sent ``window`` seconds after the oldest logged
completion can never land inside the service's window with it.

Memory: a key is remembered while it has a completion within the last window, and
at most ``max_keys`` keys are remembered at once (least recently used forgotten
first), so a run over millions of keys stays small. Forgetting a key early can only
matter if that same key then sends nearly a full window's worth of requests within
the same window, after ``max_keys`` other keys were used in between.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from ._checks import check_count
from ._http import Handler, Request, Response
from ._retry import Sleep

__all__ = ["KeyRateLimiter"]


class _KeyWindow:
    # A list, not a deque: most keys in a bulk run log one or two requests, and an
    # empty deque alone costs several hundred bytes. Popping from the front of a
    # list of at most ``requests`` floats is cheap.
    __slots__ = ("done", "in_flight", "released")

    def __init__(self) -> None:
        self.done: list[float] = []
        self.in_flight = 0
        self.released: asyncio.Event | None = None


class KeyRateLimiter:
    """At most ``requests`` per ``window`` seconds for each ``Authorization`` value.

    Memory holds only the keys used within the last window: a run over a million
    keys keeps a handful of windows, not a million.
    """

    __slots__ = ("_clock", "_max_keys", "_requests", "_sleep", "_window", "_windows")

    def __init__(
        self,
        requests: int,
        window: float,
        *,
        clock: Callable[[], float],
        sleep: Sleep,
        max_keys: int = 16_384,
    ) -> None:
        """Allow ``requests`` per ``window`` seconds per key, remembering ``max_keys`` keys."""
        check_count("rate limit requests", requests)
        if not window > 0:
            raise ValueError(f"rate limit window must be > 0 seconds, got {window!r}")
        self._requests = requests
        self._window = float(window)
        self._clock = clock
        self._sleep = sleep
        self._max_keys = check_count("max_keys", max_keys)
        self._windows: collections.OrderedDict[str, _KeyWindow] = collections.OrderedDict()

    def __len__(self) -> int:
        """How many keys the limiter currently remembers."""
        return len(self._windows)

    def _forget_idle(self, now: float) -> None:
        windows = self._windows
        while windows:
            window = next(iter(windows.values()))
            if window.in_flight:
                return  # in use: never forgotten, even over max_keys
            recent = window.done and now - window.done[-1] < self._window
            if recent and len(windows) < self._max_keys:
                return
            windows.popitem(last=False)

    def _window_of(self, key: str) -> _KeyWindow:
        windows = self._windows
        window = windows.get(key)
        if window is None:
            self._forget_idle(self._clock())
            window = windows[key] = _KeyWindow()
        else:
            windows.move_to_end(key)
        return window

    def _take(self, window: _KeyWindow, now: float) -> bool:
        done = window.done
        expired = 0
        while expired < len(done) and now - done[expired] >= self._window:
            expired += 1
        if expired:
            del done[:expired]
        if len(done) + window.in_flight < self._requests:
            window.in_flight += 1
            return True
        return False

    def try_acquire(self, key: str) -> _KeyWindow | None:
        """Take a slot of ``key`` if one is free now, without waiting; else ``None``."""
        window = self._window_of(key)
        return window if self._take(window, self._clock()) else None

    async def acquire(self, key: str) -> _KeyWindow:
        """Wait until ``key`` may send another request, and take the slot."""
        window = self._window_of(key)
        while True:
            now = self._clock()
            if self._take(window, now):
                return window
            done = window.done
            if done:
                await self._sleep(done[0] + self._window - now)
            else:  # every slot is in flight: wait for one to finish
                if window.released is None:
                    window.released = asyncio.Event()
                await window.released.wait()

    def release(self, window: _KeyWindow) -> None:
        """Log the finished request at the current time and free its slot."""
        window.in_flight -= 1
        window.done.append(self._clock())
        if window.released is not None:
            window.released.set()
            window.released = None

    async def __call__(self, request: Request, handler: Handler) -> Response:
        """Use the limiter as a middleware: every attempt takes a slot of its key."""
        return await self.bind(handler)(request)

    def bind(self, handler: Handler) -> Handler:
        """``handler`` behind the limiter: every attempt takes a slot of its key."""
        try_acquire, acquire, release = self.try_acquire, self.acquire, self.release

        async def limited(request: Request) -> Response:
            key = request.headers.get("Authorization", "")
            # The common case takes a free slot at once, without a coroutine to await.
            window = try_acquire(key) or await acquire(key)
            try:
                return await handler(request)
            finally:
                release(window)

        return limited
