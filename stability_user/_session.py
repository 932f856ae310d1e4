"""StabilitySession: the public entry point, on top of sans-I/O, retries and transport.

A call goes session -> retry loop -> user middlewares (first = outermost) ->
aiohttp transport, and comes back as a model or a typed error.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Coroutine,
    Iterable,
    Sequence,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal

import aiohttp

from ._checks import check_count
from ._errors import StabilityError
from ._http import Handler, Middleware, Request, Response, mask_secret
from ._models import Account, Balance
from ._retry import RetryPolicy, Sleep, send_with_retries
from ._sansio import (
    ClientConfig,
    decode_account,
    decode_balance,
    derive_config,
    make_config,
    parse_retry_after,
)
from ._transport import AiohttpTransport

if TYPE_CHECKING:
    # Imported when first used: bulk checks and watching are not every program's
    # business, and their modules are a fair share of the package's import time.
    from ._bulk import BalanceReading, BalanceResult, TargetLike
    from ._ratelimit import KeyRateLimiter

__all__ = ["StabilitySession"]


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Final[Any] = _Unset()


def _chain(middlewares: Sequence[Middleware], transport: Handler) -> Handler:
    handler = transport
    for middleware in reversed(middlewares):
        handler = _bind_middleware(middleware, handler)
    return handler


def _bind_middleware(middleware: Middleware, handler: Handler) -> Handler:
    async def call(request: Request) -> Response:
        return await middleware(request, handler)

    return call


def _retry_after(response: Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"), time.time())


class StabilitySession:
    """A client of the Stability user API, safe to share between any number of tasks.

    Use it as an async context manager, or call :meth:`close` when done::

        async with StabilitySession() as session:   # the key from STABILITY_API_KEY
            account = await session.account()
            balance = await session.balance(organization="org-123")

    Args:
        api_key: the API key; ``$STABILITY_API_KEY`` when omitted. Sent as the
            ``Authorization`` header exactly as given (a ``Bearer ...`` key too).
        base_url: the service; ``$STABILITY_API_HOST``, else ``https://api.stability.ai``.
            ``http://`` is accepted only for loopback hosts.
        api_version: ``"v1alpha"`` or ``"v1"``; ``$STABILITY_API_VERSION``, else ``"v1alpha"``.
        organization: the default ``Organization`` of :meth:`balance`.
        client_id: sent as ``Stability-Client-ID`` when set.
        client_version: sent as ``Stability-Client-Version`` when set.
        timeout: seconds per attempt, from sending to the last body byte.
        retry: the :class:`RetryPolicy`; ``RetryPolicy(max_attempts=1)`` disables retries.
        middlewares: called on every attempt, the first outermost, inside the retry loop.
        http_session: an ``aiohttp.ClientSession`` of the caller's to send with; it
            is never closed here. By default the session creates its own on first use.
        max_connections: the connection pool's size, and how many requests are in
            flight at once; further calls queue without their timeout running.
        max_body_size: the largest body read, in bytes; a larger one is refused.
        sleep: the wait between attempts, :func:`asyncio.sleep` by default (for tests).
        clock: monotonic seconds for deadlines, :func:`time.monotonic` by default.

    Raises:
        StabilityError: no API key anywhere, or an unsafe ``base_url``.
        ValueError: an unknown ``api_version``, a bad number, or a header value with
            CR, LF or NUL.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        api_version: str | None = None,
        organization: str | None = None,
        client_id: str | None = None,
        client_version: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        middlewares: Sequence[Middleware] = (),
        http_session: aiohttp.ClientSession | None = None,
        max_connections: int = 100,
        max_body_size: int = 1_048_576,
        sleep: Sleep | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Check the configuration; nothing is opened until the first call."""
        self._owner = False
        self._closed = False
        self._parent: StabilitySession | None = None
        config = make_config(
            api_key,
            base_url=base_url,
            api_version=api_version,
            organization=organization,
            client_id=client_id,
            client_version=client_version,
            timeout=timeout,
        )
        transport = AiohttpTransport(
            http_session=http_session,
            max_connections=max_connections,
            max_body_size=max_body_size,
        )
        self._setup(
            config=config,
            retry=retry if retry is not None else RetryPolicy(),
            middlewares=tuple(middlewares),
            transport=transport,
            sleep=sleep,
            clock=clock or time.monotonic,
        )
        self._owner = True

    def _setup(
        self,
        *,
        config: ClientConfig,
        retry: RetryPolicy,
        middlewares: tuple[Middleware, ...],
        transport: AiohttpTransport,
        sleep: Sleep | None,
        clock: Callable[[], float],
        limiter: KeyRateLimiter | None = None,
    ) -> None:
        if not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self._config = config
        self._retry = retry
        self._middlewares = middlewares
        self._transport = transport
        self._limiter = limiter
        handler = _chain(middlewares, transport)
        self._handler = handler if limiter is None else limiter.bind(handler)
        self._clock = clock
        self._sleep = sleep
        self._wait = sleep or asyncio.sleep

    @property
    def base_url(self) -> str:
        """The service's base URL, without a trailing slash."""
        return self._config.base_url

    @property
    def api_version(self) -> str:
        """``"v1alpha"`` or ``"v1"``."""
        return self._config.api_version

    @property
    def organization(self) -> str | None:
        """The default ``Organization`` of :meth:`balance`, if any."""
        return self._config.organization

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of this session's calls."""
        return self._retry

    @property
    def timeout(self) -> float:
        """Seconds per attempt."""
        return self._config.timeout

    @property
    def closed(self) -> bool:
        """Whether this session, or the session it is a view of, has been closed."""
        parent = self._parent
        return self._closed or self._transport.closed or (parent is not None and parent.closed)

    def __repr__(self) -> str:
        """Say where the session points; the key is masked (``sk-…abcd``)."""
        config = self._config
        state = " closed" if self.closed else ""
        return (
            f"<StabilitySession{state} {config.base_url} {config.api_version} "
            f"key={mask_secret(config.api_key)} organization={config.organization!r}>"
        )

    def with_options(
        self,
        *,
        api_key: str = _UNSET,
        organization: str | None = _UNSET,
        timeout: float = _UNSET,
        retry: RetryPolicy = _UNSET,
    ) -> StabilitySession:
        """A view of this session with other options, sharing its connection pool.

        The view lives as long as this session: closing this session makes the
        view unusable; closing the view closes nothing shared.
        """
        changes = {
            name: value
            for name, value in (
                ("api_key", api_key),
                ("organization", organization),
                ("timeout", timeout),
            )
            if value is not _UNSET
        }
        new_config = derive_config(self._config, **changes) if changes else self._config
        return self._view(new_config, self._retry if retry is _UNSET else retry, self._limiter)

    def _view(
        self, config: ClientConfig, retry: RetryPolicy, limiter: KeyRateLimiter | None
    ) -> StabilitySession:
        view = StabilitySession.__new__(StabilitySession)
        view._owner = False
        view._closed = False
        view._parent = self
        view._setup(
            config=config,
            retry=retry,
            middlewares=self._middlewares,
            transport=self._transport,
            sleep=self._sleep,
            clock=self._clock,
            limiter=limiter,
        )
        return view

    def _send(self, request: Request) -> Coroutine[Any, Any, Response]:
        # A plain function handing back the retry loop's coroutine: one frame fewer
        # for every resumption of every call.
        if self.closed:
            raise StabilityError("this StabilitySession is closed")
        return send_with_retries(
            request,
            self._handler,
            self._retry,
            retry_after=_retry_after,
            sleep=self._wait,
            clock=self._clock,
        )

    async def account(self) -> Account:
        """The account the API key belongs to (``GET /{version}/user/account``).

        Raises:
            APIError: the service refused (e.g. :class:`AuthenticationError` for a bad key).
            APIConnectionError: no usable answer after all attempts.
            ResponseValidationError: the answer is not a valid account.
        """
        response = await self._send(self._config.account_request)
        return decode_account(response, self._config)

    async def balance(self, organization: str | None = None) -> Balance:
        """The credit balance (``GET /{version}/user/balance``).

        Args:
            organization: read this organization's balance instead of the session's
                default ``organization`` (or, without either, the user's default one).

        Raises:
            APIError: the service refused (e.g. :class:`PermissionDeniedError` for an
                organization the key's account is not a member of).
            APIConnectionError: no usable answer after all attempts.
            ResponseValidationError: the answer is not a valid balance.
            ValueError: ``organization`` contains CR, LF or NUL.
        """
        request = self._config.request_balance(organization)
        response = await self._send(request)
        return decode_balance(response, self._config)

    def balances(
        self,
        targets: Iterable[TargetLike] | AsyncIterable[TargetLike],
        *,
        concurrency: int = 32,
        ordered: bool = False,
        rate_limit: tuple[int, float] | None = (150, 10.0),
    ) -> AsyncGenerator[BalanceResult, None]:
        """Check many balances at once, yielding each result as it completes.

        ::

            targets = [BalanceTarget(api_key=key, label=name) for name, key in keys]
            async for result in session.balances(targets, concurrency=32):
                print(result.target.display_name, result.balance if result.ok else result.error)

        ``targets`` is consumed lazily, so a generator of a million targets runs in
        memory that grows with ``concurrency``, not with the number of targets. One
        target's failure never stops the run: its result carries the typed error.
        Leaving the loop early (``break``) or cancelling the consumer cancels the
        checks in flight; wrap the iterator in :func:`contextlib.aclosing` to have
        that happen at the ``break`` itself rather than when the loop next runs.

        Args:
            targets: an iterable or async iterable of :class:`BalanceTarget`; a plain
                ``str`` is an organization under this session's key.
            concurrency: checks in flight at once.
            ordered: yield results in input order (a bounded buffer holds early ones).
                Either way, at most ``2 * concurrency`` targets (``4 *`` in order) are
                taken ahead of what the loop has consumed.
            rate_limit: ``(requests, seconds)`` allowed per API key, every attempt
                counted; the service's documented limit by default. ``None`` turns it off.

        Raises:
            ValueError: a bad ``concurrency`` or ``rate_limit`` (at once, not when iterated).
        """
        from ._bulk import check_balances  # noqa: PLC0415 - see the TYPE_CHECKING imports
        from ._ratelimit import KeyRateLimiter  # noqa: PLC0415

        base = self
        if rate_limit is not None:
            requests, window = rate_limit
            limiter = KeyRateLimiter(requests, window, clock=self._clock, sleep=self._wait)
            base = self._view(self._config, self._retry, limiter)
        check_count("concurrency", concurrency)
        return check_balances(base, targets, concurrency=concurrency, ordered=ordered)

    async def watch_balance(
        self,
        interval: float = 60.0,
        below: float | None = None,
        organization: str | None = None,
    ) -> AsyncGenerator[BalanceReading, None]:
        """Poll the balance every ``interval`` seconds, forever, yielding each reading.

        A failed poll (after the retry policy's attempts) is yielded as a reading
        with ``error`` set; the watch goes on. With ``below``, each reading says
        whether the balance is under it, and ``crossing`` flags the reading that
        fell below (``"below"``) and the one that came back (``"recovered"``).

        Args:
            interval: seconds between the end of one poll and the start of the next.
            below: the low-balance threshold, in credits.
            organization: the organization to watch, else the session's default.
        """
        from ._bulk import BalanceReading  # noqa: PLC0415 - see the TYPE_CHECKING imports

        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        sleep = self._wait
        was_below: bool | None = None
        while True:
            balance: Balance | None = None
            error: Exception | None = None
            try:
                balance = await self.balance(organization=organization)
            except StabilityError as exc:
                error = exc
            is_below = None if balance is None or below is None else balance.credits < below
            crossing: Literal["below", "recovered"] | None = None
            if is_below is not None:
                if is_below and not was_below:
                    crossing = "below"
                elif not is_below and was_below:
                    crossing = "recovered"
                was_below = is_below
            yield BalanceReading(balance, error, is_below, crossing, self._clock())
            await sleep(interval)

    async def close(self) -> None:
        """Close the session and its connection pool; idempotent.

        On a view from :meth:`with_options`, only the view is closed.
        """
        self._closed = True
        if self._owner:
            await self._transport.aclose()

    async def __aenter__(self) -> StabilitySession:
        """Return the session itself."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the session."""
        await self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        """Warn about a session dropped unclosed; nothing is scheduled from here."""
        if getattr(self, "_owner", False) and not self._transport.closed:
            _warn(
                f"unclosed {self!r}: use 'async with StabilitySession()' or await close()",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )
