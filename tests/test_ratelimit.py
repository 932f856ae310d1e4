"""The rate limiter and its in-process store: units, a model check, and the invariant."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stability_user import (
    Balance,
    MemoryRateLimitStore,
    RateLimit,
    RateLimitError,
    RateLimitWait,
    RetryPolicy,
    StabilitySession,
)
from stability_user._ratelimit import RateLimiter, Wait
from stability_user.testing import Fault, StabilityEmulator

from .fakes import FakeClock, VirtualTime

LIMIT = RateLimit(2, 10.0, 60.0)
PATIENT = RetryPolicy(max_retry_after=86_400.0)


def limiter_on(clock: FakeClock, limit: RateLimit = LIMIT, **kwargs: object) -> RateLimiter:
    store = MemoryRateLimitStore(clock=clock, **kwargs)  # type: ignore[arg-type]
    return RateLimiter(limit, store, sleep=clock.sleep)


async def one_request(limiter: RateLimiter, key: str = "k", **kwargs: object) -> None:
    options = {"lease": 30.0, "max_wait": 60.0, "attempts": 0, **kwargs}
    slot = await limiter.acquire(key, "sk-" + key * 20, **options)  # type: ignore[arg-type]
    await limiter.release(slot)


class TestRateLimit:
    def test_defaults_are_the_services_numbers(self) -> None:
        assert RateLimit() == RateLimit(150, 10.0, 60.0)

    @pytest.mark.parametrize(
        ("text", "expected"), [("150/10", RateLimit(150, 10.0)), ("20/0.5", RateLimit(20, 0.5))]
    )
    def test_parse(self, text: str, expected: RateLimit) -> None:
        assert RateLimit.parse(text) == expected

    @pytest.mark.parametrize("text", ["150", "x/10", "150/y", "0/10", "5/0", "5/inf", "-1/10"])
    def test_parse_refuses(self, text: str) -> None:
        with pytest.raises(ValueError, match="rate limit"):
            RateLimit.parse(text)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"requests": 0},
            {"requests": 1.5},
            {"requests": True},
            {"window": 0},
            {"window": float("inf")},
            {"window": float("nan")},
            {"lockout": -1},
        ],
    )
    def test_refuses_values_that_would_wait_forever_or_never(
        self, kwargs: dict[str, float]
    ) -> None:
        with pytest.raises(ValueError, match="rate limit"):
            RateLimit(**kwargs)  # type: ignore[arg-type]


class TestMemoryStore:
    async def test_waits_until_the_oldest_request_leaves_the_window(self, clock: FakeClock) -> None:
        limiter = limiter_on(clock)
        for _ in range(2):
            await one_request(limiter)
            clock.advance(1)
        start = clock.now
        await one_request(limiter)
        assert clock.sleeps == [8.0]  # the first completed at t0, now is t0+2: free at t0+10
        assert clock.now == start + 8.0

    async def test_keys_are_independent_and_forgotten_when_idle(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock)
        limiter = RateLimiter(RateLimit(1, 10.0), store, sleep=clock.sleep)
        for key in ("a", "b", "c"):
            await one_request(limiter, key)
        assert clock.sleeps == []
        assert len(store) == 3
        clock.advance(10)
        await one_request(limiter, "d")
        assert len(store) == 1

    async def test_a_slot_frees_exactly_a_window_after_completion(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock)
        limit = RateLimit(1, 10.0)
        token = store.acquire_nowait("k", limit, 5.0)
        assert isinstance(token, int)
        clock.advance(3)
        store.release_nowait("k", token, limit)
        clock.advance(9.999)
        assert store.acquire_nowait("k", limit, 5.0) == Wait(pytest.approx(0.001))  # type: ignore[arg-type]
        clock.advance(0.001)
        assert isinstance(store.acquire_nowait("k", limit, 5.0), int)

    async def test_in_flight_requests_hold_their_slots(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock)
        limit = RateLimit(1, 10.0)
        assert isinstance(store.acquire_nowait("k", limit, 5.0), int)
        clock.advance(4)
        # In flight: it frees no sooner than a window after it completes.
        assert store.acquire_nowait("k", limit, 5.0) == Wait(10.0)

    async def test_in_process_a_slot_is_held_until_released_however_long(
        self, clock: FakeClock
    ) -> None:
        # Leases are for stores shared with processes that may die; this one dies with us.
        store = MemoryRateLimitStore(clock=clock)
        limit = RateLimit(1, 10.0)
        assert isinstance(store.acquire_nowait("k", limit, 5.0), int)
        clock.advance(3600)
        assert store.acquire_nowait("k", limit, 5.0) == Wait(10.0)

    async def test_releasing_an_unknown_token_changes_nothing(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock)
        store.release_nowait("k", 12345, LIMIT)
        assert isinstance(store.acquire_nowait("k", LIMIT, 5.0), int)
        assert isinstance(store.acquire_nowait("k", LIMIT, 5.0), int)

    async def test_lockout(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock)
        assert await store.lock("k", 60.0) is True
        assert await store.lock("k", 30.0) is False  # already locked: one warning, not two
        assert store.acquire_nowait("k", LIMIT, 5.0) == Wait(60.0, lockout=True)
        assert isinstance(store.acquire_nowait("other", LIMIT, 5.0), int)  # its key only
        clock.advance(59)
        assert store.acquire_nowait("k", LIMIT, 5.0) == Wait(1.0, lockout=True)
        clock.advance(1)
        assert isinstance(store.acquire_nowait("k", LIMIT, 5.0), int)

    async def test_memory_is_bounded_by_max_keys(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock, max_keys=100)
        limiter = RateLimiter(RateLimit(150, 10.0), store, sleep=clock.sleep)
        for n in range(1000):
            await one_request(limiter, f"key-{n}")
        assert len(store) <= 100
        with pytest.raises(ValueError, match="max_keys"):
            MemoryRateLimitStore(max_keys=0)

    async def test_least_recently_used_keys_are_forgotten_first(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock, max_keys=3)
        limit = RateLimit(1, 10.0)
        for key in ("a", "b", "c"):
            store.release_nowait(key, store.acquire_nowait(key, limit, 5.0), limit)  # type: ignore[arg-type]
        store.acquire_nowait("a", limit, 5.0)  # "a" used again: "b" is now the oldest
        store.acquire_nowait("d", limit, 5.0)
        assert store.acquire_nowait("b", limit, 5.0) != Wait(10.0)  # "b" was forgotten
        assert store.acquire_nowait("a", limit, 5.0) == Wait(pytest.approx(10.0))  # type: ignore[arg-type]

    async def test_keys_in_flight_or_locked_are_never_forgotten(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock, max_keys=2)
        limit = RateLimit(1, 10.0)
        assert isinstance(store.acquire_nowait("busy", limit, 5.0), int)
        await store.lock("locked", 60.0)
        for n in range(20):
            store.acquire_nowait(f"other-{n}", limit, 5.0)
        assert store.acquire_nowait("busy", limit, 5.0) == Wait(10.0)
        assert store.acquire_nowait("locked", limit, 5.0) == Wait(60.0, lockout=True)

    async def test_memory_means_the_running_event_loops_store(self) -> None:
        here = MemoryRateLimitStore.for_loop()
        assert here is MemoryRateLimitStore.for_loop(asyncio.get_running_loop())
        other = asyncio.new_event_loop()
        try:
            assert MemoryRateLimitStore.for_loop(other) is not here
        finally:
            other.close()


class TestLimiter:
    async def test_refuses_at_once_a_wait_longer_than_allowed(self, clock: FakeClock) -> None:
        limiter = limiter_on(clock)
        for _ in range(2):
            await one_request(limiter)
        with pytest.raises(RateLimitError) as info:
            await one_request(limiter, max_wait=5.0, attempts=2)
        assert clock.sleeps == []  # refused without waiting
        error = info.value
        assert error.retry_after == 10.0
        assert (error.status, error.attempts, error.error, dict(error.headers)) == (
            429,
            2,
            None,
            {},
        )
        assert "not sent" in str(error)
        assert error.sent is False
        assert "k" * 20 not in str(error)  # the key, masked

    async def test_tells_who_waits_and_why(self, clock: FakeClock) -> None:
        waits: list[RateLimitWait] = []
        store = MemoryRateLimitStore(clock=clock)
        limiter = RateLimiter(LIMIT, store, sleep=clock.sleep, on_wait=waits.append)
        for _ in range(3):
            await one_request(limiter)
        await limiter.lock("k", "sk-" + "k" * 20, None)
        await one_request(limiter)
        assert [(w.key, w.seconds, w.reason) for w in waits] == [
            ("sk-…kkkk", 10.0, "rate limit"),
            ("sk-…kkkk", 60.0, "lockout"),
        ]

    async def test_one_warning_per_lockout(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        limiter = limiter_on(clock)
        for _ in range(32):
            await limiter.lock("k", "sk-" + "k" * 20, 30.0)
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warnings == [
            "the service locked sk-…kkkk out for 30 s (429): its calls wait until then"
        ]


class GatedStore:
    """An awaited store (as a shared one is) whose acquire ends when the test says."""

    def __init__(self, clock: FakeClock) -> None:
        self.state = MemoryRateLimitStore(clock=clock)
        self.gate = asyncio.Event()
        self.taking = asyncio.Event()
        self.released: list[int | str] = []

    async def acquire(self, key_id: str, limit: RateLimit, lease: float) -> int | str | Wait:
        self.taking.set()
        await self.gate.wait()
        return self.state.acquire_nowait(key_id, limit, lease)

    async def release(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        self.released.append(token)
        self.state.release_nowait(key_id, token, limit)

    async def lock(self, key_id: str, seconds: float) -> bool:
        return await self.state.lock(key_id, seconds)

    async def aclose(self) -> None:
        await self.state.aclose()


class TestCancelledWhileTaking:
    async def test_the_slot_a_shared_store_took_anyway_is_given_back(
        self, clock: FakeClock
    ) -> None:
        store = GatedStore(clock)
        limiter = RateLimiter(LIMIT, store, sleep=clock.sleep)
        assert limiter.take_now("k", 30.0) is None  # an awaited store: no fast path
        caller = asyncio.create_task(one_request(limiter))
        await store.taking.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        store.gate.set()  # the store's work ends after its caller has gone
        await limiter.aclose()  # waits for the give-back
        assert len(store.released) == 1
        # Released, it counts as a request of this window (10 s), no longer as one in
        # flight until its lease (30 s) runs out: one more now, the next after 10 s.
        await one_request(limiter)
        assert clock.sleeps == []
        await one_request(limiter)
        assert clock.sleeps == [10.0]


class TestSession:
    async def test_every_call_passes_the_limiter(
        self, session: StabilitySession, emulator: StabilityEmulator, clock: FakeClock
    ) -> None:
        # A fake second passes in no real time: a call may wait many windows (on the
        # fake clock) before the real requests in flight complete. Allow for that.
        session = session.with_options(retry=PATIENT)
        results = await asyncio.gather(
            *(session.balance() for _ in range(200)), *(session.account() for _ in range(100))
        )
        assert len(results) == 300
        assert {r.status for r in emulator.requests} == {200}  # no 429 from the service
        assert clock.sleeps  # it waited, on the fake clock

    async def test_views_share_their_parents_limiter(
        self, session: StabilitySession, emulator: StabilityEmulator, clock: FakeClock
    ) -> None:
        views = [session.with_options(timeout=float(n + 1), retry=PATIENT) for n in range(3)]
        await asyncio.gather(*(v.balance() for v in views for _ in range(60)))
        assert {r.status for r in emulator.requests} == {200}

    async def test_a_429_locks_the_key_for_every_call(
        self, emulator: StabilityEmulator, key: str, clock: FakeClock
    ) -> None:
        emulator.script(Fault.respond(429, retry_after=30))
        async with StabilitySession(
            key,
            base_url=emulator.base_url,
            retry=RetryPolicy(max_attempts=1, max_retry_after=10),
            sleep=clock.sleep,
            clock=clock,
        ) as session:
            with pytest.raises(RateLimitError, match="429") as answered:
                await session.balance()
            assert answered.value.sent is True  # the service's own 429
            sent = len(emulator.requests)
            # Every other call on the key now knows: it raises at once, unsent.
            with pytest.raises(RateLimitError, match="not sent") as info:
                await session.account()
            assert (info.value.retry_after, info.value.sent) == (30.0, False)
            assert len(emulator.requests) == sent
            clock.advance(30)
            assert await session.balance() == Balance(12.5)

    async def test_a_429_makes_other_calls_wait_when_the_policy_allows(
        self, session: StabilitySession, emulator: StabilityEmulator, clock: FakeClock
    ) -> None:
        emulator.script(Fault.respond(429, retry_after=20))
        first, second = await asyncio.gather(session.balance(), session.balance())
        assert first == second == Balance(12.5)
        assert [r.status for r in emulator.requests].count(429) == 1

    async def test_limit_off(self, emulator: StabilityEmulator, key: str) -> None:
        async with StabilitySession(key, base_url=emulator.base_url, rate_limit=None) as session:
            assert session.rate_limit is None
            assert session._state.limiter is None  # no slot taken, no store opened
            assert await session.balance() == Balance(12.5)

    async def test_a_session_on_its_own_clock_keeps_its_own_store(self, clock: FakeClock) -> None:
        async with StabilitySession("sk-" + "k" * 20, clock=clock) as session:
            limiter = session._state.limiter
            assert limiter is not None
            assert limiter.store is not MemoryRateLimitStore.for_loop()
        async with StabilitySession("sk-" + "k" * 20) as session:
            limiter = session._state.limiter
            assert limiter is not None
            assert limiter.store is MemoryRateLimitStore.for_loop()

    def test_unknown_store_is_refused(self) -> None:
        with pytest.raises(ValueError, match="rate_limit_store"):
            StabilitySession("sk-" + "k" * 20, rate_limit_store="somewhere")


class StoreModel(RuleBasedStateMachine):
    """The in-process store against a model written from the definition, one key.

    The model keeps every request's completion time and decides each acquisition
    from scratch: a slot is held from taking until a window after completion, a
    lockout refuses all.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.limit = RateLimit(3, 10.0, 60.0)
        self.store = MemoryRateLimitStore(clock=self.clock)
        self.requests: dict[int, float | None] = {}  # token -> when it completed
        self.locked_until = 0.0

    def held(self, now: float) -> list[float]:
        """When each held slot frees (a request in flight frees no sooner than now + window)."""
        window = self.limit.window
        return [
            now + window if completed is None else completed + window
            for completed in self.requests.values()
            if completed is None or completed + window > now
        ]

    @rule(lease=st.floats(0.5, 30))
    def acquire(self, lease: float) -> None:
        now = self.clock.now
        answer = self.store.acquire_nowait("k", self.limit, lease)
        if self.locked_until > now:
            assert answer == Wait(self.locked_until - now, lockout=True)
            return
        frees = self.held(now)
        if len(frees) < self.limit.requests:
            assert isinstance(answer, int)
            self.requests[answer] = None
        else:
            assert answer == Wait(pytest.approx(min(frees) - now))  # type: ignore[arg-type]

    @precondition(lambda self: None in self.requests.values())
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        open_tokens = [t for t, completed in self.requests.items() if completed is None]
        token = data.draw(st.sampled_from(open_tokens))
        self.store.release_nowait("k", token, self.limit)
        self.requests[token] = self.clock.now

    @rule(seconds=st.floats(0.5, 90))
    def answered_429(self, seconds: float) -> None:
        asyncio.run(self.store.lock("k", seconds))
        self.locked_until = max(self.locked_until, self.clock.now + seconds)

    @rule(seconds=st.floats(0.001, 20))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def never_more_slots_than_the_limit(self) -> None:
        assert len(self.held(self.clock.now)) <= self.limit.requests


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), clients=st.integers(1, 12))
def test_no_window_ever_sees_more_than_the_limit(seed: int, clients: int) -> None:
    """Many clients, random latencies, arrival anywhere in flight: never over the limit."""
    rng = random.Random(seed)  # noqa: S311 - a test's draw, not a secret
    limit = RateLimit(5, 1.0, 60.0)
    time = VirtualTime()
    arrivals: list[float] = []

    async def client(limiter: RateLimiter) -> None:
        for _ in range(8):
            slot = await limiter.acquire("k", "sk-" + "k" * 20, lease=5.0, max_wait=1e9, attempts=0)
            latency = rng.uniform(0, 3)
            arrivals.append(time.now + rng.uniform(0, latency))  # the service counts it then
            await time.sleep(latency)
            await limiter.release(slot)
            await time.sleep(rng.uniform(0, 0.5))

    async def run() -> None:
        limiter = RateLimiter(limit, MemoryRateLimitStore(clock=time), sleep=time.sleep)
        await time.run(asyncio.gather(*(client(limiter) for _ in range(clients))))

    asyncio.run(run())
    assert len(arrivals) == 8 * clients
    arrivals.sort()
    for n, start in enumerate(arrivals):
        in_window = [t for t in arrivals[n:] if t < start + limit.window]
        assert len(in_window) <= limit.requests


class ScriptedStore:
    """A store that answers from a script and records every call (not the in-process one)."""

    def __init__(self, *answers: int | str | Wait) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[object, ...]] = []
        self.closed = False

    async def acquire(self, key_id: str, limit: RateLimit, lease: float) -> int | str | Wait:
        self.calls.append(("acquire", key_id, limit, lease))
        return self.answers.pop(0)

    async def release(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        self.calls.append(("release", key_id, token, limit))

    async def lock(self, key_id: str, seconds: float) -> bool:
        self.calls.append(("lock", key_id, seconds))
        return True

    async def aclose(self) -> None:
        self.closed = True


class TestDetails:
    """What mutation testing showed no test pinned down."""

    def test_parse_keeps_the_lockout(self) -> None:
        assert RateLimit.parse("5/1", lockout=3.0) == RateLimit(5, 1.0, 3.0)

    def test_a_clock_that_starts_at_zero(self) -> None:
        store = MemoryRateLimitStore(clock=FakeClock(start=0.0))
        assert isinstance(store.acquire_nowait("k", LIMIT, 5.0), int)

    def test_the_default_bound_of_keys(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock)
        limit = RateLimit(5, 10.0)
        for n in range(16_500):
            store.release_nowait(f"k{n}", store.acquire_nowait(f"k{n}", limit, 5.0), limit)  # type: ignore[arg-type]
        assert len(store) == 16_384
        with pytest.raises(ValueError, match=r"^max_keys must be"):
            MemoryRateLimitStore(max_keys=-1)

    def test_a_busy_oldest_key_does_not_stop_forgetting(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock, max_keys=3)
        limit = RateLimit(5, 10.0)
        assert isinstance(store.acquire_nowait("busy", limit, 5.0), int)  # in flight, oldest
        for n in range(20):
            store.release_nowait(f"k{n}", store.acquire_nowait(f"k{n}", limit, 5.0), limit)  # type: ignore[arg-type]
        assert len(store) <= 4

    async def test_new_keys_among_idle_ones(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock, max_keys=2)
        limit = RateLimit(5, 10.0)
        for key in ("a", "b"):
            store.release_nowait(key, store.acquire_nowait(key, limit, 5.0), limit)  # type: ignore[arg-type]
        clock.advance(20)  # both idle now
        assert await store.lock("new", 5.0) is True
        store.release_nowait("other", 1, limit)  # an unknown token: nothing to release
        assert store.acquire_nowait("new", limit, 5.0) == Wait(5.0, lockout=True)

    async def test_the_awaitable_methods_do_what_the_others_do(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock)
        limit = RateLimit(1, 10.0)
        token = await store.acquire("k", limit, 5.0)
        assert isinstance(token, int)
        assert await store.acquire("k", limit, 5.0) == Wait(10.0)
        clock.advance(2)
        await store.release("k", token, limit)
        assert await store.acquire("k", limit, 5.0) == Wait(10.0)  # a window from release
        clock.advance(10)
        assert isinstance(await store.acquire("k", limit, 5.0), int)

    async def test_a_lock_that_just_ended_is_new_again(self, clock: FakeClock) -> None:
        store = MemoryRateLimitStore(clock=clock)
        assert await store.lock("k", 10.0) is True
        clock.advance(10.0)
        assert await store.lock("k", 10.0) is True

    async def test_the_limiter_closes_only_a_store_it_made(self, clock: FakeClock) -> None:
        borrowed, owned = ScriptedStore(), ScriptedStore()
        await RateLimiter(LIMIT, borrowed, sleep=clock.sleep).aclose()
        await RateLimiter(LIMIT, owned, sleep=clock.sleep, owns_store=True).aclose()
        assert (borrowed.closed, owned.closed) == (False, True)

    async def test_any_store_gets_what_it_needs(self, clock: FakeClock) -> None:
        store = ScriptedStore(Wait(10.0), "token-1")
        limiter = RateLimiter(LIMIT, store, sleep=clock.sleep)
        slot = await limiter.acquire("kid", "sk-" + "k" * 20, lease=35.0, max_wait=60, attempts=0)
        limiter.give_back(slot)  # never awaits: the store's release runs in a task of its own
        await limiter.aclose()
        assert store.calls == [
            ("acquire", "kid", LIMIT, 35.0),
            ("acquire", "kid", LIMIT, 35.0),
            ("release", "kid", "token-1", LIMIT),
        ]
        assert clock.sleeps == [10.0]

    async def test_waits_add_up_against_what_the_policy_allows(self, clock: FakeClock) -> None:
        store = ScriptedStore(Wait(10.0), Wait(10.0), "token")
        limiter = RateLimiter(LIMIT, store, sleep=clock.sleep)
        with pytest.raises(RateLimitError):
            await limiter.acquire("kid", "sk-" + "k" * 20, lease=5, max_wait=15, attempts=0)
        assert clock.sleeps == [10.0]  # the second wait would pass 15 s in all

    async def test_waits_are_logged(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="stability_user")
        limiter = RateLimiter(LIMIT, ScriptedStore(Wait(2.5, lockout=True), 1), sleep=clock.sleep)
        await limiter.acquire("kid", "sk-" + "k" * 20, lease=5, max_wait=60, attempts=0)
        assert [r.getMessage() for r in caplog.records] == [
            "waiting 2.500 s for the lockout of sk-…kkkk"
        ]

    async def test_a_retry_after_of_zero_locks_nothing(self, clock: FakeClock) -> None:
        store = ScriptedStore()
        limiter = RateLimiter(LIMIT, store, sleep=clock.sleep)
        await limiter.lock("kid", "sk-" + "k" * 20, 0.0)  # the service said: at once
        await limiter.lock("kid", "sk-" + "k" * 20, 1.0)
        await limiter.lock("kid", "sk-" + "k" * 20, None)  # none, or a date already past
        assert store.calls == [("lock", "kid", 1.0), ("lock", "kid", 60.0)]

    async def test_refusals_say_why_in_full(self, clock: FakeClock) -> None:
        key = "sk-" + "k" * 20
        for wait, why in (
            (Wait(30.0, lockout=True), "the service locked sk-…kkkk out"),
            (Wait(8.0), "sk-…kkkk used its 2 requests per 10 s"),
        ):
            limiter = RateLimiter(LIMIT, ScriptedStore(wait), sleep=clock.sleep)
            with pytest.raises(RateLimitError) as info:
                await limiter.acquire("kid", key, lease=5, max_wait=1, attempts=3)
            assert str(info.value) == (
                f"429 Too Many Requests (not sent: {why}, and the wait is longer than the "
                f"retry policy allows; retry after {wait.seconds:.3g} s)"
            )
            assert info.value.attempts == 3
