"""The aiohttp transport: sends a :class:`Request`, returns a fully read :class:`Response`.

This module and :mod:`._exchange` (the path below ``ClientSession.request``
that its own pool sends through) are the only ones that talk to aiohttp. It
reads every body (decoded, up to the size cap) and releases the connection
before returning, never follows a redirect, and maps aiohttp's and asyncio's
failures to the library's own errors at this one boundary
(``raise APIConnectionError(...) from exc``),
with any text aiohttp quotes from the server redacted of the secrets sent.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Final

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._checks import check_count
from ._errors import (
    SESSION_CLOSED,
    StabilityError,
)
from ._exchange import SUPPORTED, Templates, exchange, has_hooks, request_replaced
from ._expiry import Expiries, Expiry
from ._http import Request, Response
from ._network import Route
from ._transport_errors import connection_error, quotes_a_secret, timed_out, too_large

__all__ = ["AiohttpTransport"]

_CHUNK: Final = 65536
_CACHE_LIMIT: Final = 4096  # frozen headers and proxy choices kept; cleared when full
_AIOHTTP_TOKEN: Final = f"aiohttp/{aiohttp.__version__}"
# The attempt's own timer bounds the connect too: nothing more to say to the pool.
_CONNECT_TIMEOUT: Final = aiohttp.ClientTimeout()


class AiohttpTransport:
    """Sends requests over one aiohttp session, its own or the caller's.

    The session is created lazily, inside the running event loop, on first use;
    using the transport from another loop afterwards raises :class:`StabilityError`.
    Its pool holds ``max_connections``; the session lets no more requests than
    that reach it at once, so a request never queues inside aiohttp, and its
    timeout runs from sending. Certificates are always verified: every request
    carries a verifying ``ssl.SSLContext``, whatever the connector of an
    ``http_session`` says.

    Args:
        http_session: an ``aiohttp.ClientSession`` of the caller's, never closed here.
        max_connections: the pool's size and the requests in flight at once.
        max_body_size: the most bytes of a body read, after decompression.
        route: the proxy and TLS settings (direct, the default trust store, by default).
        timeout: the usual seconds per request (the session's), its pool's default.
    """

    __slots__ = (
        "_closed",
        "_default_timeout",
        "_expiries",
        "_frozen",
        "_http_session",
        "_loop",
        "_max_body_size",
        "_max_connections",
        "_owns_session",
        "_plain",
        "_route",
        "_session",
        "_ssl",
        "_templates",
        "_timeouts",
        "_urls",
    )

    def __init__(
        self,
        *,
        http_session: aiohttp.ClientSession | None = None,
        max_connections: int = 100,
        max_body_size: int = 1_048_576,
        route: Route | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Check the options; nothing is opened until the first request."""
        check_count("max_connections", max_connections)
        check_count("max_body_size", max_body_size)
        self._route = route or Route()
        self._http_session = http_session
        self._owns_session = http_session is None
        self._max_connections = max_connections
        self._max_body_size = max_body_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expiries: Expiries | None = None  # the attempts' timeouts, on self._loop
        self._ssl: ssl.SSLContext | None = None
        self._session: aiohttp.ClientSession | None = None  # bound to self._loop
        self._default_timeout = timeout
        self._plain = False
        self._closed = False
        # Built once per distinct value, not per request.
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._frozen: dict[int, tuple[Mapping[str, str], CIMultiDictProxy[str]]] = {}
        self._urls: dict[str, URL] = {}
        self._templates = Templates(None)  # made with the ssl context at the first request

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._closed

    @property
    def holds_connections(self) -> bool:
        """Whether it opened a connection pool of its own that is not closed yet."""
        session = self._http_session
        return self._owns_session and session is not None and not session.closed

    @property
    def proxy(self) -> str | None:
        """The explicit proxy, its password masked."""
        return self._route.proxy

    def _bind(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._closed:
                raise StabilityError(SESSION_CLOSED)
            if self._loop is not None:
                raise StabilityError(
                    "this StabilitySession was first used in another event loop; "
                    "create one session per event loop"
                )
            self._loop = loop
            self._expiries = Expiries(loop, self._default_timeout)
            self._ssl = self._route.ssl  # made once, at the first request
            self._templates = Templates(self._ssl)
            if self._http_session is None:
                self._http_session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(
                        limit=self._max_connections,
                        limit_per_host=0,
                        ssl=self._ssl,
                    ),
                    timeout=self._timeout(self._default_timeout),
                    # The API sets no cookies worth keeping; a jar only costs time
                    # and could carry state from one key's calls into another's.
                    cookie_jar=aiohttp.DummyCookieJar(),
                )
                # Our own pool, verifying with our context, never through a proxy:
                # sent below ClientSession.request, on an aiohttp release it knows,
                # unless an instrumentation gave the session hooks of its own.
                self._plain = self._route.direct and SUPPORTED and not has_hooks(self._http_session)
        session = self._http_session
        assert session is not None  # noqa: S101 - set above
        if self._closed or session.closed:
            self._check_open(session)
        self._session = session
        return session

    def _check_open(self, session: aiohttp.ClientSession) -> None:
        if self._closed:
            raise StabilityError(SESSION_CLOSED)
        if session.closed:
            raise StabilityError("the aiohttp.ClientSession given as http_session is closed")

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            if len(self._timeouts) > 64:  # deadlines make many values; keep this small
                self._timeouts.clear()
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    def _url(self, url: str) -> URL:
        # A call's URL is one of a few (two endpoints, a service): parsed once each.
        parsed = URL(url)
        if len(self._urls) >= _CACHE_LIMIT:
            self._urls.clear()
        self._urls[url] = parsed
        return parsed

    def _aiohttp_form(self, url: str, headers: Mapping[str, str]) -> tuple[URL, object]:
        return self._urls.get(url) or self._url(url), self._headers(headers)

    def _headers(self, headers: Mapping[str, str]) -> CIMultiDictProxy[str]:
        # aiohttp takes a CIMultiDictProxy as it is; any other mapping it copies into
        # one on every request. A request's headers are built once per key and
        # reused, so the frozen copy (with aiohttp's User-Agent token) is cached.
        cached = self._frozen.get(id(headers))
        if cached is not None and cached[0] is headers:
            return cached[1]
        frozen = CIMultiDict(headers)
        agent = frozen.get("User-Agent")
        if agent is not None and _AIOHTTP_TOKEN not in agent:
            frozen["User-Agent"] = f"{agent} {_AIOHTTP_TOKEN}"
        proxy = CIMultiDictProxy(frozen)
        if len(self._frozen) >= _CACHE_LIMIT:
            self._frozen.clear()
        self._frozen[id(headers)] = (headers, proxy)
        return proxy

    async def __call__(self, request: Request) -> Response:  # noqa: PLR0912 - one frame
        """Send ``request`` and return its response, read whole, connection released.

        Raises:
            APITimeoutError: the attempt took longer than ``request.timeout``.
            APIConnectionError: the connection failed before a whole response came.
            ResponseValidationError: the decoded body is larger than ``max_body_size``.
            StabilityError: the session is closed or bound to another event loop.
        """
        session = self._session
        if session is None or self._loop is not asyncio.get_running_loop() or session.closed:
            session = self._bind()
        url = request.url
        expiry: Expiry | None = None
        try:
            template = (
                self._templates.get(
                    session, request.method, url, request.headers, self._aiohttp_form
                )
                if self._plain and not request_replaced(session)
                else None
            )
            if template is not None:
                # Our own pool, no proxy: below ClientSession.request, one timer for
                # the attempt from the wait for a connection to the last body byte.
                expiry = self._expiries.start(request.timeout)  # type: ignore[union-attr]
                resp = await exchange(session, template, timeout=_CONNECT_TIMEOUT)
            else:
                # Awaited rather than `async with`: a frame fewer at every step of
                # the request. The body is read whole, so the connection is
                # released by then.
                resp = await session.request(
                    request.method,
                    url,
                    headers=self._headers(request.headers),
                    allow_redirects=False,
                    timeout=self._timeouts.get(request.timeout) or self._timeout(request.timeout),
                    proxy=self._route.proxy_for(url),
                    ssl=self._ssl,
                )
            try:
                if self._whole_body_fits(resp):  # every answer of the service: no frame more
                    body = await resp.read()
                else:
                    body = await self._read_capped(resp)
            finally:
                resp.release()
            return Response(
                resp.status, resp.headers, body, request.attempt, request, self._route.secrets
            )
        except asyncio.CancelledError:
            if expiry is not None and expiry.timed_out():
                raise timed_out(request) from None
            raise
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise timed_out(request) from exc
        except aiohttp.ClientError as exc:
            secrets = (request.api_key, *self._route.secrets)
            error = connection_error(
                request, exc, secrets, proxy=self._route.proxy_for(request.url)
            )
            if quotes_a_secret(exc, secrets):
                # aiohttp's message quotes what the server sent, the key in it: a
                # traceback would print it. The redacted message has what matters.
                raise error from None
            raise error from exc
        except RuntimeError as exc:
            # aiohttp's "Session is closed", when close() won the race.
            if session.closed:
                raise StabilityError(SESSION_CLOSED) from exc
            raise
        finally:
            if expiry is not None:
                self._expiries.stop(expiry)  # type: ignore[union-attr]

    def _whole_body_fits(self, resp: aiohttp.ClientResponse) -> bool:
        """Whether ``resp.read()`` is safe: a known, uncompressed length under the cap."""
        length = resp.content_length
        encoding = resp.headers.get("Content-Encoding")
        if length is None or (encoding is not None and encoding.lower() != "identity"):
            return False
        if length > self._max_body_size:
            resp.close()  # drop the connection: the rest of the body is never read
            raise too_large(resp.status, f"announces {length} bytes")
        return True

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        # Unknown length, or compressed: what counts is the decoded size, so read
        # (and inflate) a chunk at a time and stop at the cap: a compression bomb
        # never grows past it.
        cap = self._max_body_size
        chunks: list[bytes] = []
        size = 0
        while chunk := await resp.content.read(_CHUNK):
            size += len(chunk)
            if size > cap:
                resp.close()
                raise too_large(resp.status, f"decodes to more than {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Close the aiohttp session if this transport created it; idempotent."""
        self._closed = True
        self._session = None  # every later request goes the slow way, and is refused
        self._templates.clear()  # the keys in their headers go with them
        self._frozen.clear()
        session = self._http_session
        if self._owns_session and session is not None and not session.closed:
            await session.close()
