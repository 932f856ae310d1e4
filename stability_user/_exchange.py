"""One request and its response on aiohttp's connection pool, below ``ClientSession.request``.

``ClientSession.request`` does, for every request, work this client never needs:
it merges default headers, parses and joins the URL, filters a cookie jar,
builds a timeout handle and its timer context, looks for trace configs, client
middlewares and redirects. The transport's own pool (no proxy, no caller's
session, no cookies, no traces, no redirects) sends through this path instead:
a connection from the session's connector, the same parser, the same keep-alive
pool; the attempt's timeout is the transport's (:mod:`._expiry`), from the wait
for a connection to the last byte.

A call sends one of a few requests (two endpoints, a key's headers), none with a
body, and their bytes never change: each is made once, as a :class:`Template`,
by aiohttp's own ``ClientRequest`` and header serializer, and written as it is.
A ``ClientRequest`` per request would repeat that work every time: check the
method, normalise the URL, merge and complete the headers, serialise them.

Only the aiohttp releases whose internals this was read against take this path
(:data:`SUPPORTED`); any other release goes through ``ClientSession.request``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Final

import aiohttp
from aiohttp import ClientRequest, ClientResponse, hdrs
from multidict import CIMultiDictProxy
from yarl import URL

try:  # aiohttp's own, not its API: a release without them takes ClientSession.request
    from aiohttp.client import IDEMPOTENT_METHODS
    from aiohttp.helpers import TimerNoop
    from aiohttp.http_writer import _serialize_headers
except ImportError:  # pragma: no cover - aiohttp 3.14 has them
    _KNOWN = False
else:
    _KNOWN = True

__all__ = ["SUPPORTED", "Template", "Templates", "exchange", "has_hooks", "request_replaced"]

SUPPORTED: Final = _KNOWN and aiohttp.__version__.startswith("3.14.")
"""Whether this aiohttp release is one the path below ``ClientSession.request`` knows."""

_CLIENT_MODULE: Final = aiohttp.client.__file__
_genuine: list[object] = []  # the ``_request`` last found to be aiohttp's own


def request_replaced(session: aiohttp.ClientSession) -> bool:
    """Whether something stands in for ``ClientSession._request`` (aioresponses, a test double).

    Then every request goes through ``ClientSession.request``, so that it answers.
    aiohttp's own function is known by its code, not by what was there when this
    module was imported: a stand-in may already be in place then.
    """
    request = type(session)._request
    if _genuine and request is _genuine[0]:
        return False
    code = getattr(request, "__code__", None)
    genuine = (
        code is not None
        and code.co_name == "_request"
        and code.co_filename == _CLIENT_MODULE
        and not hasattr(request, "__wrapped__")
    )
    if genuine:
        _genuine[:] = [request]
    return not genuine


def has_hooks(session: aiohttp.ClientSession) -> bool:
    """Whether ``session`` has trace configs or client middlewares (an instrumentation's).

    Then its requests go through ``ClientSession.request``, which runs them.
    """
    return bool(session.trace_configs or getattr(session, "_middlewares", None))


_NO_TRACES: Final[list[object]] = []  # aiohttp only reads it; shared, never filled
_NO_TIMER: Final[Any] = TimerNoop() if _KNOWN else None  # the attempt's timeout is the transport's
_RETRIED_FAILURES: Final = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)


class Template:
    """One request without a body, as aiohttp would send it on ``session``'s pool.

    Only for a method aiohttp sends without a body (``GET``, ``HEAD``, ``OPTIONS``,
    ``TRACE``) and without ``Expect: 100-continue``: see :meth:`Templates.get`.

    Made once per method, URL and headers, by aiohttp's ``ClientRequest`` (which
    adds ``Host``, ``Accept``, ``Accept-Encoding`` and the ``User-Agent`` it would)
    and aiohttp's header serializer: the bytes ``ClientRequest.send`` would write.

    Args:
        session: the aiohttp session whose pool sends it.
        method: the HTTP method.
        url: the URL.
        headers: the request's headers.
        ssl: what verifies the server's certificate.
    """

    __slots__ = ("head", "info", "method", "output_size", "request", "url")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        headers: CIMultiDictProxy[str] | Mapping[str, str],
        *,
        ssl: object,
    ) -> None:
        """Build the request once; nothing is sent."""
        connector = session.connector
        assert connector is not None  # noqa: S101 - an open session has one
        request = ClientRequest(
            method,
            url,
            headers=headers,
            loop=connector._loop,
            response_class=ClientResponse,
            session=session,
            ssl=ssl,  # type: ignore[arg-type]
        )
        # What ClientRequest.send adds before it writes the head (a body it never has).
        if hdrs.CONNECTION not in request.headers and connector.force_close:
            request.headers[hdrs.CONNECTION] = "close"
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        status_line = f"{request.method} {request.url.raw_path_qs} {version}"
        self.head: bytes = _serialize_headers(status_line, request.headers)
        self.output_size = len(self.head)  # what a response reports as sent
        self.request = request  # names the connection: host, port, TLS
        self.info = request.request_info
        self.method = request.method
        self.url = request.original_url


_KEPT: Final = 1024  # templates kept (about 2 KiB each); the oldest go first


class Templates:
    """The templates of one session's pool: made at a request's second sighting, then kept.

    A request's headers are built once per key and reused, so a template is first
    looked up by the identity of its headers (no work), then by their content
    (headers built per call, for another organization). Headers seen once (a
    ``traceparent`` of every call) get a template that is not kept.

    Args:
        ssl: what verifies the server's certificate.
    """

    __slots__ = ("_by_content", "_by_identity", "_seen", "_ssl")

    def __init__(self, ssl: object) -> None:
        """No template yet."""
        self._ssl = ssl
        self._by_identity: dict[tuple[str, str, int], tuple[Mapping[str, str], Template]] = {}
        self._by_content: dict[tuple[str, str, tuple[tuple[str, str], ...]], Template] = {}
        self._seen: dict[tuple[str, str, tuple[tuple[str, str], ...]], None] = {}

    def __len__(self) -> int:
        """How many entries are kept: requests seen, and templates by either lookup."""
        return len(self._seen) + len(self._by_content) + len(self._by_identity)

    def get(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        headers: Mapping[str, str],
        make: Callable[[str, Mapping[str, str]], tuple[URL, Any]],
    ) -> Template | None:
        """The template of a request; ``None``: it is one for ``ClientSession.request``.

        ``make`` gives the parsed URL and the headers as aiohttp should take them.
        """
        found = self._by_identity.get((method, url, id(headers)))
        if found is not None and found[0] is headers:
            return found[1]
        content = (method, url, tuple(headers.items()))
        template = self._by_content.get(content)
        if template is not None:
            return template
        if method.upper() not in ClientRequest.GET_METHODS or any(
            name.lower() == "expect" for name in headers
        ):
            return None  # a body, or a wait for 100-continue: what ClientRequest.send does
        parsed, frozen = make(url, headers)
        template = Template(session, method, parsed, frozen, ssl=self._ssl)
        if content in self._seen:
            _keep(self._by_content, content, template)
            _keep(self._by_identity, (method, url, id(headers)), (headers, template))
        else:
            _keep(self._seen, content, None)
        return template

    def clear(self) -> None:
        """Forget every template (and the keys in their headers)."""
        self._by_identity.clear()
        self._by_content.clear()
        self._seen.clear()


def _keep(kept: dict[Any, Any], key: object, value: object) -> None:
    if len(kept) >= _KEPT:
        del kept[next(iter(kept))]  # the oldest: a key's headers are made again if needed
    kept[key] = value


async def exchange(
    session: aiohttp.ClientSession,
    template: Template,
    *,
    timeout: aiohttp.ClientTimeout,
) -> ClientResponse:
    """Send ``template`` on a connection of ``session``'s pool; its response, headers read.

    Like ``ClientSession.request`` with ``allow_redirects=False``: a connection of
    the pool that turns out to be closed by the server is replaced once, at once,
    for an idempotent method. The caller reads the body and releases the response.

    Raises:
        aiohttp.ClientError: the connection failed before the response's head came.
        RuntimeError: the session is closed.
    """
    if session.closed:
        raise RuntimeError("Session is closed")
    connector = session.connector
    assert connector is not None  # noqa: S101 - an open session has one
    loop = connector._loop
    method = template.method
    retry = method in IDEMPOTENT_METHODS  # as ClientSession.request retries
    while True:
        try:
            connection = await connector.connect(
                template.request,
                traces=_NO_TRACES,  # type: ignore[arg-type]
                timeout=timeout,
            )
            protocol = connection.protocol
            assert protocol is not None  # noqa: S101 - a fresh connection has one
            protocol.set_response_params(
                skip_payload=method == "HEAD",
                read_until_eof=True,  # a body without a length ends with its connection
                timeout_ceil_threshold=connector._timeout_ceil_threshold,
            )
            try:
                _write(protocol, template.head)
                protocol.start_timeout()
                response = ClientResponse(
                    method,
                    template.url,
                    writer=None,
                    continue100=None,
                    timer=_NO_TIMER,
                    request_info=template.info,
                    traces=_NO_TRACES,  # type: ignore[arg-type]
                    loop=loop,
                    session=session,
                    stream_writer=template,  # type: ignore[arg-type]
                )
                try:
                    await response.start(connection)
                except BaseException:
                    response.close()
                    raise
            except BaseException:
                connection.close()
                raise
        except aiohttp.ClientConnectorError:
            raise  # no connection was made: nothing stale to replace
        except _RETRIED_FAILURES:
            if not retry:
                raise
            retry = False  # a pooled connection the server had closed: one more, at once
            continue
        except aiohttp.ClientError:
            raise
        except OSError as exc:
            if exc.errno is None and isinstance(exc, asyncio.TimeoutError):
                raise
            raise aiohttp.ClientOSError(*exc.args) from exc
        return response


def _write(protocol: aiohttp.client_proto.ResponseHandler, head: bytes) -> None:
    transport = protocol.transport
    if transport is None or transport.is_closing():
        # What aiohttp's writer raises for a connection closed meanwhile.
        raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
    transport.write(head)
