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

import asyncio
import atexit
import concurrent.futures
import contextlib
import enum
import itertools
import os
import ssl as ssl_module
import threading
import time
import warnings
import weakref
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Sequence,
)
from types import TracebackType
from typing import Any, Final, TypeVar

from ._bulk import BalanceResult, TargetLike
from ._cache import CachePolicy
from ._cache._open import CacheStoreLike
from ._errors import SESSION_CLOSED, StabilityError
from ._http import Middleware, Transport
from ._models import Account, Balance
from ._ratelimit import RateLimit, RateLimitWait
from ._ratelimit._open import RateLimitStoreLike
from ._retry import RetryPolicy
from ._session import StabilitySession as AsyncStabilitySession
from ._sync_loop import LoopThread
from ._types import Clock, Sleep
from ._watch import BalanceReading

__all__ = ["StabilitySession"]

T = TypeVar("T")

_CLOSE_WAIT: Final = 10.0  # seconds close() waits for the session's thread to end
_EXIT_WAIT: Final = 5.0  # seconds the exit hook gives all open sessions together
_OWN_THREAD: Final = (
    "a sync StabilitySession cannot be called from its own event loop's thread (a "
    "middleware, on_rate_limit_wait or transport of the session): that would wait "
    "for itself forever; use the async session there"
)
_FORKED_ITERATOR: Final = (
    "this iterator was started before the process forked, in the parent's event "
    "loop: start a new one in this process"
)
_thread_numbers = itertools.count(1)


class _Unset(enum.Enum):
    """``with_options`` leaves an option as it is: distinct from ``None``, a real value."""

    UNSET = enum.auto()


_UNSET: Final = _Unset.UNSET


class _Core:
    """What a sync session and its views share: the async session and the thread running it.

    The thread starts at the first call. Every call is submitted under ``lock``, so
    none is handed to a loop that is stopping (it would never be answered).
    """

    __slots__ = ("__weakref__", "closed", "lock", "options", "session", "thread")

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.session = AsyncStabilitySession(**options)  # checks them: nothing is opened
        self.lock = threading.Lock()
        self.thread: LoopThread | None = None
        self.closed = False
        _CORES.add(self)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Hand ``coro`` to the loop (started now if need be); close it if it cannot be.

        Raises:
            StabilityError: the session is closed, or this is the loop's own thread.
        """
        try:
            with self.lock:
                return self._thread_for_calls().submit(coro)
        except BaseException:
            coro.close()  # never started: no "was never awaited" warning
            raise

    def _thread_for_calls(self) -> LoopThread:
        """The loop's thread, started now if need be (under ``lock``)."""
        if self.closed:
            raise StabilityError(SESSION_CLOSED)
        thread = self.thread
        if thread is None:
            thread = self.thread = LoopThread(f"stability-user-sync-{next(_thread_numbers)}")
        elif thread.in_thread():
            raise StabilityError(_OWN_THREAD)
        return thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` in the loop and wait for its result, raising what it raises.

        Raises:
            StabilityError: the session is closed (also when it closes during the call).
        """
        future = self.submit(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            # close() cancels the calls still running once the session has closed.
            if self.closed:
                raise StabilityError(SESSION_CLOSED) from None
            raise
        except BaseException:
            future.cancel()  # KeyboardInterrupt while waiting: the call ends too
            raise

    def close(self, wait: float | None = _CLOSE_WAIT) -> None:
        """Close the async session in its loop, then end the loop and its thread.

        Raises:
            Exception: what the async session's ``close()`` raised, on the first close.
        """
        with self.lock:
            first = not self.closed
            self.closed = True
            thread = self.thread
        if thread is None:
            return  # never used: nothing was opened
        thread.stop(self.session.close, wait=wait)
        if first and thread.finished.done():
            thread.finished.result()

    def abandon(self) -> None:
        """Close without waiting: the session was dropped unclosed (a finaliser cannot block)."""
        with self.lock:
            self.closed = True
            thread = self.thread
        if thread is not None:
            thread.stop(self.session.close, wait=None)

    def after_fork(self) -> None:
        """In a child of a fork: forget the parent's loop and pool, build afresh on next use.

        The parent's loop, pool and store are kept referenced, never closed nor
        collected here: they share the parent's sockets and its event loop's epoll
        instance, and closing them in the child would unregister the parent's
        connections from its loop (or, for TLS, write to its streams).
        """
        self.lock = threading.Lock()  # its holder, if any, was a thread of the parent
        thread = self.thread
        if thread is None:
            return  # never used before the fork: nothing was opened, nothing is shared
        self.thread = None
        _LEFT_BY_PARENT.append((thread, self.session))
        if not self.closed:
            self.session = AsyncStabilitySession(**self.options)


_CORES: weakref.WeakSet[_Core] = weakref.WeakSet()
_LEFT_BY_PARENT: list[object] = []  # what a child of a fork must never close (see after_fork)


def _after_fork_in_child() -> None:
    for core in list(_CORES):
        core.after_fork()


def _close_at_exit() -> None:
    """Close every session still open when the interpreter exits, within a bounded time.

    A session at module level in a web app is never closed by the app: this
    closes its pool and its store cleanly. A session that cannot close in time is
    left to the end of the process (its thread is a daemon): exit never hangs.
    """
    cores = [core for core in list(_CORES) if not core.closed]
    for core in cores:
        core.abandon()  # all at once, then wait for them together
    deadline = time.monotonic() + _EXIT_WAIT
    for core in cores:
        thread = core.thread
        if thread is not None:
            thread.stop(core.session.close, wait=max(0.0, deadline - time.monotonic()))


if hasattr(os, "register_at_fork"):  # every POSIX system; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_at_exit)


class _Steps:
    """An async generator stepped from another thread, one ``__anext__`` per step.

    Both methods run in the session's loop: ``aclose`` first ends a step that is
    still running (its caller was interrupted), as an async generator cannot be
    closed while it runs.
    """

    __slots__ = ("_generator", "_step", "session")

    def __init__(
        self, generator: AsyncGenerator[Any, None], session: AsyncStabilitySession
    ) -> None:
        self._generator: AsyncGenerator[Any, None] = generator
        self._step: asyncio.Task[Any] | None = None
        self.session = session  # the core's async session when it began: this process's

    async def next(self) -> Any:
        self._step = asyncio.current_task()
        try:
            return await self._generator.__anext__()
        finally:
            self._step = None

    async def aclose(self) -> None:
        step = self._step
        if step is not None:
            step.cancel()
            await asyncio.wait((step,))
        await self._generator.aclose()


async def _awaited(call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """``await call(*args, **kwargs)``, the call made in the running loop."""
    return await call(*args, **kwargs)


class StabilitySession:
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
        self._core: _Core | None = None  # before anything can raise: __del__ reads it
        core = _Core(options)
        self._core = core
        self._root: StabilitySession | None = None  # the session a view is of
        self._changes: dict[str, Any] = {}
        self._base = core.session
        self._view = core.session
        self._closed = False

    def _async(self) -> AsyncStabilitySession:
        """The async session (or view) this one calls, in this process."""
        core = self._core
        assert core is not None  # noqa: S101 - set by __init__ and with_options
        base = core.session
        if self._base is not base:  # a fork gave the core a new async session
            self._view = base.with_options(**self._changes) if self._changes else base
            self._base = base
        return self._view

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        core = self._core
        assert core is not None  # noqa: S101 - set by __init__ and with_options
        if self._closed:
            coro.close()
            raise StabilityError(SESSION_CLOSED)
        return core.run(coro)

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

    def account(self, *, max_age: float | None = None) -> Account:
        """The account the API key belongs to (``GET /{version}/user/account``).

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
        session = self._async()
        # Called in the session's loop: a cached read starts or joins its read there.
        return self._run(_awaited(session.account, max_age=max_age))

    def balance(self, organization: str | None = None, *, max_age: float | None = None) -> Balance:
        """The credit balance (``GET /{version}/user/balance``).

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
        session = self._async()
        return self._run(_awaited(session.balance, organization, max_age=max_age))

    def balances(
        self,
        targets: Iterable[TargetLike],
        *,
        concurrency: int = 32,
        ordered: bool = False,
    ) -> Generator[BalanceResult, None, None]:
        """Check many balances at once, yielding each result as it completes.

        ::

            targets = [BalanceTarget(api_key=key, label=name) for name, key in keys]
            for result in session.balances(targets, concurrency=32):
                print(result.target.display_name, result.balance if result.ok else result.error)

        As :meth:`stability_user.StabilitySession.balances`: ``targets`` is read
        lazily (in the session's thread), at most ``2 * concurrency`` ahead of the
        loop (``4 *`` in order), so memory stays bounded whatever their number; one
        target's failure is its result's ``error``. Closing the iterator (``break``
        out of a ``for`` over it, ``close()``, or :func:`contextlib.closing`)
        cancels the checks in flight before it returns.

        Args:
            targets: an iterable of :class:`~stability_user.BalanceTarget`; a plain
                ``str`` is an organization under this session's key.
            concurrency: checks in flight at once.
            ordered: yield results in input order.

        Raises:
            ValueError: a bad ``concurrency`` (at once, not when iterated).
        """
        session = self._async()
        return self._iterate(session.balances(targets, concurrency=concurrency, ordered=ordered))

    def watch_balance(
        self,
        interval: float = 60.0,
        below: float | None = None,
        organization: str | None = None,
    ) -> Generator[BalanceReading, None, None]:
        """Poll the balance every ``interval`` seconds, forever, yielding each reading.

        As :meth:`stability_user.StabilitySession.watch_balance`; each ``next()``
        blocks until the next reading, and :meth:`close` ends the watch.

        Args:
            interval: seconds between the end of one poll and the start of the next.
            below: the low-balance threshold, in credits.
            organization: the organization to watch, else the session's default.

        Raises:
            ValueError: an ``interval`` that is not a finite number > 0, or a ``below``
                that is not a finite number (at once, not when iterated).
        """
        session = self._async()
        return self._iterate(
            session.watch_balance(interval=interval, below=below, organization=organization)
        )

    def _iterate(self, generator: AsyncGenerator[T, None]) -> Generator[T, None, None]:
        core = self._core
        assert core is not None  # noqa: S101 - set by __init__ and with_options
        return self._step_through(_Steps(generator, core.session))

    def _step_through(self, steps: _Steps) -> Generator[Any, None, None]:
        core = self._core
        assert core is not None  # noqa: S101 - set by __init__ and with_options
        started = False
        try:
            while True:
                if steps.session is not core.session:
                    raise StabilityError(_FORKED_ITERATOR)
                started = True
                try:
                    yield self._run(steps.next())
                except StopAsyncIteration:
                    return
        finally:
            # Closed early (break, close(), garbage): end the checks in flight now.
            if started and steps.session is core.session and not core.closed:
                with contextlib.suppress(StabilityError):  # closed meanwhile: done then
                    core.run(steps.aclose())

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
