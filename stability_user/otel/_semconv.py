"""The OpenTelemetry vocabulary: attribute names, buckets, and what a request's URL says.

Names follow OpenTelemetry's HTTP semantic conventions (stable since 1.23), with
``url.template`` (still in development) and the library's own ``stability.*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

import attrs
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from .._endpoints import ENDPOINTS

__all__ = [
    "ATTEMPT",
    "ATTEMPTS",
    "ERROR_TYPE",
    "OPERATION_BUCKETS",
    "ORGANIZATION",
    "OUTCOME",
    "REFUSED",
    "REQUEST_BUCKETS",
    "REQUEST_ID",
    "RESEND_COUNT",
    "RETRY_AFTER",
    "RETRY_EVENT",
    "RETRY_WAIT",
    "SCHEMA_URL",
    "SCOPE",
    "STATUS_CODE",
    "SUPPRESS_HTTP",
    "TARGETS_KEPT",
    "Attributes",
    "Call",
    "Ended",
    "Target",
    "parse_target",
    "type_name",
]

SCOPE: Final = "stability_user"
# The HTTP conventions (stable since 1.23) with url.template, still in development.
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.26.0"

# The one key every HTTP instrumentation checks before making a span. It lives in
# the API (opentelemetry-instrumentation's suppress_http_instrumentation() sets
# this same object), so setting it needs nothing beyond the API. Should an API
# release move it, a key of this module's own suppresses nothing but breaks
# nothing (and the test of the suppression says so).
SUPPRESS_HTTP: Final[str] = getattr(
    otel_context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None
) or otel_context.create_key("stability_user.suppress_http_instrumentation")

_KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# The HTTP conventions' advice for http.client.request.duration, in seconds.
REQUEST_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
# A call may wait out a lockout (60 s by default) between its attempts.
OPERATION_BUCKETS: Final = (*REQUEST_BUCKETS, 30.0, 60.0, 120.0, 300.0)
TARGETS_KEPT: Final = 256  # parsed URLs kept; cleared when full (a few are used)

_METHOD: Final = "http.request.method"
_METHOD_ORIGINAL: Final = "http.request.method_original"
STATUS_CODE: Final = "http.response.status_code"
RESEND_COUNT: Final = "http.request.resend_count"
ERROR_TYPE: Final = "error.type"
_SERVER_ADDRESS: Final = "server.address"
_SERVER_PORT: Final = "server.port"
_URL_FULL: Final = "url.full"
_URL_TEMPLATE: Final = "url.template"
ATTEMPT: Final = "stability.attempt"
ATTEMPTS: Final = "stability.attempts"
_OPERATION: Final = "stability.operation.name"
ORGANIZATION: Final = "stability.organization.id"
REQUEST_ID: Final = "stability.request_id"
RETRY_AFTER: Final = "stability.retry_after"
RETRY_WAIT: Final = "stability.retry.wait"
REFUSED: Final = "stability.rate_limit.refused"
RETRY_EVENT: Final = "stability.retry"
OUTCOME: Final = frozenset({STATUS_CODE, ERROR_TYPE, REFUSED})  # known when a span ends

Attributes = dict[str, AttributeValue]


@attrs.frozen
class Target:
    """What a request's method and URL say, parsed once per URL."""

    call_name: str
    attempt_name: str
    call_attributes: Mapping[str, AttributeValue]  # on the call's span
    attempt_attributes: Mapping[str, AttributeValue]  # on each attempt's span
    request_metric: Mapping[str, AttributeValue]  # http.client.request.duration
    operation_metric: Mapping[str, AttributeValue]  # the operation's duration, retries


def parse_target(method: str, url: str) -> Target:
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
    server: Attributes = {_SERVER_ADDRESS: parts.hostname or ""}
    if port is not None:
        server[_SERVER_PORT] = port
    known = method in _KNOWN_METHODS
    methods: Attributes = {_METHOD: method} if known else {_METHOD: "_OTHER"}
    span_methods = methods if known else {**methods, _METHOD_ORIGINAL: method}
    attempt_attributes: Attributes = {
        **span_methods,
        **server,
        _URL_FULL: f"{scheme}://{netloc}{path}",
        _URL_TEMPLATE: path,
    }
    return Target(
        call_name=f"stability.{operation}",
        attempt_name=f"{method if known else 'HTTP'} {path}",
        call_attributes={_OPERATION: operation, **attempt_attributes},
        attempt_attributes=attempt_attributes,
        request_metric={**methods, **server, _URL_TEMPLATE: path},
        operation_metric={_OPERATION: operation, **methods, **server},
    )


def type_name(error: BaseException) -> str:
    """The class's canonical name: the library's errors under their public module."""
    cls = type(error)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module.startswith("stability_user."):
        module = "stability_user"
    return f"{module}.{cls.__qualname__}"


@attrs.frozen
class Ended:
    """How and when an attempt ended: what a retry after it reports."""

    cause: str  # error.type, or the status: why a retry followed
    at: float  # the middleware's clock
    at_ns: int  # the same moment as a span timestamp


@attrs.define
class Call:
    """What a call's span learns from its attempts (one call, one task: no lock)."""

    span: trace.Span
    attempts: int = 0
    status: int | None = None
    last: Ended | None = None  # the last attempt seen
