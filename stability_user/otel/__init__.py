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

try:
    import opentelemetry.trace  # noqa: F401 - only to say what is missing, and how to get it
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the extra
    raise ImportError(
        "stability_user.otel needs the OpenTelemetry API: pip install 'stability-user[otel]'"
    ) from exc

from ._middleware import OpenTelemetryMiddleware

__all__ = ["OpenTelemetryMiddleware"]
