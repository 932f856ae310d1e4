"""The emulator's aiohttp.web application: one handler that routes, records and answers."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import attrs
from aiohttp import web

from ._faults import FaultContext, FaultQueue, render
from ._rate_limit import RateLimiter
from ._recording import RecordedRequest, RequestLog, redact_headers
from ._state import Accounts, EmulatedAccount
from ._wire import ALLOWED_METHODS, REQUEST_ID_HEADER, Exchange

__all__ = ["Backend", "build_app"]


@attrs.define(eq=False)
class Backend:
    """Everything the handler reads and changes, shared with the emulator's facade.

    Attributes:
        accounts: the accounts by key.
        limiter: the per-key rate limit.
        faults: the faults still to come.
        log: the request log.
        clock: monotonic seconds, for the rate limit and the log.
        retire_v1alpha: answer the v1alpha paths with 404.
        closing: set when the emulator closes (ends stalls).
    """

    accounts: Accounts
    limiter: RateLimiter
    faults: FaultQueue
    log: RequestLog
    clock: Callable[[], float]
    retire_v1alpha: bool = False
    closing: asyncio.Event = attrs.field(factory=asyncio.Event)


def build_app(backend: Backend) -> web.Application:
    """The application: every path and method goes to one handler that does its own routing.

    Routing by hand keeps every answer, 404 and 405 included, in the service's shape.
    ``HEAD`` goes through the same code as ``GET``; aiohttp sends the same status and
    headers, ``Content-Length`` included, without the body.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        exchange = Exchange.of(request, backend.accounts)
        record = RecordedRequest(
            request.method,
            request.path,
            redact_headers(request.headers),
            backend.clock(),
            exchange.account.id if exchange.account else None,
            None,
            exchange.request_id,
        )
        backend.log.add(record)
        fault = backend.faults.next(exchange.key if exchange.account else None)

        def answer() -> web.StreamResponse:
            return _answer(backend, exchange)

        if fault is None:
            response = answer()
        else:
            response = await render(fault, FaultContext(exchange, answer, backend.closing))
        if not response.prepared:  # a fault that streams sets it before its first byte
            response.headers[REQUEST_ID_HEADER] = exchange.request_id
        record.status = response.status
        backend.log.answered(response.status)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _answer(backend: Backend, exchange: Exchange) -> web.StreamResponse:
    admitted = _admit(backend, exchange)
    if isinstance(admitted, web.Response):
        return admitted
    if exchange.endpoint == "account":
        return exchange.json(admitted.body())
    organization = exchange.request.headers.get("Organization") or None
    try:
        membership = admitted.organization(organization)
    except KeyError:
        return exchange.error(403, f"you do not have access to organization {organization}")
    return exchange.json({"credits": membership.credits})


def _admit(backend: Backend, exchange: Exchange) -> EmulatedAccount | web.Response:
    """The account a request may read, or the error it gets instead."""
    request = exchange.request
    if exchange.endpoint is None or (exchange.version == "v1alpha" and backend.retire_v1alpha):
        return exchange.error(404, f"nothing at {request.path}")
    if request.method not in ALLOWED_METHODS:
        return exchange.error(
            405,
            f"{request.method} is not allowed on {request.path}",
            headers={"Allow": ", ".join(ALLOWED_METHODS)},
        )
    account = exchange.account
    if exchange.key is None or account is None:
        return exchange.error(401, "missing or invalid API key")
    retry_after = backend.limiter.check(exchange.key, backend.clock())
    if retry_after is not None:
        return exchange.error(
            429,
            "too many requests: slow down",
            headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
        )
    return account
