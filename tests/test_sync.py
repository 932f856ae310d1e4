"""The sync client: the async session's calls, errors and options, from any thread."""

from __future__ import annotations

import asyncio
import gc
import inspect
import itertools
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import stability_user
from stability_user import (
    Account,
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    Balance,
    BalanceTarget,
    CachePolicy,
    PermissionDeniedError,
    RateLimit,
    RateLimitError,
    Response,
    RetryPolicy,
    StabilityError,
)
from stability_user._http import Handler
from stability_user.sync import StabilitySession
from stability_user.testing import EmulatedOrganization, Fault, StabilityEmulator

from .processes import run_program
from .sync_support import ServedEmulator, open_sockets, served, session_threads

# The one option the sync session does not take: an aiohttp.ClientSession belongs to
# an event loop of the caller's, and the sync session's loop is its own.
NOT_MIRRORED = {"http_session"}

# Python 3.12 warns at every fork of a process running threads (the emulator's, the
# session's): these tests fork on purpose, and show the child safe.
FORK_WITH_THREADS = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
)


@pytest.fixture(name="server")
def _server() -> Iterator[ServedEmulator]:
    with served() as server:
        yield server


@pytest.fixture(name="key")
def _key(server: ServedEmulator) -> str:
    return server.add_account(
        email="a@example.com",
        organizations=[
            EmulatedOrganization("org-a", "A", "OWNER", is_default=True, credits=12.5),
            EmulatedOrganization("org-b", "B", credits=7.0),
        ],
    )


@pytest.fixture(name="session")
def _session(server: ServedEmulator, key: str) -> Iterator[StabilitySession]:
    with StabilitySession(key, base_url=server.base_url, timeout=5.0) as session:
        yield session


@pytest.fixture(autouse=True)
def _no_session_thread_outlives_its_test() -> Iterator[None]:
    yield
    assert session_threads() == []
    gc.collect()  # what a test left unclosed warns in that test, not in a later one


def requests_seen(server: ServedEmulator) -> int:
    return server.call(lambda: server.emulator.request_count)


class TestMirror:
    def test_the_constructor_takes_the_async_sessions_options(self) -> None:
        sync = inspect.signature(StabilitySession.__init__).parameters
        mirrored = inspect.signature(stability_user.StabilitySession.__init__).parameters
        # Names, order, kinds, defaults and annotations: mypy --strict users get checking.
        assert list(sync.values()) == [p for p in mirrored.values() if p.name not in NOT_MIRRORED]
        documented = StabilitySession.__doc__ or ""
        undocumented = [
            name
            for name in sync
            if name != "self" and not re.search(rf"^        {name}( \(.*\))?:", documented, re.M)
        ]
        assert undocumented == []

    @pytest.mark.parametrize(
        "method", ["with_options", "account", "balance", "balances", "watch_balance"]
    )
    def test_each_call_takes_the_async_ones_arguments(self, method: str) -> None:
        def shape(function: object) -> list[tuple[str, object, object]]:
            parameters = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
            return [
                (p.name, p.kind, p.default if method != "with_options" else None)
                for p in parameters
            ]

        assert shape(getattr(StabilitySession, method)) == shape(
            getattr(stability_user.StabilitySession, method)
        )

    def test_nothing_starts_before_the_first_call(self, server: ServedEmulator) -> None:
        session = StabilitySession("sk-test", base_url=server.base_url)
        view = session.with_options(organization="org-b")
        assert (view.organization, view.base_url, view.api_version) == (
            "org-b",
            server.base_url,
            "v1",
        )
        assert session_threads() == []
        del session, view
        gc.collect()  # never used: nothing to close, nothing to warn about


class TestCalls:
    def test_answers_are_the_async_sessions_models(
        self, session: StabilitySession, key: str
    ) -> None:
        account = session.account()
        assert isinstance(account, Account)
        assert (account.email, [org.id for org in account.organizations]) == (
            "a@example.com",
            ["org-a", "org-b"],
        )
        balance = session.balance()
        assert isinstance(balance, Balance)
        assert (balance.credits, session.balance("org-b").credits) == (12.5, 7.0)
        view = session.with_options(organization="org-b", timeout=2.0)
        assert (view.organization, view.timeout, view.balance().credits) == ("org-b", 2.0, 7.0)
        assert (session.organization, session.timeout) == (None, 5.0)
        assert session.rate_limit == RateLimit()
        assert session.retry == RetryPolicy()
        shown = repr(session)
        assert shown.startswith("<stability_user.sync.StabilitySession http://127.0.0.1:")
        assert key not in shown
        assert key[-4:] in shown  # masked, as the async session shows it

    def test_failures_are_the_librarys_typed_errors(
        self, server: ServedEmulator, session: StabilitySession, key: str
    ) -> None:
        with pytest.raises(PermissionDeniedError) as denied:
            session.balance("org-z")
        assert denied.value.status == 403
        server.call(server.emulator.script, Fault.respond(401), api_key=key)
        with pytest.raises(AuthenticationError) as refused:
            session.account()
        assert refused.value.request_id
        assert key not in str(refused.value)
        with pytest.raises(ValueError, match="CR, LF"):
            session.balance("org\r\nX-Injected: 1")

    def test_a_rate_limited_page_view_fails_at_once_with_retry_after(
        self, server: ServedEmulator, session: StabilitySession, key: str
    ) -> None:
        web = session.with_options(retry=RetryPolicy(deadline=5.0, max_retry_after=2.0))
        server.call(server.emulator.script, Fault.respond(429, retry_after=30), api_key=key)
        with pytest.raises(RateLimitError) as limited:
            web.balance()
        assert (limited.value.sent, limited.value.retry_after) == (True, 30)
        sent = requests_seen(server)
        with pytest.raises(RateLimitError) as again:  # the key is locked: not even sent
            web.account()
        assert again.value.sent is False
        assert again.value.retry_after is not None
        assert 0 < again.value.retry_after <= 30
        assert requests_seen(server) == sent

    def test_a_session_without_a_key_says_which_variable_to_set(
        self, server: ServedEmulator, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("STABILITY_API_KEY", raising=False)
        with (
            StabilitySession(base_url=server.base_url) as session,
            pytest.raises(StabilityError, match="STABILITY_API_KEY"),
        ):
            session.balance()

    def test_bad_options_fail_where_they_are_given(self, server: ServedEmulator) -> None:
        with pytest.raises(ValueError, match="api_version"):
            StabilitySession("sk-test", api_version="v9")
        with pytest.raises(StabilityError, match="http://"):
            StabilitySession("sk-test", base_url="http://example.com")
        with pytest.raises(TypeError, match="retry"):
            StabilitySession("sk-test", retry=3)  # type: ignore[arg-type]
        with StabilitySession("sk-test", base_url=server.base_url) as session:
            with pytest.raises(ValueError, match="timeout"):
                session.with_options(timeout=-1.0)
            with pytest.raises(ValueError, match="concurrency"):
                session.balances([], concurrency=0)
            with pytest.raises(ValueError, match="interval"):
                session.watch_balance(interval=0)
        assert session_threads() == []  # none of these started anything

    def test_an_attempt_out_of_time_is_an_api_timeout_error(
        self, server: ServedEmulator, key: str
    ) -> None:
        server.call(server.emulator.script, Fault.stall(30), api_key=key)
        once = RetryPolicy(max_attempts=1)
        with (
            StabilitySession(key, base_url=server.base_url, timeout=0.2, retry=once) as session,
            pytest.raises(APITimeoutError) as timed_out,
        ):
            session.balance()
        assert timed_out.value.attempts == 1

    def test_the_deadline_bounds_the_whole_call(self, server: ServedEmulator, key: str) -> None:
        server.call(server.emulator.script, *[Fault.stall(30)] * 3, api_key=key)
        policy = RetryPolicy(deadline=0.5)
        with (
            StabilitySession(key, base_url=server.base_url, retry=policy) as session,
            pytest.raises(APITimeoutError),
        ):
            session.balance()


class TestThreadsAndLoops:
    def test_a_worker_function_from_a_thread_pool(self, server: ServedEmulator) -> None:
        # What a Celery task (threads pool), an RQ job or a ThreadPoolExecutor runs: a
        # plain function, called from many threads at once, on one session.
        keys = {f"customer-{n}": server.add_account(credits=float(n)) for n in range(8)}
        jobs = [label for label in keys for _ in range(25)]
        with StabilitySession(base_url=server.base_url, retry=RetryPolicy(deadline=10)) as session:

            def check_customer(label: str) -> tuple[str, float, str]:
                balance = session.with_options(api_key=keys[label]).balance()
                return label, balance.credits, threading.current_thread().name

            with ThreadPoolExecutor(8, thread_name_prefix="worker") as pool:
                results = list(pool.map(check_customer, jobs))
            [loop_thread] = session_threads()  # one loop served every worker thread
        assert [(label, credits) for label, credits, _ in results] == [
            (label, float(label.rsplit("-", 1)[1])) for label in jobs
        ]
        assert len({name for _, _, name in results}) > 1
        assert not loop_thread.is_alive()
        assert requests_seen(server) == len(jobs)

    def test_it_works_inside_a_running_event_loop(self, session: StabilitySession) -> None:
        async def page() -> float:
            # Jupyter, or a sync helper called from async code: the loop of this
            # thread is running, and the call runs in the session's own.
            asyncio.get_running_loop()
            return session.balance().credits

        # A second asyncio.run() is another loop: the sync session does not mind.
        assert (asyncio.run(page()), asyncio.run(page())) == (12.5, 12.5)

    def test_a_middleware_calling_its_own_session_is_an_error_not_a_deadlock(
        self, server: ServedEmulator, key: str
    ) -> None:
        sessions: list[StabilitySession] = []

        async def calls_back(request: stability_user.Request, handler: object) -> object:
            return sessions[0].account()

        with StabilitySession(
            key,
            base_url=server.base_url,
            middlewares=[calls_back],  # type: ignore[list-item]
            retry=RetryPolicy(max_attempts=1),
        ) as session:
            sessions.append(session)
            with pytest.raises(StabilityError, match="its own event loop's thread"):
                session.balance()


class TestCache:
    def test_every_thread_shares_one_reading(self, server: ServedEmulator, key: str) -> None:
        policy = CachePolicy(max_age=60.0)
        with StabilitySession(key, base_url=server.base_url, cache=policy) as session:
            with ThreadPoolExecutor(8) as pool:
                credits = list(pool.map(lambda _: session.balance().credits, range(80)))
            reading = session.balance()
            server.call(server.emulator.set_balance, key, 99.0)
            assert session.balance().credits == 12.5  # max_age has not passed
            assert session.balance(max_age=0).credits == 99.0  # a new reading, on request
            assert session.account(max_age=0).email == "a@example.com"
        assert credits == [12.5] * 80
        assert reading.freshness is not None
        assert reading.freshness.stale is False
        assert requests_seen(server) == 3  # 82 balance readings: 2 requests; 1 account

    def test_max_age_without_a_cache_is_refused(self, session: StabilitySession) -> None:
        with pytest.raises(ValueError, match="cache"):
            session.balance(max_age=1.0)
        with pytest.raises(ValueError, match="cache"):
            session.account(max_age=1.0)
        assert session.balance().freshness is None  # the session goes on

    def test_sessions_sharing_the_machine_wide_store_share_readings(
        self, server: ServedEmulator, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Two prefork workers' sessions: the second is answered by the first's reading.
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        policy = CachePolicy(max_age=60.0)
        with (
            StabilitySession(
                key, base_url=server.base_url, cache=policy, cache_store="local"
            ) as first,
            StabilitySession(
                key, base_url=server.base_url, cache=policy, cache_store="local"
            ) as second,
        ):
            assert first.balance().credits == 12.5
            assert second.balance().credits == 12.5
        assert requests_seen(server) == 1
        assert list(tmp_path.glob("stability-user/cache.sqlite3")) != []


class TestClose:
    def test_close_ends_the_thread_and_leaves_nothing_open(self, key: str) -> None:
        sockets = open_sockets()
        with served() as server:
            key = server.add_account(credits=5.0)
            session = StabilitySession(key, base_url=server.base_url)
            assert session.balance().credits == 5.0
            [thread] = session_threads()
            session.close()
            session.close()  # idempotent
            assert session.closed
            assert not thread.is_alive()
            with pytest.raises(StabilityError, match="closed"):
                session.balance()
            with pytest.raises(StabilityError, match="closed"):
                next(session.balances(["org-a"]))
        assert open_sockets() - sockets == set()

    def test_with_closes_and_a_view_closes_only_itself(
        self, server: ServedEmulator, key: str
    ) -> None:
        with StabilitySession(key, base_url=server.base_url) as session:
            view = session.with_options(organization="org-b")
            assert view.balance().credits == 7.0
            view.close()
            assert view.closed
            assert not session.closed
            with pytest.raises(StabilityError, match="closed"):
                view.balance()
            assert session.balance().credits == 12.5
            other = session.with_options(organization="org-b")
        assert [session.closed, other.closed] == [True, True]
        with pytest.raises(StabilityError, match="closed"):
            other.balance()
        assert "closed" in repr(other)

    def test_close_fails_a_call_waiting_in_another_thread(
        self, server: ServedEmulator, key: str
    ) -> None:
        waiting = threading.Event()
        session = StabilitySession(
            key,
            base_url=server.base_url,
            rate_limit=RateLimit(1, 30.0),
            on_rate_limit_wait=lambda _: waiting.set(),
        )
        session.balance()  # takes the window's one slot
        with ThreadPoolExecutor(1) as pool:
            blocked = pool.submit(session.balance)  # waits up to 30 s for the next slot
            assert waiting.wait(10)
            session.close()
            with pytest.raises(StabilityError, match="closed"):
                blocked.result(10)

    def test_close_ends_a_call_that_would_never_end(self, server: ServedEmulator, key: str) -> None:
        stuck = threading.Event()

        async def never_answers(request: stability_user.Request, handler: Handler) -> Response:
            stuck.set()
            await asyncio.Event().wait()  # nothing the session knows of ends this wait
            raise AssertionError("unreachable")

        session = StabilitySession(key, base_url=server.base_url, middlewares=[never_answers])
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(session.balance)
            assert stuck.wait(10)
            session.close()  # cancels what is still running once the session has closed
            with pytest.raises(StabilityError, match="closed"):
                call.result(10)
        assert session_threads() == []

    def test_close_ends_a_request_in_flight(self, server: ServedEmulator, key: str) -> None:
        server.call(server.emulator.script, Fault.stall(30), api_key=key)
        session = StabilitySession(key, base_url=server.base_url, retry=RetryPolicy(max_attempts=1))
        with ThreadPoolExecutor(1) as pool:
            stalled = pool.submit(session.balance)
            waited = server.emulator.wait_for_requests(1)
            asyncio.run_coroutine_threadsafe(waited, server.loop).result(10)
            session.close()
            with pytest.raises((StabilityError, APIConnectionError)):
                stalled.result(10)

    def test_an_interrupted_wait_ends_the_call_in_the_loop_too(
        self, server: ServedEmulator, key: str
    ) -> None:
        # Ctrl-C (here SIGUSR1, so that nothing else takes it for the end of the run)
        # while the main thread waits for a stalled request.
        server.call(server.emulator.script, Fault.stall(30), api_key=key)

        class SimulatedCtrlCError(Exception):
            pass

        def interrupt(signum: int, frame: object) -> None:
            raise SimulatedCtrlCError

        def once_sent() -> None:
            waited = server.emulator.wait_for_requests(1)
            asyncio.run_coroutine_threadsafe(waited, server.loop).result(10)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

        previous = signal.signal(signal.SIGUSR1, interrupt)
        try:
            with StabilitySession(key, base_url=server.base_url) as session:
                interrupter = threading.Thread(target=once_sent)
                interrupter.start()
                with pytest.raises(SimulatedCtrlCError):
                    session.balance()
                interrupter.join(10)
                assert in_session_loop(session) == 0  # the call was cancelled, not left
                server.call(server.emulator.clear_faults)
                assert session.balance().credits == 12.5
        finally:
            signal.signal(signal.SIGUSR1, previous)

    def test_close_from_the_sessions_own_thread_does_not_wait_for_itself(
        self, server: ServedEmulator, key: str
    ) -> None:
        sessions: list[StabilitySession] = []

        async def closes(request: stability_user.Request, handler: Handler) -> Response:
            sessions[0].close()  # a middleware giving up on the session
            return await handler(request)

        session = StabilitySession(key, base_url=server.base_url, middlewares=[closes])
        sessions.append(session)
        with pytest.raises(StabilityError, match="closed"):
            session.balance()
        for thread in session_threads():
            thread.join(10)
        assert session.closed
        assert session_threads() == []

    def test_a_session_dropped_unclosed_warns_and_stops_its_thread(
        self, server: ServedEmulator, key: str
    ) -> None:
        sessions = [StabilitySession(key, base_url=server.base_url)]
        sessions[0].balance()
        [thread] = session_threads()
        with pytest.warns(ResourceWarning, match=r"unclosed <stability_user\.sync\.Stab") as caught:
            sessions.clear()  # the last reference: CPython finalises it here
        assert key not in str(caught[0].message)
        thread.join(10)
        assert not thread.is_alive()


class TestIterators:
    def test_balances_checks_every_target(self, server: ServedEmulator) -> None:
        keys = [server.add_account(credits=float(n)) for n in range(6)]
        targets = [BalanceTarget(api_key=key, label=f"c{n}") for n, key in enumerate(keys)]
        targets.append(BalanceTarget(api_key="sk-" + "7" * 48, label="revoked"))
        with StabilitySession(base_url=server.base_url) as session:
            found = {r.target.label: r for r in session.balances(targets, concurrency=3)}
            view = session.with_options(timeout=5.0)  # a view's iterators are the same
            ordered = [r.index for r in view.balances(targets, ordered=True)]
        assert {label: r.balance.credits for label, r in found.items() if r.balance} == {
            f"c{n}": float(n) for n in range(6)
        }
        assert isinstance(found["revoked"].error, AuthenticationError)
        assert ordered == list(range(7))

    def test_balances_is_lazy_and_closing_it_cancels_the_checks(
        self, server: ServedEmulator
    ) -> None:
        keys = [server.add_account(credits=float(n)) for n in range(6)]
        taken: list[int] = []

        def endless() -> Iterator[BalanceTarget]:
            for n in itertools.count():
                taken.append(n)
                yield BalanceTarget(api_key=keys[n % 6])

        with StabilitySession(base_url=server.base_url) as session:
            results = session.balances(endless(), concurrency=2)
            assert taken == []  # nothing read, nothing sent, before the first next()
            first = [next(results) for _ in range(5)]
            assert len(taken) <= 5 + 2 * 2 + 1  # at most 2 * concurrency ahead
            results.close()
            assert in_session_loop(session) == 0  # no check left running
            read = len(taken)
            session.balance  # noqa: B018 - the session is still usable
            assert session.with_options(api_key=keys[1]).balance().credits == 1.0
            assert len(taken) == read
        assert all(result.ok for result in first)

    def test_breaking_out_of_a_for_loop_closes_the_iterator(self, server: ServedEmulator) -> None:
        keys = [server.add_account(credits=1.0) for _ in range(20)]
        with StabilitySession(base_url=server.base_url) as session:
            for result in session.balances([BalanceTarget(api_key=k) for k in keys]):
                assert result.ok
                break
            gc.collect()  # the generator is gone once the loop is left (CPython: at once)
            assert in_session_loop(session) == 0

    def test_watch_balance_yields_readings_and_crossings(
        self, server: ServedEmulator, key: str
    ) -> None:
        waits: list[float] = []

        async def no_wait(seconds: float) -> None:
            waits.append(seconds)

        with StabilitySession(key, base_url=server.base_url, sleep=no_wait) as session:
            readings = session.watch_balance(interval=60, below=10)
            first = next(readings)
            server.call(server.emulator.set_balance, key, 3.0)
            second = next(readings)
            readings.close()
            assert in_session_loop(session) == 0
        assert (first.balance and first.balance.credits, first.crossing) == (12.5, None)
        assert (second.balance and second.balance.credits, second.crossing) == (3.0, "below")
        assert waits == [60]

    def test_closing_the_session_ends_an_iterator_in_another_thread(
        self, server: ServedEmulator, key: str
    ) -> None:
        waits: list[float] = []
        in_wait = threading.Event()

        async def long_wait(seconds: float) -> None:
            waits.append(seconds)
            in_wait.set()
            await asyncio.sleep(seconds)

        session = StabilitySession(key, base_url=server.base_url, sleep=long_wait)
        readings = session.watch_balance(interval=60)
        assert next(readings).ok
        with ThreadPoolExecutor(1) as pool:
            nxt = pool.submit(next, readings)
            assert in_wait.wait(10)
            session.close()
            with pytest.raises((StopIteration, StabilityError)):
                nxt.result(10)


def in_session_loop(session: StabilitySession) -> int:
    """How many tasks still run in the session's loop once those ending have ended."""

    async def count() -> int:
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:  # a cancelled task may need a few turns of the loop to end
            _, running = await asyncio.wait(others, timeout=5)
            return len(running)
        return 0

    core = session._core
    assert core is not None
    return core.run(count())


@FORK_WITH_THREADS
class TestFork:
    def test_a_child_builds_its_own_loop_and_the_parent_carries_on(
        self, server: ServedEmulator, key: str
    ) -> None:
        session = StabilitySession(key, base_url=server.base_url, timeout=5.0)
        assert session.balance().credits == 12.5  # the parent's loop and pool are running
        [parent_thread] = session_threads()
        view = session.with_options(organization="org-b")
        readings = session.watch_balance(interval=60)
        assert next(readings).ok  # an iterator running in the parent's loop
        pid = os.fork()
        if pid == 0:  # the child: its exit status is the test's verdict
            status = 1
            try:
                assert session_threads() == []  # a fork copies one thread: the caller
                with pytest.raises(StabilityError, match="before the process forked"):
                    next(readings)
                assert view.balance().credits == 7.0
                assert session.account().email == "a@example.com"
                [child_thread] = session_threads()
                assert child_thread is not parent_thread
                session.close()
                assert not child_thread.is_alive()
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        _, waited = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(waited) == 0
        assert parent_thread.is_alive()
        assert (session.balance().credits, view.balance().credits) == (12.5, 7.0)
        readings.close()
        session.close()

    def test_a_session_first_used_in_the_child_opens_nothing_in_the_parent(
        self, server: ServedEmulator, key: str
    ) -> None:
        # gunicorn --preload, Celery's prefork pool: the module is imported (and the
        # session made) in the parent; the workers make the calls.
        session = StabilitySession(key, base_url=server.base_url, timeout=5.0)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                status = 0 if session.balance().credits == 12.5 else 2
                session.close()
            finally:
                os._exit(status)
        _, waited = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(waited) == 0
        assert session_threads() == []
        session.close()


FORKING_PROGRAM = """
import os, sys
from stability_user import RetryPolicy
from stability_user.sync import StabilitySession

key, base_url = sys.argv[1:3]
once = RetryPolicy(max_attempts=1)
session = StabilitySession(key, base_url=base_url, timeout=3.0, retry=once)
print("parent", session.balance().credits, flush=True)
pid = os.fork()
if pid == 0:
    print("child", session.balance().credits, flush=True)
    sys.exit(0)  # a normal exit: atexit, finalisers, everything the child holds
_, status = os.waitpid(pid, 0)
# Over the connection the parent kept alive, and the loop that watches it.
print("parent again", session.balance().credits, os.waitstatus_to_exitcode(status), flush=True)
"""

EXITING_PROGRAM = """
import sys, threading
from stability_user import CachePolicy, StabilityError
from stability_user.sync import StabilitySession

key, stalled_key, base_url, stores = sys.argv[1:5]
sent = threading.Event()


async def note_sent(request, handler):
    sent.set()
    return await handler(request)


# "local": the machine-wide stores, whose close needs a worker thread at exit.
shared = {"rate_limit_store": "local", "cache": CachePolicy(max_age=0), "cache_store": "local"}
session = StabilitySession(
    key, base_url=base_url, middlewares=[note_sent], **(shared if stores == "local" else {})
)
print(session.balance().credits, flush=True)
stalled = session.with_options(api_key=stalled_key)


def stalled_call(closed=StabilityError):  # bound now: the module is going away then
    try:
        stalled.balance()
    except closed:  # the session closed at exit: the call ends, typed
        pass


# A call still in flight when the program ends, from a daemon thread of its own.
threading.Thread(target=stalled_call, daemon=True).start()
sent.wait(10)
print("exiting", flush=True)
"""


@FORK_WITH_THREADS
async def test_a_child_exiting_normally_leaves_the_parents_connections_alone(
    live: StabilityEmulator,
) -> None:
    key = live.add_account(credits=4.5)
    # Python 3.12+ warns at a fork of a process running threads: not this test's subject.
    fork_warning = "ignore:This process:DeprecationWarning"
    result = await run_program(
        sys.executable,
        "-W",
        "error",
        "-W",
        fork_warning,
        "-c",
        FORKING_PROGRAM,
        key,
        live.base_url,
    )
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["parent 4.5", "child 4.5", "parent again 4.5 0"]
    assert result.err == ""


@pytest.mark.parametrize("stores", ["memory", "local"])
async def test_a_session_left_open_at_exit_is_closed_and_exit_does_not_hang(
    live: StabilityEmulator, stores: str, tmp_path: Path
) -> None:
    key, stalled = live.add_account(credits=2.0), live.add_account(credits=3.0)
    live.script(Fault.stall(600), api_key=stalled)
    result = await asyncio.wait_for(
        run_program(
            sys.executable,
            "-W",
            "error",
            "-c",
            EXITING_PROGRAM,
            key,
            stalled,
            live.base_url,
            stores,
            env={"XDG_CACHE_HOME": str(tmp_path)},
        ),
        60,
    )
    assert (result.code, result.out) == (0, "2.0\nexiting\n"), result.err
    assert result.err == ""  # no ResourceWarning, no unclosed session, no traceback
