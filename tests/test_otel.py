"""The OpenTelemetry middleware against the emulator, read back from the SDK's memory."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
import attrs
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from stability_user import (
    APIConnectionError,
    Balance,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    RetryPolicy,
    StabilitySession,
)
from stability_user._http import Handler, Request, Response
from stability_user.otel import OpenTelemetryMiddleware
from stability_user.testing import EmulatedOrganization, Fault, StabilityEmulator

from .conftest import KEY
from .fakes import FakeClock

BALANCE = "/v1/user/balance"
SCOPE = "stability_user"
SECRET_ORG = "org-secret-4f7d"
TINY_WAITS = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.01)


@attrs.define
class Telemetry:
    """An SDK tracer and meter provider that keep what they record in memory."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def middleware(self, **options: Any) -> OpenTelemetryMiddleware:
        return OpenTelemetryMiddleware(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )

    def spans(self, scope: str | None = SCOPE) -> list[ReadableSpan]:
        spans = self.exporter.get_finished_spans()
        return [
            s
            for s in spans
            if scope is None or (s.instrumentation_scope and s.instrumentation_scope.name == scope)
        ]

    def points(self, name: str, scope: str = SCOPE) -> list[Any]:
        """The data points of metric ``name``, cumulative since the start."""
        found: list[Any] = []
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scoped in resource.scope_metrics:
                if scoped.scope.name != scope:
                    continue
                for metric in scoped.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def units(self) -> dict[str, str]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            m.name: m.unit or ""
            for r in data.resource_metrics
            for s in r.scope_metrics
            if s.scope.name == SCOPE
            for m in s.metrics
        }

    def texts(self) -> Iterator[str]:
        """Every name, attribute value, event and status text recorded, spans and metrics."""
        for span in self.exporter.get_finished_spans():
            yield span.name
            yield from _values(attributes(span))
            for event in span.events:
                yield event.name
                yield from _values(attributes(event))
            if span.status.description:
                yield span.status.description
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scoped in resource.scope_metrics:
                for metric in scoped.metrics:
                    for point in metric.data.data_points:
                        yield from _values(attributes(point))


def attributes(item: Any) -> dict[str, Any]:
    """A span's, event's or data point's attributes, as a plain dict."""
    return dict(item.attributes or {})


def _values(attributes: Mapping[str, Any]) -> Iterator[str]:
    for name, value in attributes.items():
        yield name
        if isinstance(value, (tuple, list)):
            yield from (str(v) for v in value)
        else:
            yield str(value)


@pytest.fixture(name="telemetry")
def _telemetry() -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(exporter, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def traced(
    emulator: StabilityEmulator,
    key: str,
    *middlewares: Any,
    clock: FakeClock | None = None,
    **options: Any,
) -> StabilitySession:
    """A session on the emulator with ``middlewares``; the fake clock's waits, if given."""
    if clock is not None:
        options.setdefault("sleep", clock.sleep)
        options.setdefault("clock", clock)
    options.setdefault("retry", RetryPolicy(max_attempts=3))
    return StabilitySession(
        key, base_url=emulator.base_url, middlewares=middlewares, timeout=5.0, **options
    )


class Below:
    """A step that runs where the transport sends, inside the attempt's span (``around_send``).

    Plain middlewares run above the connection and the rate limit, where no attempt
    span is open yet; a step here sees what the network sees.
    """

    def __init__(self, step: Any) -> None:
        self.step = step

    async def __call__(self, request: Request, handler: Handler) -> Response:
        return await handler(request)

    async def around_send(self, request: Request, *, send: Handler) -> Response:
        response: Response = await self.step(request, send)
        return response


def by_attempt(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    return sorted(attempts, key=lambda s: attributes(s)["stability.attempt"])


def only(spans: list[ReadableSpan], kind: SpanKind) -> ReadableSpan:
    (span,) = (s for s in spans if s.kind is kind)
    return span


# -- spans and metrics of a call that retries ---------------------------------


async def test_a_call_with_two_retries(
    telemetry: Telemetry, emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    emulator.script(503, 503, 200)
    middleware = telemetry.middleware(clock=clock)  # the session's clock: waits take no time
    async with traced(emulator, key, middleware, clock=clock, retry=TINY_WAITS) as session:
        assert await session.balance() == Balance(12.5)

    spans = telemetry.spans()
    assert len(spans) == 4
    call = only(spans, SpanKind.INTERNAL)
    attempts = by_attempt(spans)
    assert call.name == "stability.balance"
    assert [a.name for a in attempts] == [f"GET {BALANCE}"] * 3
    assert call.parent is None
    for attempt in attempts:
        assert attempt.parent is not None
        assert attempt.parent.span_id == call.context.span_id
        assert attempt.context.trace_id == call.context.trace_id
        assert call.start_time <= attempt.start_time <= attempt.end_time <= call.end_time  # type: ignore[operator]

    server = {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": emulator.port,
        "url.full": f"{emulator.base_url}{BALANCE}",
        "url.template": BALANCE,
    }
    # The emulator sends a request id with every answer, as the service does.
    ids = [r.request_id for r in emulator.requests]
    assert attributes(attempts[0]) == {
        **server,
        "stability.attempt": 1,
        "http.response.status_code": 503,
        "error.type": "503",
        "stability.request_id": ids[0],
    }
    assert attributes(attempts[1]) == {
        **server,
        "stability.attempt": 2,
        "http.request.resend_count": 1,
        "http.response.status_code": 503,
        "error.type": "503",
        "stability.request_id": ids[1],
    }
    assert attributes(attempts[2]) == {
        **server,
        "stability.attempt": 3,
        "http.request.resend_count": 2,
        "http.response.status_code": 200,
        "stability.request_id": ids[2],
    }
    assert [a.status.status_code for a in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]

    assert attributes(call) == {
        **server,
        "stability.operation.name": "balance",
        "stability.attempts": 3,
        "http.response.status_code": 200,
    }
    assert call.status.status_code is StatusCode.UNSET

    # Each wait is an event on the call's span, stamped when the wait began.
    retries = [e for e in call.events if e.name == "stability.retry"]
    assert [attributes(e)["stability.attempt"] for e in retries] == [2, 3]
    assert [attributes(e)["error.type"] for e in retries] == ["503", "503"]
    for event, before, after in zip(retries, attempts, attempts[1:], strict=False):
        wait = attributes(event)["stability.retry.wait"]
        assert isinstance(wait, float)
        assert wait == pytest.approx(0.01)  # TINY_WAITS' backoff, measured on the clock
        assert before.end_time <= event.timestamp <= after.start_time  # type: ignore[operator]

    # Metrics: one duration per attempt, one per call, one retry per resend.
    metric_server = {k: v for k, v in server.items() if k != "url.full"}
    durations = telemetry.points("http.client.request.duration")
    assert {(p.count, frozenset(attributes(p).items())) for p in durations} == {
        (
            2,
            frozenset(
                {**metric_server, "http.response.status_code": 503, "error.type": "503"}.items()
            ),
        ),
        (1, frozenset({**metric_server, "http.response.status_code": 200}.items())),
    }
    assert all(isinstance(p, HistogramDataPoint) for p in durations)
    assert durations[0].explicit_bounds[:3] == (0.005, 0.01, 0.025)  # the conventions' advice

    operation = {
        "stability.operation.name": "balance",
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": emulator.port,
    }
    (calls,) = telemetry.points("stability.client.operation.duration")
    assert calls.count == 1
    assert attributes(calls) == {**operation, "http.response.status_code": 200}
    assert calls.sum == pytest.approx(0.02)  # both waits are in it (the clock stands still else)

    (retried,) = telemetry.points("stability.client.retries")
    assert isinstance(retried, NumberDataPoint)
    assert retried.value == 2
    assert attributes(retried) == {**operation, "error.type": "503"}

    assert telemetry.units() == {
        "http.client.request.duration": "s",
        "stability.client.operation.duration": "s",
        "stability.client.retries": "{retry}",
    }


async def test_each_call_has_its_own_span_named_after_the_operation(
    telemetry: Telemetry, emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    async with traced(emulator, key, telemetry.middleware(), clock=clock) as session:
        tracer = trace.get_tracer("app", tracer_provider=telemetry.tracer_provider)
        with tracer.start_as_current_span("job") as job:
            await asyncio.gather(session.account(), session.balance())
    spans = telemetry.spans()
    calls = {s.name: s for s in spans if s.kind is SpanKind.INTERNAL}
    assert set(calls) == {"stability.account", "stability.balance"}
    for name, call in calls.items():
        assert call.parent is not None
        assert call.parent.span_id == job.get_span_context().span_id  # the caller's span
        (attempt,) = (s for s in spans if s.parent and s.parent.span_id == call.context.span_id)
        assert attempt.name == f"GET /v1/user/{name.rpartition('.')[2]}"
        assert attributes(attempt)["stability.attempt"] == 1
        assert "http.request.resend_count" not in attributes(attempt)
        assert attributes(call)["stability.operation.name"] == name.rpartition(".")[2]
    assert telemetry.points("stability.client.retries") == []


# -- how calls end -------------------------------------------------------------


async def test_a_rate_limit_error_raised_without_sending(
    telemetry: Telemetry, emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    emulator.script(Fault.respond(429, retry_after=30))
    policy = RetryPolicy(max_attempts=1, max_retry_after=10)
    async with traced(emulator, key, telemetry.middleware(), clock=clock, retry=policy) as session:
        with pytest.raises(RateLimitError, match="429"):
            await session.balance()  # the service's 429: sent
        with pytest.raises(RateLimitError, match="not sent"):
            await session.account()  # the client's own limiter: the lockout is on
    spans = telemetry.spans()
    answered = next(s for s in spans if s.name == "stability.balance")
    refused = next(s for s in spans if s.name == "stability.account")

    answered_attributes = attributes(answered)
    assert answered_attributes["http.response.status_code"] == 429
    assert answered_attributes["error.type"] == "429"
    assert answered_attributes["stability.retry_after"] == 30.0
    assert answered_attributes["stability.attempts"] == 1
    assert "stability.rate_limit.refused" not in answered_attributes
    assert answered.status.status_code is StatusCode.ERROR

    # Nothing went out: no attempt span, no status code, and a flag that says why.
    assert not [s for s in spans if s.parent and s.parent.span_id == refused.context.span_id]
    refused_attributes = attributes(refused)
    assert refused_attributes["error.type"] == "stability_user.RateLimitError"
    assert refused_attributes["stability.rate_limit.refused"] is True
    assert refused_attributes["stability.attempts"] == 0
    assert refused_attributes["stability.retry_after"] == 30.0
    assert "http.response.status_code" not in refused_attributes
    assert refused.status.status_code is StatusCode.ERROR
    assert "not sent" in (refused.status.description or "")
    (exception,) = refused.events
    assert exception.name == "exception"
    assert attributes(exception)["exception.type"] == "stability_user.RateLimitError"

    calls = {
        attributes(p)["stability.operation.name"]: attributes(p)
        for p in telemetry.points("stability.client.operation.duration")
    }
    assert calls["account"]["stability.rate_limit.refused"] is True
    assert calls["account"]["error.type"] == "stability_user.RateLimitError"
    assert "http.response.status_code" not in calls["account"]
    assert calls["balance"]["error.type"] == "429"
    assert len(telemetry.points("http.client.request.duration")) == 1  # the sent one only


async def test_connection_failures(
    telemetry: Telemetry, emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    # aiohttp itself may send a request again, once, when the connection closes at
    # once: two drops fail one attempt at least, six every attempt.
    emulator.script(Fault.drop(), Fault.drop())
    async with traced(emulator, key, telemetry.middleware(), clock=clock) as session:
        assert await session.balance() == Balance(12.5)
        emulator.script(*[Fault.drop()] * 6)
        with pytest.raises(APIConnectionError):
            await session.account()
    spans = telemetry.spans()
    recovered = next(s for s in spans if s.name == "stability.balance")
    failed = next(s for s in spans if s.name == "stability.account")

    first = next(
        s
        for s in spans
        if s.parent
        and s.parent.span_id == recovered.context.span_id
        and attributes(s)["stability.attempt"] == 1
    )
    assert attributes(first)["error.type"] == "stability_user.APIConnectionError"
    assert "http.response.status_code" not in attributes(first)
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description
    retry = next(e for e in recovered.events if e.name == "stability.retry")
    assert attributes(retry)["error.type"] == "stability_user.APIConnectionError"
    assert recovered.status.status_code is StatusCode.UNSET

    assert attributes(failed)["error.type"] == "stability_user.APIConnectionError"
    assert attributes(failed)["stability.attempts"] == 3
    assert "http.response.status_code" not in attributes(failed)
    assert failed.status.status_code is StatusCode.ERROR
    (exception,) = (e for e in failed.events if e.name == "exception")
    assert attributes(exception)["exception.type"] == "stability_user.APIConnectionError"
    assert "3 attempts" in attributes(exception)["exception.message"]
    assert [e.name for e in failed.events].count("stability.retry") == 2


async def test_a_body_that_fails_validation(
    telemetry: Telemetry, emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    emulator.script(Fault.malformed_json(), Fault.oversized())
    async with traced(emulator, key, telemetry.middleware(), clock=clock) as session:
        for _ in range(2):
            with pytest.raises(ResponseValidationError):
                await session.balance()
    spans = telemetry.spans()
    calls = [s for s in spans if s.kind is SpanKind.INTERNAL]
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    for call in calls:
        assert attributes(call)["error.type"] == "stability_user.ResponseValidationError"
        assert attributes(call)["http.response.status_code"] == 200
        assert call.status.status_code is StatusCode.ERROR
    malformed, oversized = sorted(attempts, key=lambda s: s.start_time or 0)
    # The malformed body came whole: the exchange itself went well.
    assert "error.type" not in attributes(malformed)
    assert malformed.status.status_code is StatusCode.UNSET
    # The oversized one was refused while it was read.
    assert attributes(oversized)["error.type"] == "stability_user.ResponseValidationError"
    assert attributes(oversized)["http.response.status_code"] == 200
    assert oversized.status.status_code is StatusCode.ERROR


async def test_a_cancelled_call_is_not_an_error(
    telemetry: Telemetry, emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    entered = asyncio.Event()

    async def hang(request: Request, handler: Handler) -> Response:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    async with traced(emulator, key, telemetry.middleware(), Below(hang), clock=clock) as session:
        task = asyncio.ensure_future(session.balance())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    spans = telemetry.spans()
    assert len(spans) == 2
    for span in spans:
        assert attributes(span)["error.type"] == "asyncio.exceptions.CancelledError"
        assert span.status.status_code is StatusCode.UNSET
        assert not span.events
    (call,) = telemetry.points("stability.client.operation.duration")
    assert attributes(call)["error.type"] == "asyncio.exceptions.CancelledError"


# -- secrets -------------------------------------------------------------------


async def echo_ids(request: Request, handler: Handler) -> Response:
    """A middleware whose service echoes the key and the organization in x-request-id."""
    response = await handler(request)
    echoed = f"req-{request.api_key}-{request.headers.get('Organization', '')}"
    return attrs.evolve(response, headers={**response.headers, "x-request-id": echoed})


@pytest.fixture(name="org_key")
def _org_key(emulator: StabilityEmulator) -> str:
    return emulator.add_account(
        organizations=[
            EmulatedOrganization("org-default", "A", is_default=True, credits=1.0),
            EmulatedOrganization(SECRET_ORG, "B", credits=2.0),
        ]
    )


async def run_organization_calls(
    telemetry: Telemetry,
    emulator: StabilityEmulator,
    key: str,
    clock: FakeClock,
    *,
    record_organization: bool,
) -> None:
    middleware = telemetry.middleware(record_organization=record_organization)
    emulator.script(503, 502)
    async with traced(emulator, key, middleware, Below(echo_ids), clock=clock) as session:
        assert await session.balance(organization=SECRET_ORG) == Balance(2.0)
        with pytest.raises(PermissionDeniedError, match=f"{SECRET_ORG}9"):
            await session.balance(organization=f"{SECRET_ORG}9")  # quoted in the message
        assert (await session.account()).email


async def test_the_key_and_the_organization_are_never_recorded(
    telemetry: Telemetry, emulator: StabilityEmulator, org_key: str, clock: FakeClock
) -> None:
    await run_organization_calls(telemetry, emulator, org_key, clock, record_organization=False)
    texts = list(telemetry.texts())
    assert len(telemetry.spans()) == 8  # 3 calls, 5 attempts
    assert texts
    for text in texts:
        assert org_key not in text
        assert org_key[3:] not in text
        assert SECRET_ORG not in text
    request_ids = [
        attributes(s)["stability.request_id"]
        for s in telemetry.spans()
        if "stability.request_id" in attributes(s)
    ]
    assert len(request_ids) == 5  # every attempt's, redacted
    assert all(str(r).startswith("req-[redacted]") for r in request_ids)
    assert not any("stability.organization.id" in attributes(s) for s in telemetry.spans())
    denied = next(
        s
        for s in telemetry.spans()
        if s.kind is SpanKind.INTERNAL and attributes(s).get("error.type") == "403"
    )
    assert "organization [redacted]" in (denied.status.description or "")


async def test_the_organization_is_recorded_on_spans_when_asked(
    telemetry: Telemetry, emulator: StabilityEmulator, org_key: str, clock: FakeClock
) -> None:
    await run_organization_calls(telemetry, emulator, org_key, clock, record_organization=True)
    for text in telemetry.texts():
        assert org_key not in text
        assert org_key[3:] not in text
    recorded = {
        s.name: attributes(s).get("stability.organization.id")
        for s in telemetry.spans()
        if s.kind is SpanKind.INTERNAL
    }
    assert recorded == {
        "stability.balance": f"{SECRET_ORG}9",  # the last balance call's
        "stability.account": None,
    }
    organizations = {
        attributes(s).get("stability.organization.id")
        for s in telemetry.spans()
        if s.kind is SpanKind.CLIENT
    }
    assert organizations == {SECRET_ORG, f"{SECRET_ORG}9", None}
    # Never on a metric: an organization per series would grow without bound.
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scoped in resource.scope_metrics:
            for metric in scoped.metrics:
                for point in metric.data.data_points:
                    assert not any(SECRET_ORG in str(v) for v in attributes(point).values())


# -- other instrumentation, propagation, no SDK ---------------------------------


@pytest.fixture(name="instrumented")
def _instrumented(telemetry: Telemetry) -> Iterator[None]:
    """The aiohttp client instrumentation on, as a user may run it; off again afterwards."""
    instrumentor = AioHttpClientInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    try:
        yield
    finally:
        instrumentor.uninstrument()


@pytest.mark.usefixtures("instrumented")
async def test_the_aiohttp_instrumentation_traces_the_library_s_own_requests(
    telemetry: Telemetry, emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    # Without the library's middleware, the instrumentation's trace config on the
    # library's own session sees every request, and propagates its context.
    emulator.script(503, 200)
    async with traced(emulator, key, clock=clock) as session:
        assert await session.balance() == Balance(12.5)
    spans = telemetry.spans("opentelemetry.instrumentation.aiohttp_client")
    assert len(spans) == 2  # one per request sent
    assert all(r.headers.get("traceparent") for r in emulator.requests)


@pytest.mark.usefixtures("instrumented")
async def test_no_duplicate_spans_under_the_aiohttp_instrumentation(
    telemetry: Telemetry, emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    aiohttp_scope = "opentelemetry.instrumentation.aiohttp_client"
    async with aiohttp.ClientSession() as http:  # instrumented: made after instrument()
        async with http.get(emulator.base_url + BALANCE, headers={"Authorization": key}) as r:
            assert r.status == 200
        assert len(telemetry.spans(aiohttp_scope)) == 1  # the instrumentation works
        emulator.script(503, 200, 503, 200)
        # The library's own aiohttp session, and one of the caller's.
        async with traced(emulator, key, telemetry.middleware(), clock=clock) as session:
            assert await session.balance() == Balance(12.5)
        own = telemetry.middleware()
        async with traced(emulator, key, own, clock=clock, http_session=http) as session:
            assert await session.balance() == Balance(12.5)
    assert len(telemetry.spans(aiohttp_scope)) == 1
    assert len(telemetry.spans(None)) == 1 + 2 * 3
    clients = [s for s in telemetry.spans(None) if s.kind is SpanKind.CLIENT]
    assert len(clients) == 1 + 2 * 2  # one per request sent
    # Nor a second duration point: the instrumentation recorded only its own request.
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    counts = [
        getattr(point, "count", 1)
        for resource in data.resource_metrics
        for scoped in resource.scope_metrics
        if scoped.scope.name == aiohttp_scope
        for metric in scoped.metrics
        if "duration" in metric.name
        for point in metric.data.data_points
    ]
    assert sum(counts) == 1


async def test_http_instrumentation_is_suppressed_inside_each_attempt_only(
    telemetry: Telemetry, emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    seen: list[tuple[bool, trace.Span]] = []

    async def probe(request: Request, handler: Handler) -> Response:
        seen.append((is_http_instrumentation_enabled(), trace.get_current_span()))
        return await handler(request)

    async with traced(emulator, key, telemetry.middleware(), Below(probe), clock=clock) as session:
        await session.balance()
    assert is_http_instrumentation_enabled()
    ((enabled, current),) = seen
    assert not enabled
    attempt = only(telemetry.spans(), SpanKind.CLIENT)
    assert current.get_span_context().span_id == attempt.context.span_id


async def test_trace_context_is_propagated_only_when_asked(
    telemetry: Telemetry, emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    emulator.script(503, 200)
    async with traced(emulator, key, telemetry.middleware(propagate=True), clock=clock) as session:
        await session.balance()
    attempts = by_attempt(telemetry.spans())
    sent = [r.headers.get("traceparent") for r in emulator.requests]
    assert sent == [
        f"00-{a.context.trace_id:032x}-{a.context.span_id:016x}-{a.context.trace_flags:02x}"
        for a in attempts
    ]
    async with traced(emulator, key, telemetry.middleware(), clock=clock) as session:
        await session.balance()
    assert "traceparent" not in emulator.requests[-1].headers


async def test_works_with_the_global_no_op_providers(
    emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    # Nothing in this suite installs an SDK globally: the API's no-op is in force.
    assert not trace.get_tracer("probe").start_span("probe").is_recording()
    middleware = OpenTelemetryMiddleware()
    assert repr(middleware) == "OpenTelemetryMiddleware(record_organization=False, propagate=False)"
    emulator.script(503, 200, Fault.respond(429, retry_after=30))
    policy = RetryPolicy(max_attempts=2, max_retry_after=10)
    async with traced(emulator, key, middleware, clock=clock, retry=policy) as session:
        assert await session.balance() == Balance(12.5)
        with pytest.raises(RateLimitError):
            await session.account()
        with pytest.raises(RateLimitError, match="not sent"):
            await session.account()


# -- the middleware on its own: URLs and methods ----------------------------------


async def answer(request: Request) -> Response:
    return Response(204, {}, b"", attempt=request.attempt, request=request)


async def test_its_send_span_on_its_own(telemetry: Telemetry) -> None:
    middleware = telemetry.middleware()
    request = Request(
        "PURGE",
        "https://user:pass@api.example.com/x/y?token=secret#part",
        {"Authorization": KEY},
        5.0,
        attempt=2,
    )
    assert (await middleware.around_send(request, send=answer)).status == 204
    (span,) = telemetry.spans()
    assert span.name == "HTTP /x/y"
    assert span.parent is None
    assert attributes(span) == {
        "http.request.method": "_OTHER",
        "http.request.method_original": "PURGE",
        "server.address": "api.example.com",
        "server.port": 443,
        "url.full": "https://api.example.com/x/y",
        "url.template": "/x/y",
        "stability.attempt": 2,
        "http.request.resend_count": 1,
        "http.response.status_code": 204,
    }
    (retried,) = telemetry.points("stability.client.retries")
    assert attributes(retried) == {
        "stability.operation.name": "request",
        "http.request.method": "_OTHER",
        "server.address": "api.example.com",
        "server.port": 443,
    }


@pytest.mark.parametrize(
    ("url", "address", "port", "full"),
    [
        ("http://[::1]/v1/user/account", "::1", 80, "http://[::1]/v1/user/account"),
        ("https://h.example:8443", "h.example", 8443, "https://h.example:8443/"),
        ("http://h.example:99999/a", "h.example", None, "http://h.example:99999/a"),
        ("ftp://h.example/a", "h.example", None, "ftp://h.example/a"),
    ],
)
async def test_urls(
    telemetry: Telemetry, url: str, address: str, port: int | None, full: str
) -> None:
    await telemetry.middleware().around_send(Request("GET", url, {}, 1.0), send=answer)
    (span,) = telemetry.spans()
    assert attributes(span)["server.address"] == address
    assert attributes(span).get("server.port") == port
    assert attributes(span)["url.full"] == full


async def test_an_attempt_answered_before_it(
    telemetry: Telemetry, emulator: StabilityEmulator, key: str, clock: FakeClock
) -> None:
    async def busy_once(request: Request, handler: Handler) -> Response:
        if request.attempt == 1:
            return Response(503, {}, b"", attempt=1, request=request)
        return await handler(request)

    async with traced(emulator, key, busy_once, telemetry.middleware(), clock=clock) as session:
        assert await session.balance() == Balance(12.5)
    call = only(telemetry.spans(), SpanKind.INTERNAL)
    attempt = only(telemetry.spans(), SpanKind.CLIENT)  # the one it saw
    assert attributes(attempt)["stability.attempt"] == 2
    assert attributes(call)["stability.attempts"] == 2
    assert not call.events  # it saw no wait begin
    (retried,) = telemetry.points("stability.client.retries")
    assert "error.type" not in attributes(retried)


async def test_an_error_from_another_middleware(telemetry: Telemetry) -> None:
    async def broken(request: Request) -> Response:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await telemetry.middleware().around_send(
            Request("GET", "https://h.example/", {}, 1.0), send=broken
        )
    (span,) = telemetry.spans()
    assert attributes(span)["error.type"] == "ValueError"
    assert span.status.description == "no"


async def test_many_urls_keep_a_bounded_cache(telemetry: Telemetry) -> None:
    middleware = telemetry.middleware()
    for n in range(300):
        await middleware.around_send(Request("GET", f"https://h{n}.example/", {}, 1.0), send=answer)
    assert 0 < len(middleware._targets) <= 256
    assert len(telemetry.spans()) == 300


def test_without_the_extra_the_import_says_what_to_install(tmp_path: pathlib.Path) -> None:
    # A module named like the API's package that fails to import stands for its absence.
    (tmp_path / "opentelemetry").mkdir()
    (tmp_path / "opentelemetry" / "__init__.py").write_text("raise ImportError('absent')\n")
    code = "import stability_user.otel"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 1
    assert "pip install 'stability-user[otel]'" in result.stderr
