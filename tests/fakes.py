"""Fakes: a clock the tests move by hand, and a sleep that only moves it."""

from __future__ import annotations

import asyncio


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
