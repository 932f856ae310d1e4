"""The attempts' timeouts: one timer for the usual ones, and only their own cancellations."""

from __future__ import annotations

import asyncio
import sys

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
    expiries = Expiries(asyncio.get_running_loop(), 0)
    expiry = expiries.start(0)
    assert await _wait_cancelled(expiries, expiry) is True
    if sys.version_info >= (3, 11):
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert len(expiries) == 0


async def test_stopped_in_time_never_fires() -> None:
    expiries = Expiries(asyncio.get_running_loop(), 0)
    expiry = expiries.start(0)
    expiries.stop(expiry)
    await asyncio.sleep(0)  # the turn it would have fired in, had it not stopped
    await asyncio.sleep(0)
    assert not expiry.expired
    assert len(expiries) == 0


async def test_a_cancellation_from_outside_is_not_a_timeout() -> None:
    loop = asyncio.get_running_loop()
    expiries = Expiries(loop, 0)
    started = loop.create_future()

    async def attempt() -> bool:
        expiry = expiries.start(3600)
        started.set_result(None)
        return await _wait_cancelled(expiries, expiry)

    task = asyncio.ensure_future(attempt())
    await started
    task.cancel()
    assert await task is False


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 counts no cancellations")
async def test_a_cancellation_from_outside_wins_over_the_timeout() -> None:
    loop = asyncio.get_running_loop()
    expiries = Expiries(loop, 0)
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
    expiries = Expiries(loop, 0)
    ended: list[str] = []

    async def attempt(name: str) -> None:
        expiry = expiries.start(0)
        if await _wait_cancelled(expiries, expiry):
            ended.append(name)

    first = asyncio.ensure_future(attempt("first"))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(attempt("second"))
    await asyncio.sleep(0)
    assert len(expiries) == 2  # both in the queue, on one timer
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert ended == ["first", "second"]
    assert len(expiries) == 0


async def _attempt(expiries: Expiries, seconds: float) -> bool:
    return await _wait_cancelled(expiries, expiries.start(seconds))


async def test_another_timeout_has_its_own_timer() -> None:
    expiries = Expiries(asyncio.get_running_loop(), 3600)
    slow = expiries.start(3600)
    # A deadline's remainder, shorter than the usual timeout before it.
    assert await asyncio.wait_for(_attempt(expiries, 0), 5) is True
    assert not slow.expired
    expiries.stop(slow)
    assert len(expiries) == 0


async def test_a_longer_timeout_does_not_hold_back_the_usual_ones() -> None:
    expiries = Expiries(asyncio.get_running_loop(), 0)
    long = expiries.start(3600)  # a view's own, longer timeout
    assert len(expiries) == 0  # not in the queue: the usual ones stay in order
    assert await asyncio.wait_for(_attempt(expiries, 0), 5) is True
    assert not long.expired
    expiries.stop(long)


async def test_the_timer_is_set_again_for_the_next_in_line() -> None:
    expiries = Expiries(asyncio.get_running_loop(), 3600)
    expiries.stop(expiries.start(3600))  # the queue empties, its timer stays set
    waiting = expiries.start(3600)
    expiries._fire()  # the first one's time comes: the next one's is not up
    assert not waiting.expired
    assert len(expiries) == 1
    expiries.stop(waiting)
    assert len(expiries) == 0


async def test_finished_attempts_behind_a_slow_one_are_dropped() -> None:
    expiries = Expiries(asyncio.get_running_loop(), 3600)
    slow = expiries.start(3600)
    for _ in range(10_000):
        expiries.stop(expiries.start(3600))
    assert len(expiries) <= 2 * 64 + 1  # not ten thousand finished attempts
    expiries.stop(slow)
    assert len(expiries) == 0


@pytest.mark.parametrize("seconds", [0, 3600])
async def test_stopping_twice_changes_nothing(seconds: float) -> None:
    expiries = Expiries(asyncio.get_running_loop(), 0)
    expiry = expiries.start(seconds)
    expiries.stop(expiry)
    expiries.stop(expiry)
    assert len(expiries) == 0
    assert not expiry.expired
