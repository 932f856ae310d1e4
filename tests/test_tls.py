"""TLS and proxies on loopback: verification always on, every proxy secret redacted.

A real TLS server whose certificate the client does not trust; a TLS-inspecting
proxy (:mod:`tests.inspecting`) that answers inside its tunnels and echoes the
credentials it was given, in every form, into the body and ``x-request-id``;
``HTTPS_PROXY`` values that do not parse. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import attrs
import pytest
import trustme
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stability_user import (
    APIConnectionError,
    AuthenticationError,
    RetryPolicy,
    StabilityError,
    StabilitySession,
)
from stability_user._http import Handler, Request, Response
from stability_user._secrets import escape_controls
from stability_user.otel import OpenTelemetryMiddleware
from stability_user.testing import StabilityEmulator

from .conftest import KEY
from .inspecting import HOST, InspectingProxy, inspecting_proxy, password_forms
from .processes import run_cli

# -- verification cannot be turned off by an http_session -------------------------


@attrs.define
class TLSService:
    """An HTTPS service on 127.0.0.1 with a certificate of the test CA; what it was sent."""

    port: int = 0
    authorizations: list[str] = attrs.Factory(list)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@pytest.fixture(name="tls_service")
async def _tls_service(ca: trustme.CA) -> AsyncIterator[TLSService]:
    service = TLSService()

    async def balance(request: web.Request) -> web.Response:
        service.authorizations.append(request.headers.get("Authorization", ""))
        return web.json_response({"credits": 7.5})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    app = web.Application()
    app.router.add_get("/v1/user/balance", balance)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    service.port = runner.addresses[0][1]
    try:
        yield service
    finally:
        await runner.cleanup()


def _not_verifying() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture(name="trusting")
def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.mark.parametrize("connector_ssl", ["ssl=False", "a context that does not verify"])
async def test_a_connector_that_does_not_verify_never_gets_the_key_to_an_untrusted_server(
    tls_service: TLSService, connector_ssl: str
) -> None:
    unverified: bool | ssl.SSLContext = False if connector_ssl == "ssl=False" else _not_verifying()
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=unverified)) as http_session,
        StabilitySession(KEY, base_url=tls_service.base_url, http_session=http_session) as session,
    ):
        with pytest.raises(APIConnectionError, match="certificate verification failed") as info:
            await session.balance()
    assert info.value.retryable is False
    assert tls_service.authorizations == []  # the key was never sent


async def test_the_same_http_session_reaches_a_server_it_is_told_to_trust(
    tls_service: TLSService, trusting: ssl.SSLContext
) -> None:
    # The control: the server and the session work; only verification stopped the key.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http_session,
        StabilitySession(
            KEY, base_url=tls_service.base_url, http_session=http_session, ssl=trusting
        ) as session,
    ):
        assert (await session.balance()).credits == 7.5
    assert tls_service.authorizations == [KEY]


# -- proxy credentials echoed inside a TLS-inspecting proxy's tunnel ----------------


@attrs.define
class Seen:
    """Every text the library produced while a call failed: what must hold no secret."""

    texts: list[str] = attrs.Factory(list)

    def leaks(self, secrets: list[str]) -> list[str]:
        forms = {f for s in secrets if s for f in (s, escape_controls(s))}
        return [t for t in self.texts if any(f in t for f in forms)]


class Responses:
    """A middleware keeping every response it sees (for their reprs and request ids)."""

    def __init__(self) -> None:
        self.seen: list[Response] = []

    async def __call__(self, request: Request, handler: Handler) -> Response:
        response = await handler(request)
        self.seen.append(response)
        return response


class LogRecords(logging.Handler):
    """Every record of the library's loggers, formatted, its arguments too."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage())
        self.texts.extend(repr(arg) for arg in (record.args or ()))


@attrs.define
class Traced:
    exporter: InMemorySpanExporter
    provider: TracerProvider

    def texts(self) -> Iterator[str]:
        for span in self.exporter.get_finished_spans():
            if span.status.description:
                yield span.status.description
            yield from (str(v) for v in (span.attributes or {}).values())
            for event in span.events:
                yield from (str(v) for v in (event.attributes or {}).values())


def _traced() -> Traced:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Traced(exporter, provider)


async def _call_through(proxy: InspectingProxy, password: str, trusting: ssl.SSLContext) -> Seen:
    """One call through ``proxy`` (with ``password``); every text it produced."""
    seen = Seen()
    responses = Responses()
    traced = _traced()
    records = LogRecords()
    library = logging.getLogger("stability_user")
    level = library.level
    library.addHandler(records)
    library.setLevel(logging.DEBUG)
    try:
        async with StabilitySession(
            KEY,
            base_url=f"https://{HOST}",
            proxy=proxy.url_with("proxy-user", password),
            ssl=trusting,
            retry=RetryPolicy(max_attempts=2, backoff_base=0.001, backoff_max=0.001),
            middlewares=[OpenTelemetryMiddleware(tracer_provider=traced.provider), responses],
        ) as session:
            with pytest.raises(AuthenticationError) as info:
                await session.balance()
            seen.texts.append(repr(session))
    finally:
        library.removeHandler(records)
        library.setLevel(level)
        traced.provider.shutdown()
    error = info.value
    seen.texts += [str(error), repr(error), repr(error.error), str(error.request_id)]
    for response in responses.seen:
        seen.texts += [repr(response), str(response.request_id)]
    seen.texts += records.texts
    seen.texts += traced.texts()
    assert len(responses.seen) == 2  # a 503 retried (a WARNING logged), then the 401
    assert error.request_id  # a request id there is, redacted
    return seen


def _secrets_sent(proxy: InspectingProxy) -> list[str]:
    """The secrets of the tunnels' Proxy-Authorization, in every form the proxy echoed."""
    return [form for auth in proxy.authorizations for form in password_forms(auth)]


NASTY = [
    "s3cret-proxy-pass",
    'p@ss:w/rd"q\\x%41',  # URL delimiters, a quote, a backslash, a %-escape of its own
    "a b&c<d>&amp;é",  # HTML's specials, an entity of its own, latin-1
    "pässwörd\x1b[2J\t",  # latin-1 and control characters
]


@pytest.mark.parametrize("password", NASTY)
async def test_proxy_credentials_echoed_inside_the_tunnel_are_never_shown(
    ca: trustme.CA, trusting: ssl.SSLContext, password: str
) -> None:
    async with inspecting_proxy(ca, [503, 401]) as proxy:
        seen = await _call_through(proxy, password, trusting)
        assert proxy.answered == 2
        basic = base64.b64encode(f"proxy-user:{password}".encode("latin-1")).decode()
        assert proxy.authorizations[0] == f"Basic {basic}"  # what aiohttp sent
        assert seen.leaks([password, basic, *_secrets_sent(proxy)]) == []
        assert any("[redacted]" in text for text in seen.texts)


PASSWORDS = st.text(st.characters(max_codepoint=0xFF), min_size=1)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=PASSWORDS)
def test_any_proxy_password_is_redacted_wherever_echoed(ca: trustme.CA, password: str) -> None:
    # Framed by a marker: a password of one letter would be "found" in every word.
    password = f"Q7j{password}Z9k"
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async def scenario() -> None:
        async with inspecting_proxy(ca, [503, 401]) as proxy:
            seen = await _call_through(proxy, password, trusting)
            assert seen.leaks([password, *_secrets_sent(proxy)]) == []

    asyncio.run(scenario())


@pytest.mark.parametrize("password", ["p€ss", "пароль", "🔑"])
def test_credentials_http_basic_cannot_carry_are_refused_at_once(password: str) -> None:
    # aiohttp would fail at the first request, with a UnicodeEncodeError holding them.
    url = InspectingProxy(trustme.CA(), port=3128).url_with("user", password)
    with pytest.raises(ValueError, match="cannot carry") as info:
        StabilitySession(KEY, proxy=url)
    assert password not in str(info.value)
    assert "http://user:***@127.0.0.1:3128" in str(info.value)


async def test_proxy_credentials_echoed_are_never_on_the_command_line(
    ca: trustme.CA, tmp_path: Path
) -> None:
    password = 'cli-p@ss "wörd" &amp; %41'
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    async with inspecting_proxy(ca, [503, 401]) as proxy:
        result = await run_cli(
            "--debug",
            "--base-url",
            f"https://{HOST}",
            "--proxy",
            proxy.url_with("proxy-user", password),
            "--ca-bundle",
            str(bundle),
            "--max-attempts",
            "2",
            "balance",
            env={"STABILITY_API_KEY": KEY},
        )
        assert result.code != 0
        assert "401" in result.err
        secrets = [password, *_secrets_sent(proxy)]
        lines = (result.out + result.err).splitlines()
        assert [line for line in lines if any(s in line for s in secrets)] == []


@pytest.mark.parametrize("output", ["text", "json"])
@pytest.mark.parametrize("given", ["--proxy", "HTTPS_PROXY"])
async def test_an_account_echoing_the_proxy_credentials_is_shown_without_them(
    ca: trustme.CA, tmp_path: Path, output: str, given: str
) -> None:
    password = 'cli-p@ss "wörd" &amp; %41'
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    async with inspecting_proxy(ca, [200]) as proxy:
        url = proxy.url_with("proxy-user", password)
        options = ["--proxy", url] if given == "--proxy" else []
        env = {"STABILITY_API_KEY": KEY, "NO_PROXY": "", "no_proxy": ""}
        if given == "HTTPS_PROXY":
            env["HTTPS_PROXY"] = url
        result = await run_cli(
            "--base-url",
            f"https://{HOST}",
            *options,
            "--ca-bundle",
            str(bundle),
            "account",
            *(["--json"] if output == "json" else []),
            env=env,
        )
        assert result.code == 0, result.err
        assert proxy.answered == 1
        secrets = [password, *_secrets_sent(proxy)]
        shown = result.out + result.err
        assert [s for s in secrets if s in shown] == []
        assert "[redacted]" in shown


# -- proxies from the environment ---------------------------------------------------


BAD_PROXIES = [
    ("http://user:hunter2@127.0.0.1:notaport", "its port is not a number"),
    ("http://user:hunter2@[::1", "it does not parse"),
    ("socks5://user:hunter2@127.0.0.1:1080", "must be an http:// proxy URL"),
    ("http://user:hunter2€@127.0.0.1:3128", "cannot carry"),
]


@pytest.fixture(name="no_proxy_environment")
def _no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("proxy", "problem"), BAD_PROXIES)
async def test_a_malformed_https_proxy_is_a_stability_error_naming_it(
    no_proxy_environment: pytest.MonkeyPatch, proxy: str, problem: str
) -> None:
    no_proxy_environment.setenv("HTTPS_PROXY", proxy)
    async with StabilitySession(KEY, base_url=f"https://{HOST}", trust_env=True) as session:
        with pytest.raises(StabilityError) as info:
            await session.balance()
    assert type(info.value) is StabilityError  # not a ValueError, nor a connection error
    message = str(info.value)
    assert message.startswith("HTTPS_PROXY ")
    assert problem in message
    assert "hunter2" not in message
    assert "hunter2" not in repr(info.value)
    assert info.value.__cause__ is None  # no traceback shows the parser's words
    assert "hunter2" not in repr(info.value.__context__)


@pytest.mark.parametrize(("proxy", "problem"), BAD_PROXIES)
async def test_a_malformed_https_proxy_is_one_line_of_the_command_line(
    proxy: str, problem: str
) -> None:
    result = await run_cli(
        "--base-url",
        f"https://{HOST}",
        "balance",
        env={"STABILITY_API_KEY": KEY, "HTTPS_PROXY": proxy},
    )
    assert result.code != 0
    assert result.out == ""
    (line,) = result.err.splitlines()
    assert "HTTPS_PROXY" in line
    assert problem in line
    assert "hunter2" not in line


async def test_an_http_session_trusting_the_environment_is_refused(
    no_proxy_environment: pytest.MonkeyPatch, emulator: StabilityEmulator, key: str
) -> None:
    # Such a session reads HTTP(S)_PROXY itself whenever the library sends directly:
    # a loopback service's key would go to the proxy in clear text, a malformed
    # HTTPS_PROXY would fail as a plain ValueError, and the proxy's password would
    # not be known to be redacted. StabilitySession(trust_env=True) is the way.
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    proxy = await asyncio.start_server(record, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    no_proxy_environment.setenv("HTTP_PROXY", f"http://user:hunter2@127.0.0.1:{port}")
    no_proxy_environment.setenv("HTTPS_PROXY", BAD_PROXIES[0][0])
    try:
        async with aiohttp.ClientSession(trust_env=True) as http_session:
            with pytest.raises(ValueError, match="trust_env") as info:
                async with StabilitySession(
                    key,
                    base_url=emulator.base_url,
                    http_session=http_session,
                    retry=RetryPolicy(max_attempts=1),
                ) as session:
                    await session.balance()
    finally:
        proxy.close()
        await proxy.wait_closed()
    assert heads == []  # the key never went to the proxy
    assert "hunter2" not in str(info.value)
