"""A session's life: whether it is closed, the waits that end when it is, its requests in flight.

Every wait of a call (for a connection, for the rate limit, between attempts, a
watch's interval) goes through :meth:`Closing.wait`, so :meth:`close` ends them
at once with the "session closed" error instead of leaving them to run out.
:meth:`Closing.sending` counts the requests in flight, so that ``close()`` can
let them give back what they hold before the stores close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Final, TypeVar

from ._errors import SESSION_CLOSED, StabilityError
from ._types import Sleep

__all__ = ["Closing"]

T = TypeVar("T")

_SETTLE: Final = 1.0  # seconds close() waits for the requests in flight to end


class Closing:
    """Whether a session (and its views) is closed; ends every wait when it is.

    Args:
        sleep: how the session waits (injected by tests).
    """

    __slots__ = ("_idle", "_in_flight", "_sleep", "_waiters", "closed")

    def __init__(self, sleep: Sleep) -> None:
        """An open session's life."""
        self.closed = False
        self._sleep = sleep
        self._waiters: set[asyncio.Future[None]] = set()
        self._in_flight = 0
        self._idle: asyncio.Future[None] | None = None

    def check(self) -> None:
        """Raise the "session closed" error if it is closed.

        Raises:
            StabilityError: the session is closed.
        """
        if self.closed:
            raise StabilityError(SESSION_CLOSED)

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` with the session's sleep, unless the session closes first.

        Raises:
            StabilityError: the session is closed, or closed during the wait.
        """
        self.check()
        await self.wait(self._sleep(seconds))

    async def wait(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Await ``awaitable``, for at most ``timeout`` seconds, unless the session closes first.

        Raises:
            StabilityError: the session is closed, or closed during the wait.
            TimeoutError: ``timeout`` passed first (``asyncio.TimeoutError``).
        """
        self.check()
        waited = asyncio.ensure_future(awaitable)
        closed = asyncio.get_running_loop().create_future()
        self._waiters.add(closed)
        try:
            done, _ = await asyncio.wait(
                (waited, closed), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            waited.cancel()
            raise
        finally:
            self._waiters.discard(closed)
            closed.cancel()
        if waited in done:
            return waited.result()
        waited.cancel()
        if self.closed:
            raise StabilityError(SESSION_CLOSED)
        raise asyncio.TimeoutError

    def sending(self) -> None:
        """A request of the session is going out (:meth:`sent` follows, whatever happens)."""
        self._in_flight += 1

    def sent(self) -> None:
        """A request of the session has ended and given back what it held."""
        self._in_flight -= 1
        if not self._in_flight and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def close(self) -> None:
        """Mark the session closed and end every wait of its calls; idempotent."""
        self.closed = True
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)

    async def settle(self) -> None:
        """Wait (a second at most) for the requests in flight to end: their slots given back."""
        if not self._in_flight:
            return
        self._idle = asyncio.get_running_loop().create_future()
        await asyncio.wait((self._idle,), timeout=_SETTLE)
        self._idle = None
