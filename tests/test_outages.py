"""A shared store's outage mid-run: each call meets it once, for a bounded moment, and goes on.

Real outages, made the way they happen: a redis-server frozen with SIGSTOP while
32 calls run (its connections stay open and silent), a Redis port whose backlog
is full (the kernel drops the SYNs: a connection never completes), a port where
nothing listens, a machine-wide file another process holds in a transaction,
and one this process can no longer write. Every call must succeed (limited in
this process meanwhile), one WARNING must say so, and no call may hang. How
long a call waits, at worst, is measured in benchmarks/store_outage.py, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast
from urllib.parse import quote

import pytest
import redis
import redis.asyncio

from stability_user import (
    Balance,
    LocalRateLimitStore,
    RateLimit,
    RedisRateLimitStore,
    RetryPolicy,
    StabilitySession,
)
from stability_user._backends import Breaker, Outage
from stability_user.testing import StabilityEmulator

from .fakes import FakeClock
from .processes import run_cli, run_program
from .servers import free_port, redis_process

WORKERS = 32
CALLS = 640
# Room enough that the limit itself never makes a call wait: only the outage may.
ROOMY = RateLimit(1000, 1.0)
# Generous: a call that meets an outage waits a second at most (the breaker's
# bound). Anything near this means a call waited for the store on its own.
EACH_CALL_WITHIN = 5.0


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "is unavailable" in r.getMessage()
    ]


async def run_calls(
    session: StabilitySession,
    keys: list[str],
    *,
    outage_after: int,
    outage: Callable[[], None],
) -> list[Balance]:
    """CALLS calls, WORKERS at a time, over ``keys``; ``outage()`` before call ``outage_after``."""
    results: list[Balance] = []
    remaining = iter(range(CALLS))
    views = [session.with_options(api_key=key) for key in keys]

    async def worker() -> None:
        for n in remaining:
            if n == outage_after:
                outage()
            results.append(
                await asyncio.wait_for(views[n % len(views)].balance(), EACH_CALL_WITHIN)
            )

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return results


@pytest.fixture(name="keys")
def _keys(live: StabilityEmulator) -> list[str]:
    return [live.add_account(credits=float(n)) for n in range(64)]


def session_on(live: StabilityEmulator, store: object) -> StabilitySession:
    return StabilitySession(
        base_url=live.base_url,
        rate_limit=ROOMY,
        rate_limit_store=store,  # type: ignore[arg-type]
        retry=RetryPolicy(max_attempts=1),  # a failed call would fail the run
    )


async def test_redis_frozen_mid_run(
    live: StabilityEmulator, keys: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with redis_process() as (url, server):
        try:
            async with session_on(live, url) as session:
                results = await run_calls(
                    session,
                    keys,
                    outage_after=100,
                    outage=lambda: server.send_signal(signal.SIGSTOP),
                )
        finally:
            server.send_signal(signal.SIGCONT)
    assert len(results) == CALLS
    assert all(isinstance(r, Balance) for r in results)
    warnings = outage_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "(TimeoutError: " in warnings[0]


@contextlib.contextmanager
def dropping_syns() -> Iterator[str]:
    """A Redis URL whose port never completes a connection: its backlog is full."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # never accepted: the queue fills, then SYNs are dropped
        port = listener.getsockname()[1]
        for _ in range(8):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        with pytest.raises(TimeoutError):  # the outage is real: nothing answers
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        yield f"redis://127.0.0.1:{port}"


async def test_redis_dropping_syns(
    live: StabilityEmulator, keys: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with dropping_syns() as url:
        async with session_on(live, url) as session:
            results = await run_calls(session, keys, outage_after=0, outage=lambda: None)
    assert len(results) == CALLS
    warnings = outage_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "Timeout connecting" in warnings[0]


async def test_redis_unreachable(
    live: StabilityEmulator, keys: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with session_on(live, f"redis://127.0.0.1:{free_port()}") as session:
        results = await run_calls(session, keys, outage_after=0, outage=lambda: None)
    assert len(results) == CALLS
    warnings = outage_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "ConnectionError" in warnings[0]


HOLD = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
sys.stdin.readline()  # until told to take the file
db.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
sys.stdin.read()  # until told to let go
"""


async def test_local_store_held_by_another_process(
    live: StabilityEmulator, keys: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    path = tmp_path / "limits.sqlite3"
    store = LocalRateLimitStore(path)
    await store.open()
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    stdin = holder.stdin
    try:
        async with session_on(live, store) as session:
            results = await run_calls(
                session, keys, outage_after=100, outage=lambda: stdin.write(b"take it\n")
            )
        assert await holder.stdout.readline() == b"holding\n"  # it did, mid-run
    finally:
        stdin.close()
        await holder.wait()
        await store.aclose()
    assert len(results) == CALLS
    warnings = outage_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "another process held it for more than 0.75 s" in warnings[0]


async def test_local_store_that_can_no_longer_be_written(
    live: StabilityEmulator, keys: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "limits.sqlite3"
    run = await run_program(
        sys.executable,
        "-m",
        "tests.outage_worker",
        live.base_url,
        str(path),
        str(CALLS),
        env={"STABILITY_API_KEYS": ",".join(keys)},
    )
    assert run.code == 0, run.err
    result = json.loads(run.out)
    assert result["ok"] == CALLS, result["errors"]
    warnings = [w for w in result["warnings"] if "is unavailable" in w]
    assert len(warnings) == 1, result["warnings"]
    assert f"{path}: disk I/O error" in warnings[0]
    assert result["slowest"] < EACH_CALL_WITHIN


# A Redis where AUTH is no command answers "unknown command 'AUTH', with args
# beginning with: 'user' '<the password>'": the outage's reason quotes it.
ECHOING_PASSWORD = 'p@ss "wörd" %41 &amp;'


async def test_the_outage_warning_never_shows_the_redis_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with redis_process(None, "--rename-command", "AUTH", "") as (url, _):
        with_password = url.replace("://", f"://user:{quote(ECHOING_PASSWORD, safe='')}@")
        store = RedisRateLimitStore(with_password)
        try:
            assert isinstance(await store.acquire("k", ROOMY, 5.0), int)
        finally:
            await store.aclose()
    (warning,) = outage_warnings(caplog)
    assert "unknown command 'AUTH'" in warning  # the server did echo it
    assert "[redacted]" in warning
    assert ECHOING_PASSWORD not in warning
    assert quote(ECHOING_PASSWORD, safe="") not in warning


async def test_the_command_line_never_shows_the_redis_password(live: StabilityEmulator) -> None:
    key = live.add_account(credits=7.5)
    with redis_process(None, "--rename-command", "AUTH", "") as (url, _):
        with_password = url.replace("://", f"://user:{quote(ECHOING_PASSWORD, safe='')}@")
        run = await run_cli(
            "--base-url",
            live.base_url,
            "--rate-limit-store",
            with_password,
            "balance",
            env={"STABILITY_API_KEY": key},
        )
    assert run.code == 0, run.err
    assert "7.5" in run.out
    assert "unknown command 'AUTH'" in run.err  # the warning line, echo and all
    for text in (ECHOING_PASSWORD, quote(ECHOING_PASSWORD, safe=""), "wörd"):
        assert text not in run.out + run.err


# -- and back: a call probes the store every few seconds, through a session too ------


def back_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "its state is shared again" in r.getMessage()]


async def test_a_session_goes_back_to_redis_once_it_is_back(
    emulator: StabilityEmulator, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    clock = FakeClock()  # the store's: its retry interval passes at once
    port = free_port()
    store = RedisRateLimitStore(f"redis://127.0.0.1:{port}", clock=clock)
    try:
        async with StabilitySession(
            key, base_url=emulator.base_url, rate_limit_store=store
        ) as session:
            await session.balance()  # nothing listens: this process's own state
            assert len(outage_warnings(caplog)) == 1
            with redis_process(port) as (url, _):
                clock.advance(5.1)
                await session.balance()  # the limiter's first question must not spoil the probe
                assert back_warnings(caplog), "the store never went back to Redis"
                with redis.Redis.from_url(url) as client:
                    assert client.keys("stability-user:*")  # the key's state is shared again
                await store.flush()
    finally:
        await store.aclose()


async def test_a_session_goes_back_to_the_file_once_it_is_free(
    emulator: StabilityEmulator, key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    path = tmp_path / "limits.sqlite3"
    store = LocalRateLimitStore(path, clock=clock, busy_timeout=0.05)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        async with StabilitySession(
            key, base_url=emulator.base_url, rate_limit_store=store
        ) as session:
            other.execute("BEGIN IMMEDIATE")  # another process holds the file
            await session.balance()
            assert len(outage_warnings(caplog)) == 1
            clock.advance(5.1)
            await session.balance()  # the probe: still held
            other.execute("ROLLBACK")  # and now free
            clock.advance(5.1)
            await session.balance()  # the next probe
            assert back_warnings(caplog), "the store never went back to the file"
            await store.flush()
            (rows,) = await store._file.run(
                lambda db: db.execute("SELECT COUNT(*) FROM slots").fetchone()
            )
            assert rows >= 1  # the call's slot is in the file again
    finally:
        other.close()
        await store.aclose()


# -- the breaker's contract, on a backend of the test's -----------------------------


async def test_the_first_call_to_fail_decides_for_every_call_in_flight() -> None:
    breaker = Breaker(
        "rate-limit store", "here", errors=(ConnectionError,), clock=FakeClock(), max_wait=3600
    )
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    async def fails() -> None:
        raise ConnectionError("refused")

    in_flight = [asyncio.ensure_future(breaker.call(hangs)) for _ in range(WORKERS - 1)]
    await asyncio.sleep(0)  # every one of them waits for the backend now
    with pytest.raises(Outage):
        await breaker.call(fails)
    for _ in range(3):  # a few turns of the loop: no second, no timeout
        await asyncio.sleep(0)
    assert all(call.done() for call in in_flight)  # not an hour each
    assert all(isinstance(call.exception(), Outage) for call in in_flight)
    assert breaker.down
    await breaker.settle()


def test_the_first_call_to_fail_decides_for_calls_in_flight_in_other_threads() -> None:
    # A store may serve several threads, each with its loop: the decision reaches them.
    breaker = Breaker(
        "rate-limit store", "here", errors=(ConnectionError,), clock=FakeClock(), max_wait=3600
    )
    in_flight = threading.Event()
    outcomes: list[BaseException | None] = []

    async def hangs() -> None:
        await asyncio.get_running_loop().create_future()

    async def fails() -> None:
        raise ConnectionError("refused")

    async def waiting_in_its_own_loop() -> None:
        calls = [asyncio.ensure_future(breaker.call(hangs)) for _ in range(8)]
        await asyncio.sleep(0)
        in_flight.set()
        done, _ = await asyncio.wait(calls, timeout=30)  # a hang fails the test, at 30 s
        outcomes.extend(call.exception() for call in done)

    other = threading.Thread(target=lambda: asyncio.run(waiting_in_its_own_loop()))
    other.start()
    assert in_flight.wait(10)

    async def failing_here() -> None:
        with pytest.raises(Outage):
            await breaker.call(fails)

    asyncio.run(failing_here())
    other.join(30)
    assert len(outcomes) == 8
    assert all(isinstance(outcome, Outage) for outcome in outcomes)


class TestCallHere:
    """The breaker's calls in the caller's task: a store's own Redis connection."""

    @staticmethod
    def breaker(max_wait: float = 3600) -> Breaker:
        return Breaker(
            "rate-limit store",
            "here",
            errors=(ConnectionError,),
            clock=FakeClock(),
            max_wait=max_wait,
        )

    async def test_an_answer_is_returned_and_a_failure_opens_the_breaker(self) -> None:
        breaker = self.breaker()

        async def answers(failures: int) -> int:
            return 40 + failures

        async def fails(failures: int) -> int:
            raise ConnectionError("refused")

        assert await breaker.call_here(answers) == 40
        with pytest.raises(Outage, match="refused"):
            await breaker.call_here(fails)
        assert breaker.down
        assert breaker.failures == 1

    async def test_work_that_hangs_ends_in_an_outage_at_max_wait(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING)
        breaker = self.breaker(max_wait=0.01)

        async def hangs(failures: int) -> None:
            await asyncio.get_running_loop().create_future()

        with pytest.raises(Outage, match="unavailable"):
            await breaker.call_here(hangs)
        assert breaker.down
        (warning,) = outage_warnings(caplog)
        assert "(TimeoutError: no answer within 0.01 s)" in warning

    async def test_a_cancelled_caller_is_cancelled_and_the_backend_is_not_blamed(self) -> None:
        breaker = self.breaker()
        started = asyncio.Event()

        async def hangs(failures: int) -> None:
            started.set()
            await asyncio.get_running_loop().create_future()

        call = asyncio.ensure_future(breaker.call_here(hangs))
        await started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert not breaker.down

    async def test_an_error_not_of_the_backend_passes_through(self) -> None:
        breaker = self.breaker()

        async def buggy(failures: int) -> None:
            raise KeyError("a bug, not an outage")

        with pytest.raises(KeyError):
            await breaker.call_here(buggy)
        assert not breaker.down

    async def test_an_answer_after_another_call_failed_leaves_the_breaker_open(self) -> None:
        # Redis failed for one call while another's answer was on its way (another
        # loop's connection): that answer is used, but the breaker stays open.
        breaker = self.breaker()
        answer = asyncio.Event()

        async def answers_late(failures: int) -> str:
            await answer.wait()
            return "answered"

        async def fails(failures: int) -> None:
            raise ConnectionError("reset")

        late = asyncio.ensure_future(breaker.call_here(answers_late))
        await asyncio.sleep(0)
        with pytest.raises(Outage):
            await breaker.call_here(fails)
        answer.set()
        assert await late == "answered"
        assert breaker.down

    async def test_calls_waiting_their_turn_give_up_once_one_fails(self) -> None:
        # The store's line takes one command at a time: the calls queued behind one that
        # fails learn it from the count of failures and give up, never asking Redis.
        breaker = self.breaker()
        turn = asyncio.Lock()
        asked: list[int] = []

        async def on_the_line(failures: int) -> None:
            async with turn:
                if breaker.failures != failures:
                    raise Outage("the backend failed meanwhile")
                asked.append(failures)
                await asyncio.sleep(0)  # the others queue behind this one
                raise ConnectionError("reset")

        outcomes = await asyncio.gather(
            *(breaker.call_here(on_the_line) for _ in range(WORKERS)), return_exceptions=True
        )
        assert asked == [0]
        assert all(isinstance(outcome, Outage) for outcome in outcomes)
        assert breaker.failures == 1


async def test_a_callers_client_without_timeouts_is_bounded_by_the_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A client of the caller's (a RedisCluster, say) may have no timeouts at all: the
    # breaker's own second is then what bounds a call.
    caplog.set_level(logging.WARNING)
    limit = RateLimit(10_000, 1.0)
    with redis_process() as (url, server):
        client = redis.asyncio.Redis.from_url(url)  # no socket timeouts
        store = RedisRateLimitStore(client=client)
        try:
            assert isinstance(await store.acquire("k", limit, 5.0), str)
            server.send_signal(signal.SIGSTOP)
            tokens = await asyncio.wait_for(
                asyncio.gather(*(store.acquire("k", limit, 5.0) for _ in range(8))),
                EACH_CALL_WITHIN,
            )
        finally:
            server.send_signal(signal.SIGCONT)
            await store.aclose()
            await client.aclose()
    assert all(isinstance(t, int) for t in tokens)
    (warning,) = outage_warnings(caplog)
    assert "(TimeoutError: no answer within 1 s)" in warning


@contextlib.contextmanager
def hanging_up() -> Iterator[tuple[str, list[int]]]:
    """A Redis URL whose server accepts each connection and closes it; yields how many it took."""
    accepted = [0]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.05)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    connection, _ = listener.accept()
                    accepted[0] += 1
                    connection.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            yield f"redis://127.0.0.1:{listener.getsockname()[1]}", accepted
        finally:
            stop.set()
            thread.join()


async def test_a_dead_redis_is_asked_once_per_retry_interval_however_many_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    limit = RateLimit(10_000, 1.0)
    with hanging_up() as (url, accepted):
        store = RedisRateLimitStore(url, clock=clock)
        try:
            tokens = await asyncio.gather(*(store.acquire("k", limit, 5.0) for _ in range(WORKERS)))
            asked = accepted[0]
            assert 1 <= asked <= WORKERS, asked  # those in flight when the first failed
            for _ in range(500):
                clock.advance(0.001)  # within the retry interval: this process's state
                assert isinstance(await store.acquire("k", limit, 5.0), int)
            assert accepted[0] == asked  # not once per call
            clock.advance(5.0)  # one call probes; the others meanwhile do not wait
            probe = asyncio.ensure_future(store.acquire("k", limit, 5.0))
            others = [await store.acquire("k", limit, 5.0) for _ in range(10)]
            assert all(isinstance(t, int) for t in [*tokens, *others, await probe])
            # One probe: its client opens its one connection, and may open it again
            # for the command itself (redis-py), never once per call.
            assert asked + 1 <= accepted[0] <= asked + 2
        finally:
            await store.aclose()
    assert len(outage_warnings(caplog)) == 1


async def test_callers_that_leave_before_the_answer_give_their_slots_back() -> None:
    # One caller's script is written, and Redis runs it after the caller has left;
    # another leaves while waiting its turn, its script never written. Both slots go
    # back, and so do the give-backs of the calls before, which their scripts carried.
    limit = RateLimit(10_000, 1.0)
    with redis_process() as (url, server):
        store = RedisRateLimitStore(url)
        client = redis.asyncio.Redis.from_url(url)
        in_flight = store._keys("k")[0]

        async def spin() -> None:
            for _ in range(20):  # a few turns of the loop: what can be sent is sent
                await asyncio.sleep(0)

        try:
            first, second = [await store.acquire("k", limit, 5.0) for _ in range(2)]
            assert isinstance(first, str)
            assert isinstance(second, str)
            server.send_signal(signal.SIGSTOP)
            try:
                await store.release("k", first, limit)  # queued: the next script carries it
                written = asyncio.ensure_future(store.acquire("k", limit, 5.0))
                await spin()
                await store.release("k", second, limit)
                waiting = asyncio.ensure_future(store.acquire("k", limit, 5.0))
                await spin()
                for call in (waiting, written):
                    call.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await call
            finally:
                server.send_signal(signal.SIGCONT)
            await store.flush()
            assert await client.zcard(in_flight) == 0  # no slot is in flight
            assert not store._link.breaker.down
        finally:
            await store.aclose()
            await client.aclose()


# -- a store used from one event loop after another --------------------------------
# A program may run asyncio.run() more than once (a script, a job per task), and a
# test suite gives each test its own loop: a store outlives the loop it was first
# used in.


def test_a_second_event_loop_meets_an_outage_as_the_first_did(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    limit = RateLimit(10_000, 1.0)

    async def calls(store: RedisRateLimitStore) -> list[object]:
        return list(await asyncio.gather(*(store.acquire("k", limit, 5.0) for _ in range(8))))

    with redis_process() as (url, server):
        store = RedisRateLimitStore(url)
        assert all(isinstance(t, str) for t in asyncio.run(calls(store)))
        server.send_signal(signal.SIGSTOP)
        try:
            tokens = asyncio.run(calls(store))  # the first one's loop is closed now
        finally:
            server.send_signal(signal.SIGCONT)
            asyncio.run(store.aclose())
    assert all(isinstance(t, int) for t in tokens), tokens  # no "Event loop is closed"
    assert len(outage_warnings(caplog)) == 1


def test_a_store_leaves_no_connection_open_when_its_event_loop_ends() -> None:
    async def call(store: RedisRateLimitStore) -> None:
        assert isinstance(await store.acquire("k", ROOMY, 5.0), str)

    def ours(client: redis.Redis) -> int:
        return len(cast(list[object], client.client_list())) - 1  # less this connection

    with redis_process() as (url, _), redis.Redis.from_url(url) as client:
        store = RedisRateLimitStore(url)
        asyncio.run(call(store))
        for _ in range(200):  # the server notices a closed connection at once, or nearly
            if ours(client) == 0:
                break
            time.sleep(0.01)
        assert ours(client) == 0  # closed with its loop, not left for the collector
        assert (len(store._link._lines), len(store._link._keepers)) == (0, 0)  # nor kept
        asyncio.run(call(store))  # and the store goes on in another loop
        asyncio.run(store.aclose())
        assert ours(client) == 0


async def test_a_closed_line_opens_no_connection_again(redis_url: str) -> None:
    # A command sent as its store or loop closes (a give-back's, a lease's end) must not
    # reopen the connection the closing just closed.
    store = RedisRateLimitStore(redis_url)
    try:
        assert isinstance(await store.acquire("k", ROOMY, 5.0), str)
        line = store._link._lines[asyncio.get_running_loop()]
        await line.close()
        with pytest.raises(Outage, match="closed"):
            await line.send(("PING",))
        assert not line.connection.is_connected
    finally:
        await store.aclose()


async def test_a_socket_timeout_in_the_url_is_left_to_the_breaker(redis_url: str) -> None:
    # redis-py's own timeout would cost a task per command and may swallow a cancellation.
    store = RedisRateLimitStore(f"{redis_url}?socket_timeout=5")
    try:
        assert isinstance(await store.acquire("k", ROOMY, 5.0), str)
        assert store._link._lines[asyncio.get_running_loop()].connection.socket_timeout is None
    finally:
        await store.aclose()


async def test_a_call_that_timed_out_gives_its_slot_back_once_redis_is_back() -> None:
    # Redis ran the script after the call had given up on it: the slot it took is
    # given back with the first script after Redis is back, not held for its lease.
    clock = FakeClock()
    limit = RateLimit(10_000, 1.0)
    with redis_process() as (url, server):
        store = RedisRateLimitStore(url, clock=clock)
        client = redis.asyncio.Redis.from_url(url)
        in_flight = store._keys("k")[0]
        try:
            assert isinstance(await store.acquire("k", limit, 60.0), str)
            await store.flush()
            server.send_signal(signal.SIGSTOP)
            try:
                assert isinstance(await store.acquire("k", limit, 60.0), int)  # after 1 s
            finally:
                server.send_signal(signal.SIGCONT)
            clock.advance(5.1)  # the next call probes Redis, carrying the give-back
            probe = await store.acquire("k", limit, 60.0)
            assert isinstance(probe, str)
            await store.release("k", probe, limit)
            await store.flush()
            # The first call's slot, and no other: the timed-out one's went back.
            assert await client.zcard(in_flight) == 1
        finally:
            await store.aclose()
            await client.aclose()


@pytest.mark.parametrize("kind", ["redis", "local"])
def test_a_give_back_is_sent_a_moment_later_from_any_event_loop(
    kind: str, redis_url: str, tmp_path: Path
) -> None:
    limit = RateLimit(10_000, 1.0)
    key_id = uuid.uuid4().hex
    store: RedisRateLimitStore | LocalRateLimitStore = (
        RedisRateLimitStore(redis_url) if kind == "redis" else LocalRateLimitStore(tmp_path / "l")
    )

    async def in_flight() -> int:
        if isinstance(store, RedisRateLimitStore):
            with redis.Redis.from_url(redis_url) as client:
                return int(client.zcard(store._keys(key_id)[0]))
        (count,) = await store._file.run(
            lambda db: db.execute("SELECT COUNT(*) FROM slots WHERE in_flight = 1").fetchone()
        )
        return int(count)

    async def take_and_give_back(*, then_wait: bool) -> None:
        token = await store.acquire(key_id, limit, 5.0)
        assert isinstance(token, str)
        await store.release(key_id, token, limit)
        if then_wait:  # for the give-back "a moment later" (50 ms), nothing else
            for _ in range(500):
                if await in_flight() == 0:
                    return
                await asyncio.sleep(0.01)
            pytest.fail("the give-back was never sent")

    try:
        asyncio.run(take_and_give_back(then_wait=False))  # the loop ends before it is sent
        asyncio.run(take_and_give_back(then_wait=True))  # the next carries it; its own later
    finally:
        asyncio.run(store.aclose())
