"""The request and response that pass through middlewares, and the handler types.

A middleware is ``async def middleware(request, handler) -> Response``. It may
change the request with :func:`attrs.evolve` before calling ``handler``, answer
without calling it at all, or look at the response on its way back. The
transport has read the whole body and released the connection before a
middleware sees the response, so no middleware ever holds a connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from ._secrets import display_text, mask_secret, redact

__all__ = [
    "AroundCall",
    "AroundSend",
    "Handler",
    "Middleware",
    "Request",
    "Response",
    "Transport",
    "header",
]

_REQUEST_ID_HEADER = "x-request-id"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` in any case: a middleware may answer with a plain dict."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def request_id_of(headers: Mapping[str, str], secrets: Iterable[str | None]) -> str | None:
    """The ``x-request-id`` in ``headers``, redacted of ``secrets`` and safe to print."""
    value = header(headers, _REQUEST_ID_HEADER)
    return display_text(value, secrets, limit=100) if value else None


def _mask_headers(headers: Mapping[str, str]) -> str:
    shown = {
        name: mask_secret(value) if name.lower() == "authorization" else value
        for name, value in headers.items()
    }
    return repr(shown)


@attrs.frozen
class Request:
    """One HTTP request, as the retry loop hands it down the middleware chain.

    Attributes:
        method: the HTTP method, e.g. ``"GET"``.
        url: the absolute URL, as a string.
        headers: the request headers; ``Authorization`` is masked in the ``repr``.
        timeout: seconds this attempt may take, from sending to the last body byte;
            the session cuts it to what the call's deadline leaves when it sends.
        attempt: which attempt of the call this is, counted from 1.
        deadline: when the whole call must have ended, on the session's clock, or
            ``None``. Nothing waits past it: not for a connection, not for the
            rate limit, not for an answer.
        max_retry_after: the longest this attempt may wait for its key's rate
            limit or lockout (the retry policy's); a longer wait refuses it unsent.
    """

    method: str
    url: str
    headers: Mapping[str, str] = attrs.field(repr=_mask_headers)
    timeout: float
    attempt: int = 1
    deadline: float | None = attrs.field(default=None, repr=False)
    max_retry_after: float = attrs.field(default=60.0, repr=False)

    @property
    def api_key(self) -> str | None:
        """The ``Authorization`` value sent, for redacting what the server echoes."""
        return self.headers.get("Authorization")


@attrs.frozen(repr=False)
class Response:
    """One HTTP response, read whole; its connection is already released.

    Its ``repr`` shows the headers with the API key redacted, should the server
    have echoed it in one.

    Attributes:
        status: the HTTP status.
        headers: the response headers (case-insensitive when they come from aiohttp).
        body: the whole body, as bytes.
        attempt: which attempt of the call this answers, counted from 1.
        request: the request it answers, when the transport gave it.
        secrets: other texts the answer may echo and nothing may show: the
            credentials of the proxy it came through (the key is the request's).
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    attempt: int = 1
    request: Request | None = attrs.field(default=None, eq=False)
    secrets: tuple[str, ...] = attrs.field(default=(), eq=False, repr=False)

    def answering(self, request: Request) -> Response:
        """This response, said to answer ``request`` (its attempt and request set).

        What ``attrs.evolve`` does, without looking the fields up on every call: a
        transport or middleware of the user's leaves them unset on each response.
        """
        if type(self) is not Response:  # a subclass keeps its class and its fields
            return attrs.evolve(self, attempt=request.attempt, request=request)
        return Response(
            self.status, self.headers, self.body, request.attempt, request, self.secrets
        )

    def secrets_sent(self) -> tuple[str | None, ...]:
        """Everything the answer must not show: the key sent, and :attr:`secrets`."""
        key = self.request.api_key if self.request is not None else None
        return (key, *self.secrets)

    @property
    def request_id(self) -> str | None:
        """The service's ``x-request-id``, made safe to print; ``None`` when absent."""
        return request_id_of(self.headers, self.secrets_sent())

    def __repr__(self) -> str:
        """Status, attempt, size and headers, every secret redacted wherever it was echoed."""
        secrets = self.secrets_sent()
        headers = {name: redact(value, secrets) for name, value in self.headers.items()}
        return (
            f"Response(status={self.status}, attempt={self.attempt}, "
            f"headers={headers!r}, body=<{len(self.body)} bytes>)"
        )


Handler = Callable[[Request], Awaitable[Response]]
"""Sends a request on and returns its response: the next middleware, or the transport."""

Middleware = Callable[[Request, Handler], Awaitable[Response]]
"""Sees every attempt: ``async def middleware(request, handler) -> Response``."""

AroundCall = Callable[..., Awaitable[Any]]
"""``async def around_call(request, *, proceed)``: wraps a whole call, retries included.

A middleware object with this method is called once per call (``proceed(request)``
runs every attempt and returns the model or raises the final error), as well as
once per attempt: how a tracing middleware opens one span over all attempts.
"""

AroundSend = Callable[..., Awaitable[Response]]
"""``async def around_send(request, *, send)``: wraps each request the moment it is sent.

A middleware object with this method is called with every request that has its
connection and its rate-limit slot, right before the transport sends it
(``send(request)`` returns the response): what an HTTP span or timer wraps, so
that neither the wait for a connection nor the wait for the rate limit counts
as the request's time, and an attempt the limiter refused is never seen. It may
add headers (trace context); the key it sends is the one the limiter counted.
"""


class Transport(Protocol):
    """What sends a :class:`Request` and returns a whole :class:`Response`.

    The default is the aiohttp transport; ``StabilitySession(transport=...)`` takes
    any object with these two methods (a test double, another HTTP library). It
    must read the whole body before returning, raise
    :class:`~stability_user.APIConnectionError` (or
    :class:`~stability_user.APITimeoutError`) when no response comes, and is
    closed by whoever created it.
    """

    async def __call__(self, request: Request) -> Response:
        """Send ``request`` and return its whole response."""

    async def aclose(self) -> None:
        """Release what the transport holds (connections)."""
