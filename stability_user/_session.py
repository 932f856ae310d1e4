"""StabilitySession: the public entry point, on top of the protocol, retries and transport.

A call goes session (and its read cache, if any) -> retry loop -> user middlewares
(first = outermost) -> sender (a connection, the key's rate-limit slot) ->
transport, and comes back decoded into a model or a typed error. The calls
themselves are in :mod:`stability_user._reads`.
The session's settings are one frozen value (:class:`~stability_user._state.SessionState`);
a view from :meth:`StabilitySession.with_options` is the same value with a field changed.
"""

from __future__ import annotations

import enum
import ssl as ssl_module
import warnings
from collections.abc import (
    Callable,
    Sequence,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import aiohttp
import attrs

from ._config import derive_config, make_config
from ._http import Middleware, Transport
from ._network import Route
from ._ratelimit import RateLimit, RateLimitWait
from ._ratelimit._open import RateLimitStoreLike
from ._reads import SessionReads
from ._retry import RetryPolicy
from ._secrets import mask_secret
from ._state import SessionState, make_state
from ._transport import AiohttpTransport
from ._types import Clock, Sleep

if TYPE_CHECKING:
    from ._cache import CachePolicy
    from ._cache._open import CacheStoreLike

__all__ = ["StabilitySession"]

T = TypeVar("T")


class _Unset(enum.Enum):
    """``with_options`` leaves an option as it is: distinct from ``None``, a real value."""

    UNSET = enum.auto()


_UNSET = _Unset.UNSET


class StabilitySession(SessionReads):
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

    def _keyed(self, api_key: str) -> StabilitySession:
        return self.with_options(api_key=api_key)

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
        state.sender.key_ids.clear()  # the keys themselves: none outlives the session
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
