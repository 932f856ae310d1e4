"""The exporter's /metrics server in process: its timeouts and its cap, on a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from stability_user.cli._exporter_guard import (
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    ConnectionGuard,
    connection_cap,
)
from stability_user.cli._exporter_server import GuardedServer, ListenError

from .fakes import FakeClock

REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
HALF = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # no blank line: the head goes on


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text="stability_targets 1.0\n")


@contextlib.asynccontextmanager
async def serving(clock: FakeClock, cap: int = 3) -> AsyncIterator[GuardedServer]:
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    server = GuardedServer(app, cap=cap, clock=clock)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


def guard_of(server: GuardedServer) -> ConnectionGuard:
    assert server.guard is not None
    return server.guard


async def settled(condition: Callable[[], bool]) -> None:
    """Let the loop run (accepting, reading) until ``condition`` holds; fail after 10 s."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the server never got there"
        await asyncio.sleep(0)


class Client:
    """A raw connection to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def closed_by_server(self) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), 10) == b""
        except ConnectionResetError:  # an abort: the server sent a reset
            return True

    async def response(self) -> bytes:
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        return head + await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def clients(server: GuardedServer) -> AsyncIterator[Callable[[], asyncio.Future[Client]]]:
    opened: list[Client] = []
    host, port = server.address

    async def connect() -> Client:
        client = Client(*await asyncio.open_connection(host, port))
        opened.append(client)
        return client

    try:
        yield lambda: asyncio.ensure_future(connect())
    finally:
        for client in opened:
            client.close()
            with contextlib.suppress(ConnectionError):
                await client.writer.wait_closed()


async def test_a_silent_connection_is_closed_after_the_header_timeout(clock: FakeClock) -> None:
    async with serving(clock) as server, clients(server) as connect:
        guard = guard_of(server)
        client = await connect()
        await settled(lambda: len(guard) == 1)
        clock.advance(HEADER_TIMEOUT - 1)
        guard.sweep()
        assert len(guard) == 1
        clock.advance(2)
        guard.sweep()
        assert await client.closed_by_server()
        await settled(lambda: len(guard) == 0)


async def test_a_trickled_head_gets_no_more_time(clock: FakeClock) -> None:
    async with serving(clock) as server, clients(server) as connect:
        guard = guard_of(server)
        client = await connect()
        await settled(lambda: len(guard) == 1)
        await client.send(HALF[:10])
        clock.advance(HEADER_TIMEOUT / 2)
        await client.send(HALF[10:])  # still no end of head: the deadline stays
        clock.advance(HEADER_TIMEOUT / 2 + 1)
        guard.sweep()
        assert await client.closed_by_server()


async def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(clock: FakeClock) -> None:
    async with serving(clock) as server, clients(server) as connect:
        guard = guard_of(server)
        client = await connect()
        clock.advance(HEADER_TIMEOUT - 1)
        await client.send(REQUEST[:5])  # a head split over two reads is found whole
        await client.send(REQUEST[5:])
        assert b"stability_targets 1.0" in await client.response()
        clock.advance(IDLE_TIMEOUT - 1)  # well past the header timeout: between requests
        guard.sweep()
        assert len(guard) == 1
        await client.send(REQUEST)  # a second request on the same connection
        assert b"stability_targets 1.0" in await client.response()
        clock.advance(IDLE_TIMEOUT + 1)
        guard.sweep()
        assert await client.closed_by_server()


async def test_at_the_cap_a_scrape_gets_in_by_closing_the_oldest_waiting_connection(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "stability_user.cli")
    async with serving(clock, cap=3) as server, clients(server) as connect:
        guard = guard_of(server)
        kept_alive = await connect()
        await kept_alive.send(REQUEST)
        await kept_alive.response()
        oldest, newer = await connect(), await connect()
        await settled(lambda: len(guard) == 3)
        await oldest.send(HALF)
        await newer.send(HALF)
        async with aiohttp.ClientSession() as http:
            url = "http://{}:{}/metrics".format(*server.address)
            async with http.get(url) as scraped:
                assert (scraped.status, await scraped.text()) == (200, "stability_targets 1.0\n")
            assert await oldest.closed_by_server()
            assert len(guard) == 3
            # Then, of the waiting connections first, the one that waited the longest...
            served = await connect()
            await served.send(REQUEST)
            await served.response()
            assert await newer.closed_by_server()
            # ...and when none waits, the one heard from the longest ago.
            last = await connect()
            await last.send(REQUEST)
            await last.response()
            assert await kept_alive.closed_by_server()
            assert len(guard) == 3
    full = [r.getMessage() for r in caplog.records if "connections open" in r.getMessage()]
    assert full == [
        "/metrics has 3 connections open, as many as it keeps: each new one closes the one "
        "waiting for its request the longest; said at most once a minute"
    ]


async def test_the_line_about_it_comes_at_most_once_a_minute(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "stability_user.cli")
    async with serving(clock, cap=1) as server, clients(server) as connect:
        guard = guard_of(server)
        for _ in range(4):
            await connect()
        await settled(lambda: len(caplog.records) == 1 and len(guard) == 1)
        clock.advance(61)
        await connect()
        await settled(lambda: len(caplog.records) == 2)
    assert (
        caplog.records[1]
        .getMessage()
        .endswith("the longest (2 more times since it was last said); said at most once a minute")
    )


def test_the_cap_follows_the_file_limit() -> None:
    assert [connection_cap(limit) for limit in (64, 256, 1024, 1_048_576)] == [4, 96, 128, 128]


async def test_a_pipelined_request_s_head_is_awaited_from_its_first_byte(
    clock: FakeClock,
) -> None:
    async with serving(clock) as server, clients(server) as connect:
        guard = guard_of(server)
        client = await connect()
        clock.advance(HEADER_TIMEOUT - 1)
        await client.send(REQUEST + HALF)  # a whole request, and the start of the next
        assert b"stability_targets 1.0" in await client.response()
        clock.advance(HEADER_TIMEOUT - 1)  # the second head began 9 s ago: still in time
        guard.sweep()
        assert len(guard) == 1
        clock.advance(2)
        guard.sweep()
        assert await client.closed_by_server()


async def test_an_address_in_use_is_a_listen_error_naming_it(clock: FakeClock) -> None:
    async with serving(clock) as server:
        _, port = server.address
        taken = GuardedServer(web.Application(), clock=clock)
        with pytest.raises(ListenError) as refused:
            await taken.start("127.0.0.1", port)
    assert str(refused.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"


def test_without_a_file_limit_it_keeps_the_most() -> None:
    assert connection_cap(resource.RLIM_INFINITY) == 128
    assert connection_cap() == connection_cap(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
