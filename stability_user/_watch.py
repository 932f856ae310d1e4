"""Watching one balance: poll it forever, flag when it falls below a threshold and recovers.

The crossing logic is a small pure state machine (:class:`Threshold`); the loop
takes the function that reads the balance (the session's), a sleep and a clock.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Literal

import attrs

from ._errors import StabilityError
from ._models import Balance
from ._types import Clock, Sleep

__all__ = ["BalanceReading", "Threshold", "watch"]

Crossing = Literal["below", "recovered"]


@attrs.frozen
class BalanceReading:
    """One poll of :meth:`StabilitySession.watch_balance`.

    Attributes:
        balance: the balance read, or ``None`` when this poll failed.
        error: why the poll failed, or ``None``.
        below: whether the balance is below the threshold (``None``: no threshold,
            or the poll failed).
        crossing: ``"below"`` when this reading first fell below the threshold,
            ``"recovered"`` when it first came back to or above it, else ``None``.
        time: the session clock's reading when the poll finished.
    """

    balance: Balance | None
    error: Exception | None
    below: bool | None
    crossing: Crossing | None
    time: float

    @property
    def ok(self) -> bool:
        """Whether the poll read a balance."""
        return self.error is None


@attrs.define
class Threshold:
    """Whether each balance is below ``below``, and which reading crosses it.

    A failed poll (``None``) changes nothing: the next reading is compared with
    the last one that succeeded.
    """

    below: float | None
    was_below: bool | None = None

    def observe(self, balance: Balance | None) -> tuple[bool | None, Crossing | None]:
        """``(is_below, crossing)`` for ``balance``; remembers it for the next reading."""
        if balance is None or self.below is None:
            return None, None
        is_below = balance.credits < self.below
        crossing: Crossing | None = None
        if is_below and not self.was_below:
            crossing = "below"
        elif not is_below and self.was_below:
            crossing = "recovered"
        self.was_below = is_below
        return is_below, crossing


async def watch(
    read: Callable[[], Awaitable[Balance]],
    *,
    interval: float,
    threshold: Threshold,
    sleep: Sleep,
    clock: Clock,
    closed: Callable[[], bool],
) -> AsyncGenerator[BalanceReading, None]:
    """Yield a reading per poll of ``read``, ``interval`` seconds apart, until ``closed()``.

    A poll that fails with a library error is a reading with ``error`` set; the
    watch goes on. Once the session is closed (``closed()``), the watch ends: a
    closed session has nothing more to report, and ``sleep`` ends at once then.
    """
    while not closed():
        balance: Balance | None = None
        error: StabilityError | None = None
        try:
            balance = await read()
        except StabilityError as exc:
            if closed():
                return
            error = exc
        below, crossing = threshold.observe(balance)
        yield BalanceReading(balance, error, below, crossing, clock())
        try:
            await sleep(interval)
        except StabilityError:
            if closed():
                return
            raise
