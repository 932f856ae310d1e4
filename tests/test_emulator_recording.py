"""The request log: what is kept of each request, how many are kept, and waiting on it."""

from __future__ import annotations

import asyncio

import pytest

from stability_user.testing import StabilityEmulator

from .fakes import FakeClock
from .wire import get


async def test_requests_are_recorded_with_the_key_redacted(
    emulator: StabilityEmulator, clock: FakeClock
) -> None:
    key = emulator.add_account(account_id="user-r")
    await get(emulator.base_url, "/v1/user/balance", key, Organization="org-000001")
    (record,) = emulator.requests
    assert (record.method, record.path, record.status, record.account_id) == (
        "GET",
        "/v1/user/balance",
        200,
        "user-r",
    )
    assert record.headers["Authorization"] == "[redacted]"
    assert record.headers["Organization"] == "org-000001"
    assert record.time == clock.now
    assert key not in repr(emulator.requests)


async def test_recording_can_be_turned_off_and_still_counts() -> None:
    async with StabilityEmulator(record=False) as emulator:
        key = emulator.add_account(credits=1)
        assert (await get(emulator.base_url, "/v1/user/balance", key))[0] == 200
        await emulator.wait_for_requests(1)
        assert (emulator.requests, emulator.request_count) == ([], 1)


class TestBoundedLog:
    async def test_keeps_the_latest_and_counts_all(self, clock: FakeClock) -> None:
        async with StabilityEmulator(clock=clock, max_recorded=3) as emulator:
            key = emulator.add_account()
            for number in range(5):
                clock.advance(1)
                await get(emulator.base_url, f"/v1/user/nothing-{number}", key)
            assert emulator.max_recorded == 3
            assert emulator.request_count == 5
            assert [r.path for r in emulator.requests] == [
                "/v1/user/nothing-2",
                "/v1/user/nothing-3",
                "/v1/user/nothing-4",
            ]
            assert [r.time for r in emulator.requests] == [clock.now - 2, clock.now - 1, clock.now]
            await emulator.wait_for_requests(5)  # already there: returns at once

    async def test_waits_on_the_total_past_the_ring(self) -> None:
        async with StabilityEmulator(max_recorded=1) as emulator:
            key = emulator.add_account()
            for _ in range(3):
                await get(emulator.base_url, "/v1/user/balance", key)
            waiter = asyncio.ensure_future(emulator.wait_for_requests(4))
            late = asyncio.ensure_future(emulator.wait_for_requests(9))
            await get(emulator.base_url, "/v1/user/balance", key)
            await asyncio.wait_for(waiter, 30)  # guards against a hang only
            assert emulator.request_count == 4
            assert len(emulator.requests) == 1
            assert not late.done()
            late.cancel()
            with pytest.raises(asyncio.CancelledError):
                await late
            assert emulator._backend.log._waiters == []  # a cancelled wait leaves nothing

    @pytest.mark.parametrize("bad", [-1, True])
    async def test_max_recorded_must_be_a_count(self, bad: int) -> None:
        with pytest.raises(ValueError, match="max_recorded"):
            StabilityEmulator(max_recorded=bad)

    async def test_zero_keeps_nothing(self) -> None:
        async with StabilityEmulator(max_recorded=0) as emulator:
            await get(emulator.base_url, "/v1/user/balance")
            assert (emulator.requests, emulator.request_count) == ([], 1)
