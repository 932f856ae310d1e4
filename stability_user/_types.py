"""The time sources every layer takes as parameters, so tests never wait."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

__all__ = ["Clock", "Sleep"]

Sleep = Callable[[float], Awaitable[None]]
"""An awaitable sleep, :func:`asyncio.sleep` by default; tests pass one that records."""

Clock = Callable[[], float]
"""Monotonic seconds, :func:`time.monotonic` by default."""
