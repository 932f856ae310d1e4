"""The aiohttp transport and the session over it, with aioresponses (no sockets)."""

from __future__ import annotations

import asyncio
import functools
import re

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import aioresponses
from yarl import URL

from stability_user import (
    APIConnectionError,
    APITimeoutError,
    Balance,
    Request,
    ResponseValidationError,
    RetryPolicy,
    StabilityError,
    StabilitySession,
)
from stability_user._exchange import Template, exchange, request_replaced
from stability_user._transport import AiohttpTransport

from .conftest import KEY
from .fakes import FakeClock

BASE = "https://api.stability.ai"
BALANCE = f"{BASE}/v1/user/balance"
REQUEST = Request("GET", BALANCE, {"Authorization": KEY}, 5.0)


@pytest.fixture(name="mocked")
def _mocked():  # type: ignore[no-untyped-def]
    with aioresponses() as mocked:
        yield mocked


async def test_reads_body_and_headers(mocked: aioresponses) -> None:
    mocked.get(BALANCE, body=b'{"credits": 2}', headers={"X-Thing": "1"})
    transport = AiohttpTransport()
    try:
        response = await transport(REQUEST)
    finally:
        await transport.aclose()
    assert (response.status, response.body) == (200, b'{"credits": 2}')
    assert response.headers["x-thing"] == "1"
    assert response.attempt == 1


async def test_sends_headers_and_no_redirects(mocked: aioresponses) -> None:
    mocked.get(BALANCE, payload={"credits": 1})
    transport = AiohttpTransport()
    try:
        await transport(REQUEST)
    finally:
        await transport.aclose()
    ((_, url), calls) = next(iter(mocked.requests.items()))
    assert str(url) == BALANCE
    assert calls[0].kwargs["headers"]["Authorization"] == KEY
    assert calls[0].kwargs["allow_redirects"] is False
    assert calls[0].kwargs["timeout"].total == 5.0


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (aiohttp.ServerDisconnectedError(), APIConnectionError),
        (aiohttp.ClientOSError(104, "reset"), APIConnectionError),
        (aiohttp.ClientPayloadError("cut"), APIConnectionError),
        (aiohttp.ServerTimeoutError("slow"), APITimeoutError),
        (asyncio.TimeoutError(), APITimeoutError),
    ],
)
async def test_failures_map_to_library_errors(
    mocked: aioresponses, exc: Exception, expected: type[Exception]
) -> None:
    mocked.get(BALANCE, exception=exc)
    transport = AiohttpTransport()
    try:
        with pytest.raises(expected) as info:
            await transport(REQUEST)
    finally:
        await transport.aclose()
    assert type(info.value) is expected
    assert info.value.__cause__ is exc
    assert KEY not in str(info.value)


async def test_session_retries_then_returns_balance(mocked: aioresponses, clock: FakeClock) -> None:
    mocked.get(BALANCE, status=503, payload={"name": "server_error"})
    mocked.get(BALANCE, exception=aiohttp.ServerDisconnectedError())
    mocked.get(BALANCE, payload={"credits": 7.25})
    async with StabilitySession(KEY, sleep=clock.sleep, clock=clock) as session:
        assert await session.balance() == Balance(7.25)
    assert clock.sleeps == [pytest.approx(0.5, abs=0.5), pytest.approx(1.0, abs=0.5)]


async def test_session_gives_up_with_the_last_error(mocked: aioresponses, clock: FakeClock) -> None:
    for _ in range(2):
        mocked.get(BALANCE, exception=aiohttp.ClientConnectionError("refused"))
    async with StabilitySession(
        KEY, retry=RetryPolicy(max_attempts=2), sleep=clock.sleep, clock=clock
    ) as session:
        with pytest.raises(APIConnectionError, match="refused") as info:
            await session.balance()
    assert info.value.attempts == 2


async def test_body_over_the_cap_is_refused(mocked: aioresponses) -> None:
    mocked.get(BALANCE, body=b"x" * 2048)
    async with StabilitySession(KEY, max_body_size=1024) as session:
        with pytest.raises(ResponseValidationError, match="over max_body_size"):
            await session.balance()
    assert len(mocked.requests[("GET", URL(BALANCE))]) == 1  # not retried


async def test_middleware_sees_every_attempt_in_order(
    mocked: aioresponses, clock: FakeClock
) -> None:
    mocked.get(BALANCE, status=500)
    mocked.get(BALANCE, payload={"credits": 1})
    seen: list[tuple[str, str]] = []

    def recorder(name: str):  # type: ignore[no-untyped-def]
        async def middleware(request, handler):  # type: ignore[no-untyped-def]
            seen.append((name, f"in {request.attempt}"))
            response = await handler(request)
            seen.append((name, f"out {response.status} {response.attempt}"))
            return response

        return middleware

    async with StabilitySession(
        KEY, middlewares=[recorder("outer"), recorder("inner")], sleep=clock.sleep, clock=clock
    ) as session:
        await session.balance()
    # Each middleware knows which attempt it sends, and which one a response answers.
    assert seen == [
        ("outer", "in 1"),
        ("inner", "in 1"),
        ("inner", "out 500 1"),
        ("outer", "out 500 1"),
        ("outer", "in 2"),
        ("inner", "in 2"),
        ("inner", "out 200 2"),
        ("outer", "out 200 2"),
    ]


async def test_transport_validation() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        AiohttpTransport(max_connections=0)
    with pytest.raises(ValueError, match="max_body_size"):
        AiohttpTransport(max_body_size=0)


async def test_closed_caller_session_is_reported(mocked: aioresponses) -> None:
    http = aiohttp.ClientSession()
    await http.close()
    async with StabilitySession(KEY, http_session=http) as session:
        with pytest.raises(StabilityError, match="http_session is closed"):
            await session.balance()


async def test_caller_session_is_used_and_never_closed(mocked: aioresponses) -> None:
    mocked.get(re.compile(r".*/balance"), payload={"credits": 4})
    async with aiohttp.ClientSession() as http:
        async with StabilitySession(KEY, http_session=http) as session:
            assert await session.balance() == Balance(4.0)
        assert not http.closed


async def test_aioresponses_stands_in_for_client_session_request(mocked: aioresponses) -> None:
    # aioresponses stands in for ClientSession._request: the transport's own path
    # gives way to it, so that its mocks answer.
    async with aiohttp.ClientSession() as session:
        assert request_replaced(session)


async def test_client_session_request_as_aiohttp_made_it() -> None:
    async with aiohttp.ClientSession() as session:
        assert not request_replaced(session)


class _Connector:
    """Fails every connection as told, counting them."""

    def __init__(self, error: Exception) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout_ceil_threshold = 5
        self.force_close = False
        self.error = error
        self.connects = 0

    async def connect(self, *_: object, **__: object) -> object:
        self.connects += 1
        raise self.error


class _Session:
    closed = False

    def __init__(self, connector: _Connector) -> None:
        self.connector = connector


@pytest.mark.parametrize(
    ("error", "connects"),
    [
        # A pooled connection the server had closed: replaced once, at once.
        (aiohttp.ServerDisconnectedError(), 2),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), 2),
        # No connection was made: nothing stale to replace, the retry policy decides.
        (
            aiohttp.ClientConnectorError(
                ConnectionKey("127.0.0.1", 9, False, True, None, None, None),
                OSError(111, "Connection refused"),
            ),
            1,
        ),
    ],
)
async def test_only_a_stale_connection_is_replaced_at_once(error: Exception, connects: int) -> None:
    connector = _Connector(error)
    session = _Session(connector)
    template = Template(
        session,  # type: ignore[arg-type]
        "GET",
        URL("http://127.0.0.1:9/v1/user/balance"),
        {},
        ssl=True,
    )
    with pytest.raises(type(error)):
        await exchange(session, template, timeout=aiohttp.ClientTimeout())  # type: ignore[arg-type]
    assert connector.connects == connects


class _Probe:
    """Stands for a session: only its class's ``_request`` is looked at."""

    _request: object = aiohttp.ClientSession._request


def test_a_stand_in_is_known_whenever_it_came(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in already in place when the library was imported is one all the same:
    # aiohttp's own function is known by its code.
    genuine = aiohttp.ClientSession._request
    monkeypatch.setattr("stability_user._exchange._genuine", [])

    async def stand_in(*args: object, **kwargs: object) -> object:
        return await genuine(*args, **kwargs)  # type: ignore[arg-type]

    probe = _Probe()
    for replacement in (stand_in, functools.wraps(genuine)(stand_in)):
        with monkeypatch.context() as patched:
            patched.setattr(_Probe, "_request", replacement)
            assert request_replaced(probe)  # type: ignore[arg-type]
    assert not request_replaced(probe)  # type: ignore[arg-type]
