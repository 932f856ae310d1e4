"""The attempts' timeouts: one timer for attempts in order, and only their own cancellations."""

from __future__ import annotations

import asyncio

import pytest

from stability_user._expiry import Expiries, Expiry


async def _wait_cancelled(expiries: Expiries, expiry: Expiry) -> bool:
    """Wait for the cancellation; whether it was the timeout's."""
    try:
        await asyncio.get_running_loop().create_future()
    except asyncio.CancelledError:
        return expiry.timed_out()
    finally:
        expiries.stop(expiry)
    raise AssertionError("never reached")  # pragma: no cover


async def test_time_up_cancels_the_task_and_is_a_timeout() -> None:
    expiries = Expiries(asyncio.get_running_loop())
    expiry = expiries.start(0)
    assert await _wait_cancelled(expiries, expiry) is True
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert len(expiries) == 0


async def test_stopped_in_time_never_fires() -> None:
    expiries = Expiries(asyncio.get_running_loop())
    expiry = expiries.start(0)
    expiries.stop(expiry)
    await asyncio.sleep(0)  # the turn it would have fired in, had it not stopped
    await asyncio.sleep(0)
    assert not expiry.expired
    assert len(expiries) == 0


async def test_a_cancellation_from_outside_is_not_a_timeout() -> None:
    loop = asyncio.get_running_loop()
    expiries = Expiries(loop)
    started = loop.create_future()

    async def attempt() -> bool:
        expiry = expiries.start(3600)
        started.set_result(None)
        return await _wait_cancelled(expiries, expiry)

    task = asyncio.ensure_future(attempt())
    await started
    task.cancel()
    assert await task is False


async def test_a_cancellation_from_outside_wins_over_the_timeout() -> None:
    loop = asyncio.get_running_loop()
    expiries = Expiries(loop)
    started: asyncio.Future[Expiry] = loop.create_future()

    async def attempt() -> tuple[bool, int]:
        expiry = expiries.start(3600)
        started.set_result(expiry)
        timed_out = await _wait_cancelled(expiries, expiry)
        return timed_out, asyncio.current_task().cancelling()  # type: ignore[union-attr]

    task = asyncio.ensure_future(attempt())
    expiry = await started
    expiry.expire()  # the time runs out...
    task.cancel()  # ...in the turn the caller cancels too
    timed_out, cancelling = await task
    assert expiry.expired
    assert timed_out is False
    assert cancelling == 1  # the timer's cancellation is undone, the caller's stands


async def test_attempts_in_order_share_one_timer_and_expire_in_order() -> None:
    loop = asyncio.get_running_loop()
    expiries = Expiries(loop)
    ended: list[str] = []

    async def attempt(name: str, seconds: float) -> None:
        expiry = expiries.start(seconds)
        if await _wait_cancelled(expiries, expiry):
            ended.append(name)

    first = asyncio.ensure_future(attempt("first", 0))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(attempt("second", 0.001))
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert ended == ["first", "second"]
    assert len(expiries) == 0


async def _attempt(expiries: Expiries, seconds: float) -> bool:
    return await _wait_cancelled(expiries, expiries.start(seconds))


async def test_a_shorter_timeout_than_the_timer_still_expires_on_time() -> None:
    expiries = Expiries(asyncio.get_running_loop())
    # The queue empties, its timer stays set an hour ahead...
    expiries.stop(expiries.start(3600))
    # ...and an attempt of no time at all does not wait for it.
    assert await asyncio.wait_for(_attempt(expiries, 0), 5) is True


async def test_a_shorter_timeout_than_the_queued_ones_expires_on_time() -> None:
    expiries = Expiries(asyncio.get_running_loop())
    slow = expiries.start(3600)
    # A deadline's remainder, shorter than the usual timeout before it.
    assert await asyncio.wait_for(_attempt(expiries, 0), 5) is True
    assert not slow.expired
    expiries.stop(slow)
    assert len(expiries) == 0


async def test_finished_attempts_behind_a_slow_one_are_dropped() -> None:
    expiries = Expiries(asyncio.get_running_loop())
    slow = expiries.start(3600)
    for _ in range(10_000):
        expiries.stop(expiries.start(3600))
    assert len(expiries) <= 2 * 64 + 1  # not ten thousand finished attempts
    expiries.stop(slow)
    assert len(expiries) == 0


@pytest.mark.parametrize("seconds", [0, 3600])
async def test_stopping_twice_changes_nothing(seconds: float) -> None:
    expiries = Expiries(asyncio.get_running_loop())
    expiry = expiries.start(seconds)
    expiries.stop(expiry)
    expiries.stop(expiry)
    assert len(expiries) == 0
    assert not expiry.expired
