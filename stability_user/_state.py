"""A session's state: one frozen value with everything a call needs, and the call itself.

A :class:`SessionState` is built once from the constructor's options
(:func:`make_state`); a view from ``with_options`` is the same value with a field
or two changed (``attrs.evolve``), sharing the sender (the connection pool and
the rate limiter) and the session's life (:class:`~._closing.Closing`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import attrs

from ._checks import check_count, check_seconds, check_type
from ._closing import Closing
from ._config import ClientConfig
from ._converter import prepare
from ._endpoints import ACCOUNT, BALANCE, Endpoint
from ._http import AroundCall, Handler, Middleware, Request, Response, Transport
from ._models import Account, Balance
from ._network import Route
from ._ratelimit import RateLimit, RateLimiter, RateLimitWait
from ._ratelimit._open import RateLimitStoreLike, open_store
from ._retry import RATE_LIMIT_LOCKOUT, RetryPolicy, call_with_retries
from ._sansio import build_request, decode
from ._send import Sender
from ._transport import AiohttpTransport
from ._types import Clock, Sleep

if TYPE_CHECKING:
    from ._cache import CachePolicy
    from ._cache._reader import ReadCache

__all__ = ["SessionState", "make_state"]

T = TypeVar("T")


def _chain(middlewares: Sequence[Middleware], transport: Handler) -> Handler:
    handler = transport
    for middleware in reversed(middlewares):
        handler = _bind_middleware(middleware, handler)
    return handler


def _bind_middleware(middleware: Middleware, handler: Handler) -> Handler:
    async def call(request: Request) -> Response:
        return await middleware(request, handler)

    return call


def _retry_policy(_: object, __: attrs.Attribute[RetryPolicy], value: RetryPolicy) -> None:
    check_type("retry", value, RetryPolicy)


@attrs.frozen
class SessionState:
    """Everything a call of a session (or view) uses; the derived parts are built once."""

    config: ClientConfig
    retry: RetryPolicy = attrs.field(validator=_retry_policy)
    middlewares: tuple[Middleware, ...]
    sender: Sender
    cache: ReadCache | None = attrs.field(default=None, eq=False, repr=False)
    # Derived from the middlewares and the limit, which no view changes: built once,
    # and handed on by attrs.evolve to every view (a bulk run makes one per key).
    handler: Handler = attrs.field(eq=False, repr=False)
    around_call: tuple[AroundCall, ...] = attrs.field(eq=False, repr=False)
    lockout: float = attrs.field(eq=False, repr=False)
    # The default request of each endpoint, built on first use and kept: a view made
    # for one bulk check of one key builds only what it sends.
    _requests: dict[str, Request] = attrs.field(init=False, factory=dict, eq=False, repr=False)

    @handler.default
    def _handler(self) -> Handler:
        return _chain(self.middlewares, self.sender)

    @lockout.default
    def _lockout(self) -> float:
        limiter = self.sender.limiter
        return RATE_LIMIT_LOCKOUT if limiter is None else limiter.limit.lockout

    @property
    def transport(self) -> Transport:
        """What sends the requests."""
        return self.sender.transport

    @property
    def limiter(self) -> RateLimiter | None:
        """The rate limiter, or ``None`` when the limit is off."""
        return self.sender.limiter

    @property
    def closing(self) -> Closing:
        """The session's life, shared by its views."""
        return self.sender.closing

    @property
    def clock(self) -> Clock:
        """The session's monotonic clock."""
        return self.sender.clock

    @around_call.default
    def _around_call(self) -> tuple[AroundCall, ...]:
        # A middleware may also wrap whole calls (a tracing span over all attempts).
        return tuple(m.around_call for m in self.middlewares if hasattr(m, "around_call"))

    def default_request(self, endpoint: Endpoint[Any]) -> Request | None:
        """The endpoint's request with the configured defaults; ``None`` without a key."""
        request = self._requests.get(endpoint.name)
        if request is None and self.config.api_key is not None:
            request = self._requests[endpoint.name] = build_request(self.config, endpoint)
        return request

    def decode_account(self, response: Response) -> Account:
        """The account in ``response``, or its typed error."""
        return decode(response, ACCOUNT, self.config, now=time.time)

    def decode_balance(self, response: Response) -> Balance:
        """The balance in ``response``, or its typed error."""
        return decode(response, BALANCE, self.config, now=time.time)

    def read(
        self,
        endpoint: Endpoint[T],
        organization: str | None,
        max_age: float | None,
        decoder: Callable[[Response], T],
    ) -> Awaitable[T]:
        """A read through the cache: a fresh reading, a shared request, or a new one.

        Raises:
            StabilityError: no key (naming ``STABILITY_API_KEY``).
            ValueError: a ``max_age`` that is not a finite number of seconds >= 0.
        """
        cache = self.cache
        assert cache is not None  # noqa: S101 - called only with a cache
        config = self.config
        if config.key_id is None or config.api_key is None:  # no key: the call says so
            return self.call(None, decoder)
        age = (
            cache.policy.max_age
            if max_age is None
            else check_seconds("max_age", max_age, zero=True)
        )
        key = (config.key_id, config.base_url, config.api_version, endpoint.name, organization)

        def fetch() -> Awaitable[T]:
            if organization is None or organization == config.organization:
                return self.call(self.default_request(endpoint), decoder)
            return self.call(build_request(config, endpoint, organization=organization), decoder)

        return cache.read(key, age, fetch, deadline=self.retry.deadline, api_key=config.api_key)

    def call(self, request: Request | None, decoder: Callable[[Response], T]) -> Awaitable[T]:
        """Send ``request`` with retries and rate limiting; await the decoded result.

        Raises:
            StabilityError: no request, because the session has no key (naming
                ``STABILITY_API_KEY``), or (when awaited) the typed error of the
                call's failure.
        """
        if request is None:  # a session without a key, asked for its own: raises
            request = build_request(self.config, ACCOUNT)
        if self.around_call:
            return self._around(request, decoder)
        return self._send(request, decoder)

    def _send(self, request: Request, decoder: Callable[[Response], T]) -> Awaitable[T]:
        sender = self.sender
        return call_with_retries(
            request,
            self.handler,
            decoder,
            self.retry,
            lockout=self.lockout,
            sleep=sender.closing.sleep,
            clock=sender.clock,
        )

    async def _around(self, request: Request, decoder: Callable[[Response], T]) -> T:
        """The call wrapped by every middleware's ``around_call``, the first outermost."""

        async def call(sent: Request) -> T:
            return await self._send(sent, decoder)

        proceed: Callable[[Request], Awaitable[Any]] = call
        for around in reversed(self.around_call):
            proceed = functools.partial(around, proceed=proceed)
        result: T = await proceed(request)
        return result


def make_state(
    config: ClientConfig,
    *,
    retry: RetryPolicy | None,
    middlewares: Sequence[Middleware],
    rate_limit: RateLimit | None,
    rate_limit_store: RateLimitStoreLike | None,
    on_rate_limit_wait: Callable[[RateLimitWait], None] | None,
    transport: Transport | None,
    http_session: aiohttp.ClientSession | None,
    max_connections: int,
    max_body_size: int,
    route: Route | None,
    sleep: Sleep | None,
    clock: Clock | None,
    cache: CachePolicy | None = None,
    cache_store: object = None,
) -> tuple[SessionState, bool]:
    """The state the constructor's options describe, and whether the session owns the transport.

    Raises:
        TypeError, ValueError: an option the constructor refuses.
    """
    if rate_limit is not None:
        check_type("rate_limit", rate_limit, RateLimit)
    prepare()  # the converter, built once per process: never at the first answer
    clock = clock or time.monotonic
    closing = Closing(sleep or asyncio.sleep)
    owns_transport = transport is None
    if http_session is not None and getattr(http_session, "trust_env", False):
        # aiohttp then reads HTTP_PROXY itself for every request, loopback included: a
        # key for a local service would travel in clear text to the proxy.
        raise ValueError(
            "an http_session with trust_env=True sends even loopback requests through "
            "HTTP_PROXY: give it trust_env=False and pass trust_env=True to StabilitySession"
        )
    if transport is None:
        transport = AiohttpTransport(
            http_session=http_session,
            max_connections=max_connections,
            max_body_size=max_body_size,
            route=route,
            timeout=config.timeout,
        )
    else:
        check_count("max_connections", max_connections)
        if http_session is not None or route is not None:
            raise ValueError("http_session, proxy, ssl and trust_env apply only without transport=")
    limiter = None
    if rate_limit is not None:
        store, owns_store = open_store(rate_limit_store, clock=clock)
        limiter = RateLimiter(
            rate_limit,
            store,
            sleep=closing.sleep,
            on_wait=on_rate_limit_wait,
            owns_store=owns_store,
        )
    sender = Sender(
        transport,
        limiter,
        closing,
        max_connections=max_connections,
        clock=clock,
        around_send=[m.around_send for m in middlewares if hasattr(m, "around_send")],
    )
    reads = None
    if cache is not None:
        # The cache is imported with the first session that has one.
        from ._cache import CachePolicy  # noqa: PLC0415
        from ._cache._open import open_shared  # noqa: PLC0415
        from ._cache._reader import ReadCache  # noqa: PLC0415

        check_type("cache", cache, CachePolicy)

        shared = open_shared(cache_store, cache)
        reads = ReadCache(cache, closing=closing, clock=clock, shared=shared)
    state = SessionState(config, retry or RetryPolicy(), tuple(middlewares), sender, reads)
    return state, owns_transport
