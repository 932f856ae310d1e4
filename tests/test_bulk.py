"""Bulk balance checks: results, laziness, bounds, cancellation, and the shared rate limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from stability_user import (
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
from stability_user.testing import Fault, RateLimit, StabilityEmulator

from .fakes import FakeClock


async def collect(results: AsyncIterator[BalanceResult]) -> list[BalanceResult]:
    return [result async for result in results]


def checks_running() -> list[asyncio.Task[object]]:
    """The library's bulk workers still alive (the emulator's own tasks are not counted)."""
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "") == "_worker" and not t.done()
    ]


async def settle() -> None:
    """Let every task that can run, run: the transport below is in memory, no I/O waits.

    Not a sleep standing in for an event: nothing here depends on time, only on
    tasks getting their turns, and a few dozen turns let runaway workers run far.
    """
    for _ in range(50):
        await asyncio.sleep(0)


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
        "bad\r\nheader",  # a plain str that cannot be sent: that target's failure
        "org-000001",  # a plain str: an organization under the session's key
        BalanceTarget(api_key=good[2]),
    ]
    results = sorted(await collect(session.balances(targets)), key=lambda r: r.index)
    assert [r.ok for r in results] == [True, False, False, False, True, True]
    assert isinstance(results[1].error, AuthenticationError)
    assert isinstance(results[2].error, PermissionDeniedError)
    assert isinstance(results[3].error, ValueError)
    assert results[3].target.label == "(invalid target)"
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


async def test_ordered_buffer_is_bounded(clock: FakeClock) -> None:
    stalled = asyncio.Event()  # never set: the first target's answer never comes
    sent: list[str] = []

    async def transport(request: Request) -> Response:
        sent.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "sk-first-target-0123456789":
            await stalled.wait()
        return Response(200, {}, b'{"credits": 1}', request.attempt, request)

    pulled = 0

    def targets() -> Iterator[BalanceTarget]:
        nonlocal pulled
        yield BalanceTarget(api_key="sk-first-target-0123456789")
        while True:
            pulled += 1
            yield BalanceTarget(api_key="sk-other-target-0123456789")

    async with StabilitySession(transport=_Transport(transport), clock=clock) as session:
        stream = session.balances(targets(), concurrency=2, ordered=True)
        first = asyncio.ensure_future(anext(stream))
        await settle()
        assert not first.done()
        # 1 stalled + 7 answered: results held back in order are bounded by 4 x concurrency.
        assert len(sent) == 8
        assert pulled <= 8
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await stream.aclose()


class _Transport:
    """A transport made of a function, closed by nobody."""

    def __init__(self, send: Callable[[Request], Awaitable[Response]]) -> None:
        self.send = send

    async def __call__(self, request: Request) -> Response:
        response: Response = await self.send(request)
        return response

    async def aclose(self) -> None:
        pass


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
        key,
        base_url=emulator.base_url,
        retry=RetryPolicy(max_attempts=1),
        clock=clock,
        rate_limit=None,
    ) as session:
        results = await collect(session.balances([BalanceTarget()] * 200))
    assert sum(not r.ok for r in results) == 50


async def test_two_runs_at_once_on_one_key_share_the_limit(
    session: StabilitySession, emulator: StabilityEmulator, clock: FakeClock
) -> None:
    runs = [collect(session.balances([BalanceTarget()] * 200, concurrency=16)) for _ in range(2)]
    first, second = await asyncio.gather(*runs)
    assert all(r.ok for r in first + second)
    assert {r.status for r in emulator.requests} == {200}  # not a single 429
    times = sorted(r.time for r in emulator.requests)
    # No window of 10 s (on the emulator's clock, shared with the session) holds over 150.
    assert max(sum(1 for t in times if start <= t < start + 10.0) for start in times) <= 150


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


@pytest.mark.parametrize(
    ("fields", "error", "name"),
    [
        ({"api_key": 123}, TypeError, "BalanceTarget.api_key"),
        ({"api_key": b"sk-bytes-0123456789abcdef"}, TypeError, "BalanceTarget.api_key"),
        ({"api_key": ""}, ValueError, "BalanceTarget.api_key"),
        ({"api_key": "sk-0123456789abcdef\r\nX: 1"}, ValueError, "BalanceTarget.api_key"),
        ({"organization": 123}, TypeError, "BalanceTarget.organization"),
        ({"organization": "org\n1"}, ValueError, "BalanceTarget.organization"),
        ({"label": 7}, TypeError, "BalanceTarget.label"),
    ],
)
def test_targets_refuse_bad_fields_where_they_are_built(
    fields: dict[str, object], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name) as info:
        BalanceTarget(**fields)  # type: ignore[arg-type]
    assert "0123456789abcdef" not in str(info.value)  # a key is never echoed
