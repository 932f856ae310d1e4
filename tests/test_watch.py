"""Watching a balance: the pure threshold logic, and the loop over a real session."""

from __future__ import annotations

import contextlib

import pytest

from stability_user import APIConnectionError, Balance, StabilitySession
from stability_user._watch import Threshold
from stability_user.testing import EmulatedOrganization, Fault, StabilityEmulator

from .fakes import FakeClock


class TestThreshold:
    def test_crossings(self) -> None:
        threshold = Threshold(10.0)
        seen = [threshold.observe(Balance(c)) for c in (12, 9, 8, 11, 10, 3)]
        assert seen == [
            (False, None),
            (True, "below"),
            (True, None),
            (False, "recovered"),
            (False, None),
            (True, "below"),
        ]

    def test_first_reading_below_is_a_crossing(self) -> None:
        assert Threshold(5.0).observe(Balance(1)) == (True, "below")

    def test_a_failed_poll_changes_nothing(self) -> None:
        threshold = Threshold(10.0)
        threshold.observe(Balance(3))
        assert threshold.observe(None) == (None, None)
        assert threshold.observe(Balance(4)) == (True, None)  # still below: no new crossing
        assert threshold.observe(Balance(10)) == (False, "recovered")

    def test_no_threshold(self) -> None:
        assert Threshold(None).observe(Balance(0)) == (None, None)


class TestWatch:
    async def test_readings_and_crossings(
        self, session: StabilitySession, emulator: StabilityEmulator, key: str, clock: FakeClock
    ) -> None:
        credits = iter([12.0, 9.0, 8.0, 11.0, 10.0, 3.0])
        readings = []
        async with contextlib.aclosing(session.watch_balance(interval=60, below=10)) as watch:
            emulator.set_balance(key, next(credits))
            async for reading in watch:
                readings.append(reading)
                value = next(credits, None)
                if value is None:
                    break
                emulator.set_balance(key, value)
        assert [
            (r.balance.credits if r.balance else None, r.below, r.crossing) for r in readings
        ] == [
            (12.0, False, None),
            (9.0, True, "below"),
            (8.0, True, None),
            (11.0, False, "recovered"),
            (10.0, False, None),
            (3.0, True, "below"),
        ]
        assert clock.sleeps == [60.0] * 5
        assert [r.time for r in readings] == [1000.0 + 60 * n for n in range(6)]

    async def test_failed_poll_is_a_reading_not_the_end(
        self, session: StabilitySession, emulator: StabilityEmulator, clock: FakeClock
    ) -> None:
        emulator.script(Fault.reset(), Fault.reset(), Fault.reset())
        readings = []
        async with contextlib.aclosing(session.watch_balance(interval=5, below=1)) as watch:
            async for reading in watch:
                readings.append(reading)
                if len(readings) == 2:
                    break
        assert not readings[0].ok
        assert isinstance(readings[0].error, APIConnectionError)
        assert (readings[0].below, readings[0].crossing) == (None, None)
        assert readings[1].ok
        assert readings[1].below is False

    async def test_organization_and_no_threshold(
        self, emulator: StabilityEmulator, clock: FakeClock
    ) -> None:
        key = emulator.add_account(
            organizations=[
                EmulatedOrganization("org-a", "A", is_default=True, credits=1),
                EmulatedOrganization("org-b", "B", credits=2),
            ]
        )
        async with StabilitySession(key, base_url=emulator.base_url, sleep=clock.sleep) as s:
            watch = s.watch_balance(organization="org-b")
            reading = await anext(watch)
            await watch.aclose()
        assert reading.balance == Balance(2.0)
        assert (reading.below, reading.crossing) == (None, None)

    @pytest.mark.parametrize("interval", [0, -1, float("inf"), float("nan"), True])
    def test_bad_interval_is_refused_at_once(
        self, session: StabilitySession, interval: float
    ) -> None:
        with pytest.raises(ValueError, match="interval"):
            session.watch_balance(interval=interval)

    @pytest.mark.parametrize("below", [float("inf"), float("nan")])
    def test_bad_threshold_is_refused_at_once(
        self, session: StabilitySession, below: float
    ) -> None:
        with pytest.raises(ValueError, match="below"):
            session.watch_balance(below=below)
