"""One event loop running in a thread of its own, for sync code to hand coroutines to.

:class:`LoopThread` is what :class:`stability_user.sync.StabilitySession` runs its
async session in. Any thread hands it a coroutine (:meth:`LoopThread.submit`) and
waits for the result; the loop runs them all, so they share one connection pool
and one rate limiter. :meth:`LoopThread.stop` runs a last coroutine (the
session's ``close()``), cancels whatever is still running, shuts down the async
generators and the default executor, and closes the loop: the thread ends with
nothing of it left open.

The thread is a daemon. A non-daemon thread is joined *before* ``atexit``
functions run, so a session nobody closed would keep the interpreter from ever
exiting; a daemon thread is not waited for, and the ``atexit`` hook of
:mod:`stability_user.sync` closes what is still open within a bounded time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An event loop served by a daemon thread, started at once.

    Args:
        name: the thread's name (shown by debuggers and ``threading.enumerate()``).
    """

    __slots__ = ("_stopping", "_thread", "finished", "loop", "pid")

    def __init__(self, name: str) -> None:
        """Create the loop and start the thread that runs it."""
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()  # a child of a fork has the object, not the thread
        self._stopping = False
        # The outcome of stop()'s last coroutine: close() reports its error.
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            # What the last turn scheduled (a closed connection closing its socket)
            # runs before the loop closes; the generators are shut down already.
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    @property
    def alive(self) -> bool:
        """Whether the thread is still running (in this process)."""
        return self._thread.is_alive()

    def in_thread(self) -> bool:
        """Whether the caller is the loop's own thread (waiting there would deadlock)."""
        return threading.get_ident() == self._thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` in the loop; its result (or error) arrives in the future.

        The caller makes sure the loop is not stopping (see
        :class:`stability_user.sync.StabilitySession`, which submits under its lock).
        """
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, last: Callable[[], Coroutine[Any, Any, None]], *, wait: float | None) -> bool:
        """Run ``last()``, end everything else the loop runs, and end the thread.

        Calls still running after ``last()`` are cancelled, so every waiting
        caller gets an answer. Idempotent: a second call only waits.

        Args:
            last: makes the coroutine to run first (the session's ``close``).
            wait: seconds to wait for the thread to end; ``None`` not to wait (from
                the loop's own thread, or a finaliser that must not block).

        Returns:
            Whether the thread has ended. What ``last()`` raised is in :attr:`finished`.
        """
        if not self._stopping:
            self._stopping = True
            # Scheduled after every coroutine submitted before: those are tasks by then.
            self.loop.call_soon_threadsafe(self._shutdown, last)
        if wait is None or self.in_thread():
            return not self.alive
        self._thread.join(wait)
        return not self.alive

    def _shutdown(self, last: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.loop.create_task(self._finish(last))

    async def _finish(self, last: Callable[[], Coroutine[Any, Any, None]]) -> None:
        loop = self.loop
        try:
            try:
                await last()
            except Exception as error:  # noqa: BLE001 - handed to the caller of stop()
                self.finished.set_exception(error)
            else:
                self.finished.set_result(None)
            await _cancel_the_rest()
            await loop.shutdown_asyncgens()
            await loop.shutdown_default_executor()
        finally:
            loop.stop()


_ROUNDS: Final = 10  # a task cancelled may start others (a connection's attempts): so many times


async def _cancel_the_rest() -> None:
    """Cancel every other task of the loop and wait for them, and for what they start."""
    current = asyncio.current_task()
    for _ in range(_ROUNDS):
        others = asyncio.all_tasks() - {current}
        if not others:
            return
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
