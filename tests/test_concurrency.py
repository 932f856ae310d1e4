"""The limiter, deadlines and close() under concurrency, against real stores and sockets.

Each test here is a bug once reproduced against a loopback server: a slot that
expired while its request waited for a connection, a deadline that did not
cover that wait, a Retry-After date read against the wrong clock, slots leaked
by a bulk run left early, a close() that neither woke the waiting calls nor
closed the stores, a watch that outlived its session, and a lockout recorded
after the slot was given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import attrs
import pytest
import redis.asyncio
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from stability_user import (
    APITimeoutError,
    Balance,
    BalanceTarget,
    LocalRateLimitStore,
    MemoryRateLimitStore,
    RateLimit,
    RateLimitError,
    RedisRateLimitStore,
    Request,
    Response,
    RetryPolicy,
    StabilityError,
    StabilitySession,
)
from stability_user._config import key_id_of, origin_of
from stability_user.testing import Fault, StabilityEmulator

from .conftest import KEY
from .fakes import FakeClock, VirtualTime
from .hostile import HostileServer, json_response

HOLDER = "sk-holder-0123456789abcdefghijklmnop"  # a key whose requests hold a connection


@attrs.define
class GatedService:
    """A loopback service: the holder's requests wait for ``release``; the others are
    counted against a limit of one per ``window`` on the test's clock (429 past it)."""

    clock: Callable[[], float]
    window: float = 1.0
    release: asyncio.Event = attrs.Factory(asyncio.Event)
    held: asyncio.Event = attrs.Factory(asyncio.Event)
    arrivals: list[tuple[str, float, int]] = attrs.Factory(list)
    url: str = ""

    async def balance(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "")
        if key == HOLDER:
            self.held.set()
            await self.release.wait()
            return web.json_response({"credits": 1})
        now = self.clock()
        recent = [t for k, t, s in self.arrivals if k == key and s == 200 and t > now - self.window]
        status = 429 if recent else 200
        self.arrivals.append((key, now, status))
        if status == 429:
            return web.json_response({"name": "rate_limit_exceeded"}, status=429)
        return web.json_response({"credits": 2})


@contextlib.asynccontextmanager
async def gated_service(clock: Callable[[], float]) -> AsyncIterator[GatedService]:
    service = GatedService(clock)
    app = web.Application()
    app.router.add_get("/v1/user/balance", service.balance)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    service.url = f"http://127.0.0.1:{port}"
    try:
        yield service
    finally:
        service.release.set()
        await runner.cleanup()


async def until(condition: Callable[[], bool], steps: int = 10_000) -> None:
    """Let the loop run until ``condition()`` holds (a bounded number of steps, no clock)."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def slots_in_flight(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM slots WHERE in_flight = 1").fetchone()
    return int(count)


# -- 1. a slot is taken when its request can be sent --------------------------


async def test_a_slot_is_taken_only_once_the_request_has_its_connection(
    clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "limits.sqlite3"
    store = LocalRateLimitStore(path, clock=clock)
    async with (
        gated_service(clock) as service,
        StabilitySession(
            KEY,
            base_url=service.url,
            max_connections=1,
            rate_limit=RateLimit(1, 1.0),
            rate_limit_store=store,
            sleep=clock.sleep,
            clock=clock,
        ) as session,
    ):
        holder = asyncio.ensure_future(session.with_options(api_key=HOLDER).balance())
        await service.held.wait()
        first = asyncio.ensure_future(session.balance())
        second = asyncio.ensure_future(session.balance())
        await until(lambda: session._state.sender.queued == 2)
        # Both wait for the one connection, holding no slot of their key meanwhile...
        assert slots_in_flight(path) == 1  # the holder's
        clock.advance(3600)  # ...so no lease can run out while they wait
        service.release.set()
        assert list(await asyncio.gather(holder, first, second)) == [
            Balance(1),
            Balance(2),
            Balance(2),
        ]
    await store.aclose()
    limited = [(t, s) for k, t, s in service.arrivals if k == KEY]
    assert [s for _, s in limited] == [200, 200]
    assert limited[1][0] - limited[0][0] >= 1.0  # a window apart, as the service counts
    assert clock.sleeps == [pytest.approx(1.0 + 0.01)]  # the second waited for it


# -- 2. a deadline covers the wait for a connection ----------------------------


async def test_a_deadline_covers_the_wait_for_a_connection(clock: FakeClock) -> None:
    async with (
        gated_service(clock) as service,
        StabilitySession(
            KEY, base_url=service.url, max_connections=1, retry=RetryPolicy(deadline=0.2)
        ) as session,
    ):
        patient = session.with_options(api_key=HOLDER, retry=RetryPolicy())
        holder = asyncio.ensure_future(patient.balance())
        await service.held.wait()
        with pytest.raises(APITimeoutError) as info:
            await session.balance()
        assert str(info.value) == (
            "the call's deadline ran out while attempt 1 waited for a connection"
        )
        assert not any(k == KEY for k, _, _ in service.arrivals)  # never sent
        assert session._state.sender.queued == 0
        service.release.set()
        assert await holder == Balance(1)


# -- 3. a Retry-After date is read against the response's Date -----------------


async def test_a_retry_after_date_from_a_server_whose_clock_is_behind(
    hostile: HostileServer, clock: FakeClock
) -> None:
    import time  # noqa: PLC0415 - the wall clock the server is behind

    server_now = time.time() - 120
    rate_limited = json_response(
        "429 Too Many Requests",
        {"name": "rate_limit_exceeded"},
        {
            "Date": formatdate(server_now, usegmt=True),
            "Retry-After": formatdate(server_now + 60, usegmt=True),
        },
    )
    hostile.script.extend([rate_limited] * 3)
    async with StabilitySession(
        KEY,
        base_url=hostile.url,
        retry=RetryPolicy(max_retry_after=10),
        sleep=clock.sleep,
        clock=clock,
    ) as session:
        with pytest.raises(RateLimitError) as info:
            await session.balance()
        assert (info.value.attempts, info.value.retry_after) == (1, 60.0)
        # The key is locked out for the 60 s the server meant: the next call waits for it.
        with pytest.raises(RateLimitError, match="not sent") as refused:
            await session.balance()
        assert refused.value.retry_after == pytest.approx(60.0)
    assert len(hostile.requests) == 1


# -- 4. leaving a bulk run early gives every slot back --------------------------


def shared_store(kind: str, tmp_path: Path, redis_url: str) -> Any:
    if kind == "local":
        return LocalRateLimitStore(tmp_path / "limits.sqlite3")
    return RedisRateLimitStore(redis_url)


async def in_flight_everywhere(store: Any, keys: list[str], base_url: str) -> int:
    if isinstance(store, LocalRateLimitStore):
        return slots_in_flight(store.path)
    client = redis.asyncio.Redis.from_url(store.where)
    try:
        names = [store._keys(key_id_of(k, origin_of(base_url)))[0] for k in keys]
        return sum([await client.zcard(name) for name in names])
    finally:
        await client.aclose()


@pytest.mark.parametrize("kind", ["local", "redis"])
async def test_leaving_a_bulk_run_early_gives_every_slot_back(
    kind: str, tmp_path: Path, redis_url: str, live: StabilityEmulator
) -> None:
    keys = [live.add_account(api_key=f"sk-bulk-{uuid.uuid4().hex}") for _ in range(200)]
    live.random_faults(0.3, kinds=("stall",), seed=7)  # slow answers: many in flight
    store = shared_store(kind, tmp_path, redis_url)
    async with StabilitySession(base_url=live.base_url, rate_limit_store=store) as session:
        seen = 0
        async with contextlib.aclosing(
            session.balances([BalanceTarget(api_key=k) for k in keys], concurrency=32)
        ) as results:
            async for _ in results:
                seen += 1
                if seen == 20:
                    break
        live.random_faults(0.0)
        await store.flush()  # give-backs are queued: applied now instead of later
        assert await in_flight_everywhere(store, keys, live.base_url) == 0
    await store.aclose()


# -- 5. close() ends every wait at once ----------------------------------------


async def sleep_forever(seconds: float) -> None:
    await asyncio.Event().wait()


@pytest.mark.parametrize("kind", ["memory", "local", "redis"])
async def test_close_ends_a_call_waiting_for_the_rate_limit(
    kind: str, tmp_path: Path, redis_url: str, emulator: StabilityEmulator, key: str
) -> None:
    store = "memory" if kind == "memory" else shared_store(kind, tmp_path, redis_url)
    session = StabilitySession(
        key,
        base_url=emulator.base_url,
        rate_limit=RateLimit(1, 20.0),
        rate_limit_store=store,
        sleep=sleep_forever,  # a wait only close() can end
    )
    await session.balance()
    waiting = asyncio.ensure_future(session.balance())
    await until(lambda: bool(session._state.closing._waiters))
    await session.close()
    with pytest.raises(StabilityError) as info:
        await waiting
    assert str(info.value) == "this StabilitySession is closed"
    assert type(info.value) is StabilityError
    if not isinstance(store, str):
        await store.aclose()


async def test_close_ends_a_call_waiting_for_a_connection_and_between_attempts(
    clock: FakeClock,
) -> None:
    async with gated_service(clock) as service:
        session = StabilitySession(KEY, base_url=service.url, max_connections=1)
        holder = asyncio.ensure_future(session.with_options(api_key=HOLDER).balance())
        await service.held.wait()
        queued = asyncio.ensure_future(session.balance())
        await until(lambda: session._state.sender.queued == 1)
        await session.close()
        for task in (holder, queued):
            with pytest.raises(StabilityError, match="closed"):
                await task
    emulator = StabilityEmulator()
    await emulator.start()
    try:
        emulator.script(503, 503)
        key = emulator.add_account()
        session = StabilitySession(key, base_url=emulator.base_url, sleep=sleep_forever)
        retrying = asyncio.ensure_future(session.balance())
        await until(lambda: bool(session._state.closing._waiters))
        await session.close()
        with pytest.raises(StabilityError, match="closed"):
            await retrying
    finally:
        await emulator.close()


# -- 6. close() with a call in flight leaves nothing open ----------------------


def open_files_under(folder: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(folder)):
                found.append(target)
    return found


async def connected_clients(redis_url: str) -> int:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        info = await client.info("clients")
        return int(info["connected_clients"]) - 1  # not this one
    finally:
        await client.aclose()


@pytest.mark.parametrize("kind", ["local", "redis"])
async def test_close_with_a_call_in_flight_leaves_nothing_open(
    kind: str, tmp_path: Path, redis_url: str, emulator: StabilityEmulator, key: str
) -> None:
    before = await connected_clients(redis_url)
    emulator.script(Fault.stall(30))
    session = StabilitySession(
        key,
        base_url=emulator.base_url,
        rate_limit_store="local" if kind == "local" else redis_url,
        retry=RetryPolicy(max_attempts=1),
    )
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    try:
        in_flight = asyncio.ensure_future(session.balance())
        await emulator.wait_for_requests(1)
        await session.close()
        with pytest.raises(StabilityError):
            await in_flight
    finally:
        del os.environ["XDG_CACHE_HOME"]
    assert open_files_under(tmp_path) == []
    assert await connected_clients(redis_url) == before
    with pytest.raises(StabilityError, match="closed"):
        await session.balance()
    assert open_files_under(tmp_path) == []  # nothing reopened by a late call


# -- 7. a watch on a closed session ends ----------------------------------------


async def test_a_watch_ends_when_its_session_closes(session: StabilitySession) -> None:
    readings = []
    async for reading in session.watch_balance(interval=60.0):
        readings.append(reading)
        await session.close()
    assert [r.balance for r in readings] == [Balance(12.5)]
    assert [r async for r in session.watch_balance(interval=1.0)] == []


# -- a 429's lockout is recorded before its slot is given back ------------------


class Recording(MemoryRateLimitStore):
    """The in-process store, recording the order of its operations."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[str] = []

    def release_nowait(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        self.steps.append("give back")
        super().release_nowait(key_id, token, limit)

    async def lock(self, key_id: str, seconds: float) -> bool:
        self.steps.append("lock")
        return await super().lock(key_id, seconds)


async def test_a_429_locks_the_key_before_its_slot_is_given_back(
    emulator: StabilityEmulator, key: str
) -> None:
    store = Recording()
    emulator.script(Fault.respond(429, retry_after=30))
    async with StabilitySession(
        key,
        base_url=emulator.base_url,
        rate_limit_store=store,
        retry=RetryPolicy(max_attempts=1),
    ) as session:
        with pytest.raises(RateLimitError):
            await session.balance()
    # No other process can slip a request in between: the key is locked first.
    assert store.steps == ["lock", "give back"]


# -- stress: random cancellations, breaks, closes and slow queues ---------------


class SlowService:
    """A transport on simulated time: each answer takes a random while; arrivals recorded."""

    def __init__(self, time: VirtualTime, rng: random.Random) -> None:
        self.time = time
        self.rng = rng
        self.arrivals: list[float] = []

    async def __call__(self, request: Request) -> Response:
        latency = self.rng.uniform(0.0, 2.0)
        arrives = self.rng.uniform(0.0, latency)
        # The service counts the request when it arrives, anywhere in its flight; a
        # caller that gives up first closes the connection: it never arrives.
        await self.time.sleep(arrives)
        self.arrivals.append(self.time.now)
        await self.time.sleep(latency - arrives)
        return Response(200, {}, b'{"credits": 1}', request.attempt, request)

    async def aclose(self) -> None:
        """Nothing to close."""


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_stress_on_simulated_time_never_exceeds_the_limit_nor_leaks(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - a test's draw, not a secret
    limit = RateLimit(4, 1.0, 60.0)
    time = VirtualTime()
    store = MemoryRateLimitStore(clock=time)
    service = SlowService(time, rng)
    finished: list[str] = []

    async def caller(session: StabilitySession) -> None:
        for _ in range(rng.randint(1, 6)):
            call = asyncio.ensure_future(session.balance())
            if rng.random() < 0.3:  # a caller that gives up: wait_for, a task group...
                await time.sleep(rng.uniform(0.0, 1.0))
                call.cancel()
            try:
                await call
                finished.append("ok")
            except asyncio.CancelledError:
                finished.append("cancelled")
            except StabilityError as error:
                finished.append(type(error).__name__)

    async def bulk(session: StabilitySession) -> None:
        stop = rng.randint(0, 10)
        async with contextlib.aclosing(
            session.balances(["org"] * 12, concurrency=rng.randint(1, 6))
        ) as results:
            async for _ in results:
                stop -= 1
                if stop <= 0:
                    break  # a bulk run left early

    async def run() -> None:
        session = StabilitySession(
            KEY,
            transport=service,
            max_connections=rng.randint(1, 3),  # a slow queue for a connection
            rate_limit=limit,
            rate_limit_store=store,
            retry=RetryPolicy(max_attempts=2, max_retry_after=1e6),
            sleep=time.sleep,
            clock=time,
        )
        work = [asyncio.ensure_future(caller(session)) for _ in range(rng.randint(1, 5))]
        work.append(asyncio.ensure_future(bulk(session)))
        if rng.random() < 0.5:
            await time.sleep(rng.uniform(0.0, 5.0))
            await session.close()  # with calls in flight and waiting
        await asyncio.gather(*work, return_exceptions=True)
        await session.close()
        assert session._state.sender.queued == 0
        # Every slot taken was given back: nothing is in flight in the store.
        assert all(not state.in_flight for state in store._keys.values())

    asyncio.run(time.run(run()))
    arrivals = sorted(service.arrivals)
    for n, start in enumerate(arrivals):
        assert len([t for t in arrivals[n:] if t < start + limit.window]) <= limit.requests
    assert finished  # the callers ran
