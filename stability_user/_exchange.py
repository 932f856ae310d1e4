"""One request and its response on aiohttp's connection pool, below ``ClientSession.request``.

``ClientSession.request`` does, for every request, work this client never needs:
it merges default headers, parses and joins the URL, filters a cookie jar,
builds a timeout handle and its timer context, looks for trace configs, client
middlewares and redirects. The transport's own pool (no proxy, no caller's
session, no cookies, no traces, no redirects) sends through this path instead:
an ``aiohttp.ClientRequest`` on a connection from the session's connector, the
same parser, the same keep-alive pool; the attempt's timeout is the
transport's (:mod:`._expiry`), from the wait for a connection to the last byte.

Only the aiohttp releases whose internals this was read against take this path
(:data:`SUPPORTED`); any other release goes through ``ClientSession.request``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final

import aiohttp
from aiohttp import ClientRequest, ClientResponse
from multidict import CIMultiDictProxy
from yarl import URL

__all__ = ["SUPPORTED", "exchange", "has_hooks", "request_replaced"]

SUPPORTED: Final = aiohttp.__version__.startswith("3.14.")
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
_RETRIED_FAILURES: Final = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: CIMultiDictProxy[str] | Mapping[str, str],
    *,
    ssl: object,
    timeout: aiohttp.ClientTimeout,
) -> ClientResponse:
    """Send one request on a connection of ``session``'s pool; its response, headers read.

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
    retry = method in ("GET", "HEAD", "OPTIONS")
    while True:
        request = ClientRequest(
            method,
            url,
            headers=headers,
            loop=loop,
            response_class=ClientResponse,
            session=session,
            ssl=ssl,  # type: ignore[arg-type]
        )
        try:
            connection = await connector.connect(request, traces=_NO_TRACES, timeout=timeout)  # type: ignore[arg-type]
            protocol = connection.protocol
            assert protocol is not None  # noqa: S101 - a fresh connection has one
            protocol.set_response_params(
                skip_payload=method == "HEAD",
                read_until_eof=True,  # a body without a length ends with its connection
                timeout_ceil_threshold=connector._timeout_ceil_threshold,
            )
            try:
                response = await request.send(connection)
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
