"""One breaker per shared store: an outage costs each call one bounded delay, once.

While the backend answers, calls go to it. The first call that fails, or that
gets no answer within ``max_wait`` seconds, opens the breaker, and decides for
every call then in flight on it: they give up at once. Later calls go straight
to the store's fallback (in-process state) until ``retry_after`` seconds have
passed; then one call probes the backend, and its success closes the breaker.
One WARNING says the backend is unavailable (with the reason), one that it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Final, TypeVar

from .._secrets import display_text
from .._types import Clock

__all__ = ["Breaker", "Outage"]

T = TypeVar("T")

logger = logging.getLogger("stability_user")

_RETRY_AFTER: Final = 5.0  # seconds of the fallback before the backend is tried again


class Outage(Exception):  # noqa: N818 - a state the store handles, not an error of the user's
    """The backend failed or did not answer in time: the store uses its fallback."""


class _Watch:
    __slots__ = ("interrupted", "task")

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self.task = task
        self.interrupted = False


class Breaker:
    """Health of one store's backend, shared by every call of the store.

    Args:
        what: what the store is, for the log (``"rate-limit store"``).
        where: where its backend is, safe to print (a URL's password masked).
        errors: the exceptions that mean the backend failed.
        clock: monotonic seconds.
        max_wait: the longest a call waits for the backend.
        secrets: texts never to log (passwords in the URL).
    """

    def __init__(
        self,
        what: str,
        where: str,
        *,
        errors: tuple[type[BaseException], ...],
        clock: Clock,
        max_wait: float = 1.0,
        retry_after: float = _RETRY_AFTER,
        secrets: Iterable[str] = (),
    ) -> None:
        """A closed breaker: the backend is used."""
        self.what = what
        self.where = where
        self.max_wait = max_wait
        self._errors = errors
        self._clock = clock
        self._retry_after = retry_after
        self._secrets = tuple(secrets)
        self._down_since: float | None = None
        self._probing = False
        self._watches: set[_Watch] = set()

    @property
    def down(self) -> bool:
        """Whether the breaker is open (the backend is considered unavailable)."""
        return self._down_since is not None

    def available(self) -> bool:
        """Whether a call may use the backend now; ``True`` once per probe while it is down."""
        if self._down_since is None:
            return True
        if self._probing or self._clock() - self._down_since < self._retry_after:
            return False
        self._probing = True  # this call probes; the others use the fallback meanwhile
        return True

    async def call(self, operation: Awaitable[T]) -> T:
        """Await ``operation`` on the backend, for at most ``max_wait`` seconds.

        Raises:
            Outage: it failed, timed out, or another call found the backend down meanwhile.
        """
        watch = _Watch(asyncio.current_task())
        self._watches.add(watch)
        handle = asyncio.get_running_loop().call_later(self.max_wait, self._expired)
        try:
            result = await operation
        except asyncio.CancelledError:
            if not watch.interrupted:
                self._probing = False  # the caller gave up: another call may probe
                raise
            uncancel = getattr(watch.task, "uncancel", None)  # 3.11+: undo our own cancel
            if uncancel is not None:
                uncancel()
            raise Outage(f"the {self.what} at {self.where} is unavailable") from None
        except self._errors as error:
            watch.interrupted = True  # this call knows already: no cancel of its own task
            self.failed(error)
            raise Outage(str(error)) from error
        finally:
            handle.cancel()
            self._watches.discard(watch)
        self.succeeded()
        return result

    def _expired(self) -> None:
        self.failed(TimeoutError(f"no answer within {self.max_wait:g} s"))

    def failed(self, error: BaseException) -> None:
        """The backend failed: open the breaker, and stop every call in flight on it."""
        self._probing = False
        if self._down_since is None:
            reason = display_text(str(error), self._secrets, limit=200)
            logger.warning(
                "%s %s is unavailable (%s%s): using this process's state until it is back",
                self.what,
                self.where,
                type(error).__name__,
                f": {reason}" if reason else "",
            )
        self._down_since = self._clock()
        for watch in self._watches:
            if not watch.interrupted and watch.task is not None:
                watch.interrupted = True
                watch.task.cancel()

    def succeeded(self) -> None:
        """The backend answered: close the breaker if it was open."""
        self._probing = False
        if self._down_since is not None:
            self._down_since = None
            logger.warning("%s %s is back: its state is shared again", self.what, self.where)
