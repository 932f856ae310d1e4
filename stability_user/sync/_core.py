"""What a sync session and its views share: the async session, its loop's thread, fork and exit.

:class:`Core` holds the async session and the :class:`~._loop.LoopThread` that runs
it; the hooks below give a child of ``os.fork()`` a fresh core and close what is
still open when the interpreter exits. :class:`Steps` steps an async generator of
the session from the calling thread.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import concurrent.futures.thread  # its exit hook first: threading runs them in reverse
import itertools
import os
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Coroutine
from typing import Any, Final, TypeVar

from .._errors import SESSION_CLOSED, StabilityError
from .._session import StabilitySession as AsyncStabilitySession
from ._loop import LoopThread

__all__ = ["FORKED_ITERATOR", "Core", "Steps"]

T = TypeVar("T")

_CLOSE_WAIT: Final = 10.0  # seconds close() waits for the session's thread to end
_EXIT_WAIT: Final = 5.0  # seconds the exit hook gives all open sessions together
OWN_THREAD: Final = (
    "a sync StabilitySession cannot be called from its own event loop's thread (a "
    "middleware, on_rate_limit_wait or transport of the session): that would wait "
    "for itself forever; use the async session there"
)
FORKED_ITERATOR: Final = (
    "this iterator was started before the process forked, in the parent's event "
    "loop: start a new one in this process"
)
_thread_numbers = itertools.count(1)


class Core:
    """What a sync session and its views share: the async session and the thread running it.

    The thread starts at the first call. Every call is submitted under ``lock``, so
    none is handed to a loop that is stopping (it would never be answered).
    """

    __slots__ = ("__weakref__", "closed", "lock", "options", "session", "thread")

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.session = AsyncStabilitySession(**options)  # checks them: nothing is opened
        self.lock = threading.Lock()
        self.thread: LoopThread | None = None
        self.closed = False
        _CORES.add(self)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Hand ``coro`` to the loop (started now if need be); close it if it cannot be.

        Raises:
            StabilityError: the session is closed, or this is the loop's own thread.
        """
        try:
            with self.lock:
                return self._thread_for_calls().submit(coro)
        except BaseException:
            coro.close()  # never started: no "was never awaited" warning
            raise

    def _thread_for_calls(self) -> LoopThread:
        """The loop's thread, started now if need be (under ``lock``)."""
        if self.closed:
            raise StabilityError(SESSION_CLOSED)
        thread = self.thread
        if thread is None:
            thread = self.thread = LoopThread(f"stability-user-sync-{next(_thread_numbers)}")
        elif thread.in_thread():
            raise StabilityError(OWN_THREAD)
        return thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` in the loop and wait for its result, raising what it raises.

        Raises:
            StabilityError: the session is closed (also when it closes during the call).
        """
        future = self.submit(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            # close() cancels the calls still running once the session has closed.
            if self.closed:
                raise StabilityError(SESSION_CLOSED) from None
            raise
        except BaseException:
            future.cancel()  # KeyboardInterrupt while waiting: the call ends too
            raise

    def close(self, wait: float | None = _CLOSE_WAIT) -> None:
        """Close the async session in its loop, then end the loop and its thread.

        Raises:
            Exception: what the async session's ``close()`` raised, on the first close.
        """
        with self.lock:
            first = not self.closed
            self.closed = True
            thread = self.thread
        if thread is None:
            return  # never used: nothing was opened
        thread.stop(self.session.close, wait=wait)
        if first and thread.finished.done():
            thread.finished.result()

    def abandon(self) -> None:
        """Close without waiting: the session was dropped unclosed (a finaliser cannot block)."""
        with self.lock:
            self.closed = True
            thread = self.thread
        if thread is not None:
            thread.stop(self.session.close, wait=None)

    def after_fork(self) -> None:
        """In a child of a fork: forget the parent's loop and pool, build afresh on next use.

        The parent's loop, pool and store are kept referenced, never closed nor
        collected here: they share the parent's sockets and its event loop's epoll
        instance, and closing them in the child would unregister the parent's
        connections from its loop (or, for TLS, write to its streams).
        """
        self.lock = threading.Lock()  # its holder, if any, was a thread of the parent
        thread = self.thread
        if thread is None:
            return  # never used before the fork: nothing was opened, nothing is shared
        self.thread = None
        _LEFT_BY_PARENT.append((thread, self.session))
        if not self.closed:
            self.session = AsyncStabilitySession(**self.options)


_CORES: weakref.WeakSet[Core] = weakref.WeakSet()
_LEFT_BY_PARENT: list[object] = []  # what a child of a fork must never close (see after_fork)


def _after_fork_in_child() -> None:
    for core in list(_CORES):
        core.after_fork()


def _close_at_exit() -> None:
    """Close every session still open when the interpreter exits, within a bounded time.

    A session at module level in a web app is never closed by the app: this
    closes its pool and its store cleanly. A session that cannot close in time is
    left to the end of the process (its thread is a daemon): exit never hangs.
    """
    cores = [core for core in list(_CORES) if not core.closed]
    for core in cores:
        core.abandon()  # all at once, then wait for them together
    deadline = time.monotonic() + _EXIT_WAIT
    for core in cores:
        thread = core.thread
        if thread is not None:
            thread.stop(core.session.close, wait=max(0.0, deadline - time.monotonic()))


def _register_close_at_exit() -> None:
    """Close open sessions at exit, while worker threads can still be given work.

    concurrent.futures refuses new work once threading's exit hooks have run, and
    they run before :mod:`atexit`'s: closing the machine-wide stores (SQLite, in a
    worker thread) and the loop's default executor needs it. So the sessions are
    closed among threading's exit hooks, which run in reverse order of registration:
    this one before concurrent.futures' own, imported above. Where that hook does not
    exist (another interpreter), :mod:`atexit` is the fallback.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(_close_at_exit)
    else:
        register(_close_at_exit)


if hasattr(os, "register_at_fork"):  # every POSIX system; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
_register_close_at_exit()


class Steps:
    """An async generator stepped from another thread, one ``__anext__`` per step.

    Both methods run in the session's loop: ``aclose`` first ends a step that is
    still running (its caller was interrupted), as an async generator cannot be
    closed while it runs.
    """

    __slots__ = ("_generator", "_step", "session")

    def __init__(
        self, generator: AsyncGenerator[Any, None], session: AsyncStabilitySession
    ) -> None:
        self._generator: AsyncGenerator[Any, None] = generator
        self._step: asyncio.Task[Any] | None = None
        self.session = session  # the core's async session when it began: this process's

    async def next(self) -> Any:
        self._step = asyncio.current_task()
        try:
            return await self._generator.__anext__()
        finally:
            self._step = None

    async def aclose(self) -> None:
        step = self._step
        if step is not None:
            step.cancel()
            await asyncio.wait((step,))
        await self._generator.aclose()
