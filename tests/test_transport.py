"""The aiohttp transport and the session over it, with aioresponses (no sockets)."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Mapping

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
from stability_user._exchange import _KEPT, Template, Templates, exchange, request_replaced
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
    ("method", "error", "connects"),
    [
        # Every method ClientSession.request retries on a stale connection, and no other.
        ("DELETE", aiohttp.ServerDisconnectedError(), 2),
        ("TRACE", aiohttp.ServerDisconnectedError(), 2),
        ("POST", aiohttp.ServerDisconnectedError(), 1),
        # A pooled connection the server had closed: replaced once, at once.
        ("GET", aiohttp.ServerDisconnectedError(), 2),
        ("GET", aiohttp.ClientOSError(104, "Connection reset by peer"), 2),
        # No connection was made: nothing stale to replace, the retry policy decides.
        (
            "GET",
            aiohttp.ClientConnectorError(
                ConnectionKey("127.0.0.1", 9, False, True, None, None, None),
                OSError(111, "Connection refused"),
            ),
            1,
        ),
    ],
)
async def test_only_a_stale_connection_is_replaced_at_once(
    method: str, error: Exception, connects: int
) -> None:
    connector = _Connector(error)
    session = _Session(connector)
    template = Template(
        session,  # type: ignore[arg-type]
        method,
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


def _aiohttp_form(url: str, headers: Mapping[str, str]) -> tuple[URL, object]:
    return URL(url), dict(headers)


class TestTemplates:
    URL = "http://127.0.0.1:9/v1/user/balance"

    async def test_a_request_s_headers_are_kept_from_their_second_sighting(self) -> None:
        async with aiohttp.ClientSession() as session:
            templates = Templates(True)
            headers = {"Authorization": "Bearer sk-one"}
            first = templates.get(session, "GET", self.URL, headers, _aiohttp_form)
            second = templates.get(session, "GET", self.URL, headers, _aiohttp_form)
            third = templates.get(session, "GET", self.URL, headers, _aiohttp_form)
            # Headers made again per call, with the same content: the kept one.
            again = templates.get(session, "GET", self.URL, dict(headers), _aiohttp_form)
        assert first is not None
        assert second is not None
        assert second is not first
        assert third is second
        assert again is second
        assert first.head == second.head
        assert b"Authorization: Bearer sk-one\r\n" in first.head

    async def test_headers_seen_once_are_not_kept(self) -> None:
        # A traceparent of every call: a template each time, none kept, bounded.
        async with aiohttp.ClientSession() as session:
            templates = Templates(True)
            for n in range(_KEPT + 10):
                headers = {"traceparent": f"00-{n:032x}-{n:016x}-01"}
                assert templates.get(session, "GET", self.URL, headers, _aiohttp_form)
        assert not templates._by_content
        assert not templates._by_identity
        assert len(templates._seen) == _KEPT

    async def test_the_oldest_go_first_and_clear_forgets_every_key(self) -> None:
        async with aiohttp.ClientSession() as session:
            templates = Templates(True)
            kept = [{"Authorization": f"Bearer sk-{n}"} for n in range(_KEPT + 1)]
            for headers in kept:
                for _ in range(2):
                    templates.get(session, "GET", self.URL, headers, _aiohttp_form)
            assert len(templates._by_content) == _KEPT
            oldest = ("GET", self.URL, tuple(kept[0].items()))
            assert oldest not in templates._by_content
            templates.clear()
        assert not templates._by_content
        assert not templates._by_identity
        assert not templates._seen

    @pytest.mark.parametrize(
        ("method", "headers"),
        [
            ("POST", {}),  # a body: aiohttp adds its Content-Type
            ("PUT", {}),
            ("GET", {"EXPECT": "100-continue"}),  # waits for the server's go-ahead
        ],
    )
    async def test_what_clientrequest_send_treats_apart_has_no_template(
        self, method: str, headers: dict[str, str]
    ) -> None:
        async with aiohttp.ClientSession() as session:
            templates = Templates(True)
            assert templates.get(session, method, self.URL, headers, _aiohttp_form) is None
