"""Bulk balance checks, the per-key rate limiter, and balance watching."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from stability_user import (
    APIConnectionError,
    AuthenticationError,
    Balance,
    BalanceResult,
    BalanceTarget,
    PermissionDeniedError,
    Request,
    Response,
    RetryPolicy,
    ServerError,
    StabilitySession,
)
from stability_user._ratelimit import KeyRateLimiter
from stability_user.testing import EmulatedOrganization, Fault, RateLimit, StabilityEmulator

from .fakes import FakeClock


async def collect(results: AsyncIterator[BalanceResult]) -> list[BalanceResult]:
    return [result async for result in results]


def checks_running() -> list[asyncio.Task[object]]:
    """The library's per-target tasks still alive (the emulator's own tasks are not counted)."""
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "").endswith("<locals>.worker") and not t.done()
    ]


def make_keys(emulator: StabilityEmulator, count: int) -> list[str]:
    return [emulator.add_account(credits=float(n)) for n in range(count)]


async def test_many_keys_each_result_matches_its_target(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    keys = make_keys(emulator, 40)
    targets = [BalanceTarget(api_key=k, label=f"customer-{n}") for n, k in enumerate(keys)]
    results = await collect(session.balances(targets, concurrency=8))
    assert len(results) == 40
    for result in results:
        assert result.ok
        assert result.target is targets[result.index]
        assert result.balance == Balance(float(result.index))


async def test_ordered_yields_in_input_order(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    keys = make_keys(emulator, 30)
    emulator.script(Fault.stall(0.05), api_key=keys[0])  # the first finishes last
    results = await collect(
        session.balances([BalanceTarget(api_key=k) for k in keys], concurrency=5, ordered=True)
    )
    assert [r.index for r in results] == list(range(30))
    assert [r.balance for r in results] == [Balance(float(n)) for n in range(30)]


async def test_unordered_streams_as_completed(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    keys = make_keys(emulator, 6)
    emulator.script(Fault.stall(0.2), api_key=keys[0])
    results = await collect(session.balances([BalanceTarget(api_key=k) for k in keys]))
    assert results[-1].index == 0  # the stalled one came out last, the rest did not wait


async def test_one_failure_never_stops_the_run(
    session: StabilitySession, emulator: StabilityEmulator, key: str
) -> None:
    good = make_keys(emulator, 3)
    targets: list[BalanceTarget | str] = [
        BalanceTarget(api_key=good[0]),
        BalanceTarget(api_key="sk-not-a-real-key"),
        BalanceTarget(api_key=good[1], organization="org-elsewhere"),
        BalanceTarget(api_key=good[2], organization="bad\r\nheader"),
        "org-000001",  # a plain str: an organization under the session's key
        BalanceTarget(api_key=good[2]),
    ]
    results = sorted(await collect(session.balances(targets)), key=lambda r: r.index)
    assert [r.ok for r in results] == [True, False, False, False, True, True]
    assert isinstance(results[1].error, AuthenticationError)
    assert isinstance(results[2].error, PermissionDeniedError)
    assert isinstance(results[3].error, ValueError)
    assert results[4].target == BalanceTarget(organization="org-000001")
    assert results[4].balance == Balance(12.5)


async def test_injected_429_and_5xx_mid_run_are_retried(
    session: StabilitySession, emulator: StabilityEmulator, clock: FakeClock
) -> None:
    keys = make_keys(emulator, 20)
    emulator.script(503, Fault.respond(429, retry_after=2), 500, Fault.reset())
    results = await collect(session.balances([BalanceTarget(api_key=k) for k in keys]))
    assert all(r.ok for r in results)
    assert len(results) == 20
    assert 2.0 in clock.sleeps


async def test_errors_that_outlast_retries_are_reported(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    keys = make_keys(emulator, 3)
    emulator.script(503, 503, 503, api_key=keys[1])
    results = sorted(
        await collect(session.balances([BalanceTarget(api_key=k) for k in keys])),
        key=lambda r: r.index,
    )
    assert [r.ok for r in results] == [True, False, True]
    error = results[1].error
    assert isinstance(error, ServerError)
    assert error.attempts == 3


async def test_async_iterable_targets(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    keys = make_keys(emulator, 5)

    async def targets() -> AsyncIterator[BalanceTarget]:
        for k in keys:
            yield BalanceTarget(api_key=k)

    assert len(await collect(session.balances(targets()))) == 5


async def test_targets_are_consumed_lazily(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    key = emulator.add_account()
    pulled = 0

    def targets() -> Iterator[BalanceTarget]:
        nonlocal pulled
        while True:  # endless: only laziness lets this finish
            pulled += 1
            yield BalanceTarget(api_key=key)

    seen = 0
    async with contextlib.aclosing(session.balances(targets(), concurrency=4)) as results:
        async for _ in results:
            seen += 1
            if seen == 10:
                break
    assert pulled <= 10 + 2 * 4 + 1  # what was yielded, plus at most 2 x concurrency ahead


async def test_ordered_buffer_is_bounded(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    emulator.rate_limit = None
    keys = make_keys(emulator, 2)
    emulator.script(Fault.stall(30), api_key=keys[0])
    pulled = 0

    def targets() -> Iterator[BalanceTarget]:
        nonlocal pulled
        yield BalanceTarget(api_key=keys[0])
        while True:
            pulled += 1
            yield BalanceTarget(api_key=keys[1])

    stream = session.balances(targets(), concurrency=2, ordered=True)
    first = asyncio.ensure_future(anext(stream))
    await emulator.wait_for_requests(8)  # 1 stalled + 7 more: the window is 4 x concurrency
    await asyncio.sleep(0.05)  # give it room to (wrongly) run further ahead
    assert not first.done()
    assert pulled <= 8
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await stream.aclose()


async def test_breaking_out_cancels_in_flight_checks(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    keys = make_keys(emulator, 10)
    for k in keys[1:]:
        emulator.script(Fault.stall(3600), api_key=k)
    async with contextlib.aclosing(
        session.balances([BalanceTarget(api_key=k) for k in keys], concurrency=10)
    ) as results:
        async for result in results:
            assert result.index == 0
            break
    assert checks_running() == []  # the stalled checks were cancelled, not left running


async def test_cancelling_the_consumer_cancels_in_flight_checks(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    keys = make_keys(emulator, 5)
    for k in keys:
        emulator.script(Fault.stall(3600), api_key=k)

    async def consume() -> None:
        async for _ in session.balances([BalanceTarget(api_key=k) for k in keys]):
            pass

    consumer = asyncio.ensure_future(consume())
    await emulator.wait_for_requests(5)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert checks_running() == []
    assert (await session.balance()).credits == 12.5  # the session is still fine


async def test_one_key_at_the_real_limit_gets_no_429(
    session: StabilitySession, emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    assert emulator.rate_limit == RateLimit(150, 10.0, 60.0)
    results = await collect(session.balances([BalanceTarget()] * 400, concurrency=32))
    assert all(r.ok for r in results)
    assert {r.status for r in emulator.requests} == {200}
    assert len(emulator.requests) == 400
    assert clock.sleeps  # the limiter waited (on the fake clock) instead of hitting 429


async def test_without_the_limiter_one_key_hits_429(
    emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    async with StabilitySession(
        key, base_url=emulator.base_url, retry=RetryPolicy(max_attempts=1), clock=clock
    ) as session:
        results = await collect(session.balances([BalanceTarget()] * 200, rate_limit=None))
    assert sum(not r.ok for r in results) == 50


async def test_many_keys_are_not_slowed_by_the_limiter(
    session: StabilitySession, emulator: StabilityEmulator, clock: FakeClock
) -> None:
    keys = make_keys(emulator, 300)
    results = await collect(session.balances([BalanceTarget(api_key=k) for k in keys]))
    assert all(r.ok for r in results)
    assert clock.sleeps == []


async def test_argument_checks(session: StabilitySession) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        session.balances([], concurrency=0)
    with pytest.raises(ValueError, match="rate limit requests"):
        session.balances([], rate_limit=(0, 10.0))
    with pytest.raises(ValueError, match="window"):
        session.balances([], rate_limit=(5, 0.0))
    with pytest.raises(TypeError, match="BalanceTarget or str"):
        await collect(session.balances([42]))  # type: ignore[list-item]
    assert await collect(session.balances([])) == []


def test_reprs_never_show_a_whole_key() -> None:
    key = "sk-" + "a1b2c3d4" * 6
    target = BalanceTarget(api_key=key, organization="org-1")
    assert key not in repr(target)
    assert "sk-…" in repr(target)
    assert key not in repr(BalanceResult(target, 0, balance=Balance(1.0)))
    assert target.display_name == "sk-…c3d4 org-1"
    assert BalanceTarget(label="acme").display_name == "acme"
    assert BalanceTarget().display_name == "(session key)"
    assert "api_key=None" in repr(BalanceTarget())


class TestRateLimiter:
    async def test_waits_until_the_oldest_request_leaves_the_window(self, clock: FakeClock) -> None:
        limiter = KeyRateLimiter(2, 10.0, clock=clock, sleep=clock.sleep)
        for _ in range(2):
            limiter.release(await limiter.acquire("k"))
            clock.advance(1)
        start = clock.now
        limiter.release(await limiter.acquire("k"))
        assert clock.sleeps == [8.0]  # first finished at t0, now is t0+2: wait until t0+10
        assert clock.now == start + 8.0

    async def test_keys_are_independent_and_forgotten_when_idle(self, clock: FakeClock) -> None:
        limiter = KeyRateLimiter(1, 10.0, clock=clock, sleep=clock.sleep)
        for key in ("a", "b", "c"):
            limiter.release(await limiter.acquire(key))
        assert clock.sleeps == []
        assert len(limiter) == 3
        clock.advance(10)
        limiter.release(await limiter.acquire("d"))
        assert len(limiter) == 1

    async def test_in_flight_requests_hold_their_slots(self, clock: FakeClock) -> None:
        limiter = KeyRateLimiter(1, 10.0, clock=clock, sleep=clock.sleep)
        held = await limiter.acquire("k")
        second = asyncio.ensure_future(limiter.acquire("k"))
        await asyncio.sleep(0)
        assert not second.done()
        limiter.release(held)
        limiter.release(await second)
        assert clock.sleeps == [10.0]

    async def test_as_middleware_every_attempt_counts(self, clock: FakeClock) -> None:
        limiter = KeyRateLimiter(2, 10.0, clock=clock, sleep=clock.sleep)
        sent: list[float] = []

        async def transport(request: Request) -> Response:
            sent.append(clock.now)
            return Response(200, {}, b"")

        request = Request("GET", "https://x/", {"Authorization": "k"}, 1.0)
        for _ in range(3):
            await limiter(request, transport)
        assert sent == [1000.0, 1000.0, 1010.0]


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

    async def test_bad_interval(self, session: StabilitySession) -> None:
        with pytest.raises(ValueError, match="interval"):
            await anext(session.watch_balance(interval=0))


async def test_rate_limiter_memory_is_bounded_by_max_keys(clock: FakeClock) -> None:
    limiter = KeyRateLimiter(150, 10.0, clock=clock, sleep=clock.sleep, max_keys=100)
    for n in range(1000):
        limiter.release(await limiter.acquire(f"key-{n}"))
    assert len(limiter) == 100
    with pytest.raises(ValueError, match="max_keys"):
        KeyRateLimiter(1, 1.0, clock=clock, sleep=clock.sleep, max_keys=0)
