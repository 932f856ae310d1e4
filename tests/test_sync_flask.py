"""A Flask app served by waitress's threads, sharing one sync session, as a WSGI deployment runs it.

waitress rather than gunicorn: it is a real threaded WSGI server (a pool of
worker threads taking requests off one listening socket, as gunicorn's gthread
workers and mod_wsgi's daemon threads do) that runs inside the test's process, so
the test sees every thread and socket left behind once it stops. gunicorn is a
process manager: its workers are forked processes, whose case the fork tests of
``test_sync.py`` cover.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.client
import json
import pathlib
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import pytest
from flask import Flask
from waitress import wasyncore
from waitress.server import create_server

from stability_user import RateLimit
from stability_user.sync import StabilitySession
from stability_user.testing import EmulatedOrganization, StabilityEmulator
from stability_user.testing import RateLimit as ServiceRateLimit

from .fakes import FakeClock
from .processes import clean_environment, run_program
from .servers import free_port
from .sync_support import ServedEmulator, open_sockets, served, session_threads

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

import flask_app  # noqa: E402

THREADS = 8
REQUESTS_PER_THREAD = 100


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[int]:
    """``app`` under waitress with ``THREADS`` worker threads on 127.0.0.1; yields its port."""
    server: Any = create_server(app, host="127.0.0.1", port=0, threads=THREADS)
    loop = threading.Thread(target=server.run, name="waitress")
    loop.start()
    try:
        yield server.effective_port
    finally:
        # Closed in waitress's own thread (closing from this one races its poll): the
        # listener and the trigger; the loop ends once the connections are gone too.
        server.trigger.pull_trigger(server.close)
        loop.join(30)
        server.task_dispatcher.shutdown()  # joins the worker threads
        wasyncore.close_all(server._map)


def get(connection: http.client.HTTPConnection, path: str) -> tuple[int, str | None, Any]:
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.getheader("Retry-After"), json.loads(response.read())


def add_service_account(server: ServedEmulator) -> str:
    return server.add_account(
        email="svc@example.com",
        organizations=[
            EmulatedOrganization("org-a", "A", is_default=True, credits=12.5),
            EmulatedOrganization("org-b", "B", credits=7.0),
        ],
    )


EXPECTED = {
    "/credits": {"credits": 12.5},
    "/credits?organization=org-b": {"credits": 7.0},
    "/account": {"id": "user-1", "email": "svc@example.com", "organizations": ["org-a", "org-b"]},
}


def page_views(port: int, client: int, count: int) -> list[tuple[str, int, str | None, Any]]:
    """``count`` requests over one keep-alive connection, cycling through the paths."""
    paths = list(EXPECTED)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        return [
            (path, *get(connection, path))
            for path in (paths[(client + n) % len(paths)] for n in range(count))
        ]
    finally:
        connection.close()


def test_eight_threads_a_hundred_requests_each_and_nothing_left_open() -> None:
    sockets, threads = open_sockets(), set(threading.enumerate())
    # Room for the whole run in the limit: this test is about threads, not waits.
    roomy = StabilityEmulator(rate_limit=ServiceRateLimit(1000, 10.0, 60.0))
    with served(roomy) as server:
        key = add_service_account(server)
        session = StabilitySession(
            key, base_url=server.base_url, retry=flask_app.RETRY, rate_limit=RateLimit(1000, 10.0)
        )
        with session, serving(flask_app.create_app(session)) as port:
            with ThreadPoolExecutor(THREADS, thread_name_prefix="client") as clients:
                runs = clients.map(
                    lambda n: page_views(port, n, REQUESTS_PER_THREAD), range(THREADS)
                )
                answers = [answer for run in runs for answer in run]
            assert len(session_threads()) == 1  # one loop served all eight threads
        assert session_threads() == []
        assert len(answers) == THREADS * REQUESTS_PER_THREAD
        wrong = [a for a in answers if (a[1], a[3]) != (200, EXPECTED[a[0]])]
        assert wrong == []
        assert server.call(lambda: server.emulator.status_counts) == {200: len(answers)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in caught] == []  # no unclosed transport, session, loop
    assert open_sockets() - sockets == set()
    assert set(threading.enumerate()) - threads == set()  # (one of before may have ended)


def test_past_the_limit_a_page_view_is_answered_503_at_once() -> None:
    # The service's 150 requests per 10 s, on a clock that does not move: past the
    # limit a call would wait ~10 s for a slot, longer than the example's policy
    # allows (max_retry_after=2), so it is answered 503 with Retry-After at once,
    # unsent, instead of holding a server thread.
    clock = FakeClock()
    with served(StabilityEmulator(clock=clock)) as server:
        key = add_service_account(server)
        session = StabilitySession(
            key, base_url=server.base_url, retry=flask_app.RETRY, clock=clock
        )
        with (
            session,
            serving(flask_app.create_app(session)) as port,
            ThreadPoolExecutor(THREADS) as clients,
        ):
            runs = clients.map(lambda n: page_views(port, n, 25), range(THREADS))
            answers = [answer for run in runs for answer in run]
        statuses = [status for _, status, _, _ in answers]
        assert (statuses.count(200), statuses.count(503)) == (150, 50)
        limited = [a for a in answers if a[1] == 503]
        assert {body["error"] for _, _, _, body in limited} == {
            "credit checks are rate limited; try again later"
        }
        assert all(1 <= int(retry_after or 0) <= 10 for _, _, retry_after, _ in limited)
        assert server.call(lambda: server.emulator.status_counts) == {200: 150}  # never a 429


def test_errors_are_answers_of_the_apps_own(monkeypatch: pytest.MonkeyPatch) -> None:
    with served() as server:
        key = add_service_account(server)
        with StabilitySession(key, base_url=server.base_url, retry=flask_app.RETRY) as session:
            client = flask_app.create_app(session).test_client()
            denied = client.get("/credits?organization=org-z")
            assert (denied.status_code, denied.json) == (
                403,
                {"error": "this service's key has no access to that organization"},
            )
            bad = client.get("/credits?organization=a%0D%0Ab")
            assert bad.status_code == 400
        with StabilitySession("sk-" + "4" * 48, base_url=server.base_url) as wrong:
            refused = flask_app.create_app(wrong).test_client().get("/account")
            assert refused.status_code == 502
            assert "4" * 48 not in refused.get_data(as_text=True)


async def test_the_example_runs_as_a_user_runs_it() -> None:
    # No key: it serves on the bundled emulator; Ctrl-C stops it and closes the session.
    port = free_port()
    env = clean_environment({"PORT": str(port)})
    process = await asyncio_subprocess(sys.executable, str(EXAMPLES / "flask_app.py"), env=env)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line == f"serving on http://127.0.0.1:{port}, Ctrl-C to stop\n"
        answer = await fetch(port, "/credits")
        assert answer == (200, {"credits": 42.0})
    finally:
        process.send_signal(signal.SIGINT)
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert (out, err) == (b"", b"")  # nothing left to say: no traceback, no warning


async def test_the_example_runs_when_copied_on_its_own(tmp_path: pathlib.Path) -> None:
    copy = tmp_path / "flask_app.py"
    shutil.copy(EXAMPLES / "flask_app.py", copy)
    code = f"import runpy; runpy.run_path({str(copy)!r}, run_name='copied'); print('loaded')"
    result = await run_program(sys.executable, "-I", "-c", code)
    assert (result.code, result.out) == (0, "loaded\n"), result.err


async def asyncio_subprocess(*argv: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def fetch(port: int, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.json()


async def test_the_web_burst_benchmark_runs(tmp_path: pathlib.Path) -> None:
    # Timings are the benchmark's to report, not this test's: it only must not rot.
    output = tmp_path / "web-burst.md"
    benchmark = EXAMPLES.parent / "benchmarks" / "web_burst.py"
    result = await run_program(sys.executable, str(benchmark), "--quick", "--output", str(output))
    assert result.code == 0, result.err
    table = output.read_text()
    assert "| `RetryPolicy()` | 30 | 0 |" in table  # all answered, half of them late
    assert "| `RetryPolicy(deadline=5.0, max_retry_after=2.0)` | 15 | 15 |" in table
