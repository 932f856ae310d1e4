"""Fakes: a clock the tests move by hand, a sleep that only moves it, and simulated time."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class FakeClock:
    """Monotonic seconds that advance only when a fake sleep is awaited or on ``advance``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the wait, move the clock, and yield once to the loop (never really waits)."""
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class VirtualTime:
    """Simulated time for many tasks at once: a sleep waits for the clock to reach its end.

    ``run`` drives it: whenever every task is blocked, time jumps to the earliest
    wake-up. Tasks that only wait on this sleep (and on each other) run exactly as
    they would in real time, in no time, the same way every run.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._sequence = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sequence += 1
        heapq.heappush(self._waiters, (self.now + max(seconds, 0.0), self._sequence, future))
        await future

    async def run(self, main: Awaitable[T]) -> T:
        task = asyncio.ensure_future(main)
        while True:
            for _ in range(20):  # let every woken task run until it blocks again
                await asyncio.sleep(0)
            if task.done():
                return task.result()
            if not self._waiters:
                raise RuntimeError("every task is blocked and none is sleeping: a deadlock")
            wake, _, future = heapq.heappop(self._waiters)
            if future.done():  # its sleeper was cancelled meanwhile
                continue
            self.now = max(self.now, wake)
            future.set_result(None)
