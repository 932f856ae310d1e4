"""What only a real socket shows: drops, resets, stalls, redirects, size caps, pool reuse."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import pytest
from aiohttp import web

from stability_user import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    Balance,
    Request,
    Response,
    ResponseValidationError,
    RetryPolicy,
    StabilitySession,
)
from stability_user._http import Handler
from stability_user.testing import Fault, StabilityEmulator

from .conftest import KEY
from .fakes import FakeClock


@attrs.define
class AppServer:
    """An aiohttp.web app on a free port of 127.0.0.1."""

    runner: web.AppRunner
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture(autouse=True, params=["below ClientSession.request", "ClientSession.request"])
def _send_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every socket test holds on both paths: the transport's own below
    # ClientSession.request, and ClientSession.request itself (an aiohttp release the
    # short path does not know, a proxy, a session of the caller's).
    if request.param == "ClientSession.request":
        monkeypatch.setattr("stability_user._transport.SUPPORTED", False)


@pytest.fixture(name="serve")
async def _serve() -> AsyncIterator[Callable[[Route], Awaitable[AppServer]]]:
    runners: list[web.AppRunner] = []

    async def serve(handler: Route) -> AppServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return AppServer(runner, runner.addresses[0][1])

    yield serve
    for runner in runners:
        await runner.cleanup()


def session_for(base_url: str, clock: FakeClock, **kwargs: object) -> StabilitySession:
    return StabilitySession(KEY, base_url=base_url, sleep=clock.sleep, clock=clock, **kwargs)  # type: ignore[arg-type]


async def test_reset_mid_body_is_retried(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    emulator.script(Fault.reset())
    assert await session.balance() == Balance(12.5)
    assert [r.status for r in emulator.requests] == [None, 200]


async def test_reset_on_every_attempt_raises_connection_error(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    emulator.script(Fault.reset(), Fault.reset(), Fault.reset())
    with pytest.raises(APIConnectionError) as info:
        await session.balance()
    assert type(info.value) is APIConnectionError
    assert info.value.attempts == 3
    assert KEY not in str(info.value)


async def test_dropped_connection_is_retried(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    emulator.script(Fault.drop(), Fault.drop(), Fault.drop())
    assert (await session.balance()).credits == 12.5


async def test_stall_past_the_timeout(
    emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    emulator.script(Fault.stall(30), Fault.stall(30))
    async with session_for(
        emulator.base_url, clock, timeout=0.05, retry=RetryPolicy(max_attempts=2)
    ) as s:
        with pytest.raises(APITimeoutError, match=r"longer than 0\.05 s") as info:
            await s.balance()
    assert info.value.attempts == 2


async def test_stall_then_success(emulator: StabilityEmulator, key: str, clock: FakeClock) -> None:
    emulator.script(Fault.stall(30))
    async with StabilitySession(
        key, base_url=emulator.base_url, timeout=0.05, sleep=clock.sleep, clock=clock
    ) as s:
        assert (await s.balance()).credits == 12.5


async def test_redirect_is_not_followed(serve, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    hits: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if request.path.endswith("/balance"):
            raise web.HTTPFound("/elsewhere")
        return web.json_response({"credits": 99})

    server = await serve(handler)
    async with session_for(server.url, clock) as session:
        with pytest.raises(APIError, match="redirect to /elsewhere not followed") as info:
            await session.balance()
    assert info.value.status == 302
    assert hits == ["/v1/user/balance"]


async def test_chunked_body_over_the_cap(serve, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    sent: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(64):  # 4 MiB if read whole
                await response.write(b"x" * 65536)
                sent.append(1)
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    server = await serve(handler)
    async with session_for(server.url, clock, max_body_size=100_000) as session:
        with pytest.raises(ResponseValidationError, match="more than 100000 bytes"):
            await session.balance()


async def test_chunked_body_under_the_cap(serve, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"credits":')
        await response.write(b" 8.5}")
        return response

    server = await serve(handler)
    async with session_for(server.url, clock) as session:
        assert await session.balance() == Balance(8.5)


async def test_oversized_announced_body(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    emulator.script(Fault.oversized(2_000_000))
    with pytest.raises(ResponseValidationError, match="announces"):
        await session.balance()
    assert (await session.balance()).credits == 12.5  # the pool recovers


async def test_one_connection_pool_survives_retries(
    emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    emulator.script(503, 500, Fault.html(502), 200, 429, 200)
    async with session_for(
        emulator.base_url, clock, max_connections=1, timeout=2.0, retry=RetryPolicy(max_attempts=4)
    ) as s:
        s2 = s.with_options(api_key=key)
        results = await asyncio.wait_for(asyncio.gather(s2.balance(), s2.balance()), timeout=10)
    assert list(results) == [Balance(12.5), Balance(12.5)]


async def test_deadline_bounds_a_stalled_call(
    emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    emulator.script(Fault.stall(30))
    # Real monotonic clock here: the deadline has to cut a real attempt.
    async with StabilitySession(
        key,
        base_url=emulator.base_url,
        timeout=30,
        retry=RetryPolicy(deadline=0.1),
        sleep=clock.sleep,
    ) as s:
        with pytest.raises(APITimeoutError, match="deadline ran out during attempt 1"):
            await s.balance()


async def test_cancelling_a_call_leaves_nothing_open(emulator: StabilityEmulator, key: str) -> None:
    emulator.script(Fault.stall(30))
    async with StabilitySession(key, base_url=emulator.base_url) as s:
        task = asyncio.ensure_future(s.balance())
        await emulator.wait_for_requests(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await s.balance()).credits == 12.5


Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ACCOUNT_BODY = b'{"id": "user-1", "email": "a@example.com", "organizations": []}'


@contextlib.asynccontextmanager
async def raw_server(answer: Answer) -> AsyncIterator[str]:
    """A bare TCP server on 127.0.0.1 writing what ``answer`` writes; yields its base URL."""
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_body_that_ends_with_its_connection(clock: FakeClock) -> None:
    # HTTP/1.1 without Content-Length or chunks: the body is what comes before the close.
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
            b'{"credits": 3.5}'
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async with raw_server(answer) as base_url, session_for(base_url, clock) as s:
        assert await s.balance() == Balance(3.5)


async def test_a_body_that_stalls_past_the_timeout(clock: FakeClock) -> None:
    # The headers come, then half the body, then nothing: the attempt's timeout
    # covers the body too, and leaves the task as it found it.
    answered = 0
    stalled = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                answered += 1
                body = b'{"credits": 3.5}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body)
                )
                writer.write(body if answered > 1 else body[:5])
                await writer.drain()
                if answered == 1:
                    await stalled.wait()  # the client gives up first
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async with raw_server(answer) as base_url:
        try:
            async with session_for(
                base_url, clock, timeout=0.05, retry=RetryPolicy(max_attempts=1)
            ) as s:
                with pytest.raises(APITimeoutError, match=r"longer than 0\.05 s"):
                    await s.balance()
                stalled.set()
                if sys.version_info >= (3, 11):
                    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
                # A caller's own timeout around a call still works.
                assert await asyncio.wait_for(s.balance(), 10) == Balance(3.5)
        finally:
            stalled.set()  # the stalled answer ends before its server closes


async def test_both_paths_send_the_same_bytes(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The short path writes a request made once by aiohttp's ClientRequest and header
    # serializer: byte for byte what ClientSession.request sends, on a fresh
    # connection and on one kept alive, for each endpoint and an organization.
    heads: dict[bool, list[bytes]] = {}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                received.append(head.replace(str(port).encode(), b"PORT"))
                body = b'{"credits": 2.5}' if b"/balance" in head else ACCOUNT_BODY
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        writer.close()

    for below in (True, False):
        monkeypatch.setattr("stability_user._transport.SUPPORTED", below)
        received: list[bytes] = []
        async with raw_server(answer) as base_url:
            port = int(base_url.rsplit(":", 1)[1])
            async with session_for(base_url, clock, organization="org-1") as s:
                for _ in range(2):
                    await s.balance()
                    await s.balance(organization="org-2")
                    await s.account()
        heads[below] = received
    assert len(heads[True]) == 6
    assert heads[True] == heads[False]
    assert b"Organization: org-2\r\n" in heads[True][1]
    assert heads[True][0].startswith(b"GET /v1/user/balance HTTP/1.1\r\n")


@pytest.mark.parametrize("method", ["POST", "DELETE", "OPTIONS"])
async def test_both_paths_send_the_same_bytes_for_another_method(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    # A middleware may change the method: a body-less one aiohttp adds nothing to is
    # sent from a template; a POST goes through ClientSession.request (its Content-Type).
    heads: dict[bool, list[bytes]] = {}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                received.append(await reader.readuntil(b"\r\n\r\n"))
                body = b'{"credits": 2.5}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        writer.close()

    async def as_method(request: Request, handler: Handler) -> Response:
        return await handler(attrs.evolve(request, method=method))

    for below in (True, False):
        monkeypatch.setattr("stability_user._transport.SUPPORTED", below)
        received: list[bytes] = []
        async with (
            raw_server(answer) as base_url,
            session_for(base_url, clock, middlewares=[as_method]) as s,
        ):
            for _ in range(3):
                await s.balance()
        heads[below] = [h.replace(base_url[7:].encode(), b"HOST") for h in received]
    assert heads[True] == heads[False]
    assert heads[True][0].startswith(f"{method} /v1/user/balance HTTP/1.1\r\n".encode())
    assert (b"Content-Type: application/octet-stream" in heads[True][0]) == (method == "POST")
