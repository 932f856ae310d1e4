"""A callback a moment later, armed at most once at a time: when queued work is applied."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Soon"]


class Soon:
    """Runs ``callback`` ``delay`` seconds after it is armed, on the loop that armed it.

    Arming again while it is armed changes nothing, unless the loop changed: the
    timer of a loop that has ended (``asyncio.run()`` again) never fires.
    """

    __slots__ = ("_callback", "_delay", "_handle", "_loop")

    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        """Nothing is armed yet."""
        self._delay = delay
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self) -> None:
        """Run the callback in ``delay`` seconds, if it is not armed already."""
        loop = asyncio.get_running_loop()
        if self._handle is None or self._loop is not loop:
            self._loop = loop
            self._handle = loop.call_later(self._delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._callback()

    def cancel(self) -> None:
        """Disarm it."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
