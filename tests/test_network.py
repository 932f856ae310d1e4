"""Real networks on loopback: a forwarding proxy, TLS with a test CA, request ids.

The service is an HTTPS server with a certificate from a test CA (trustme) for
``api.test``; the proxy is a minimal CONNECT proxy on 127.0.0.1 that maps
``api.test`` to that server and records what it sees. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator

import attrs
import pytest
import trustme
from aiohttp import web

from stability_user import (
    APIConnectionError,
    AuthenticationError,
    RetryPolicy,
    StabilityError,
    StabilitySession,
)
from stability_user._network import Route
from stability_user._transport import AiohttpTransport
from stability_user.testing import StabilityEmulator

from .conftest import KEY
from .fakes import FakeClock
from .servers import free_port

HOST = "api.test"


@attrs.define
class Proxy:
    """A CONNECT proxy on 127.0.0.1 that sends every tunnel to one port of 127.0.0.1."""

    target_port: int
    port: int = 0
    heads: list[bytes] = attrs.Factory(list)  # what each client said before tunnelling
    tunnelled: bytearray = attrs.Factory(bytearray)  # every byte sent through tunnels
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        if not head.startswith(b"CONNECT "):
            writer.write(b"HTTP/1.1 405 Only CONNECT\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    self.tunnelled.extend(data)
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture(name="trusting")
def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the test CA (as --ca-bundle would)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture(name="service")
async def _service(ca: trustme.CA) -> AsyncIterator[int]:
    """An HTTPS 'service' on 127.0.0.1 with a certificate for api.test; yields its port."""

    async def balance(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != KEY:
            return web.json_response(
                {"id": "e1", "name": "unauthorized", "message": "bad key"},
                status=401,
                headers={"x-request-id": "3f2c9a1b"},
            )
        return web.json_response({"credits": 7.5}, headers={"x-request-id": "3f2c9a1b"})

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(server_context)
    app = web.Application()
    app.router.add_get("/v1/user/balance", balance)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.fixture(name="proxy")
async def _proxy(service: int) -> AsyncIterator[Proxy]:
    proxy = Proxy(service)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def session_to(port: int, clock: FakeClock, **options: object) -> StabilitySession:
    options = {"retry": RetryPolicy(max_attempts=3), **options}
    return StabilitySession(
        KEY,
        base_url=f"https://{HOST}:{port}",
        sleep=clock.sleep,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


async def test_through_a_proxy_the_key_travels_only_inside_tls(
    proxy: Proxy, service: int, trusting: ssl.SSLContext, clock: FakeClock
) -> None:
    async with session_to(service, clock, proxy=proxy.url, ssl=trusting) as session:
        assert (await session.balance()).credits == 7.5
    assert len(proxy.heads) == 1
    assert proxy.heads[0].startswith(f"CONNECT {HOST}:{service} HTTP/1.1".encode())
    assert KEY.encode() not in proxy.heads[0]
    assert b"Authorization" not in proxy.heads[0]
    assert len(proxy.tunnelled) > 1000  # the TLS handshake and the call went through it
    assert KEY.encode() not in bytes(proxy.tunnelled)


async def test_proxy_credentials_are_sent_to_the_proxy_and_never_shown(
    proxy: Proxy, service: int, trusting: ssl.SSLContext, clock: FakeClock
) -> None:
    url = f"http://user:s3cret-proxy-pass@127.0.0.1:{proxy.port}"
    session = session_to(service, clock, proxy=url, ssl=trusting)
    transport = session._state.transport
    assert isinstance(transport, AiohttpTransport)
    assert transport.proxy == f"http://user:***@127.0.0.1:{proxy.port}"
    async with session:
        await session.balance()
    expected = base64.b64encode(b"user:s3cret-proxy-pass")
    assert b"Proxy-Authorization: Basic " + expected in proxy.heads[0]
    assert "s3cret" not in repr(session)


async def test_proxy_from_the_environment_and_no_proxy(
    proxy: Proxy,
    service: int,
    trusting: ssl.SSLContext,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with session_to(service, clock, trust_env=True, ssl=trusting) as session:
        assert (await session.balance()).credits == 7.5
    assert len(proxy.heads) == 1
    # NO_PROXY names the host: it is reached directly (and api.test does not resolve).
    monkeypatch.setenv("NO_PROXY", HOST)
    async with session_to(
        service, clock, trust_env=True, ssl=trusting, retry=RetryPolicy(max_attempts=1)
    ) as session:
        with pytest.raises(APIConnectionError, match=f"cannot connect to https://{HOST}"):
            await session.balance()
    assert len(proxy.heads) == 1  # the proxy saw nothing more
    # Without trust_env the environment is not read at all.
    monkeypatch.delenv("NO_PROXY")
    async with session_to(
        service, clock, ssl=trusting, retry=RetryPolicy(max_attempts=1)
    ) as session:
        with pytest.raises(APIConnectionError):
            await session.balance()
    assert len(proxy.heads) == 1


async def test_an_unknown_ca_is_a_typed_error_and_not_retried(
    proxy: Proxy, service: int, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with session_to(service, clock, proxy=proxy.url) as session:  # default trust store
        with pytest.raises(APIConnectionError, match="certificate verification failed") as info:
            await session.balance()
    assert info.value.attempts == 1
    assert info.value.retryable is False
    assert len(proxy.heads) == 1  # one attempt only
    assert "retrying" not in caplog.text
    assert KEY not in str(info.value)


async def test_request_id_is_in_the_error_to_quote_to_support(
    service: int, proxy: Proxy, trusting: ssl.SSLContext, clock: FakeClock
) -> None:
    async with StabilitySession(
        "sk-not-the-right-key-0123456789",
        base_url=f"https://{HOST}:{service}",
        proxy=proxy.url,
        ssl=trusting,
        clock=clock,
        sleep=clock.sleep,
    ) as session:
        with pytest.raises(AuthenticationError) as info:
            await session.balance()
    assert info.value.request_id == "3f2c9a1b"
    assert str(info.value) == "401 unauthorized: bad key (request id 3f2c9a1b)"


async def test_clear_text_only_to_loopback_whatever_the_proxy(proxy: Proxy) -> None:
    with pytest.raises(StabilityError, match="clear-text"):
        StabilitySession(KEY, base_url="http://api.example", proxy=proxy.url)
    transport = AiohttpTransport(route=Route(proxy=proxy.url, trust_env=True))
    # A loopback target is never sent through a proxy: the key would leave the machine.
    assert transport._route.proxy_for("http://127.0.0.1:8700/v1/user/balance") is None
    assert transport._route.proxy_for("http://localhost:8700/v1/user/balance") is None
    assert transport._route.proxy_for(f"https://{HOST}/v1/user/balance") == proxy.url


def test_certificate_checks_cannot_be_turned_off() -> None:
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="verify certificates"):
        StabilitySession(KEY, ssl=unverified)
    with pytest.raises(TypeError, match="ssl"):
        StabilitySession(KEY, ssl=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="proxy"):
        StabilitySession(KEY, proxy="socks5://127.0.0.1:1080")
    with pytest.raises(ValueError, match="transport"):
        StabilitySession(KEY, transport=AiohttpTransport(), proxy="http://127.0.0.1:3128")


async def test_a_dead_proxy_is_named_as_such(clock: FakeClock) -> None:
    port = free_port()  # nothing listens there
    async with session_to(
        443,
        clock,
        proxy=f"http://user:s3cret@127.0.0.1:{port}",
        retry=RetryPolicy(max_attempts=2),
    ) as session:
        with pytest.raises(APIConnectionError) as info:
            await session.balance()
    assert str(info.value) == (
        f"cannot connect to the proxy http://user:***@127.0.0.1:{port} (connection refused)"
        " (after 2 attempts)"
    )


async def test_tls_to_a_clear_text_server_says_so_and_is_not_retried(
    emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    async with StabilitySession(
        key,
        base_url=emulator.base_url.replace("http://", "https://"),
        sleep=clock.sleep,
        clock=clock,
    ) as session:
        with pytest.raises(APIConnectionError) as info:
            await session.balance()
    assert info.value.attempts == 1
    assert info.value.retryable is False
    assert str(info.value).startswith(
        f"TLS handshake with {emulator.base_url.replace('http://', 'https://')} failed ("
    )
    assert "WRONG_VERSION_NUMBER" in str(info.value)
    assert "is it an http:// server" in str(info.value)
