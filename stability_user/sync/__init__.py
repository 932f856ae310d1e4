"""The sync client: :class:`StabilitySession` for Flask, Django, Celery and plain scripts.

::

    from stability_user.sync import StabilitySession

    session = StabilitySession()        # one per process, shared by every thread
    print(session.account().email, session.balance().credits)

It mirrors :class:`stability_user.StabilitySession` as ``redis`` mirrors
``redis.asyncio``: the same options, the same models and the same typed errors
(import them from :mod:`stability_user`). Inside it is one async session whose
event loop runs in a daemon thread of its own, started at the first call: the
calls of every thread share its connection pool and its rate limiter, and a call
works whether or not the calling thread runs an event loop itself.

A process that forks (gunicorn's and Celery's prefork workers) gives each child
a session of its own: its first call there starts a new loop and a new pool.
"""

from __future__ import annotations

import enum
import os
import ssl as ssl_module
import warnings
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final

from .._cache import CachePolicy
from .._cache._open import CacheStoreLike
from .._http import Middleware, Transport
from .._ratelimit import RateLimit, RateLimitWait
from .._ratelimit._open import RateLimitStoreLike
from .._retry import RetryPolicy
from .._types import Clock, Sleep
from ._calls import SyncCalls
from ._core import Core

__all__ = ["StabilitySession"]


class _Unset(enum.Enum):
    """``with_options`` leaves an option as it is: distinct from ``None``, a real value."""

    UNSET = enum.auto()


_UNSET: Final = _Unset.UNSET


class StabilitySession(SyncCalls):
    """A sync client of the Stability user API, safe to share between threads.

    Use it as a context manager, or call :meth:`close` when done; in a web app,
    make one at module level (it opens nothing until the first call) and let
    every request's thread use it::

        from stability_user.sync import StabilitySession

        with StabilitySession() as session:   # the key from STABILITY_API_KEY
            account = session.account()
            balance = session.balance(organization="org-123")

    The options are those of :class:`stability_user.StabilitySession`, checked
    the same way, but ``http_session`` (an ``aiohttp.ClientSession`` belongs to an
    event loop of the caller's, and this session's loop is its own).
    Middlewares, a ``transport``, ``sleep`` and ``on_rate_limit_wait`` run in the
    session's thread: a middleware must not call this session (that raises
    :class:`StabilityError`).

    The session's event loop runs in a daemon thread started at the first call;
    :meth:`close` closes the pool and the rate-limit store there and ends the
    thread. A session still open when the interpreter exits is closed then (for
    at most a few seconds); one dropped unclosed emits a ``ResourceWarning``. In
    a child of ``os.fork()`` the first call starts a new thread and a new pool.

    Args:
        api_key: the API key; ``$STABILITY_API_KEY`` when omitted.
        base_url: the service; ``$STABILITY_API_HOST``, else ``https://api.stability.ai``.
            ``http://`` is accepted only for loopback hosts.
        api_version: ``"v1"`` or ``"v1alpha"``; ``$STABILITY_API_VERSION``, else ``"v1"``.
        organization: the default ``Organization`` of :meth:`balance`.
        client_id: sent as ``Stability-Client-ID`` when set.
        client_version: sent as ``Stability-Client-Version`` when set.
        timeout: seconds per attempt, from sending to the last body byte.
        retry: the :class:`~stability_user.RetryPolicy`; in a web request, one with
            a ``deadline`` shorter than the server's own request timeout.
        middlewares: called on every attempt, the first outermost (in the
            session's thread).
        rate_limit (:class:`~stability_user.RateLimit` | None): the limit per API key
            every request passes; ``None`` turns it off.
        rate_limit_store: where the limiter's state is kept: ``"memory"`` (this
            session: every thread using it), ``"local"`` (every process of the user
            on this machine: prefork servers), a ``redis://`` URL (a fleet), or a
            store object; ``$STABILITY_RATE_LIMIT_STORE``, else ``"memory"``.
        on_rate_limit_wait: called (in the session's thread) with a
            :class:`~stability_user.RateLimitWait` before each wait for the limit.
        transport: sends requests instead of the built-in aiohttp transport;
            never closed here.
        max_connections: the connection pool's size, and how many requests are in
            flight at once; further calls queue (within their deadline).
        max_body_size: the largest body read, in bytes, after decompression.
        proxy: an ``http://`` proxy for every request to the service.
        trust_env: use the proxies of ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``.
        ssl: an ``ssl.SSLContext`` for a custom CA bundle or client certificates.
        sleep: the wait between attempts, an async function (for tests).
        clock: monotonic seconds for deadlines and the rate limit (for tests).
        cache: a :class:`~stability_user.CachePolicy` to share reads: concurrent
            identical calls of every thread send one request, and a reading answers
            later calls for ``max_age`` seconds; ``None`` (the default): every call
            is a request.
        cache_store: where readings are shared besides this session: ``"memory"``,
            ``"local"`` (every process of the user on this machine: prefork
            servers), a ``redis://`` URL (a fleet), or a store object;
            ``$STABILITY_CACHE_STORE``, else ``"memory"``.

    Raises:
        StabilityError: an unsafe ``base_url``.
        TypeError: an argument of the wrong type.
        ValueError: an unknown ``api_version``, a bad number, or a header value with
            CR, LF or NUL.
    """

    # Keep in step with stability_user.StabilitySession: a new option of the async
    # session is one line here (and one in the docstring); the constructor hands on
    # every argument by name, and a test compares the two signatures.
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
        """Check the configuration; nothing is opened (no thread started) until the first call."""
        options = dict(locals())  # first: exactly the arguments, by name
        del options["self"]
        self._core = None  # before anything can raise: __del__ reads it
        core = Core(options)
        self._core = core
        self._root = None  # the session a view is of
        self._changes = {}
        self._base = core.session
        self._view = core.session
        self._closed = False

    @property
    def base_url(self) -> str:
        """The service's base URL, without a trailing slash."""
        return self._async().base_url

    @property
    def api_version(self) -> str:
        """``"v1"`` or ``"v1alpha"``."""
        return self._async().api_version

    @property
    def organization(self) -> str | None:
        """The default ``Organization`` of :meth:`balance`, if any."""
        return self._async().organization

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of this session's calls."""
        return self._async().retry

    @property
    def timeout(self) -> float:
        """Seconds per attempt."""
        return self._async().timeout

    @property
    def rate_limit(self) -> RateLimit | None:
        """The limit every request passes, or ``None`` when it is off."""
        return self._async().rate_limit

    @property
    def closed(self) -> bool:
        """Whether this session, or the session it is a view of, has been closed."""
        core = self._core
        return self._closed or core is None or core.closed

    def __repr__(self) -> str:
        """Say where the session points; the key is masked (``sk-…abcd``)."""
        described = repr(self._async()).removeprefix("<StabilitySession")
        if self.closed and not described.startswith(" closed"):
            described = " closed" + described
        return f"<stability_user.sync.StabilitySession{described}"

    def with_options(
        self,
        *,
        api_key: str | _Unset = _UNSET,
        organization: str | _Unset | None = _UNSET,
        timeout: float | _Unset = _UNSET,
        retry: RetryPolicy | _Unset = _UNSET,
    ) -> StabilitySession:
        """A view of this session with other options, sharing its pool, limiter and thread.

        Each option is checked as the constructor checks it. The view lives as long
        as this session: closing this session makes the view unusable; closing the
        view closes nothing shared.

        Raises:
            TypeError: a value of the wrong type.
            ValueError: a value the constructor would refuse.
        """
        given = {name: value for name, value in dict(locals()).items() if value is not _UNSET}
        del given["self"]
        derived = self._async().with_options(**given)  # checks the values now
        view = StabilitySession.__new__(StabilitySession)
        view._core = self._core
        view._root = self._root or self  # the root lives as long as its views
        view._changes = {**self._changes, **given}
        view._base = self._base  # what _async() derived from, just now
        view._view = derived
        view._closed = False
        return view

    def close(self) -> None:
        """Close the session: its connection pool and rate-limit store, then its thread.

        Idempotent. Calls waiting (for a connection, for the rate limit, between
        attempts) fail at once with the "session closed" :class:`StabilityError`,
        as do calls still running once the session has closed; iterators end. On a
        view from :meth:`with_options`, only the view is closed. It returns when
        the thread has ended (or after a few seconds if it cannot).
        """
        self._closed = True
        if self._root is None and self._core is not None:
            self._core.close()

    def __enter__(self) -> StabilitySession:
        """Return the session itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the session."""
        self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        """Warn about a session dropped with its thread running, and stop it without waiting."""
        core = getattr(self, "_core", None)
        if core is None or self._root is not None or core.closed:
            return
        thread = core.thread
        if thread is not None and thread.pid == os.getpid():
            _warn(
                f"unclosed {self!r}: use 'with StabilitySession()' or call close()",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )
        core.abandon()
