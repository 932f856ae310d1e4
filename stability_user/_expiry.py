"""The timeouts of a transport's attempts on one event loop, on one timer handle.

What ``asyncio.timeout`` does for each attempt, for a fraction of its cost.
Attempts with the session's usual timeout start in order, so they expire in
order: they wait in a queue, and a single timer handle, set for the oldest,
cancels the task of each attempt whose time is up. An attempt with another
timeout (a deadline's remainder, a view's own) gets a handle of its own. Only a cancellation
the timer caused becomes a timeout; one from outside still cancels the call.
"""

from __future__ import annotations

import asyncio
import collections
import sys
from typing import Final

__all__ = ["Expiries", "Expiry"]

_COMPACT_OVER: Final = 64  # finished attempts the queue may hold before it is compacted


class Expiry:
    """The timeout of one attempt, started by :meth:`Expiries.start`."""

    __slots__ = ("_cancelling", "_handle", "_task", "expired", "finished", "when")

    def __init__(self, task: asyncio.Task[object], when: float) -> None:
        """Count until ``when`` (on the loop's clock) for ``task``."""
        self._task = task
        self.when = when
        # Python 3.10 counts no cancellations: there, a timeout wins, as in aiohttp.
        self._cancelling = 0
        if sys.version_info >= (3, 11):
            self._cancelling = task.cancelling()
        self.expired = False
        self.finished = False
        self._handle: asyncio.TimerHandle | None = None

    def expire(self) -> None:
        """The time is up: cancel the attempt's task."""
        if not self.finished:
            self.expired = True
            self._task.cancel()

    def timed_out(self) -> bool:
        """After a ``CancelledError``: whether this timer caused it alone (then it is undone)."""
        if not self.expired:
            return False
        if sys.version_info >= (3, 11):
            return self._task.uncancel() <= self._cancelling
        return True  # pragma: no cover - Python 3.10


class Expiries:
    """The attempts' timeouts on one event loop.

    Args:
        loop: the loop the attempts run on.
        usual: the usual timeout, in seconds: the attempts that share the timer.
    """

    __slots__ = ("_handle", "_live", "_loop", "_queue", "_usual")

    def __init__(self, loop: asyncio.AbstractEventLoop, usual: float) -> None:
        """No attempt yet, no timer."""
        self._loop = loop
        self._usual = usual
        self._queue: collections.deque[Expiry] = collections.deque()
        self._live = 0  # attempts in the queue not finished
        self._handle: asyncio.TimerHandle | None = None  # set for the oldest in the queue

    def __len__(self) -> int:
        """Attempts the queue holds, finished ones not yet dropped included."""
        return len(self._queue)

    def start(self, seconds: float) -> Expiry:
        """Start the timeout of the running task's attempt: ``seconds`` from now.

        Raises:
            RuntimeError: no task is running.
        """
        loop = self._loop
        task = asyncio.current_task(loop)
        if task is None:  # pragma: no cover - a coroutine always runs in a task here
            raise RuntimeError("a request's timeout needs a running task")
        expiry = Expiry(task, loop.time() + seconds)
        queue = self._queue
        if seconds != self._usual:
            # Another timeout: it would not expire in order with the usual ones.
            expiry._handle = loop.call_at(expiry.when, expiry.expire)
            return expiry
        queue.append(expiry)
        self._live += 1
        if self._handle is None:
            self._handle = loop.call_at(expiry.when, self._fire)
        return expiry

    def stop(self, expiry: Expiry) -> None:
        """The attempt ended (in time, or not): its timer is off."""
        if expiry.finished:
            return
        expiry.finished = True
        handle = expiry._handle
        if handle is not None:
            handle.cancel()
            return
        self._live -= 1
        queue = self._queue
        while queue and queue[0].finished:
            queue.popleft()
        # One slow attempt at the front holds back those behind it that finished:
        # they are dropped once they are most of the queue.
        if len(queue) > _COMPACT_OVER and len(queue) > 2 * self._live:
            self._queue = collections.deque(e for e in queue if not e.finished)

    def _fire(self) -> None:
        self._handle = None
        now = self._loop.time()
        queue = self._queue
        while queue:
            expiry = queue[0]
            if not expiry.finished:
                if expiry.when > now:
                    self._handle = self._loop.call_at(expiry.when, self._fire)
                    return
                expiry.expire()
                expiry.finished = True
                self._live -= 1
            queue.popleft()
