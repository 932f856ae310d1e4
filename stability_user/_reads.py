"""What a session reads: the account, the balance, many balances, a watch.

:class:`SessionReads` is the half of :class:`~stability_user.StabilitySession`
that makes calls, on top of its state (:class:`~stability_user._state.SessionState`):
with a read cache, ``account()`` and ``balance()`` go through it; bulk checks and
watches always read fresh.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._checks import check_count, check_header_value, check_seconds
from ._endpoints import ACCOUNT, BALANCE
from ._errors import SESSION_CLOSED, StabilityError
from ._http import Request, Response
from ._models import Account, Balance
from ._sansio import build_request
from ._state import SessionState

if TYPE_CHECKING:
    from ._bulk import BalanceResult, TargetLike
    from ._watch import BalanceReading

__all__ = ["SessionReads"]

T = TypeVar("T")

_NO_CACHE: Final = "max_age needs a read cache: StabilitySession(cache=CachePolicy(max_age=...))"
_VIEWS_PER_RUN: Final = 4096  # per-key views a bulk run keeps, so a key's headers are built once


class SessionReads:
    """The calls of a session; the session itself holds the state and the life."""

    _state: SessionState
    _closed: bool

    @property
    def closed(self) -> bool:
        """Whether this session, or the session it is a view of, has been closed."""
        return self._closed or self._state.closing.closed

    def _keyed(self, api_key: str) -> SessionReads:
        """A view of this session with another key (the session makes it)."""
        raise NotImplementedError

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
        from ._bulk import check_balances  # noqa: PLC0415 - imported with the first bulk run

        check_count("concurrency", concurrency)
        views: dict[str, SessionReads] = {}

        def check(target: Any) -> Awaitable[Balance]:
            # Hands back the call to await: no frame of its own resumed at every step.
            key = target.api_key
            if key is None:
                return self._fresh_balance(target.organization)
            view = views.get(key)
            if view is None:
                if len(views) >= _VIEWS_PER_RUN:
                    del views[next(iter(views))]  # oldest first: bounded memory
                view = views[key] = self._keyed(key)
            return view._fresh_balance(target.organization)

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
        from ._watch import Threshold, watch  # noqa: PLC0415 - imported with the first watch

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
