"""The OpenTelemetry middleware: a span per call, a CLIENT span per attempt, HTTP metrics."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from .._errors import APIError, RateLimitError, ResponseValidationError
from .._http import Handler, Request, Response, header
from .._secrets import redact
from .._types import Clock
from .._version import __version__

__all__ = ["OpenTelemetryMiddleware"]

from ._semconv import (
    ATTEMPT,
    ATTEMPTS,
    ERROR_TYPE,
    OPERATION_BUCKETS,
    ORGANIZATION,
    OUTCOME,
    REFUSED,
    REQUEST_BUCKETS,
    REQUEST_ID,
    RESEND_COUNT,
    RETRY_AFTER,
    RETRY_EVENT,
    RETRY_WAIT,
    SCHEMA_URL,
    SCOPE,
    STATUS_CODE,
    SUPPRESS_HTTP,
    TARGETS_KEPT,
    Attributes,
    Call,
    Ended,
    Target,
    parse_target,
    type_name,
)


class OpenTelemetryMiddleware:
    """A middleware that traces every call and attempt and records their metrics.

    ::

        session = StabilitySession(middlewares=[OpenTelemetryMiddleware()])

    What it records is described in :mod:`stability_user.otel`. One instance may
    serve any number of sessions and concurrent calls.

    Args:
        tracer_provider: where spans go; the global tracer provider by default
            (looked up at each span, so one installed later is used too).
        meter_provider: where metrics go; the global meter provider by default.
        record_organization: record the ``Organization`` header's value on the spans
            (``stability.organization.id``). Off by default: it names a customer.
        propagate: inject the attempt span's trace context into each request's
            headers (``traceparent``...), with the global propagator.
        clock: seconds for the durations and waits it measures; ``time.perf_counter``
            by default (tests give the clock the session waits on).
    """

    __slots__ = (
        "_call",
        "_clock",
        "_operation_duration",
        "_propagate",
        "_record_organization",
        "_request_duration",
        "_retries",
        "_targets",
        "_tracer",
    )

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        record_organization: bool = False,
        propagate: bool = False,
        clock: Clock = time.perf_counter,
    ) -> None:
        """Get a tracer and create the instruments; nothing is sent until a call."""
        self._clock = clock
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider, schema_url=SCHEMA_URL)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider, schema_url=SCHEMA_URL)
        self._request_duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=REQUEST_BUCKETS,
        )
        self._operation_duration = meter.create_histogram(
            "stability.client.operation.duration",
            unit="s",
            description="Duration of calls to the Stability user API, retries and waits included.",
            explicit_bucket_boundaries_advisory=OPERATION_BUCKETS,
        )
        self._retries = meter.create_counter(
            "stability.client.retries",
            unit="{retry}",
            description="Requests sent again after a failed attempt.",
        )
        self._record_organization = bool(record_organization)
        self._propagate = bool(propagate)
        self._targets: dict[tuple[str, str], Target] = {}
        self._call: contextvars.ContextVar[Call | None] = contextvars.ContextVar(
            "stability_user.otel.call", default=None
        )

    def __repr__(self) -> str:
        """The options."""
        return (
            f"OpenTelemetryMiddleware(record_organization={self._record_organization}, "
            f"propagate={self._propagate})"
        )

    def _target(self, request: Request) -> Target:
        key = (request.method, request.url)
        target = self._targets.get(key)
        if target is None:
            if len(self._targets) >= TARGETS_KEPT:
                self._targets.clear()
            target = self._targets[key] = parse_target(*key)
        return target

    def _clean(self, text: str, request: Request) -> str:
        """Text from the service or an error, without the key (nor the organization)."""
        organization = (
            None if self._record_organization else header(request.headers, "Organization")
        )
        return redact(text, (request.api_key, organization))

    def _span_attributes(self, base: Mapping[str, AttributeValue], request: Request) -> Attributes:
        attributes = dict(base)
        if self._record_organization:
            organization = header(request.headers, "Organization")
            if organization:
                attributes[ORGANIZATION] = organization
        return attributes

    def _failed(self, span: trace.Span, error: BaseException, request: Request) -> None:
        """Mark ``span`` failed by ``error``; a cancellation is not an error of the call."""
        if isinstance(error, Exception):
            message = self._clean(str(error), request)
            span.set_status(Status(StatusCode.ERROR, message))
            span.add_event(
                "exception", {"exception.type": type_name(error), "exception.message": message}
            )

    async def around_call(
        self, request: Request, *, proceed: Callable[[Request], Awaitable[Any]]
    ) -> Any:
        """Wrap one whole call (every attempt and wait) in its span; time it."""
        target = self._target(request)
        began = self._clock()
        with self._tracer.start_as_current_span(
            target.call_name,
            kind=SpanKind.INTERNAL,
            attributes=self._span_attributes(target.call_attributes, request),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            call = Call(span)
            token = self._call.set(call)
            try:
                result = await proceed(request)
            except BaseException as exc:
                self._end_call(call, target, request, began, exc)
                raise
            finally:
                self._call.reset(token)
            self._end_call(call, target, request, began, None)
            return result

    def _end_call(
        self,
        call: Call,
        target: Target,
        request: Request,
        began: float,
        error: BaseException | None,
    ) -> None:
        elapsed = self._clock() - began
        attributes = dict(target.operation_metric)
        status = call.status
        if error is not None:
            status = None
            error_type = type_name(error)
            if isinstance(error, RateLimitError) and not error.sent:
                attributes[REFUSED] = True
            elif isinstance(error, APIError):
                status, error_type = error.status, str(error.status)
            elif isinstance(error, ResponseValidationError):
                status = error.status
            attributes[ERROR_TYPE] = error_type
        if status is not None:
            attributes[STATUS_CODE] = status
        self._operation_duration.record(elapsed, attributes)
        span = call.span
        if span.is_recording():
            span.set_attribute(ATTEMPTS, call.attempts)
            span.set_attributes({k: v for k, v in attributes.items() if k in OUTCOME})
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                span.set_attribute(RETRY_AFTER, float(retry_after))
            if error is not None:
                self._failed(span, error, request)

    async def __call__(self, request: Request, handler: Handler) -> Response:
        """Pass each attempt on: its span opens in :meth:`around_send`, when it is sent."""
        return await handler(request)

    async def around_send(
        self, request: Request, *, send: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Send one request in a CLIENT span, HTTP instrumentation suppressed under it.

        It opens once the request has its connection and its rate-limit slot, so
        neither wait counts as the request's time, and an attempt the limiter
        refused has no span (the call's span says so).
        """
        target = self._target(request)
        call = self._call.get()
        attempt = request.attempt
        attributes = self._span_attributes(target.attempt_attributes, request)
        attributes[ATTEMPT] = attempt
        if attempt > 1:
            attributes[RESEND_COUNT] = attempt - 1
            self._retried(call, target, attempt)
        span = self._tracer.start_span(
            target.attempt_name, kind=SpanKind.CLIENT, attributes=attributes
        )
        ctx = otel_context.set_value(SUPPRESS_HTTP, True, trace.set_span_in_context(span))
        sent = request
        if self._propagate:
            headers = dict(request.headers)
            propagate.inject(headers, context=ctx)
            sent = attrs.evolve(request, headers=headers)
        began = self._clock()
        token = otel_context.attach(ctx)
        try:
            response = await send(sent)
        except BaseException as exc:
            otel_context.detach(token)
            self._end_attempt(span, request, exc, call=call, target=target, began=began)
            raise
        otel_context.detach(token)
        self._end_attempt(span, request, response, call=call, target=target, began=began)
        return response

    def _retried(self, call: Call | None, target: Target, attempt: int) -> None:
        """Count a retry; on the call's span, mark the wait that led to it."""
        last = call.last if call is not None else None
        attributes = dict(target.operation_metric)
        if last is not None:
            attributes[ERROR_TYPE] = last.cause
        self._retries.add(1, attributes)
        if call is None or last is None or not call.span.is_recording():
            return
        event: Attributes = {
            ATTEMPT: attempt,
            RETRY_WAIT: max(0.0, self._clock() - last.at),
            ERROR_TYPE: last.cause,
        }
        call.span.add_event(RETRY_EVENT, event, timestamp=last.at_ns)

    def _end_attempt(
        self,
        span: trace.Span,
        request: Request,
        outcome: Response | BaseException,
        *,
        call: Call | None,
        target: Target,
        began: float,
    ) -> None:
        ended = self._clock()
        ended_ns = time.time_ns()  # the span's end, and where a wait that follows begins
        status: int | None
        if isinstance(outcome, Response):
            status = outcome.status
            error_type = str(status) if status >= 400 else None
        else:
            # A body over the size cap: a response came, with this status.
            status = outcome.status if isinstance(outcome, ResponseValidationError) else None
            error_type = type_name(outcome)
        attributes = dict(target.request_metric)
        if status is not None:
            attributes[STATUS_CODE] = status
        if error_type is not None:
            attributes[ERROR_TYPE] = error_type
        self._request_duration.record(ended - began, attributes)
        if call is not None:
            call.attempts = max(call.attempts, request.attempt)
            call.status = status
            call.last = Ended(error_type or str(status), ended, ended_ns)
        if span.is_recording():
            span.set_attributes({k: v for k, v in attributes.items() if k in OUTCOME})
            if isinstance(outcome, Response):
                request_id = outcome.request_id
                if request_id:
                    span.set_attribute(REQUEST_ID, self._clean(request_id, request))
                if error_type is not None:
                    span.set_status(Status(StatusCode.ERROR))
            elif isinstance(outcome, Exception):
                span.set_status(Status(StatusCode.ERROR, self._clean(str(outcome), request)))
        span.end(ended_ns)
