"""The rate limiter: every request takes a slot of its key, at its service, right before it is sent.

It asks its store for a slot when the request's connection is in hand, waits
(or refuses at once, when the wait is longer than the call allows) when none is
free, gives the slot back when the response is read, and records the service's
lockout after a 429. Giving back never awaits, so no cancellation can stop it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, Literal, cast

from .._errors import RateLimitError
from .._secrets import mask_secret
from .._types import Sleep
from ._limit import MAX_LOCKOUT, RateLimit, RateLimitWait, Wait
from ._memory import MemoryRateLimitStore
from ._store import ImmediateStore, RateLimitStore

__all__ = ["RateLimiter", "Slot"]

logger = logging.getLogger("stability_user")

_CLOSE_WAIT: Final = 1.0  # seconds close() waits for slots being given back


Slot = tuple[str, "int | str"]
"""A slot taken for one request, ``(key_id, token)``, given back when it completes.

A plain tuple: one is made for every request.
"""


class RateLimiter:
    """Keeps every request of a session (and its views) under the limit of its key.

    Args:
        limit: the limit per key.
        store: where the state is kept; ``None``: the store of the running event
            loop (``"memory"``, :meth:`MemoryRateLimitStore.for_loop`).
        sleep: how a call waits for a slot (the session's, which ``close()`` ends).
        on_wait: called before each wait for the limit or a lockout.
        owns_store: close ``store`` with the limiter (a store made from a name or URL).
    """

    __slots__ = (
        "_giving_back",
        "_immediate",
        "_loop",
        "_on_wait",
        "_owns_store",
        "_per_loop",
        "_sleep",
        "_store",
        "limit",
    )

    def __init__(
        self,
        limit: RateLimit,
        store: RateLimitStore | None,
        *,
        sleep: Sleep,
        on_wait: Callable[[RateLimitWait], None] | None = None,
        owns_store: bool = False,
    ) -> None:
        """Limit with ``limit``, keeping the state in ``store``."""
        self.limit = limit
        self._per_loop = store is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store: RateLimitStore | None = store
        # A store answering without an await costs the common case no coroutine.
        self._immediate: ImmediateStore | None = (
            cast(ImmediateStore, store) if hasattr(store, "acquire_nowait") else None
        )
        self._sleep = sleep
        self._on_wait = on_wait
        self._owns_store = owns_store
        self._giving_back: set[asyncio.Future[None]] = set()

    @property
    def store(self) -> RateLimitStore:
        """The store in use (for ``"memory"``, the running event loop's)."""
        if self._per_loop:
            self._bind()
        assert self._store is not None  # noqa: S101 - bound above, or given
        return self._store

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            store = MemoryRateLimitStore.for_loop(loop)
            self._store = store
            self._immediate = store

    def take_now(
        self, key_id: str, lease: float, loop: asyncio.AbstractEventLoop | None = None
    ) -> Slot | Wait | None:
        """A slot, or how long until one may be free, without an await; ``None``: :meth:`take`.

        This runs before every request: the in-process store answers here. ``loop``
        is the running event loop, when the caller has it at hand.
        """
        if self._per_loop and (loop or asyncio.get_running_loop()) is not self._loop:
            self._bind()
        immediate = self._immediate
        if immediate is None:
            return None
        answer = immediate.acquire_nowait(key_id, self.limit, lease)
        if answer is None or isinstance(answer, Wait):
            return answer
        return (key_id, answer)

    async def acquire(
        self,
        key_id: str,
        api_key: str,
        *,
        lease: float,
        max_wait: float,
        attempts: int,
        wait: Wait | None = None,
    ) -> Slot:
        """Wait until the key may send, and take a slot.

        Args:
            key_id: the key's name in the store.
            api_key: the key, for messages (masked).
            lease: seconds the request may be in flight.
            max_wait: the longest wait allowed, in all.
            attempts: the call's attempts so far, for the refusal's error.
            wait: what :meth:`take_now` already answered, if it did.

        Raises:
            RateLimitError: at once, without waiting, when the wait is longer than
                ``max_wait`` (``retry_after`` says how long it would be).
        """
        answer: Slot | Wait | None = wait
        while True:
            if answer is None:
                answer = await self.take(key_id, lease)
            if not isinstance(answer, Wait):
                return answer
            if answer.seconds > max_wait:
                raise self.refusal(api_key, answer, attempts)
            self.waiting(api_key, answer)
            await self._sleep(answer.seconds)
            max_wait -= answer.seconds
            answer = self.take_now(key_id, lease)

    async def take(self, key_id: str, lease: float) -> Slot | Wait:
        """A slot, or how long until one may be free: one awaited store operation."""
        store = self.store
        if self._immediate is not None:
            # The built-in stores give back by themselves a slot taken for a call
            # cancelled while it waited for their answer.
            answer = await store.acquire(key_id, self.limit, lease)
        else:
            answer = await self._shielded(store, key_id, lease)
        return answer if isinstance(answer, Wait) else (key_id, answer)

    async def _shielded(self, store: RateLimitStore, key_id: str, lease: float) -> int | str | Wait:
        # A store of the user's may run to its end although the caller is cancelled (SQL
        # in a thread, a script in Redis): a slot it took then has nobody to give it
        # back, and would stay held in every process until its lease ran out.
        taking = asyncio.ensure_future(store.acquire(key_id, self.limit, lease))
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            self._track(self._give_back_taken(store, key_id, taking))
            raise

    async def _give_back_taken(
        self, store: RateLimitStore, key_id: str, taking: asyncio.Future[int | str | Wait]
    ) -> None:
        try:
            answer = await taking
        except Exception:  # noqa: BLE001 - nothing was taken: nothing to give back
            return
        if not isinstance(answer, Wait):
            await store.release(key_id, answer, self.limit)

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)

    def give_back(self, slot: Slot) -> None:
        """The slot's request completed now. Never awaits, so no cancellation stops it."""
        immediate = self._immediate
        if immediate is not None:
            immediate.release_nowait(slot[0], slot[1], self.limit)
        else:
            self._track(self.store.release(slot[0], slot[1], self.limit))

    async def release(self, slot: Slot) -> None:
        """The slot's request completed now (:meth:`give_back`, for an awaiting caller)."""
        self.give_back(slot)

    def waiting(self, api_key: str, wait: Wait) -> None:
        """Tell ``on_wait`` and the log that a call of ``api_key`` waits ``wait``."""
        reason: Literal["rate limit", "lockout"] = "lockout" if wait.lockout else "rate limit"
        masked = mask_secret(api_key)
        if self._on_wait is not None:
            self._on_wait(RateLimitWait(masked, wait.seconds, reason))
        logger.debug("waiting %.3f s for the %s of %s", wait.seconds, reason, masked)

    def refusal(self, api_key: str, wait: Wait, attempts: int) -> RateLimitError:
        """The error of a call whose wait is longer than it allows (the request is not sent)."""
        key = mask_secret(api_key)
        limit = self.limit
        if wait.lockout:
            why = f"the service locked {key} out"
        else:
            why = f"{key} used its {limit.requests} requests per {limit.window:g} s"
        error = RateLimitError(
            429,
            attempts=attempts,
            detail=f"not sent: {why}, and the wait is longer than the retry policy allows",
            retry_after=wait.seconds,
        )
        error.sent = False
        return error

    def lockout_of(self, retry_after: float | None) -> float:
        """The lockout a 429 imposes: its ``Retry-After``, else the limit's; ten minutes at most.

        No ``Retry-After`` (or one naming a date already past, which is no answer)
        means the service's documented lockout; an explicit ``0`` means none. A
        hostile or broken answer must not lock a key out of every process for a year.
        """
        if retry_after is None:
            return self.limit.lockout
        return min(retry_after, MAX_LOCKOUT)

    async def lock(self, key_id: str, api_key: str, retry_after: float | None) -> None:
        """The service answered 429: every call on the key waits out its lockout."""
        seconds = self.lockout_of(retry_after)
        if not seconds > 0:
            return
        locking = asyncio.ensure_future(self.store.lock(key_id, seconds))
        # Shielded: a call cancelled right after its 429 must not leave the key unlocked.
        if await asyncio.shield(locking):
            # One line per lockout, not one per call that meets it.
            logger.warning(
                "the service locked %s out for %.0f s (429): its calls wait until then",
                mask_secret(api_key),
                seconds,
            )

    async def aclose(self) -> None:
        """Close the store if the limiter made it, once the slots being given back are."""
        if self._giving_back:
            await asyncio.wait(set(self._giving_back), timeout=_CLOSE_WAIT)
        if self._owns_store and self._store is not None:
            await self._store.aclose()
