"""The aiohttp transport: sends a :class:`Request`, returns a fully read :class:`Response`.

This is the only module that talks to aiohttp. It reads every body whole (up to
the size cap) and releases the connection before returning, never follows a
redirect, and maps aiohttp's and asyncio's failures to the library's own errors
at this one boundary (``raise APIConnectionError(...) from exc``).
"""

from __future__ import annotations

import asyncio
from typing import Final

import aiohttp

from ._checks import check_count
from ._errors import APIConnectionError, APITimeoutError, ResponseValidationError, StabilityError
from ._http import Request, Response

__all__ = ["AiohttpTransport"]

_CHUNK: Final = 65536


class AiohttpTransport:
    """Sends requests over one aiohttp session, its own or the caller's.

    The session is created lazily, inside the running event loop, on first use;
    using the transport from another loop afterwards raises :class:`StabilityError`.
    A semaphore of ``max_connections`` slots is taken before each request, so the
    per-attempt timeout runs from sending, not from queueing for a connection:
    thousands of tasks may share one transport without timing out in the queue.
    """

    __slots__ = (
        "_closed",
        "_http_session",
        "_loop",
        "_max_body_size",
        "_max_connections",
        "_owns_session",
        "_slots",
        "_timeouts",
    )

    def __init__(
        self,
        *,
        http_session: aiohttp.ClientSession | None = None,
        max_connections: int = 100,
        max_body_size: int = 1_048_576,
    ) -> None:
        """Use ``http_session`` (never closed here) or create one lazily."""
        check_count("max_connections", max_connections)
        check_count("max_body_size", max_body_size)
        self._http_session = http_session
        self._owns_session = http_session is None
        self._max_connections = max_connections
        self._max_body_size = max_body_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._closed = False
        # aiohttp.ClientTimeout is built once per distinct value, not per request.
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._closed

    def _bind(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._closed:
                raise StabilityError("this StabilitySession is closed")
            if self._loop is not None:
                raise StabilityError(
                    "this StabilitySession was first used in another event loop; "
                    "create one session per event loop"
                )
            self._loop = loop
            self._slots = asyncio.Semaphore(self._max_connections)
            if self._http_session is None:
                self._http_session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0),
                    # The API sets no cookies worth keeping; a jar only costs time
                    # and could carry state from one key's calls into another's.
                    cookie_jar=aiohttp.DummyCookieJar(),
                )
        session, slots = self._http_session, self._slots
        assert session is not None  # noqa: S101 - both are set together above
        assert slots is not None  # noqa: S101
        if self._closed:
            raise StabilityError("this StabilitySession is closed")
        if session.closed:
            raise StabilityError("the aiohttp.ClientSession given as http_session is closed")
        return session, slots

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            if len(self._timeouts) > 64:  # deadlines make many values; keep this small
                self._timeouts.clear()
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    async def __call__(self, request: Request) -> Response:
        """Send ``request`` and return its response, read whole, connection released.

        Raises:
            APITimeoutError: the attempt took longer than ``request.timeout``.
            APIConnectionError: the connection failed before a whole response came.
            ResponseValidationError: the body is larger than ``max_body_size``.
            StabilityError: the session is closed or bound to another event loop.
        """
        session, slots = self._bind()
        async with slots:
            try:
                async with session.request(
                    request.method,
                    request.url,
                    headers=request.headers,
                    allow_redirects=False,
                    timeout=self._timeout(request.timeout),
                ) as resp:
                    body = await self._read(resp)
                    return Response(resp.status, resp.headers, body)
            except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise APITimeoutError(
                    f"{request.method} {request.url} took longer than {request.timeout:g} s"
                ) from exc
            except aiohttp.ClientError as exc:
                raise APIConnectionError(
                    f"{request.method} {request.url} failed: {_describe(exc)}"
                ) from exc

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        cap = self._max_body_size
        length = resp.content_length
        if length is not None and length <= cap:
            return await resp.read()
        if length is not None:
            resp.close()  # drop the connection: the rest of the body is never read
            raise _too_large(resp.status, f"announces {length} bytes")
        chunks: list[bytes] = []
        size = 0
        while chunk := await resp.content.read(_CHUNK):
            size += len(chunk)
            if size > cap:
                resp.close()
                raise _too_large(resp.status, f"exceeds {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Close the aiohttp session if this transport created it; idempotent."""
        self._closed = True
        session = self._http_session
        if self._owns_session and session is not None and not session.closed:
            await session.close()


def _too_large(status: int, what: str) -> ResponseValidationError:
    return ResponseValidationError(
        f"{status} response refused: its body {what}, over max_body_size", status=status
    )


def _describe(exc: aiohttp.ClientError) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
