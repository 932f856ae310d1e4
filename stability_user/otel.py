"""OpenTelemetry traces and metrics for every call: an opt-in middleware.

Install the extra (``pip install 'stability-user[otel]'``) and give the session
the middleware; it reports to the global tracer and meter providers your
OpenTelemetry setup installed, or to the ones you pass::

    from stability_user import StabilitySession
    from stability_user.otel import OpenTelemetryMiddleware

    async with StabilitySession(middlewares=[OpenTelemetryMiddleware()]) as session:
        balance = await session.balance()

This module imports the OpenTelemetry API only, never the SDK. With no SDK
configured, the spans and instruments are the API's no-ops: nothing is
recorded, and an attempt costs a few dictionary operations more.

The design follows OpenTelemetry's stable HTTP semantic conventions: one CLIENT
span per HTTP request actually sent, and a logical span above them for the
call that may send several.

**One span per call.** ``session.balance()`` and ``session.account()`` each get an
INTERNAL span named ``stability.balance`` / ``stability.account``, from before
the first attempt until the model (or the final error) is returned: rate-limit
waits, retries and the waits between them included. INTERNAL, not CLIENT,
because the CLIENT spans are its attempts: a backend counts each CLIENT span as
a request to the service, and two for one request would double the count.

**One span per attempt.** Each attempt is a CLIENT span, child of the call's,
named ``{method} {url.template}`` (``GET /v1/user/balance``), with
``stability.attempt`` (1, 2, 3...) and, from the second attempt on,
``http.request.resend_count`` (1, 2...). Its status code, or the error when no
response came (``stability_user.APITimeoutError``...), is on it, so each retry
is visible with why it failed.

**Waits.** When a call retries, the call span gets a ``stability.retry`` event,
stamped when the wait began (the end of the failed attempt), with the attempt
that follows (``stability.attempt``), the seconds waited until it started
(``stability.retry.wait``: the retry policy's wait and any rate-limit wait)
and what caused it (``error.type`` of the failed attempt, e.g. ``"503"``). In a
trace viewer the wait is also the gap between two attempt spans.

**The outcome.** The call span ends with ``stability.attempts`` (attempts sent),
and the final ``http.response.status_code`` and ``error.type``: the status as a
string for an error answer (``"429"``), else the error's class
(``stability_user.ResponseValidationError``, ``stability_user.APIConnectionError``),
with the span's status set to error and an ``exception`` event (type and
message, without a stack). A ``RateLimitError`` raised by the client's own rate
limiter without sending (its wait was longer than the retry policy allows) has
no status code: ``error.type`` is ``stability_user.RateLimitError`` and
``stability.rate_limit.refused`` is ``true``. ``stability.retry_after`` carries
the seconds a ``RateLimitError`` or ``ServerError`` named. A cancelled call (a
bulk run left early) gets ``error.type`` ``asyncio.exceptions.CancelledError``
but not the error status: nothing failed.

**Attributes.** Both spans carry ``http.request.method`` (``_OTHER`` and
``http.request.method_original`` for a method outside the standard ones),
``server.address``, ``server.port``, ``url.full`` (never with credentials, a
query or a fragment) and ``url.template`` (the path: the API's paths have no
variable part); the call span also ``stability.operation.name`` (``balance``).
An attempt that got an answer has ``stability.request_id``, the service's
``x-request-id`` to quote to its support.

**Metrics.** ``http.client.request.duration`` (histogram, seconds, one point per
attempt: ``http.request.method``, ``server.address``, ``server.port``,
``url.template``, ``http.response.status_code``, ``error.type``), as the HTTP
conventions define it; ``stability.client.operation.duration`` (histogram,
seconds, one per call, waits included: ``stability.operation.name`` with the
same server attributes, the final status code and ``error.type``, and
``stability.rate_limit.refused`` on a refused call); ``stability.client.retries``
(counter, ``{retry}``, one per attempt after the first: the operation, the
server, and the ``error.type`` that caused it).

**Secrets.** No header is recorded, and the API key never is: it is read only
to redact it, once more, from the text that goes on a span (an error's message,
a request id), whatever the library already did. The ``Organization`` header's
value is recorded only with ``record_organization=True``, as
``stability.organization.id`` on the spans, and is redacted from that text
otherwise. It never goes on a metric: a series per organization would grow with
the organizations.

**No duplicate spans.** Around each attempt the middleware sets OpenTelemetry's
"suppress HTTP instrumentation" context key (``opentelemetry.context``'s
shared key, the one ``opentelemetry.instrumentation.utils``'s
``suppress_http_instrumentation()`` sets and ``is_http_instrumentation_enabled()``
reads), so an HTTP client instrumentation you run, such as
``opentelemetry-instrumentation-aiohttp-client`` (0.60b0 and later honour it),
adds no second CLIENT span (nor a second ``http.client.request.duration``
point) for the same request. Other aiohttp requests of your program keep theirs.

**Propagation.** Off by default: the service is a third party, and the trace's
IDs are yours. With ``propagate=True`` each attempt carries the trace context
of its span (``traceparent`` and whatever else the global propagator injects),
as the aiohttp instrumentation would have: for a gateway or proxy of yours that
joins the trace.

**Where to put it.** First in ``middlewares``, so its spans cover the other
middlewares; after any middleware that answers requests itself (a cache), so
that a CLIENT span is a request that really went out.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ._endpoints import ENDPOINTS
from ._errors import APIError, RateLimitError, ResponseValidationError
from ._http import Handler, Request, Response, header
from ._secrets import redact
from ._version import __version__

__all__ = ["OpenTelemetryMiddleware"]

_SCOPE: Final = "stability_user"
# The HTTP conventions (stable since 1.23) with url.template, still in development.
_SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.26.0"

# The one key every HTTP instrumentation checks before making a span. It lives in
# the API (opentelemetry-instrumentation's suppress_http_instrumentation() sets
# this same object), so setting it needs nothing beyond the API. Should an API
# release move it, a key of this module's own suppresses nothing but breaks
# nothing (and the test of the suppression says so).
_SUPPRESS_HTTP: Final[str] = getattr(
    otel_context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None
) or otel_context.create_key("stability_user.suppress_http_instrumentation")

_KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# The HTTP conventions' advice for http.client.request.duration, in seconds.
_REQUEST_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
# A call may wait out a lockout (60 s by default) between its attempts.
_OPERATION_BUCKETS: Final = (*_REQUEST_BUCKETS, 30.0, 60.0, 120.0, 300.0)
_TARGETS_KEPT: Final = 256  # parsed URLs kept; cleared when full (a few are used)

_METHOD: Final = "http.request.method"
_METHOD_ORIGINAL: Final = "http.request.method_original"
_STATUS_CODE: Final = "http.response.status_code"
_RESEND_COUNT: Final = "http.request.resend_count"
_ERROR_TYPE: Final = "error.type"
_SERVER_ADDRESS: Final = "server.address"
_SERVER_PORT: Final = "server.port"
_URL_FULL: Final = "url.full"
_URL_TEMPLATE: Final = "url.template"
_ATTEMPT: Final = "stability.attempt"
_ATTEMPTS: Final = "stability.attempts"
_OPERATION: Final = "stability.operation.name"
_ORGANIZATION: Final = "stability.organization.id"
_REQUEST_ID: Final = "stability.request_id"
_RETRY_AFTER: Final = "stability.retry_after"
_RETRY_WAIT: Final = "stability.retry.wait"
_REFUSED: Final = "stability.rate_limit.refused"
_RETRY_EVENT: Final = "stability.retry"
_OUTCOME: Final = frozenset({_STATUS_CODE, _ERROR_TYPE, _REFUSED})  # known when a span ends

_Attributes = dict[str, AttributeValue]


@attrs.frozen
class _Target:
    """What a request's method and URL say, parsed once per URL."""

    call_name: str
    attempt_name: str
    call_attributes: Mapping[str, AttributeValue]  # on the call's span
    attempt_attributes: Mapping[str, AttributeValue]  # on each attempt's span
    request_metric: Mapping[str, AttributeValue]  # http.client.request.duration
    operation_metric: Mapping[str, AttributeValue]  # the operation's duration, retries


def _target(method: str, url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    netloc = parts.netloc.rpartition("@")[2]  # never the credentials
    path = parts.path or "/"
    try:
        port = parts.port
        if port is None:
            port = _DEFAULT_PORTS.get(scheme)
    except ValueError:  # out of range: no port rather than a wrong one
        port = None
    operation = next(
        (e.name for e in ENDPOINTS if e.method == method and path.endswith(f"/{e.path}")),
        "request",
    )
    server: _Attributes = {_SERVER_ADDRESS: parts.hostname or ""}
    if port is not None:
        server[_SERVER_PORT] = port
    known = method in _KNOWN_METHODS
    methods: _Attributes = {_METHOD: method} if known else {_METHOD: "_OTHER"}
    span_methods = methods if known else {**methods, _METHOD_ORIGINAL: method}
    attempt_attributes: _Attributes = {
        **span_methods,
        **server,
        _URL_FULL: f"{scheme}://{netloc}{path}",
        _URL_TEMPLATE: path,
    }
    return _Target(
        call_name=f"stability.{operation}",
        attempt_name=f"{method if known else 'HTTP'} {path}",
        call_attributes={_OPERATION: operation, **attempt_attributes},
        attempt_attributes=attempt_attributes,
        request_metric={**methods, **server, _URL_TEMPLATE: path},
        operation_metric={_OPERATION: operation, **methods, **server},
    )


def _type_name(error: BaseException) -> str:
    """The class's canonical name: the library's errors under their public module."""
    cls = type(error)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module.startswith("stability_user."):
        module = "stability_user"
    return f"{module}.{cls.__qualname__}"


@attrs.frozen
class _Ended:
    """How and when an attempt ended: what a retry after it reports."""

    cause: str  # error.type, or the status: why a retry followed
    at: float  # perf_counter()
    at_ns: int  # the same moment as a span timestamp


@attrs.define
class _Call:
    """What a call's span learns from its attempts (one call, one task: no lock)."""

    span: trace.Span
    attempts: int = 0
    status: int | None = None
    last: _Ended | None = None  # the last attempt seen
    headers: Mapping[str, str] | None = None  # of the last response, to tell a refusal


def _refused(error: RateLimitError, call: _Call) -> bool:
    """A ``RateLimitError`` of the client's own limiter: nothing sent, nothing answered."""
    # The library's documented marks, and not the headers of the last answer seen
    # (a hostile server's bare 429 would have both marks).
    return error.error is None and not error.headers and error.headers is not call.headers


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
    """

    __slots__ = (
        "_call",
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
    ) -> None:
        """Get a tracer and create the instruments; nothing is sent until a call."""
        self._tracer = trace.get_tracer(
            _SCOPE, __version__, tracer_provider, schema_url=_SCHEMA_URL
        )
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider, schema_url=_SCHEMA_URL)
        self._request_duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=_REQUEST_BUCKETS,
        )
        self._operation_duration = meter.create_histogram(
            "stability.client.operation.duration",
            unit="s",
            description="Duration of calls to the Stability user API, retries and waits included.",
            explicit_bucket_boundaries_advisory=_OPERATION_BUCKETS,
        )
        self._retries = meter.create_counter(
            "stability.client.retries",
            unit="{retry}",
            description="Requests sent again after a failed attempt.",
        )
        self._record_organization = bool(record_organization)
        self._propagate = bool(propagate)
        self._targets: dict[tuple[str, str], _Target] = {}
        self._call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
            "stability_user.otel.call", default=None
        )

    def __repr__(self) -> str:
        """The options."""
        return (
            f"OpenTelemetryMiddleware(record_organization={self._record_organization}, "
            f"propagate={self._propagate})"
        )

    def _target(self, request: Request) -> _Target:
        key = (request.method, request.url)
        target = self._targets.get(key)
        if target is None:
            if len(self._targets) >= _TARGETS_KEPT:
                self._targets.clear()
            target = self._targets[key] = _target(*key)
        return target

    def _clean(self, text: str, request: Request) -> str:
        """Text from the service or an error, without the key (nor the organization)."""
        organization = (
            None if self._record_organization else header(request.headers, "Organization")
        )
        return redact(text, (request.api_key, organization))

    def _span_attributes(self, base: Mapping[str, AttributeValue], request: Request) -> _Attributes:
        attributes = dict(base)
        if self._record_organization:
            organization = header(request.headers, "Organization")
            if organization:
                attributes[_ORGANIZATION] = organization
        return attributes

    def _failed(self, span: trace.Span, error: BaseException, request: Request) -> None:
        """Mark ``span`` failed by ``error``; a cancellation is not an error of the call."""
        if isinstance(error, Exception):
            message = self._clean(str(error), request)
            span.set_status(Status(StatusCode.ERROR, message))
            span.add_event(
                "exception", {"exception.type": _type_name(error), "exception.message": message}
            )

    async def around_call(
        self, request: Request, *, proceed: Callable[[Request], Awaitable[Any]]
    ) -> Any:
        """Wrap one whole call (every attempt and wait) in its span; time it."""
        target = self._target(request)
        began = time.perf_counter()
        with self._tracer.start_as_current_span(
            target.call_name,
            kind=SpanKind.INTERNAL,
            attributes=self._span_attributes(target.call_attributes, request),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            call = _Call(span)
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
        call: _Call,
        target: _Target,
        request: Request,
        began: float,
        error: BaseException | None,
    ) -> None:
        elapsed = time.perf_counter() - began
        attributes = dict(target.operation_metric)
        status = call.status
        if error is not None:
            status = None
            error_type = _type_name(error)
            if isinstance(error, RateLimitError) and _refused(error, call):
                attributes[_REFUSED] = True
            elif isinstance(error, APIError):
                status, error_type = error.status, str(error.status)
            elif isinstance(error, ResponseValidationError):
                status = error.status
            attributes[_ERROR_TYPE] = error_type
        if status is not None:
            attributes[_STATUS_CODE] = status
        self._operation_duration.record(elapsed, attributes)
        span = call.span
        if span.is_recording():
            span.set_attribute(_ATTEMPTS, call.attempts)
            span.set_attributes({k: v for k, v in attributes.items() if k in _OUTCOME})
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                span.set_attribute(_RETRY_AFTER, float(retry_after))
            if error is not None:
                self._failed(span, error, request)

    async def __call__(self, request: Request, handler: Handler) -> Response:
        """Send one attempt in a CLIENT span, HTTP instrumentation suppressed under it."""
        target = self._target(request)
        call = self._call.get()
        attempt = request.attempt
        attributes = self._span_attributes(target.attempt_attributes, request)
        attributes[_ATTEMPT] = attempt
        if attempt > 1:
            attributes[_RESEND_COUNT] = attempt - 1
            self._retried(call, target, attempt)
        span = self._tracer.start_span(
            target.attempt_name, kind=SpanKind.CLIENT, attributes=attributes
        )
        ctx = otel_context.set_value(_SUPPRESS_HTTP, True, trace.set_span_in_context(span))
        sent = request
        if self._propagate:
            headers = dict(request.headers)
            propagate.inject(headers, context=ctx)
            sent = attrs.evolve(request, headers=headers)
        began = time.perf_counter()
        token = otel_context.attach(ctx)
        try:
            response = await handler(sent)
        except BaseException as exc:
            otel_context.detach(token)
            self._end_attempt(span, request, exc, call=call, target=target, began=began)
            raise
        otel_context.detach(token)
        self._end_attempt(span, request, response, call=call, target=target, began=began)
        return response

    def _retried(self, call: _Call | None, target: _Target, attempt: int) -> None:
        """Count a retry; on the call's span, mark the wait that led to it."""
        last = call.last if call is not None else None
        attributes = dict(target.operation_metric)
        if last is not None:
            attributes[_ERROR_TYPE] = last.cause
        self._retries.add(1, attributes)
        if call is None or last is None or not call.span.is_recording():
            return
        event: _Attributes = {
            _ATTEMPT: attempt,
            _RETRY_WAIT: max(0.0, time.perf_counter() - last.at),
            _ERROR_TYPE: last.cause,
        }
        call.span.add_event(_RETRY_EVENT, event, timestamp=last.at_ns)

    def _end_attempt(
        self,
        span: trace.Span,
        request: Request,
        outcome: Response | BaseException,
        *,
        call: _Call | None,
        target: _Target,
        began: float,
    ) -> None:
        ended = time.perf_counter()
        ended_ns = time.time_ns()  # the span's end, and where a wait that follows begins
        status: int | None
        if isinstance(outcome, Response):
            status = outcome.status
            error_type = str(status) if status >= 400 else None
        else:
            # A body over the size cap: a response came, with this status.
            status = outcome.status if isinstance(outcome, ResponseValidationError) else None
            error_type = _type_name(outcome)
        attributes = dict(target.request_metric)
        if status is not None:
            attributes[_STATUS_CODE] = status
        if error_type is not None:
            attributes[_ERROR_TYPE] = error_type
        self._request_duration.record(ended - began, attributes)
        if call is not None:
            call.attempts = max(call.attempts, request.attempt)
            call.status = status
            call.last = _Ended(error_type or str(status), ended, ended_ns)
            call.headers = outcome.headers if isinstance(outcome, Response) else None
        if span.is_recording():
            span.set_attributes({k: v for k, v in attributes.items() if k in _OUTCOME})
            if isinstance(outcome, Response):
                request_id = outcome.request_id
                if request_id:
                    span.set_attribute(_REQUEST_ID, self._clean(request_id, request))
                if error_type is not None:
                    span.set_status(Status(StatusCode.ERROR))
            elif isinstance(outcome, Exception):
                span.set_status(Status(StatusCode.ERROR, self._clean(str(outcome), request)))
        span.end(ended_ns)
