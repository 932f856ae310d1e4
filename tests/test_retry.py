"""The retry policy (pure), the retry loop and the sender below it (fake transport, fake clock)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stability_user import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    LocalRateLimitStore,
    MemoryRateLimitStore,
    RateLimit,
    RateLimitError,
    Request,
    Response,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
)
from stability_user._closing import Closing
from stability_user._config import KeyIds, key_id_of, make_config, origin_of
from stability_user._ratelimit import LEASE_MARGIN, RateLimiter, held_for
from stability_user._retry import RATE_LIMIT_LOCKOUT, _path, call_with_retries
from stability_user._sansio import error_for_response
from stability_user._send import Sender

from .fakes import FakeClock

REQUEST = Request("GET", "https://api.example/v1/user/balance", {"Authorization": "k"}, 10.0)


def key_id(request: Request) -> str:
    """The name of the state of the key ``request`` sends, as the sender names it."""
    return key_id_of(request.api_key or "", origin_of(request.url))


class TestPolicy:
    def test_defaults(self) -> None:
        policy = RetryPolicy()
        assert (policy.max_attempts, policy.backoff_base, policy.backoff_max) == (3, 0.5, 8.0)
        assert policy.max_retry_after == 60.0
        assert policy.retry_statuses == frozenset({408, 429, 500, 502, 503, 504})
        assert policy.deadline is None

    def test_backoff_formula(self) -> None:
        policy = RetryPolicy(backoff_base=0.5, backoff_max=8.0)
        assert [policy.backoff(n, 0.0) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1, 2, 4, 8, 8]
        assert policy.backoff(1, 0.5) == 0.75
        assert policy.backoff(10_000, 0.9) == 8.0

    @given(st.integers(1, 10_000), st.floats(0, 1, exclude_max=True))
    def test_backoff_is_bounded(self, attempt: int, jitter: float) -> None:
        policy = RetryPolicy()
        assert 0.5 <= policy.backoff(attempt, jitter) <= 8.0

    def test_stops_after_max_attempts(self) -> None:
        policy = RetryPolicy(max_attempts=3)
        assert policy.next_delay(1, status=503) == 0.5
        assert policy.next_delay(2, status=503) == 1.0
        assert policy.next_delay(3, status=503) is None

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501])
    def test_other_statuses_are_not_retried(self, status: int) -> None:
        assert RetryPolicy().next_delay(1, status=status) is None

    def test_connection_failures_are_retried(self) -> None:
        assert RetryPolicy().next_delay(1, status=None) == 0.5

    def test_retry_after_replaces_backoff_on_429_and_503_only(self) -> None:
        policy = RetryPolicy()
        assert policy.next_delay(1, status=429, retry_after=3.0) == 3.0
        assert policy.next_delay(1, status=503, retry_after=3.0) == 3.0
        assert policy.next_delay(1, status=500, retry_after=3.0) == 0.5

    def test_429_without_retry_after_waits_out_the_lockout(self) -> None:
        assert RetryPolicy().next_delay(1, status=429) == RATE_LIMIT_LOCKOUT == 60.0
        assert RetryPolicy(max_retry_after=30).next_delay(1, status=429) is None

    def test_retry_after_beyond_the_maximum_stops(self) -> None:
        assert RetryPolicy(max_retry_after=10).next_delay(1, status=503, retry_after=11) is None

    def test_wait_past_the_deadline_stops(self) -> None:
        policy = RetryPolicy(deadline=5.0)
        assert policy.next_delay(1, status=503, elapsed=4.0) == 0.5
        assert policy.next_delay(1, status=503, elapsed=4.6) is None

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_attempts": 0},
            {"max_attempts": 1.5},
            {"max_attempts": True},
            {"backoff_base": -1},
            {"backoff_max": float("inf")},
            {"max_retry_after": float("nan")},
            {"deadline": 0},
            {"deadline": -3},
        ],
    )
    def test_invalid_values(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]

    def test_is_frozen_and_hashable(self) -> None:  # any iterable of statuses is frozen
        policy = RetryPolicy(retry_statuses={503})
        assert policy.retry_statuses == frozenset({503})
        assert hash(policy) == hash(RetryPolicy(retry_statuses=frozenset({503})))


class ScriptedHandler:
    """Answers from a script of statuses and exceptions; records every request it saw."""

    def __init__(
        self, *outcomes: int | Exception, clock: FakeClock | None = None, cost: float = 0.0
    ):
        self.outcomes = list(outcomes)
        self.requests: list[Request] = []
        self.clock = clock
        self.cost = cost

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        if self.clock is not None:
            self.clock.advance(self.cost)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        headers = {"Retry-After": "2"} if outcome == 429 else {}
        return Response(outcome, headers, b"{}")

    async def aclose(self) -> None:
        """A transport's second method: nothing to close."""


# A key of its own (a one-letter key would redact every letter "k" in a message).
CONFIG = make_config("sk-config-key-0123456789abcdef", environ={})


def decode(response: Response) -> Response:
    """A 2xx is the result; anything else raises its typed error, as the real decoding does."""
    if response.status == 200:
        return response
    raise error_for_response(response, CONFIG, now=0.0)


def sender_of(
    transport: ScriptedHandler, clock: FakeClock, limiter: RateLimiter | None = None
) -> Sender:
    """What a session puts below its middlewares: a connection, a slot, the transport."""
    return Sender(transport, limiter, Closing(clock.sleep), max_connections=10, clock=clock)


async def send(
    handler: ScriptedHandler,
    policy: RetryPolicy,
    clock: FakeClock,
    *,
    limiter: RateLimiter | None = None,
    request: Request = REQUEST,
) -> Response:
    """A call through the retry loop and the sender, as a session makes it."""
    return await call_with_retries(
        request,
        sender_of(handler, clock, limiter),
        decode,
        policy,
        lockout=RATE_LIMIT_LOCKOUT if limiter is None else limiter.limit.lockout,
        sleep=clock.sleep,
        clock=clock,
        jitter=lambda: 0.0,
    )


class TestLoop:
    async def test_success_after_retries_counts_attempts_from_one(self, clock: FakeClock) -> None:
        handler = ScriptedHandler(503, APIConnectionError("reset"), 200)
        response = await send(handler, RetryPolicy(), clock)
        assert (response.status, response.attempt) == (200, 3)
        assert clock.sleeps == [0.5, 1.0]
        assert len(handler.requests) == 3

    async def test_first_attempt_success_does_not_wait(self, clock: FakeClock) -> None:
        response = await send(ScriptedHandler(200), RetryPolicy(), clock)
        assert (response.status, response.attempt) == (200, 1)
        assert clock.sleeps == []

    async def test_last_error_raised_when_attempts_run_out(self, clock: FakeClock) -> None:
        with pytest.raises(ServerError) as info:
            await send(ScriptedHandler(503, 502, 500), RetryPolicy(), clock)
        assert (info.value.status, info.value.attempts) == (500, 3)

    async def test_last_error_raised_with_attempts(self, clock: FakeClock) -> None:
        first = APIConnectionError("first", attempts=1)
        last = APIConnectionError("last", attempts=3)
        with pytest.raises(APIConnectionError) as info:
            await send(ScriptedHandler(first, 503, last), RetryPolicy(), clock)
        # Raised as the transport made it: the loop never rewrites an error.
        assert info.value is last
        assert info.value.attempts == 3
        assert str(info.value) == "last (after 3 attempts)"

    async def test_every_attempt_request_carries_its_number(self, clock: FakeClock) -> None:
        handler = ScriptedHandler(503, APIConnectionError("reset"), 200)
        await send(handler, RetryPolicy(), clock)
        assert [r.attempt for r in handler.requests] == [1, 2, 3]
        assert handler.requests[0] is REQUEST  # the first attempt is sent as built

    async def test_error_counts_the_attempt_a_middleware_answered(self, clock: FakeClock) -> None:
        async def answers_alone(request: Request) -> Response:
            return Response(503, {}, b"")  # attempt defaults to 1, no request

        with pytest.raises(ServerError) as info:
            await call_with_retries(
                REQUEST, answers_alone, decode, RetryPolicy(), sleep=clock.sleep, clock=clock
            )
        assert info.value.attempts == 3

    async def test_non_retryable_status_raises_at_once(self, clock: FakeClock) -> None:
        handler = ScriptedHandler(401, 200)
        with pytest.raises(AuthenticationError):
            await send(handler, RetryPolicy(), clock)
        assert len(handler.requests) == 1

    async def test_statuses_outside_the_policy_are_not_retried(self, clock: FakeClock) -> None:
        handler = ScriptedHandler(503, 200)
        with pytest.raises(ServerError):
            await send(handler, RetryPolicy(retry_statuses={502}), clock)
        assert len(handler.requests) == 1

    async def test_unverifiable_certificate_is_not_retried(self, clock: FakeClock) -> None:
        handler = ScriptedHandler(APIConnectionError("certificate", retryable=False), 200)
        with pytest.raises(APIConnectionError, match="certificate"):
            await send(handler, RetryPolicy(), clock)
        assert len(handler.requests) == 1

    async def test_other_exceptions_propagate_unretried(self, clock: FakeClock) -> None:
        handler = ScriptedHandler(ValueError("boom"), 200)
        with pytest.raises(ValueError, match="boom"):
            await send(handler, RetryPolicy(), clock)
        assert len(handler.requests) == 1

    async def test_retry_after_is_used(self, clock: FakeClock) -> None:
        await send(ScriptedHandler(429, 200), RetryPolicy(), clock)
        assert clock.sleeps == [2.0]

    async def test_deadline_cuts_the_attempt_timeout(self, clock: FakeClock) -> None:
        handler = ScriptedHandler(503, 200, clock=clock, cost=3.0)
        await send(handler, RetryPolicy(deadline=5.0), clock)
        # first attempt: 5 s left, less than the 10 s timeout; second: 5 - 3 - 0.5 = 1.5 s left
        assert [r.timeout for r in handler.requests] == [5.0, 1.5]

    async def test_no_wait_that_would_end_past_the_deadline(self, clock: FakeClock) -> None:
        handler = ScriptedHandler(503, 200, clock=clock, cost=4.8)
        with pytest.raises(ServerError):
            await send(handler, RetryPolicy(deadline=5.0), clock)
        assert clock.sleeps == []

    async def test_timeout_cut_by_deadline_says_so(self, clock: FakeClock) -> None:
        slow = APITimeoutError("slow")
        handler = ScriptedHandler(slow, clock=clock, cost=2.0)
        with pytest.raises(APITimeoutError) as info:
            await send(handler, RetryPolicy(deadline=2.0), clock)
        assert str(info.value) == "the call's deadline ran out during attempt 1"
        assert info.value.retryable is False
        assert info.value.__cause__ is slow  # a new error, the transport's left as it was
        assert str(slow) == "slow"

    async def test_a_deadline_already_past_sends_nothing(self, clock: FakeClock) -> None:
        # The first attempt used up the deadline; the backoff ended exactly at it.
        handler = ScriptedHandler(503, 200, clock=clock, cost=4.5)
        with pytest.raises(ServerError):
            await send(handler, RetryPolicy(deadline=5.0), clock)
        assert len(handler.requests) == 1
        sender = sender_of(ScriptedHandler(200), clock)
        late = attrs.evolve(REQUEST, deadline=clock.now)
        with pytest.raises(APITimeoutError, match="ran out before attempt 1 was sent"):
            await sender(late)

    async def test_cancel_during_wait_cancels_at_once(self) -> None:
        started = asyncio.Event()

        async def sleep_forever(seconds: float) -> None:
            started.set()
            await asyncio.Event().wait()

        handler = ScriptedHandler(503, 200)
        task = asyncio.ensure_future(
            call_with_retries(REQUEST, handler, decode, RetryPolicy(), sleep=sleep_forever)
        )
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(handler.requests) == 1

    async def test_logs(self, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="stability_user")
        await send(ScriptedHandler(503, 200), RetryPolicy(), clock)
        records = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert records == [
            ("DEBUG", "GET /v1/user/balance -> 503 in 0.0 ms (attempt 1)"),
            (
                "WARNING",
                "retrying GET /v1/user/balance after status 503 (attempt 1 of 3) in 0.500 s",
            ),
            ("DEBUG", "GET /v1/user/balance -> 200 in 0.0 ms (attempt 2)"),
        ]

    async def test_shared_policy_keeps_no_state_between_calls(self, clock: FakeClock) -> None:
        policy = RetryPolicy()
        await asyncio.gather(
            *(send(ScriptedHandler(503, 503, 200), policy, clock) for _ in range(5))
        )
        assert clock.sleeps == [0.5] * 5 + [1.0] * 5


class TestDetails:
    """What mutation testing showed no test pinned down."""

    def test_zero_waits_are_allowed(self) -> None:
        policy = RetryPolicy(backoff_base=0, backoff_max=0, max_retry_after=0)
        assert policy.next_delay(1, status=503) == 0.0

    def test_a_bad_deadline_is_named(self) -> None:
        with pytest.raises(ValueError, match=r"^deadline must be"):
            RetryPolicy(deadline=float("inf"))

    def test_the_exponent_is_capped_at_64(self) -> None:
        policy = RetryPolicy(backoff_base=1.0, backoff_max=1e300)
        assert policy.backoff(1000, 0.0) == 2.0**64

    def test_elapsed_defaults_to_nothing(self) -> None:
        assert RetryPolicy(deadline=0.6).next_delay(1, status=503) == 0.5

    def test_a_wait_ending_exactly_at_the_deadline_is_not_started(self) -> None:
        assert RetryPolicy(deadline=1.5).next_delay(1, status=503, elapsed=1.0) is None
        assert RetryPolicy(deadline=1.5).next_delay(1, status=503, elapsed=0.99) == 0.5

    async def test_the_first_request_carries_the_deadline_uncut_when_it_leaves_room(
        self, clock: FakeClock
    ) -> None:
        handler = ScriptedHandler(200)
        await send(handler, RetryPolicy(deadline=REQUEST.timeout), clock)
        sent = handler.requests[0]
        assert (sent.timeout, sent.deadline) == (REQUEST.timeout, clock.now + REQUEST.timeout)

    async def test_attempts_cut_by_the_deadline_are_numbered(self, clock: FakeClock) -> None:
        handler = ScriptedHandler(503, 200, clock=clock, cost=1.0)
        await send(handler, RetryPolicy(deadline=5.0), clock)
        assert [(r.attempt, r.timeout) for r in handler.requests] == [(1, 5.0), (2, 3.5)]

    async def test_a_timeout_not_cut_by_the_deadline_keeps_its_message(
        self, clock: FakeClock
    ) -> None:
        slow = APITimeoutError("took longer than 10 s")
        with pytest.raises(APITimeoutError) as info:
            await send(ScriptedHandler(slow, slow, slow), RetryPolicy(deadline=100.0), clock)
        assert info.value is slow

    async def test_a_deadline_that_runs_out_later_counts_the_attempts(
        self, clock: FakeClock
    ) -> None:
        handler = ScriptedHandler(503, APITimeoutError("slow"), clock=clock, cost=2.0)
        with pytest.raises(APITimeoutError, match="deadline ran out during attempt 2") as info:
            await send(handler, RetryPolicy(deadline=4.0), clock)
        assert info.value.attempts == 2

    async def test_jitter_spreads_the_waits(self, clock: FakeClock) -> None:
        await call_with_retries(
            REQUEST,
            ScriptedHandler(503, 200),
            decode,
            RetryPolicy(),
            sleep=clock.sleep,
            clock=clock,
            jitter=lambda: 0.5,
        )
        assert clock.sleeps == [0.75]

    async def test_log_lines_in_full(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="stability_user")
        handler = ScriptedHandler(APIConnectionError("reset"), 200, clock=clock, cost=0.25)
        await send(handler, RetryPolicy(), clock)
        assert [r.getMessage() for r in caplog.records] == [
            "GET /v1/user/balance -> no response in 250.0 ms (attempt 1)",
            "retrying GET /v1/user/balance after APIConnectionError: reset (attempt 1 of 3)"
            " in 0.500 s",
            "GET /v1/user/balance -> 200 in 250.0 ms (attempt 2)",
        ]

    async def test_a_middleware_answer_for_the_wrong_attempt_is_renumbered(
        self, clock: FakeClock
    ) -> None:
        async def answers_alone(request: Request) -> Response:
            return Response(503, {}, b"", attempt=1, request=request)

        with pytest.raises(ServerError) as info:
            await call_with_retries(
                REQUEST, answers_alone, decode, RetryPolicy(), sleep=clock.sleep, clock=clock
            )
        assert info.value.attempts == 3

    async def test_a_key_swapped_by_a_middleware_is_redacted_from_its_answer(
        self, clock: FakeClock
    ) -> None:
        other = "sk-swapped0123456789abcdefghijkl"

        async def swaps_and_answers(request: Request) -> Response:
            swapped = attrs.evolve(request, headers={"Authorization": other})
            assert swapped.api_key == other
            return Response(401, {}, f'{{"message": "bad {other}"}}'.encode())

        async def swapped_request(request: Request) -> Response:
            return await swaps_and_answers(attrs.evolve(request, headers={"Authorization": other}))

        with pytest.raises(AuthenticationError) as info:
            await call_with_retries(
                attrs.evolve(REQUEST, headers={"Authorization": other}),
                swapped_request,
                decode,
                RetryPolicy(),
                sleep=clock.sleep,
                clock=clock,
            )
        assert other not in str(info.value)

    @pytest.mark.parametrize(
        ("url", "path"),
        [
            ("https://api.example/v1/user/balance", "/v1/user/balance"),
            ("https://h/a//b", "/a//b"),
            ("https://h", "/"),
            ("http:///x", "/x"),
            ("/relative", "/relative"),
            ("//host/x", "/x"),
        ],
    )
    def test_only_the_path_is_logged(self, url: str, path: str) -> None:
        assert _path(url) == path


class TestWithTheLimiter:
    def limiter(self, clock: FakeClock, limit: RateLimit | None = None) -> RateLimiter:
        store = MemoryRateLimitStore(clock=clock)
        return RateLimiter(limit or RateLimit(1, 10.0), store, sleep=clock.sleep)

    async def call(
        self,
        handler: ScriptedHandler,
        policy: RetryPolicy,
        clock: FakeClock,
        limiter: RateLimiter,
        request: Request = REQUEST,
    ) -> Response:
        return await send(handler, policy, clock, limiter=limiter, request=request)

    async def test_a_key_changed_by_a_middleware_is_limited_as_the_key_sent(
        self, clock: FakeClock
    ) -> None:
        limiter = self.limiter(clock)
        other = attrs.evolve(REQUEST, headers={"Authorization": "sk-other-key-0123456789abcdef"})
        await limiter.lock(key_id(REQUEST), "k", 60.0)

        async def swap_key(request: Request) -> Response:
            return await sender(attrs.evolve(request, headers=other.headers))

        sender = sender_of(ScriptedHandler(200, 200), clock, limiter)
        response = await call_with_retries(
            REQUEST, swap_key, decode, RetryPolicy(), sleep=clock.sleep, clock=clock
        )
        assert response.status == 200  # the session's key is locked out, the one sent is not
        assert clock.sleeps == []
        with pytest.raises(RateLimitError, match="not sent"):
            await self.call(ScriptedHandler(200), RetryPolicy(max_retry_after=1), clock, limiter)

    async def test_the_same_key_at_another_service_is_another_key(self, clock: FakeClock) -> None:
        limiter = self.limiter(clock)
        await self.call(ScriptedHandler(200), RetryPolicy(), clock, limiter)
        elsewhere = attrs.evolve(REQUEST, url="http://127.0.0.1:8700/v1/user/balance")
        assert key_id(elsewhere) != key_id(REQUEST)
        assert (
            await self.call(ScriptedHandler(200), RetryPolicy(), clock, limiter, elsewhere)
        ).status == 200
        assert clock.sleeps == []

    def test_the_key_names_kept_stay_few_however_many_keys_pass(self) -> None:
        # A sweep over a million keys: each key's state name is computed, and the
        # names kept to spare that are bounded, so a worker's memory stays flat.
        key_ids = KeyIds()
        url = REQUEST.url
        names = [key_ids.of(url, f"sk-{n:048d}") for n in range(10_000)]
        assert len(set(names)) == 10_000
        assert 0 < len(key_ids) <= 4_096
        assert key_ids.of(url, f"sk-{0:048d}") == names[0]  # the same name once forgotten
        assert key_id_of(f"sk-{0:048d}", origin_of(url)) == names[0]  # hashed as it was
        key_ids.clear()
        assert len(key_ids) == 0

    async def test_a_wait_past_the_deadline_is_refused_at_once(self, clock: FakeClock) -> None:
        limiter = self.limiter(clock)
        await self.call(ScriptedHandler(200), RetryPolicy(), clock, limiter)
        with pytest.raises(RateLimitError, match="not sent") as info:
            await self.call(ScriptedHandler(200), RetryPolicy(deadline=2.0), clock, limiter)
        assert clock.sleeps == []
        assert info.value.retry_after == 10.0
        assert info.value.attempts == 0

    async def test_a_later_attempt_may_wait_only_what_the_deadline_leaves(
        self, clock: FakeClock
    ) -> None:
        handler = ScriptedHandler(503, 200, clock=clock, cost=4.0)
        with pytest.raises(RateLimitError, match="not sent") as info:
            await self.call(handler, RetryPolicy(deadline=12.0), clock, self.limiter(clock))
        # Attempt 1 took the slot and 4 s; after a 0.5 s backoff the slot frees in 9.5 s,
        # more than the 7.5 s the deadline leaves: refused at once, not waited for.
        assert info.value.attempts == 1
        assert clock.sleeps == [0.5]

    async def test_the_refusal_names_the_masked_key_and_the_attempts_made(
        self, clock: FakeClock
    ) -> None:
        key = "sk-limited0123456789abcdefghijwxyz"
        request = attrs.evolve(REQUEST, headers={"Authorization": key})
        with pytest.raises(RateLimitError) as info:
            await self.call(
                ScriptedHandler(503, 200),
                RetryPolicy(max_retry_after=5.0),
                clock,
                self.limiter(clock),
                request,
            )
        # The 503 took the one slot; the retry would wait 10 s, more than 5 s allowed.
        assert info.value.attempts == 1
        assert "sk-…wxyz" in str(info.value)
        assert key not in str(info.value)

    async def test_a_wait_that_would_end_at_the_deadline_is_refused(self, clock: FakeClock) -> None:
        limiter = self.limiter(clock)
        await self.call(ScriptedHandler(200), RetryPolicy(), clock, limiter)
        handler = ScriptedHandler(200)
        with pytest.raises(RateLimitError, match="not sent"):
            await self.call(handler, RetryPolicy(deadline=10.0), clock, limiter)
        assert clock.sleeps == []  # nothing would be left to send in
        assert handler.requests == []
        # The slot stayed free for others: nothing was taken.
        clock.advance(10.0)
        assert isinstance(limiter.take_now(key_id(REQUEST), 5.0), tuple)

    async def test_after_a_wait_the_attempt_gets_what_the_deadline_leaves(
        self, clock: FakeClock
    ) -> None:
        limiter = self.limiter(clock)
        await self.call(ScriptedHandler(200), RetryPolicy(), clock, limiter)
        handler = ScriptedHandler(200)
        await self.call(handler, RetryPolicy(deadline=12.0), clock, limiter)
        assert clock.sleeps == [10.0]
        assert handler.requests[0].timeout == 2.0  # what the deadline left after the wait

    async def test_a_429_without_retry_after_waits_the_limits_lockout(
        self, clock: FakeClock
    ) -> None:
        answers = [Response(429, {}, b"{}"), Response(200, {}, b"{}")]

        async def transport(request: Request) -> Response:
            return answers.pop(0)

        limiter = self.limiter(clock, RateLimit(100, 10.0, lockout=5.0))
        await self.call(transport, RetryPolicy(), clock, limiter)  # type: ignore[arg-type]
        assert clock.sleeps == [5.0]  # the limit's lockout, not the policy's default 60 s
        assert answers == []

    async def test_a_429_locks_the_key_and_says_whose_key(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        key = "sk-locked01234567890abcdefghijwxyz"
        request = attrs.evolve(REQUEST, headers={"Authorization": key})
        limiter = self.limiter(clock, RateLimit(100, 10.0))
        await self.call(ScriptedHandler(429, 200), RetryPolicy(), clock, limiter, request)
        assert clock.sleeps == [2.0]  # the Retry-After, once: the lockout was over by then
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert (
            "the service locked sk-…wxyz out for 2 s (429): its calls wait until then" in warnings
        )

    async def test_shared_stores_get_a_lease_longer_than_the_timeout(
        self, clock: FakeClock, tmp_path: Path
    ) -> None:
        store = LocalRateLimitStore(tmp_path / "l.sqlite3", clock=clock)
        limiter = RateLimiter(RateLimit(5, 10.0), store, sleep=clock.sleep)
        frees: list[float] = []

        async def look(request: Request) -> Response:
            rows = await store._file.run(
                lambda db: db.execute("SELECT frees FROM slots").fetchall()
            )
            frees.extend(row[0] for row in rows)
            return Response(200, {}, b"{}", request.attempt, request)

        try:
            await self.call(look, RetryPolicy(), clock, limiter)  # type: ignore[arg-type]
        finally:
            await store.aclose()
        assert frees == [clock.now + REQUEST.timeout + LEASE_MARGIN + held_for(RateLimit(5, 10.0))]


async def test_a_response_says_which_attempt_it_answers_whatever_transport_sent_it(
    clock: FakeClock,
) -> None:
    """A transport passed in numbers nothing: the middlewares still see 1, 2, 3."""
    from stability_user import StabilitySession  # noqa: PLC0415 - the whole call path

    seen: list[tuple[int, int]] = []

    async def watching(request: Request, handler: Any) -> Response:
        response: Response = await handler(request)
        seen.append((request.attempt, response.attempt))
        return response

    transport = ScriptedHandler(503, 503, 200)
    async with StabilitySession(
        "sk-attempts-0123456789abcdefghij",
        transport=transport,
        middlewares=[watching],
        sleep=clock.sleep,
        clock=clock,
    ) as session:
        with pytest.raises(ResponseValidationError):  # a 200 of "{}": the attempts are the point
            await session.balance()
    assert seen == [(1, 1), (2, 2), (3, 3)]
