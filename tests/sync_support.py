"""For the sync client's tests: an emulator served from a thread of its own, and what is open."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from stability_user.testing import StabilityEmulator

T = TypeVar("T")


class ServedEmulator:
    """An emulator serving from its own event loop in its own thread, for sync tests.

    Its state is changed through :meth:`call`, in its loop, so a change never
    races a request being answered.
    """

    def __init__(self, emulator: StabilityEmulator) -> None:
        self.emulator = emulator
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="emulator", daemon=True)

    @property
    def base_url(self) -> str:
        return self.emulator.base_url

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` run in the emulator's loop."""

        async def run() -> T:
            return function(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def add_account(self, **kwargs: Any) -> str:
        return self.call(self.emulator.add_account, **kwargs)

    def _serve(self) -> None:
        self.loop.run_forever()
        # A connection accepted while the emulator closed is still being set up, by a
        # task of the loop: cancelled, it closes its socket, and the turn after that
        # lets the socket go before the loop closes.
        self.loop.run_until_complete(_cancel_pending_tasks())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())

    def start(self) -> None:
        self.loop.run_until_complete(self.emulator.start())
        self._thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.emulator.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


async def _cancel_pending_tasks() -> None:
    current = asyncio.current_task()
    pending = asyncio.all_tasks() - {current}
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.sleep(0)  # one turn: the sockets their close scheduled are let go


@contextlib.contextmanager
def served(emulator: StabilityEmulator | None = None) -> Iterator[ServedEmulator]:
    """Serve ``emulator`` (a new one by default) from a thread until the block ends."""
    server = ServedEmulator(emulator or StabilityEmulator())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def open_sockets() -> set[str]:
    """The sockets this process holds open (Linux: ``/proc/self/fd``)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:"):
                found.add(f"{fd}:{target}")
    return found


def session_threads() -> list[threading.Thread]:
    """The sync sessions' event-loop threads still running."""
    return [t for t in threading.enumerate() if t.name.startswith("stability-user-sync-")]
