"""The request and response that pass through middlewares, and the handler types.

A middleware is ``async def middleware(request, handler) -> Response``. It may
change the request with :func:`attrs.evolve` before calling ``handler``, answer
without calling it at all, or look at the response on its way back. The
transport has read the whole body and released the connection before a
middleware sees the response, so no middleware ever holds a connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import attrs

__all__ = ["Handler", "Middleware", "Request", "Response", "mask_secret"]


def mask_secret(secret: str) -> str:
    """Show enough of a secret to tell keys apart, never enough to use it.

    Long keys keep their last four characters (``sk-…abcd``); short ones show nothing.
    """
    if secret.startswith("Bearer "):
        secret = secret[7:]
    if len(secret) >= 20:
        prefix = "sk-" if secret.startswith("sk-") else ""
        return f"{prefix}…{secret[-4:]}"
    return "…"


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
        timeout: seconds this attempt may take, from sending to the last body byte,
            already cut to what the call's deadline leaves.
    """

    method: str
    url: str
    headers: Mapping[str, str] = attrs.field(repr=_mask_headers)
    timeout: float


@attrs.frozen
class Response:
    """One HTTP response, read whole; its connection is already released.

    Attributes:
        status: the HTTP status.
        headers: the response headers (case-insensitive when they come from aiohttp).
        body: the whole body, as bytes.
        attempt: which attempt of the call this answers, counted from 1.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    attempt: int = 1


Handler = Callable[[Request], Awaitable[Response]]
"""Sends a request on and returns its response: the next middleware, or the transport."""

Middleware = Callable[[Request, Handler], Awaitable[Response]]
"""Sees every attempt: ``async def middleware(request, handler) -> Response``."""
