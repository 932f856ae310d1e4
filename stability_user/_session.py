"""StabilitySession: the public entry point, on top of the protocol, retries and transport.

A call goes session -> retry loop -> rate limiter -> user middlewares (first =
outermost) -> transport, and comes back decoded into a model or a typed error.
The session's settings are one frozen value (:class:`~stability_user._state.SessionState`);
a view from :meth:`StabilitySession.with_options` is the same value with a field changed.
"""

from __future__ import annotations

import enum
import ssl as ssl_module
import warnings
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from types import TracebackType
from typing import Any, TypeVar, cast

import aiohttp
import attrs

from ._bulk import BalanceResult, TargetLike, check_balances
from ._cache import CachePolicy
from ._cache._open import CacheStoreLike
from ._checks import check_count, check_header_value, check_seconds
from ._config import derive_config, make_config
from ._endpoints import ACCOUNT, BALANCE
from ._errors import SESSION_CLOSED, StabilityError
from ._http import Middleware, Request, Response, Transport
from ._models import Account, Balance
from ._network import Route
from ._ratelimit import RateLimit, RateLimitWait
from ._ratelimit._open import RateLimitStoreLike
from ._retry import RetryPolicy
from ._sansio import build_request
from ._secrets import mask_secret
from ._state import SessionState, make_state
from ._transport import AiohttpTransport
from ._types import Clock, Sleep
from ._watch import BalanceReading, Threshold, watch

__all__ = ["StabilitySession"]

T = TypeVar("T")


class _Unset(enum.Enum):
    """``with_options`` leaves an option as it is: distinct from ``None``, a real value."""

    UNSET = enum.auto()


_UNSET = _Unset.UNSET
_NO_CACHE = "max_age needs a read cache: StabilitySession(cache=CachePolicy(max_age=...))"
_VIEWS_PER_RUN = 4096  # per-key views a bulk run keeps, so a key's headers are built once


class StabilitySession:
    """A client of the Stability user API, safe to share between any number of tasks.

    Use it as an async context manager, or call :meth:`close` when done::

        async with StabilitySession() as session:   # the key from STABILITY_API_KEY
            account = await session.account()
            balance = await session.balance(organization="org-123")

    Args:
        api_key: the API key; ``$STABILITY_API_KEY`` when omitted. Sent as the
            ``Authorization`` header exactly as given (a ``Bearer ...`` key too). A
            session may have none when every call names its own (bulk targets);
            a call that needs it then raises :class:`StabilityError`.
        base_url: the service; ``$STABILITY_API_HOST``, else ``https://api.stability.ai``.
            ``http://`` is accepted only for loopback hosts.
        api_version: ``"v1"`` or ``"v1alpha"``; ``$STABILITY_API_VERSION``, else ``"v1"``.
        organization: the default ``Organization`` of :meth:`balance`.
        client_id: sent as ``Stability-Client-ID`` when set.
        client_version: sent as ``Stability-Client-Version`` when set.
        timeout: seconds per attempt, from sending to the last body byte.
        retry: the :class:`RetryPolicy`; ``RetryPolicy(max_attempts=1)`` disables retries.
        middlewares: called on every attempt, the first outermost, inside the retry loop;
            one that also has an ``around_call(request, proceed)`` method wraps each
            whole call in it too, all attempts and waits included.
        rate_limit: the limit per API key every request passes (:class:`RateLimit`,
            the service's documented numbers by default); ``None`` turns it off.
        rate_limit_store: where the limiter's state is kept: ``"memory"`` (this
            process), ``"local"`` (every process of the user on this machine), a
            ``redis://`` URL (a fleet), or a store object;
            ``$STABILITY_RATE_LIMIT_STORE``, else ``"memory"``.
        on_rate_limit_wait: called with a :class:`RateLimitWait` before each wait for
            the limit or a lockout (a progress bar, a metric).
        transport: sends requests instead of the built-in aiohttp transport: any
            object with ``async __call__(Request) -> Response`` and ``async aclose()``,
            never closed here.
        http_session: an ``aiohttp.ClientSession`` of the caller's for the built-in
            transport to send with; it is never closed here.
        max_connections: the connection pool's size, and how many requests are in
            flight at once; further calls queue without their timeout running.
        max_body_size: the largest body read, in bytes, after decompression; a
            larger one is refused.
        proxy: an ``http://`` proxy for every request to the service (credentials in
            the URL are kept out of every repr, log and error).
        trust_env: use the proxies of ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``.
        ssl: an ``ssl.SSLContext`` for a custom CA bundle or client certificates;
            it must verify certificates (there is no way to turn that off).
        sleep: the wait between attempts, :func:`asyncio.sleep` by default (for tests).
        clock: monotonic seconds for deadlines and the rate limit (for tests).
        cache: a :class:`CachePolicy` to share reads: concurrent identical calls send
            one request, and a reading answers later calls for ``max_age`` seconds;
            ``None`` (the default): every call is a request.
        cache_store: where readings are shared besides this process: ``"memory"``
            (this process only), ``"local"`` (every process of the user on this
            machine), a ``redis://`` URL (a fleet, which then sends one request per
            entry), or a store object; ``$STABILITY_CACHE_STORE``, else ``"memory"``.

    Raises:
        StabilityError: an unsafe ``base_url``.
        TypeError: an argument of the wrong type.
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
        rate_limit: RateLimit | None = RateLimit(),  # noqa: B008 - frozen, shared safely
        rate_limit_store: RateLimitStoreLike | None = None,
        on_rate_limit_wait: Callable[[RateLimitWait], None] | None = None,
        transport: Transport | None = None,
        http_session: aiohttp.ClientSession | None = None,
        max_connections: int = 100,
        max_body_size: int = 1_048_576,
        proxy: str | None = None,
        trust_env: bool = False,
        ssl: ssl_module.SSLContext | None = None,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        cache: CachePolicy | None = None,
        cache_store: CacheStoreLike | None = None,
    ) -> None:
        """Check the configuration; nothing is opened until the first call."""
        self._owner = False  # set first: __del__ runs even when __init__ raises
        config = make_config(
            api_key,
            base_url=base_url,
            api_version=api_version,
            organization=organization,
            client_id=client_id,
            client_version=client_version,
            timeout=timeout,
        )
        route = None
        if proxy is not None or ssl is not None or trust_env:
            route = Route(proxy=proxy, trust_env=trust_env, ssl=ssl)
        state, self._owns_transport = make_state(
            config,
            retry=retry,
            middlewares=middlewares,
            rate_limit=rate_limit,
            rate_limit_store=rate_limit_store,
            on_rate_limit_wait=on_rate_limit_wait,
            transport=transport,
            http_session=http_session,
            max_connections=max_connections,
            max_body_size=max_body_size,
            route=route,
            sleep=sleep,
            clock=clock,
            cache=cache,
            cache_store=cache_store,
        )
        self._adopt(state, parent=None)
        self._owner = True

    def _adopt(self, state: SessionState, parent: StabilitySession | None) -> None:
        self._state = state
        self._parent = parent
        self._closed = False

    @property
    def base_url(self) -> str:
        """The service's base URL, without a trailing slash."""
        return self._state.config.base_url

    @property
    def api_version(self) -> str:
        """``"v1"`` or ``"v1alpha"``."""
        return self._state.config.api_version

    @property
    def organization(self) -> str | None:
        """The default ``Organization`` of :meth:`balance`, if any."""
        return self._state.config.organization

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of this session's calls."""
        return self._state.retry

    @property
    def timeout(self) -> float:
        """Seconds per attempt."""
        return self._state.config.timeout

    @property
    def rate_limit(self) -> RateLimit | None:
        """The limit every request passes, or ``None`` when it is off."""
        limiter = self._state.limiter
        return None if limiter is None else limiter.limit

    @property
    def closed(self) -> bool:
        """Whether this session, or the session it is a view of, has been closed."""
        return self._closed or self._state.closing.closed

    def __repr__(self) -> str:
        """Say where the session points; the key is masked (``sk-…abcd``)."""
        config = self._state.config
        state = " closed" if self.closed else ""
        key = "None" if config.api_key is None else mask_secret(config.api_key)
        return (
            f"<StabilitySession{state} {config.base_url} {config.api_version} "
            f"key={key} organization={config.organization!r}>"
        )

    def with_options(
        self,
        *,
        api_key: str | _Unset = _UNSET,
        organization: str | _Unset | None = _UNSET,
        timeout: float | _Unset = _UNSET,
        retry: RetryPolicy | _Unset = _UNSET,
    ) -> StabilitySession:
        """A view of this session with other options, sharing its pool and rate limiter.

        Each option is checked as the constructor checks it. The view lives as long
        as this session: closing this session makes the view unusable; closing the
        view closes nothing shared.

        Raises:
            TypeError: a value of the wrong type.
            ValueError: a value the constructor would refuse.
        """
        state = self._state
        changes: dict[str, Any] = {}
        if api_key is not _UNSET:
            changes["api_key"] = api_key
        if organization is not _UNSET:
            changes["organization"] = organization
        if timeout is not _UNSET:
            changes["timeout"] = timeout
        config = derive_config(state.config, **changes) if changes else state.config
        new_state = attrs.evolve(
            state, config=config, retry=state.retry if retry is _UNSET else retry
        )
        view = StabilitySession.__new__(StabilitySession)
        view._owner = False
        view._adopt(new_state, parent=self)
        return view

    def _call(self, request: Request | None, decoder: Callable[[Response], T]) -> Awaitable[T]:
        # A plain function handing back the call's coroutine: no frame of its own to
        # resume at every step of every call.
        state = self._state
        if self._closed or state.closing.closed:
            raise StabilityError(SESSION_CLOSED)
        return state.call(request, decoder)

    def _check_open(self) -> None:
        if self._closed or self._state.closing.closed:
            raise StabilityError(SESSION_CLOSED)

    def account(self, *, max_age: float | None = None) -> Awaitable[Account]:
        """The account the API key belongs to (``GET /{version}/user/account``).

        ``await session.account()``: a plain method handing back the call to
        await, so that no frame of its own is resumed at every step of the call.

        Args:
            max_age: with a read cache, the oldest reading this call accepts, in
                seconds, instead of the policy's ``max_age`` (``0``: a new reading,
                or one already in flight).

        Raises:
            APIError: the service refused (e.g. :class:`AuthenticationError` for a bad key).
            APIConnectionError: no usable answer after all attempts.
            RateLimitError: also when the rate limit would make the call wait longer
                than the retry policy allows.
            ResponseValidationError: the answer is not a valid account.
            StabilityError: the session is closed, or has no API key.
            ValueError: a ``max_age`` without a cache, or not a number of seconds >= 0.
        """
        state = self._state
        if state.cache is not None:
            self._check_open()
            return state.read(ACCOUNT, None, max_age, state.decode_account)
        if max_age is not None:
            raise ValueError(_NO_CACHE)
        return self._call(state.default_request(ACCOUNT), state.decode_account)

    def balance(
        self, organization: str | None = None, *, max_age: float | None = None
    ) -> Awaitable[Balance]:
        """The credit balance (``GET /{version}/user/balance``).

        ``await session.balance()``: a plain method handing back the call to await.

        Args:
            organization: read this organization's balance instead of the session's
                default ``organization`` (or, without either, the user's default one).
            max_age: with a read cache, the oldest reading this call accepts, in
                seconds, instead of the policy's ``max_age`` (``0``: a new reading,
                or one already in flight).

        Raises:
            APIError: the service refused (e.g. :class:`PermissionDeniedError` for an
                organization the key's account is not a member of).
            APIConnectionError: no usable answer after all attempts.
            RateLimitError: also when the rate limit would make the call wait longer
                than the retry policy allows.
            ResponseValidationError: the answer is not a valid balance.
            StabilityError: the session is closed, or has no API key.
            ValueError: ``organization`` contains CR, LF or NUL; a ``max_age``
                without a cache, or not a number of seconds >= 0.
        """
        state = self._state
        if state.cache is not None:
            self._check_open()
            if organization is not None:
                check_header_value("organization", organization)
            return state.read(
                BALANCE, organization or state.config.organization, max_age, state.decode_balance
            )
        if max_age is not None:
            raise ValueError(_NO_CACHE)
        return self._fresh_balance(organization)

    def _fresh_balance(self, organization: str | None) -> Awaitable[Balance]:
        """A request for the balance, never a cached reading (bulk checks, watches)."""
        state = self._state
        request = state.default_request(BALANCE)
        config = state.config
        if organization is not None and organization != config.organization and config.api_key:
            request = build_request(config, BALANCE, organization=organization)
        return self._call(request, state.decode_balance)

    def balances(
        self,
        targets: Iterable[TargetLike] | AsyncIterable[TargetLike],
        *,
        concurrency: int = 32,
        ordered: bool = False,
    ) -> AsyncGenerator[BalanceResult, None]:
        """Check many balances at once, yielding each result as it completes.

        ::

            targets = [BalanceTarget(api_key=key, label=name) for name, key in keys]
            async for result in session.balances(targets, concurrency=32):
                print(result.target.display_name, result.balance if result.ok else result.error)

        ``targets`` is consumed lazily, so a generator of a million targets runs in
        memory that grows with ``concurrency``, not with the number of targets. One
        target's failure never stops the run: its result carries the typed error.
        Every check passes the session's rate limiter, shared with every other
        call on the same key. Leaving the loop early (``break``) or cancelling the
        consumer cancels the checks in flight; wrap the iterator in
        :func:`contextlib.aclosing` to have that happen at the ``break`` itself.

        Args:
            targets: an iterable or async iterable of :class:`BalanceTarget`; a plain
                ``str`` is an organization under this session's key.
            concurrency: checks in flight at once.
            ordered: yield results in input order (a bounded buffer holds early ones).
                Either way, at most ``2 * concurrency`` targets (``4 *`` in order) are
                taken ahead of what the loop has consumed.

        Raises:
            ValueError: a bad ``concurrency`` (at once, not when iterated).
        """
        check_count("concurrency", concurrency)
        views: dict[str, StabilitySession] = {}

        async def check(target: Any) -> Balance:
            key = target.api_key
            if key is None:
                return await self._fresh_balance(target.organization)
            view = views.get(key)
            if view is None:
                if len(views) >= _VIEWS_PER_RUN:
                    del views[next(iter(views))]  # oldest first: bounded memory
                view = views[key] = self.with_options(api_key=key)
            return await view._fresh_balance(target.organization)

        return check_balances(check, targets, concurrency=concurrency, ordered=ordered)

    def watch_balance(
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

        Raises:
            ValueError: an ``interval`` that is not a finite number > 0, or a ``below``
                that is not a finite number (at once, not when iterated).
        """
        interval = check_seconds("interval", interval)
        if below is not None:
            check_seconds("below", abs(below), zero=True)  # finite; negative is allowed
        state = self._state
        return watch(
            lambda: self._fresh_balance(organization),
            interval=interval,
            threshold=Threshold(below),
            sleep=state.closing.sleep,
            clock=state.clock,
            closed=lambda: self.closed,
        )

    async def close(self) -> None:
        """Close the session, its connection pool and its rate-limit store; idempotent.

        Calls waiting (for a connection, for the rate limit, between attempts) fail
        at once with the "session closed" :class:`StabilityError`; requests in flight
        end, and give back their rate-limit slots before the store closes; a
        :meth:`watch_balance` ends. On a view from :meth:`with_options`, only the
        view is closed.
        """
        self._closed = True
        if not self._owner:
            return
        state = self._state
        closing = state.closing
        closing.close()
        if state.cache is not None:
            await state.cache.aclose()  # its flights end, its shared store closes
        if self._owns_transport:
            await state.transport.aclose()
        await closing.settle()
        if state.limiter is not None:
            await state.limiter.aclose()

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
        """Warn about a session dropped with its connections open; nothing is scheduled here."""
        if (
            getattr(self, "_owner", False)
            and self._owns_transport
            and not self._closed
            and cast(AiohttpTransport, self._state.transport).holds_connections
        ):
            _warn(
                f"unclosed {self!r}: use 'async with StabilitySession()' or await close()",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )
