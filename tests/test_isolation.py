"""Rate-limit state belongs to one service, one key and one event loop.

A user's test suite runs many tests in one process with one test key, each on its
own event loop, often against a mocked transport or a local emulator: a 429 in
one test must never stall the next, a lockout at one server must never delay
calls to another, and a test against an emulator must never touch the state of
the real service's key, whichever store keeps it.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from stability_user import (
    Balance,
    LocalRateLimitStore,
    MemoryRateLimitStore,
    RateLimit,
    RateLimitError,
    RedisRateLimitStore,
    Request,
    Response,
    RetryPolicy,
    StabilitySession,
)
from stability_user._config import key_id_of, origin_of
from stability_user._ratelimit import Wait
from stability_user.testing import Fault, StabilityEmulator

from .conftest import KEY

REAL_SERVICE = "https://api.stability.ai"

USER_SUITE = '''
import pytest

from stability_user import RateLimitError, Response, RetryPolicy, StabilitySession

KEY = "sk-user-suite-0123456789abcdefghijklmnop"


class Answers:
    """The way users mock the network: a transport passed in."""

    def __init__(self, status, body=b"{}"):
        self.status, self.body = status, body

    async def __call__(self, request):
        return Response(self.status, {"Content-Type": "application/json"}, self.body)

    async def aclose(self):
        pass


@pytest.mark.asyncio
async def test_the_app_handles_a_429():
    transport = Answers(429, b'{"name": "rate_limit_exceeded", "message": "slow down"}')
    async with StabilitySession(
        KEY, transport=transport, retry=RetryPolicy(max_attempts=1)
    ) as session:
        with pytest.raises(RateLimitError) as info:
            await session.balance()
        assert info.value.sent


@pytest.mark.asyncio
async def test_the_next_test_is_not_locked_out():
    # Unwilling to wait even a second: a lockout carried over would refuse this call.
    policy = RetryPolicy(max_retry_after=1)
    async with StabilitySession(
        KEY, transport=Answers(200, b'{"credits": 7}'), retry=policy
    ) as session:
        assert (await session.balance()).credits == 7
'''


def test_a_mocked_429_stays_in_its_own_test(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user_suite=USER_SUITE)
    result = pytester.runpytest_subprocess(
        "-W", "error", "-p", "no:cacheprovider", "-p", "timeout", "--timeout", "30"
    )
    result.assert_outcomes(passed=2)


def test_the_plugin_records_waits_and_gives_a_fresh_store(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import pytest

        from stability_user import MemoryRateLimitStore, RateLimit, StabilitySession


        @pytest.mark.asyncio
        async def test_waits(stability_emulator, stability_rate_limit_waits):
            key = stability_emulator.add_account(credits=1.0)
            slow = []
            async with StabilitySession(
                key,
                base_url=stability_emulator.base_url,
                rate_limit=RateLimit(1, 0.2),
                on_rate_limit_wait=stability_rate_limit_waits.append,
            ) as session:
                await session.balance()
                await session.balance()  # waits for the window: recorded
            (wait,) = stability_rate_limit_waits
            assert wait.reason == "rate limit"
            assert 0 < wait.seconds <= 0.2


        @pytest.mark.asyncio
        async def test_a_store_shared_on_purpose(stability_emulator, stability_rate_limit_store):
            assert isinstance(stability_rate_limit_store, MemoryRateLimitStore)
            key = stability_emulator.add_account(credits=1.0)
            options = dict(
                base_url=stability_emulator.base_url,
                rate_limit=RateLimit(1, 60.0),
                rate_limit_store=stability_rate_limit_store,
            )
            async with StabilitySession(key, **options) as first, StabilitySession(
                key, **options
            ) as second:
                await first.balance()
                with pytest.raises(Exception, match="not sent"):
                    await second.with_options(retry=__import__("stability_user").RetryPolicy(
                        max_retry_after=1)).balance()


        @pytest.mark.asyncio
        async def test_the_session_fixture_records_into_the_list(
            stability_session, stability_rate_limit_waits
        ):
            assert (await stability_session.balance()).credits == 100.0
            assert stability_rate_limit_waits == []
        """
    )
    result = pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


@pytest.mark.parametrize("store", ["memory", "local", "redis"])
async def test_a_lockout_at_one_emulator_does_not_delay_another(
    store: str, redis_url: str, tmp_path: Path
) -> None:
    stores: dict[str, Any] = {
        "memory": lambda: "memory",
        "local": lambda: LocalRateLimitStore(tmp_path / "limits.sqlite3"),
        "redis": lambda: RedisRateLimitStore(redis_url),
    }
    key = f"sk-shared-{uuid.uuid4().hex}"
    async with StabilityEmulator() as first, StabilityEmulator() as second:
        for emulator in (first, second):
            emulator.add_account(api_key=key, credits=3.0)
        first.script(Fault.respond(429, retry_after=60))
        shared = stores[store]()
        policy = RetryPolicy(max_attempts=1, max_retry_after=1)
        try:
            async with (
                StabilitySession(
                    key, base_url=first.base_url, retry=policy, rate_limit_store=shared
                ) as at_first,
                StabilitySession(
                    key, base_url=second.base_url, retry=policy, rate_limit_store=shared
                ) as at_second,
            ):
                with pytest.raises(RateLimitError) as answered:
                    await at_first.balance()
                assert answered.value.sent
                with pytest.raises(RateLimitError, match="not sent"):
                    await at_first.balance()  # locked out there...
                assert await at_second.balance() == Balance(3.0)  # ...and only there
        finally:
            if not isinstance(shared, str):
                await shared.aclose()
    assert [r.status for r in second.requests] == [200]


@pytest.mark.parametrize("store", ["local", "redis"])
async def test_an_emulator_never_touches_the_real_services_state(
    store: str, redis_url: str, tmp_path: Path
) -> None:
    make: dict[str, Any] = {
        "local": lambda: LocalRateLimitStore(tmp_path / "limits.sqlite3"),
        "redis": lambda: RedisRateLimitStore(redis_url),
    }
    shared = make[store]()
    key = f"sk-shared-{uuid.uuid4().hex}"
    limit = RateLimit(2, 60.0)
    try:
        async with StabilityEmulator() as emulator:
            emulator.add_account(api_key=key)
            emulator.script(Fault.respond(429, retry_after=60))
            async with StabilitySession(
                key,
                base_url=emulator.base_url,
                rate_limit=limit,
                rate_limit_store=shared,
                retry=RetryPolicy(max_attempts=1),
            ) as session:
                with pytest.raises(RateLimitError):
                    await session.balance()
        at_emulator = key_id_of(key, origin_of(emulator.base_url))
        at_service = key_id_of(key, origin_of(REAL_SERVICE))
        assert at_emulator != at_service
        assert await shared.acquire(at_emulator, limit, 5.0) == Wait(
            pytest.approx(60.0, abs=1.0),  # type: ignore[arg-type]
            lockout=True,
        )
        assert not isinstance(await shared.acquire(at_service, limit, 5.0), Wait)
    finally:
        await shared.aclose()


class Counting:
    """A transport answering 200 at once, counting what it was sent, from any thread."""

    def __init__(self) -> None:
        self.sent = 0
        self._lock = threading.Lock()

    async def __call__(self, request: Request) -> Response:
        with self._lock:
            self.sent += 1
        await asyncio.sleep(0)
        return Response(200, {}, b'{"credits": 1}')

    async def aclose(self) -> None:
        """Nothing to close."""


def test_threads_each_with_its_own_loop_on_one_key_all_answer() -> None:
    limit = RateLimit(1_000, 1.0)
    emulator_ready = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            stop = box["stop"] = asyncio.Event()
            box["loop"] = asyncio.get_running_loop()
            async with StabilityEmulator(rate_limit=None) as emulator:
                box["url"] = emulator.base_url
                emulator.add_account(api_key=KEY, credits=4.0)
                emulator_ready.set()
                await stop.wait()

        asyncio.run(main())

    server = threading.Thread(target=serve)
    server.start()
    emulator_ready.wait(10)
    shared_transport = Counting()
    # One session with a transport passed in, shared by every thread's loop, too.
    shared = StabilitySession(KEY, transport=shared_transport, rate_limit=limit)
    results: list[Any] = []
    lock = threading.Lock()

    def worker() -> None:
        async def calls() -> list[Any]:
            async with StabilitySession(KEY, base_url=box["url"], rate_limit=limit) as own:
                answers = await asyncio.gather(
                    *(own.balance() for _ in range(50)), *(shared.balance() for _ in range(50))
                )
            return list(answers)

        try:
            answers = asyncio.run(calls())
        except BaseException as error:
            answers = [error]
        with lock:
            results.extend(answers)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        server.join(10)
        asyncio.run(shared.close())
    assert len(results) == 300
    assert {type(r) for r in results} == {Balance}
    assert shared_transport.sent == 150


async def test_memory_is_the_loops_and_a_store_object_is_shared_as_given() -> None:
    store = MemoryRateLimitStore()
    async with StabilitySession(KEY, rate_limit_store=store) as session:
        limiter = session._state.limiter
        assert limiter is not None
        assert limiter.store is store
    async with StabilitySession(KEY) as session:
        limiter = session._state.limiter
        assert limiter is not None
        assert limiter.store is MemoryRateLimitStore.for_loop()
