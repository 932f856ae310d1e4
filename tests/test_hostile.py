"""A hostile server on a loopback socket: no key leaks, no memory blow-up, every failure typed.

Each case is something a compromised proxy, a buggy gateway or a malicious base
URL can send. Whatever it sends, what the library raises is one of its own
errors, and no text it produces (messages, reprs, tracebacks, log records)
contains the key, in any form.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import tracemalloc
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest

from stability_user import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BalanceTarget,
    Request,
    Response,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    StabilityError,
    StabilitySession,
)

from .conftest import KEY
from .fakes import FakeClock
from .hostile import (
    HostileServer,
    deflate_bomb_chunked,
    echoed_forms,
    everything_said,
    gzip_bomb,
    http,
    json_response,
)

ECHOES = echoed_forms(KEY)


@contextlib.asynccontextmanager
async def session_on(
    server: HostileServer, clock: FakeClock, **options: object
) -> AsyncIterator[StabilitySession]:
    options = {"retry": RetryPolicy(max_attempts=1), **options}
    async with StabilitySession(
        KEY,
        base_url=server.url,
        sleep=clock.sleep,
        clock=clock,
        **options,  # type: ignore[arg-type]
    ) as session:
        yield session


IMPOSSIBLE_DATE = "Mon, 01 Jan 9999999999999999999 00:00:00 GMT"


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


class TestSecrets:
    @pytest.mark.parametrize("form", sorted(ECHOES))
    @pytest.mark.parametrize("field", ["message", "name", "errors"])
    async def test_key_echoed_in_an_error_body_in_any_form(
        self, hostile: HostileServer, clock: FakeClock, form: str, field: str
    ) -> None:
        echoed = ECHOES[form]
        value = f'["bad key {echoed}"]' if field == "errors" else f'"bad key {echoed}"'
        hostile.script.append(json_response("401 Unauthorized", f'{{"{field}": {value}}}'))
        async with session_on(hostile, clock) as session:
            with pytest.raises(AuthenticationError) as info:
                await session.balance()
        said = everything_said(info.value)
        assert KEY not in said
        if info.value.error is not None:  # \x escapes are not JSON: no body to quote then
            assert "[redacted]" in said

    @pytest.mark.parametrize("status", ["301 Moved", "302 Found", "307 Temporary Redirect"])
    async def test_key_partly_percent_encoded_in_a_redirect(
        self, hostile: HostileServer, clock: FakeClock, status: str
    ) -> None:
        location = f"https://evil.example/?k=sk%2D{quote(KEY[3:10])}{KEY[10:]}"
        hostile.script.append(http(status, "", {"Location": location}))
        async with session_on(hostile, clock) as session:
            with pytest.raises(APIError, match="not followed") as info:
                await session.balance()
        assert KEY not in everything_said(info.value)

    @pytest.mark.parametrize(
        "answer",
        [
            f"HTTP/1.1 2X0 {KEY}\r\n\r\n".encode(),
            f"HTTP/1.1 200 OK\r\nBad Header {KEY}: 1\r\n\r\n".encode(),
            f"HTTP/1.1 200 OK\r\nX-{KEY}\x01: 1\r\n\r\n".encode(),
            f"HTTP/1.1 200 OK\r\nContent-Length: {KEY}\r\n\r\n".encode(),
            f"HTTP/9.9 200 {KEY}\r\n\r\n".encode(),
        ],
    )
    async def test_aiohttp_quoting_raw_bytes_never_shows_the_key(
        self,
        hostile: HostileServer,
        clock: FakeClock,
        caplog: pytest.LogCaptureFixture,
        answer: bytes,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        hostile.script.extend([answer, answer])
        async with session_on(hostile, clock, retry=RetryPolicy(max_attempts=2)) as session:
            with pytest.raises(APIConnectionError) as info:
                await session.balance()
        assert info.value.attempts == 2
        assert KEY not in everything_said(info.value)
        assert "retrying" in logged(caplog)  # the retry WARNING quoted it: redacted too
        assert KEY not in logged(caplog)

    async def test_headers_echoing_the_key_in_a_middlewares_repr(
        self, hostile: HostileServer, clock: FakeClock
    ) -> None:
        seen: list[str] = []

        async def show(request: Request, handler):  # type: ignore[no-untyped-def]
            response: Response = await handler(request)
            seen.append(repr(response))
            return response

        hostile.script.append(
            json_response("200 OK", {"credits": 1}, {"X-Echo": KEY, "X-Echo-2": "Bearer " + KEY})
        )
        async with session_on(hostile, clock, middlewares=[show]) as session:
            await session.balance()
        assert "X-Echo" in seen[0]
        assert KEY not in seen[0]

    async def test_request_id_echoing_the_key(
        self, hostile: HostileServer, clock: FakeClock
    ) -> None:
        hostile.script.append(
            json_response(
                "500 Oops", {"message": "x"}, {"x-request-id": ECHOES["json, one character"]}
            )
        )
        async with session_on(hostile, clock) as session:
            with pytest.raises(ServerError) as info:
                await session.balance()
        assert info.value.request_id is not None
        assert KEY not in everything_said(info.value)


class TestMemoryAndDepth:
    @pytest.mark.parametrize("bomb", [gzip_bomb, deflate_bomb_chunked])
    async def test_compression_bomb_stops_at_the_cap(
        self, hostile: HostileServer, clock: FakeClock, bomb: object
    ) -> None:
        answer = bomb(100 * 1024 * 1024)  # type: ignore[operator]
        assert len(answer) < 200_000  # ~100 KB on the wire, 100 MiB inflated
        hostile.script.append(answer)
        async with session_on(hostile, clock) as session:
            tracemalloc.start()
            try:
                with pytest.raises(ResponseValidationError, match="max_body_size"):
                    await session.balance()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert peak < 16 * 1024 * 1024  # the 1 MiB cap and some buffers, never 100 MiB

    async def test_compressed_body_under_the_cap_is_read(
        self, hostile: HostileServer, clock: FakeClock
    ) -> None:
        body = gzip.compress(b'{"credits": 4.5}')
        hostile.script.append(
            http("200 OK", body, {"Content-Encoding": "gzip", "Content-Type": "application/json"})
        )
        async with session_on(hostile, clock) as session:
            assert (await session.balance()).credits == 4.5

    async def test_deep_json_everywhere_is_a_typed_error(
        self, hostile: HostileServer, clock: FakeClock
    ) -> None:
        deep = "[" * 100_000 + "]" * 100_000
        hostile.script.extend(
            [
                json_response("200 OK", deep),
                json_response("200 OK", deep),
                json_response("503 X", deep),
            ]
        )
        async with session_on(hostile, clock) as session:
            with pytest.raises(ResponseValidationError, match="nested too deeply"):
                await session.balance()
            with pytest.raises(ResponseValidationError, match="nested too deeply"):
                await session.account()
            with pytest.raises(ServerError) as info:
                await session.balance()
        assert info.value.error is None

    async def test_retry_after_with_an_impossible_date_is_ignored(
        self, hostile: HostileServer, clock: FakeClock
    ) -> None:
        hostile.script.append(json_response("503 Busy", {}, {"Retry-After": IMPOSSIBLE_DATE}))
        async with session_on(hostile, clock) as session:
            with pytest.raises(ServerError) as info:
                await session.balance()
        assert info.value.retry_after is None

    async def test_close_while_calls_queue_for_a_connection(
        self, hostile: HostileServer, clock: FakeClock
    ) -> None:
        hostile.hold = asyncio.Event()
        async with session_on(hostile, clock, max_connections=1) as session:
            calls = [asyncio.ensure_future(session.balance()) for _ in range(5)]
            await hostile.arrived.wait()  # the first call is in flight, four queue behind it
            await session.close()
            hostile.hold.set()
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, StabilityError) for o in outcomes), outcomes
        assert sum("closed" in str(o) for o in outcomes) >= 4


class TestRunsGoOn:
    async def test_bulk_gives_each_hostile_answer_a_typed_result(
        self, hostile: HostileServer, clock: FakeClock
    ) -> None:
        answers = [
            gzip_bomb(8 * 1024 * 1024),
            json_response("200 OK", "[" * 100_000 + "]" * 100_000),
            json_response("503 X", {}, {"Retry-After": IMPOSSIBLE_DATE}),
            f"HTTP/1.1 2X0 {KEY}\r\n\r\n".encode(),
            json_response("401 X", {"message": ECHOES["json, every character"]}),
        ]
        hostile.script.extend(answers)
        async with session_on(hostile, clock, rate_limit=None) as session:
            targets = [BalanceTarget(label=f"t{n}") for n in range(len(answers) + 1)]
            results = [r async for r in session.balances(targets, concurrency=1, ordered=True)]
        assert len(results) == len(answers) + 1
        assert [r.ok for r in results] == [False] * len(answers) + [True]
        for result in results[:-1]:
            assert isinstance(result.error, StabilityError)
            assert KEY not in everything_said(result.error)

    async def test_watch_turns_hostile_answers_into_failed_readings(
        self, hostile: HostileServer, clock: FakeClock
    ) -> None:
        hostile.script.extend(
            [json_response("200 OK", "[" * 100_000 + "]" * 100_000), gzip_bomb(8 * 1024 * 1024)]
        )
        async with session_on(hostile, clock) as session:
            watch = session.watch_balance(interval=1)
            readings = [await anext(watch) for _ in range(3)]
            await watch.aclose()
        assert [r.ok for r in readings] == [False, False, True]
        assert all(isinstance(r.error, ResponseValidationError) for r in readings[:2])
