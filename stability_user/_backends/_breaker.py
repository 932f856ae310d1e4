"""One breaker per shared store: an outage costs each call one bounded delay, once.

While the backend answers, calls go to it. The first call that fails, or that
gets no answer within ``max_wait`` seconds, opens the breaker, and decides for
every call then in flight on it: they give up at once (see :meth:`Breaker.call_here`
for the calls made in their caller's task). Later calls go straight
to the store's fallback (in-process state) until ``retry_after`` seconds have
passed; then one call probes the backend, and its success closes the breaker.
One WARNING says the backend is unavailable (with the reason), one that it is back.

The backend's work runs in a task of its own (:meth:`Breaker.call`): a caller
that is cancelled leaves at once, whatever the client library does with a
cancellation (redis-py on Python 3.11 can swallow one inside ``wait_for``), and
what the work took is handed to ``abandoned`` to be given back. Work that sets
no timeout of its own, and checks when its turn comes whether the backend failed
meanwhile, runs in the caller's task instead (:meth:`Breaker.call_here`), at none
of a task's cost: a Redis store's own connection, one command at a time, where
the calls in flight are those queued for their turn.

A store outlives event loops (``asyncio.run()`` twice, a test suite's loop per
test), and may serve several at once from their threads: the signal that stops
the calls in flight is one future per loop, each resolved in its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, TypeVar

from .._expiry import Expiry
from .._secrets import display_text
from .._types import Clock

__all__ = ["Breaker", "Outage"]

T = TypeVar("T")

logger = logging.getLogger("stability_user")

_RETRY_AFTER: Final = 5.0  # seconds of the fallback before the backend is tried again


class Outage(Exception):  # noqa: N818 - a state the store handles, not an error of the user's
    """The backend failed or did not answer in time: the store uses its fallback."""


class Breaker:
    """Health of one store's backend, shared by every call of the store.

    Args:
        what: what the store is, for the log (``"rate-limit store"``).
        where: where its backend is, safe to print (a URL's password masked).
        errors: the exceptions that mean the backend failed.
        clock: monotonic seconds.
        max_wait: the longest a call waits for the backend.
        retry_after: seconds of the fallback before one call probes the backend again.
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
        self.failures = 0  # how many times the backend failed: a call that saw it change gives up
        # Resolved when the breaker opens: every call in flight then gives up with it.
        # One per event loop: a future belongs to the loop that made it.
        self._opened: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[None]]
        self._opened = weakref.WeakKeyDictionary()
        self._opened_lock = threading.Lock()
        self._work: set[asyncio.Future[object]] = set()

    @property
    def down(self) -> bool:
        """Whether the breaker is open (the backend is considered unavailable)."""
        return self._down_since is not None

    def available(self) -> bool:
        """Whether a call may use the backend now; ``True`` once per probe while it is down.

        The call told ``True`` while the backend is down is the probe: it must end
        in :meth:`call` (whose outcome opens or closes the breaker), or hand the
        probe on with :meth:`probe_not_sent`. Until then no other call probes.
        """
        if self._down_since is None:
            return True
        if not self.usable():
            return False
        self._probing = True  # this call probes; the others use the fallback meanwhile
        return True

    def usable(self) -> bool:
        """Whether :meth:`available` would say ``True`` now, the probe left for it to take."""
        if self._down_since is None:
            return True
        return not self._probing and self._clock() - self._down_since >= self._retry_after

    def probe_not_sent(self) -> None:
        """The probe did not reach the backend after all (it would have had to wait).

        The next call that asks :meth:`available` probes instead, at once.
        """
        self._probing = False

    async def call(
        self,
        work: Callable[[], Awaitable[T]],
        *,
        abandoned: Callable[[T], object] | None = None,
    ) -> T:
        """Run ``work()`` on the backend in a task of its own; wait ``max_wait`` seconds at most.

        Args:
            work: makes the backend's operation.
            abandoned: given the result of work its caller left (cancelled, or gave
                up on an outage) once it completes, to give back what it took.

        Raises:
            Outage: it failed, timed out, or another call found the backend down meanwhile.
        """
        loop = asyncio.get_running_loop()
        opened = self._opened_in(loop)
        # One future woken by whichever comes first (the answer, the breaker opening, the
        # time running out): what asyncio.wait does, without its sets and callbacks each.
        woken: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not woken.done():
                woken.set_result(None)

        async def run() -> T:
            # The answer wakes the caller from the work's last step, a turn of the loop
            # sooner than the task's done callbacks would; the task is done by then.
            try:
                return await work()
            finally:
                wake()

        task: asyncio.Future[T] = asyncio.ensure_future(run())
        opened.add_done_callback(wake)
        timer = loop.call_later(self.max_wait, wake)
        try:
            await woken
        except asyncio.CancelledError:
            self._probing = False  # the caller gave up: another call may probe
            self._abandon(task, abandoned)
            raise
        finally:
            timer.cancel()
            opened.remove_done_callback(wake)
        done = {f for f in (task, opened) if f.done()}
        if task in done:
            error = task.exception()
            if error is None:
                self.succeeded()
                return task.result()
            if isinstance(error, self._errors):
                self.failed(error)
                raise Outage(str(error)) from error
            raise error
        if not done:  # this call waited longest: it decides for every call in flight
            self.failed(TimeoutError(f"no answer within {self.max_wait:g} s"))
        task.cancel()  # a backend that hangs: its connection is dropped
        self._abandon(task, abandoned)
        raise Outage(f"the {self.what} at {self.where} is unavailable")

    async def call_here(self, work: Callable[[int], Awaitable[T]]) -> T:
        """Run ``work(failures)`` in the caller's task; wait ``max_wait`` seconds at most.

        For work that swallows no cancellation (no timeout of its own but the
        connect timeout of a connection it opens) and that gives up, raising
        :class:`Outage`, when its turn comes and :attr:`failures` is no longer the
        count it was given (the backend failed while it waited): the calls queued
        behind one that fails end then, not at ``max_wait``, at none of a task's
        cost. A call already waiting for its answer when another fails is not
        stopped (it ends at ``max_wait`` at the latest), and its success does not
        close the breaker that failure opened. A caller cancelled meanwhile gets
        the cancellation: what the work took is the caller's to give back.

        Raises:
            Outage: it failed, timed out, or another call found the backend down meanwhile.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None  # noqa: S101 - a coroutine always runs in a task here
        expiry = Expiry(task, loop.time() + self.max_wait)  # asyncio.timeout, on 3.10 too
        timer = loop.call_at(expiry.when, expiry.expire)
        failures = self.failures
        probe = self._down_since is not None  # the one call let through while it is down
        try:
            result = await work(failures)
        except asyncio.CancelledError:
            if probe:
                self._probing = False  # another call may probe
            if expiry.timed_out():  # the wait ran out: the backend hangs
                self.failed(TimeoutError(f"no answer within {self.max_wait:g} s"))
                raise Outage(f"the {self.what} at {self.where} is unavailable") from None
            raise
        except self._errors as exc:
            self.failed(exc)
            raise Outage(str(exc)) from exc
        except BaseException:
            if probe:
                self._probing = False
            raise
        finally:
            expiry.finished = True
            timer.cancel()
        if self.failures == failures:  # else another call found it failing meanwhile
            self.succeeded()
        return result

    def _opened_in(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        with self._opened_lock:
            opened = self._opened.get(loop)
            if opened is None or opened.done():
                opened = self._opened[loop] = loop.create_future()
            return opened

    def _stop_calls_in_flight(self) -> None:
        with self._opened_lock:
            pending = [(loop, f) for loop, f in self._opened.items() if not f.done()]
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, opened in pending:
            if loop is running:
                opened.set_result(None)
            elif not loop.is_closed():
                # Another thread's loop: resolved there. A loop that closes meanwhile
                # has no call left to stop.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_resolve, opened)

    def _abandon(self, task: asyncio.Future[T], abandoned: Callable[[T], object] | None) -> None:
        def done(finished: asyncio.Future[T]) -> None:
            self._work.discard(finished)
            if finished.cancelled() or finished.exception() is not None:
                return  # nothing taken, or nothing known: a lease frees what was
            if abandoned is not None:
                abandoned(finished.result())

        self._work.add(task)  # type: ignore[arg-type]
        task.add_done_callback(done)

    def failed(self, error: BaseException) -> None:
        """The backend failed: open the breaker, and stop every call in flight on it."""
        self._probing = False
        self.failures += 1
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
        self._stop_calls_in_flight()

    def succeeded(self) -> None:
        """The backend answered: close the breaker if it was open."""
        self._probing = False
        if self._down_since is not None:
            self._down_since = None
            logger.warning("%s %s is back: its state is shared again", self.what, self.where)

    async def settle(self) -> None:
        """Wait (a second at most) for the work callers left to end."""
        if self._work:
            await asyncio.wait(set(self._work), timeout=1.0)


def _resolve(opened: asyncio.Future[None]) -> None:
    if not opened.done():
        opened.set_result(None)
