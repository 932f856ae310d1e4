"""The calls of the sync session: each runs in the session's loop, the caller waits."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator, Iterable
from typing import Any, TypeVar

from .._bulk import BalanceResult, TargetLike
from .._errors import SESSION_CLOSED, StabilityError
from .._models import Account, Balance
from .._session import StabilitySession as AsyncStabilitySession
from .._watch import BalanceReading
from ._core import FORKED_ITERATOR, Core, Steps

__all__ = ["SyncCalls"]

T = TypeVar("T")


async def _awaited(call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """``await call(*args, **kwargs)``, the call made in the running loop."""
    return await call(*args, **kwargs)


class SyncCalls:
    """``account()``, ``balance()``, ``balances()`` and ``watch_balance()`` of the sync session.

    The public class, :class:`stability_user.sync.StabilitySession`, adds its
    options, views and life cycle; this part turns each call into a coroutine run
    in the session's loop.
    """

    _core: Core | None
    _root: Any  # the session a view is of (None for a session)
    _changes: dict[str, Any]
    _base: AsyncStabilitySession
    _view: AsyncStabilitySession
    _closed: bool

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
        return self._step_through(Steps(generator, core.session))

    def _step_through(self, steps: Steps) -> Generator[Any, None, None]:
        core = self._core
        assert core is not None  # noqa: S101 - set by __init__ and with_options
        started = False
        try:
            while True:
                if steps.session is not core.session:
                    raise StabilityError(FORKED_ITERATOR)
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
