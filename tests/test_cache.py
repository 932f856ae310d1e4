"""The read cache in one process: single flight, max_age, stale answers, cancellation, memory.

A scripted transport stands in for the service where a test needs to hold an
answer back or count what was sent; the emulator where the failure is one only a
socket shows (a dropped connection, a stall past the deadline). Time is a fake
clock: a reading ages when the test says so.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from stability_user import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    Balance,
    BalanceTarget,
    CachePolicy,
    MemoryRateLimitStore,
    NotFoundError,
    PermissionDeniedError,
    RateLimit,
    RateLimitError,
    Request,
    Response,
    RetryPolicy,
    ServerError,
    StabilityError,
    StabilitySession,
)
from stability_user.testing import Fault, StabilityEmulator

from .conftest import KEY
from .fakes import FakeClock

OTHER_KEY = "sk-other0123456789abcdefghijklmnopqrstuvwxyz"


class Service:
    """A transport that answers from a script, counts every request, and can hold answers."""

    def __init__(self) -> None:
        self.sent: list[Request] = []
        self.script: collections.deque[int | BaseException] = collections.deque()
        self.hold: asyncio.Event | None = None
        self.cancelled = 0
        self.credits: dict[tuple[str | None, str | None], float] = {}

    async def __call__(self, request: Request) -> Response:
        self.sent.append(request)
        try:
            if self.hold is not None:
                await self.hold.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        outcome = self.script.popleft() if self.script else 200
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome != 200:
            return Response(outcome, {"Content-Type": "application/json"}, b'{"name": "e"}')
        body: dict[str, Any]
        if request.url.endswith("/account"):
            body = {"id": "user-1", "email": "a@example.com", "organizations": []}
        else:
            who = (request.api_key, request.headers.get("Organization"))
            body = {"credits": self.credits.get(who, 12.5)}
        return Response(200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    async def aclose(self) -> None:
        """Nothing to close."""


@pytest.fixture(name="service")
def _service() -> Service:
    return Service()


def cached_session(
    service: Service, clock: FakeClock, policy: CachePolicy | None = None, **options: Any
) -> StabilitySession:
    options.setdefault("retry", RetryPolicy(max_attempts=1))
    return StabilitySession(
        KEY,
        transport=service,
        cache=policy or CachePolicy(max_age=10.0),
        sleep=clock.sleep,
        clock=clock,
        **options,
    )


@pytest.fixture(name="cached")
async def _cached(service: Service, clock: FakeClock) -> AsyncIterator[StabilitySession]:
    async with cached_session(service, clock) as session:
        yield session


async def until(condition: Any, steps: int = 1000) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class TestPolicy:
    def test_the_names_and_defaults(self) -> None:
        policy = CachePolicy(max_age=1.0)
        assert attrs.asdict(policy) == {
            "max_age": 1.0,
            "stale_while_revalidate": 0.0,
            "stale_if_error": 0.0,
            "max_entries": 10_000,
        }

    @pytest.mark.parametrize(
        "options",
        [
            {"max_age": -1},
            {"max_age": float("nan")},
            {"max_age": 1, "stale_while_revalidate": float("inf")},
            {"max_age": 1, "stale_if_error": -0.5},
            {"max_age": 1, "max_entries": 0},
        ],
    )
    def test_refuses_what_cannot_be(self, options: dict[str, float]) -> None:
        with pytest.raises(ValueError, match="cache"):
            CachePolicy(**options)  # type: ignore[arg-type]

    async def test_no_cache_by_default_and_max_age_needs_one(
        self, service: Service, clock: FakeClock
    ) -> None:
        async with StabilitySession(KEY, transport=service, sleep=clock.sleep, clock=clock) as s:
            await asyncio.gather(s.balance(), s.balance())
            assert len(service.sent) == 2  # every call a request
            assert (await s.balance()).freshness is None
            with pytest.raises(ValueError, match="max_age needs a read cache"):
                await s.balance(max_age=5)
            with pytest.raises(ValueError, match="max_age needs a read cache"):
                await s.account(max_age=5)

    async def test_a_bad_max_age_or_organization_is_refused(self, cached: StabilitySession) -> None:
        with pytest.raises(ValueError, match="max_age"):
            await cached.balance(max_age=-1)
        with pytest.raises(ValueError, match="organization"):
            await cached.balance(organization="org\r\nX-Evil: 1")


class TestSingleFlight:
    async def test_a_hundred_concurrent_calls_send_one_request(
        self, cached: StabilitySession, service: Service
    ) -> None:
        service.hold = asyncio.Event()
        calls = [asyncio.ensure_future(cached.balance()) for _ in range(100)]
        calls += [asyncio.ensure_future(cached.with_options(timeout=5.0).balance())]
        await until(lambda: len(service.sent) == 1)
        service.hold.set()
        results = await asyncio.gather(*calls)
        assert {r.credits for r in results} == {12.5}
        assert len(service.sent) == 1

    async def test_a_reading_answers_for_max_age(
        self, cached: StabilitySession, service: Service, clock: FakeClock
    ) -> None:
        first = await cached.balance()
        clock.advance(9.0)
        second = await cached.account()
        assert len(service.sent) == 2  # another endpoint: another entry
        again = await cached.balance()
        assert len(service.sent) == 2
        assert first.freshness is not None
        assert again.freshness is not None
        assert first.freshness.age < 0.1
        assert not first.freshness.stale
        assert again.freshness.age == pytest.approx(9.0, abs=0.1)
        assert not again.freshness.stale
        assert again.freshness.fetched_at == first.freshness.fetched_at
        assert second.freshness is not None
        clock.advance(1.5)
        await cached.balance()  # older than 10 s now: a new read
        assert len(service.sent) == 3

    async def test_max_age_per_call_and_zero_still_joins_a_read_in_flight(
        self, cached: StabilitySession, service: Service, clock: FakeClock
    ) -> None:
        await cached.balance()
        clock.advance(2.0)
        await cached.balance(max_age=5.0)
        assert len(service.sent) == 1
        await cached.balance(max_age=1.0)
        assert len(service.sent) == 2
        await cached.balance(max_age=0)
        assert len(service.sent) == 3  # never from the cache...
        service.hold = asyncio.Event()
        started = asyncio.ensure_future(cached.balance(max_age=0))
        await until(lambda: len(service.sent) == 4)
        joined = asyncio.ensure_future(cached.balance(max_age=0))
        await asyncio.sleep(0)
        service.hold.set()
        await asyncio.gather(started, joined)
        assert len(service.sent) == 4  # ...but joining the read already in flight

    async def test_readings_of_keys_organizations_and_versions_never_mix(
        self, service: Service, clock: FakeClock
    ) -> None:
        service.credits = {
            (KEY, None): 1.0,
            (KEY, "org-a"): 2.0,
            (KEY, "org-b"): 3.0,
            (OTHER_KEY, None): 4.0,
            (OTHER_KEY, "org-a"): 5.0,
        }
        service.hold = asyncio.Event()
        async with (
            cached_session(service, clock) as v1,
            cached_session(service, clock, api_version="v1alpha") as old,
        ):
            other = v1.with_options(api_key=OTHER_KEY)
            asks = {
                "v1 default": (v1.balance, None, 1.0),
                "v1 org-a": (v1.balance, "org-a", 2.0),
                "v1 org-b": (v1.balance, "org-b", 3.0),
                "other": (other.balance, None, 4.0),
                "other org-a": (other.balance, "org-a", 5.0),
                "v1alpha": (old.balance, None, 1.0),
            }
            calls = {
                name: [asyncio.ensure_future(read(organization)) for _ in range(20)]
                for name, (read, organization, _) in asks.items()
            }
            await until(lambda: len(service.sent) == len(asks))
            service.hold.set()
            for name, (_, _, credits) in asks.items():
                results = await asyncio.gather(*calls[name])
                assert {r.credits for r in results} == {credits}, name
        assert len(service.sent) == len(asks)  # one request per entry, not per call


class TestFailures:
    @pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 503])
    async def test_a_failed_read_is_never_stored(
        self, cached: StabilitySession, service: Service, status: int
    ) -> None:
        service.script.append(status)
        with pytest.raises(StabilityError):
            await cached.balance()
        assert (await cached.balance()).credits == 12.5
        assert len(service.sent) == 2

    async def test_every_caller_of_a_failed_read_gets_its_error(
        self, cached: StabilitySession, service: Service
    ) -> None:
        service.hold = asyncio.Event()
        service.script.append(503)
        calls = [asyncio.ensure_future(cached.balance()) for _ in range(5)]
        await until(lambda: len(service.sent) == 1)
        service.hold.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, ServerError) for r in results)
        assert len(service.sent) == 1


class TestStale:
    async def test_stale_while_revalidate_answers_at_once_and_refreshes_once(
        self, service: Service, clock: FakeClock
    ) -> None:
        policy = CachePolicy(max_age=1.0, stale_while_revalidate=5.0)
        async with cached_session(service, clock, policy) as session:
            await session.balance()
            clock.advance(2.0)
            service.credits = {(KEY, None): 7.0}
            service.hold = asyncio.Event()
            answers = await asyncio.gather(*(session.balance() for _ in range(30)))
            assert {a.credits for a in answers} == {12.5}  # the old one, at once
            assert all(a.freshness is not None and a.freshness.stale for a in answers)
            await until(lambda: len(service.sent) == 2)  # one refresh for all of them
            service.hold.set()
            await until(lambda: session._state.cache._flights == {})  # type: ignore[union-attr]
            fresh = await session.balance()
            assert fresh.credits == 7.0
            assert fresh.freshness is not None
            assert not fresh.freshness.stale
            assert len(service.sent) == 2
            clock.advance(7.0)  # past max_age and the stale window: a read, waited for
            service.hold = None
            assert (await session.balance()).credits == 7.0
            assert len(service.sent) == 3

    async def test_a_refresh_that_fails_is_logged_once_and_never_raised(
        self, service: Service, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        policy = CachePolicy(max_age=1.0, stale_while_revalidate=60.0)
        async with cached_session(service, clock, policy) as session:
            await session.balance()
            for _ in range(3):
                clock.advance(2.0)
                service.script.append(503)
                assert (await session.balance()).credits == 12.5
                await until(lambda: session._state.cache._flights == {})  # type: ignore[union-attr]
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1
        assert "could not refresh the balance reading" in warnings[0]
        assert KEY not in warnings[0]

    @pytest.mark.parametrize(
        "failure",
        [
            503,
            500,
            APIConnectionError("connection reset"),
            APITimeoutError("took longer than 30 s"),
            429,
        ],
    )
    async def test_stale_if_error_stands_in_for_a_failure_of_the_service(
        self,
        service: Service,
        clock: FakeClock,
        caplog: pytest.LogCaptureFixture,
        failure: int | BaseException,
    ) -> None:
        policy = CachePolicy(max_age=1.0, stale_if_error=30.0)
        async with cached_session(service, clock, policy, rate_limit=None) as session:
            await session.balance()
            clock.advance(10.0)
            for _ in range(3):
                service.script.append(failure)
                stale = await session.balance()
                assert stale.credits == 12.5
                assert stale.freshness is not None
                assert stale.freshness.stale
                assert stale.freshness.age == pytest.approx(10.0, abs=0.1)
            clock.advance(30.0)  # past max_age + stale_if_error: the error itself
            service.script.append(failure)
            with pytest.raises((ServerError, APIConnectionError, RateLimitError)):
                await session.balance()
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1  # once per entry and outage
        assert "handing out one 10.0 s old" in warnings[0]

    async def test_the_clients_own_limiter_refusing_to_wait_is_a_rate_limit_error_too(
        self, service: Service, clock: FakeClock
    ) -> None:
        policy = CachePolicy(max_age=1.0, stale_if_error=30.0)
        async with cached_session(
            service,
            clock,
            policy,
            rate_limit=RateLimit(1, 60.0),
            rate_limit_store=MemoryRateLimitStore(clock=clock),
            retry=RetryPolicy(max_attempts=1, max_retry_after=1.0),
        ) as session:
            await session.balance()
            clock.advance(5.0)
            stale = await session.balance()  # the limiter would wait 55 s: refused, unsent
            assert stale.freshness is not None
            assert stale.freshness.stale
            assert len(service.sent) == 1

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (400, StabilityError),
            (401, AuthenticationError),
            (403, PermissionDeniedError),
            (404, NotFoundError),
        ],
    )
    async def test_a_refusal_of_the_key_shows_at_once(
        self, service: Service, clock: FakeClock, status: int, error: type[Exception]
    ) -> None:
        policy = CachePolicy(max_age=1.0, stale_if_error=3600.0, stale_while_revalidate=0.0)
        async with cached_session(service, clock, policy) as session:
            await session.balance()
            clock.advance(2.0)
            service.script.append(status)
            with pytest.raises(error):
                await session.balance()

    async def test_with_the_emulator_drops_and_stalls_then_the_error(
        self, emulator: StabilityEmulator, key: str, clock: FakeClock
    ) -> None:
        policy = CachePolicy(max_age=1.0, stale_if_error=20.0)
        async with StabilitySession(
            key,
            base_url=emulator.base_url,
            cache=policy,
            retry=RetryPolicy(max_attempts=1, deadline=0.2),
            sleep=clock.sleep,
            clock=clock,
        ) as session:
            assert (await session.balance()).credits == 12.5
            # aiohttp sends a GET again by itself when a pooled connection drops: twice.
            for faults in ([Fault.respond(503)], [Fault.drop()] * 2, [Fault.stall(5.0)]):
                clock.advance(5.0)
                emulator.script(*faults)
                stale = await session.balance()
                assert stale.credits == 12.5
                assert stale.freshness is not None
                assert stale.freshness.stale
            clock.advance(10.0)  # 21 s old now
            emulator.script(Fault.respond(503))
            with pytest.raises(ServerError):
                await session.balance()
            emulator.script(Fault.respond(401))
            with pytest.raises(AuthenticationError):
                await session.balance()


class TestCancellation:
    async def test_the_first_caller_cancelled_leaves_the_read_to_the_others(
        self, cached: StabilitySession, service: Service
    ) -> None:
        service.hold = asyncio.Event()
        first = asyncio.ensure_future(cached.balance())
        await until(lambda: len(service.sent) == 1)
        others = [asyncio.ensure_future(cached.balance()) for _ in range(3)]
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        service.hold.set()
        assert [r.credits for r in await asyncio.gather(*others)] == [12.5] * 3
        assert (len(service.sent), service.cancelled) == (1, 0)

    async def test_when_every_caller_is_cancelled_the_read_is_too(
        self, cached: StabilitySession, service: Service
    ) -> None:
        service.hold = asyncio.Event()
        calls = [asyncio.ensure_future(cached.balance()) for _ in range(3)]
        await until(lambda: len(service.sent) == 1)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await until(lambda: service.cancelled == 1)
        cache = cached._state.cache
        assert cache is not None
        assert cache._flights == {}
        assert len(cache) == 0  # nothing stored
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert leftovers == []

    async def test_a_caller_past_its_deadline_leaves_the_read_running(
        self, service: Service, clock: FakeClock
    ) -> None:
        async with cached_session(service, clock) as session:
            service.hold = asyncio.Event()
            patient = asyncio.ensure_future(session.balance())
            await until(lambda: len(service.sent) == 1)
            hurried = session.with_options(retry=RetryPolicy(deadline=0.05))
            with pytest.raises(APITimeoutError, match="waited for a shared read"):
                await hurried.balance()
            service.hold.set()
            assert (await patient).credits == 12.5

    async def test_close_ends_every_read_in_flight(
        self, service: Service, clock: FakeClock
    ) -> None:
        session = cached_session(service, clock)
        service.hold = asyncio.Event()
        calls = [asyncio.ensure_future(session.balance()) for _ in range(3)]
        await until(lambda: len(service.sent) == 1)
        await session.close()
        for call in calls:
            with pytest.raises(StabilityError, match="closed"):
                await call
        assert service.cancelled == 1
        with pytest.raises(StabilityError, match="closed"):
            await session.balance()


class TestWhatACacheHitSpends:
    async def test_no_middleware_pass_no_rate_limit_slot_no_request(
        self, service: Service, clock: FakeClock
    ) -> None:
        seen: list[int] = []

        async def counting(request: Request, handler: Any) -> Response:
            seen.append(request.attempt)
            response: Response = await handler(request)
            return response

        store = MemoryRateLimitStore(clock=clock)
        async with cached_session(
            service,
            clock,
            middlewares=[counting],
            rate_limit=RateLimit(2, 10.0),
            rate_limit_store=store,
        ) as session:
            for _ in range(50):
                await session.balance()
            assert (len(seen), len(service.sent)) == (1, 1)
            # One slot spent in all: a second request would still find one free.
            (state,) = store._keys.values()
            assert len(state.done) - state.head + len(state.in_flight) == 1

    async def test_bulk_checks_and_watches_always_read_fresh(
        self, cached: StabilitySession, service: Service
    ) -> None:
        await cached.balance()
        results = [r async for r in cached.balances([BalanceTarget(api_key=KEY)] * 3)]
        assert all(r.ok and r.balance is not None for r in results)
        assert all(r.balance.freshness is None for r in results if r.balance)
        async for reading in cached.watch_balance(interval=1.0):
            assert reading.balance is not None
            assert reading.balance.freshness is None
            break
        assert len(service.sent) == 1 + 3 + 1


class TestMemory:
    async def test_at_most_max_entries_the_least_recently_used_dropped_first(
        self, service: Service, clock: FakeClock
    ) -> None:
        async with cached_session(service, clock, CachePolicy(max_age=60, max_entries=3)) as s:
            for organization in ("a", "b", "c"):
                await s.balance(organization)
            await s.balance("a")  # used again: "b" is now the oldest
            await s.balance("d")
            assert len(s._state.cache) == 3  # type: ignore[arg-type]
            sent = len(service.sent)
            await s.balance("a")
            await s.balance("c")
            assert len(service.sent) == sent
            await s.balance("b")  # dropped: read again
            assert len(service.sent) == sent + 1


# -- the cache against a reference model ---------------------------------------


class CacheModel(RuleBasedStateMachine):
    """Calls, clock steps and answers of every kind, against a model of the policy.

    The model keeps the last good reading of each entry and when it was answered;
    each call's outcome follows from the policy alone.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.service = Service()
        self.policy = CachePolicy(max_age=5.0, stale_if_error=10.0, max_entries=2)
        self.session = cached_session(self.service, self.clock, self.policy, rate_limit=None)
        self.readings: dict[str | None, tuple[float, float]] = {}  # org -> (answered, credits)
        self.order: list[str | None] = []  # least recently used first
        self.credits = 1.0

    def teardown(self) -> None:
        self.loop.run_until_complete(self.session.close())
        self.loop.close()

    def _touch(self, organization: str | None) -> None:
        if organization in self.order:
            self.order.remove(organization)
        self.order.append(organization)
        while len(self.order) > self.policy.max_entries:
            self.readings.pop(self.order.pop(0), None)

    @rule(
        organization=st.sampled_from([None, "org-a", "org-b"]),
        answer=st.sampled_from([200, 200, 503, 401, "drop"]),
        max_age=st.sampled_from([None, 0.0, 2.0]),
    )
    def call(self, organization: str | None, answer: int | str, max_age: float | None) -> None:
        now = self.clock.now
        limit = self.policy.max_age if max_age is None else max_age
        held = self.readings.get(organization)
        from_cache = held is not None and limit > 0 and now - held[0] <= limit
        self.credits += 1.0
        self.service.credits = {(KEY, organization): self.credits}
        before = len(self.service.sent)
        if not from_cache:
            self.service.script.append(
                APIConnectionError("dropped") if answer == "drop" else answer  # type: ignore[arg-type]
            )
        try:
            got: Balance | BaseException = self.loop.run_until_complete(
                self.session.balance(organization, max_age=max_age)
            )
        except StabilityError as error:
            got = error
        self.service.script.clear()
        if from_cache:
            assert held is not None
            assert isinstance(got, Balance)
            assert got.credits == held[1]
            assert len(self.service.sent) == before
            self._touch(organization)
            return
        assert len(self.service.sent) == before + 1
        if answer == 200:
            assert isinstance(got, Balance)
            assert got.credits == self.credits
            assert got.freshness is not None
            assert not got.freshness.stale
            self.readings[organization] = (now, self.credits)
            self._touch(organization)
            return
        stale_ok = answer != 401 and held is not None and limit > 0
        if stale_ok and now - held[0] <= limit + self.policy.stale_if_error:  # type: ignore[index]
            assert isinstance(got, Balance)
            assert got.credits == held[1]  # type: ignore[index]
            assert got.freshness is not None
            assert got.freshness.stale
            self._touch(organization)
        else:
            assert isinstance(got, StabilityError)
            expected = AuthenticationError if answer == 401 else StabilityError
            assert isinstance(got, expected)

    @rule(seconds=st.sampled_from([0.5, 2.0, 4.0, 6.0, 20.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def bounded(self) -> None:
        cache = self.session._state.cache
        assert cache is not None
        assert len(cache) <= self.policy.max_entries
        assert cache._flights == {}


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
