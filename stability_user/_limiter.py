"""The rate limiter: every request of a session (and its views) waits for a slot of its key.

It asks its store for a slot before each attempt and gives it back after,
waits (or refuses at once, when the wait is longer than the retry policy
allows) when none is free, and records the service's lockout after a 429.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, Literal, NamedTuple

from ._errors import RateLimitError
from ._ratelimit import RateLimit, RateLimitStore, RateLimitWait, Wait
from ._ratelimit_memory import MemoryRateLimitStore
from ._secrets import mask_secret
from ._types import Sleep

__all__ = ["LEASE_MARGIN", "MAX_LOCKOUT", "RateLimiter", "Slot"]

logger = logging.getLogger("stability_user")

MAX_LOCKOUT: Final = 600.0
"""The longest lockout a 429 can impose on the shared state: ten times the documented one."""

LEASE_MARGIN: Final = 30.0
"""Seconds a rate-limit slot outlives its attempt's timeout before a shared store frees it.

Only a process that died in flight leaves a slot unreleased; a live one may be
slow to release (a busy event loop), and must not find its slot handed on.
"""


class Slot(NamedTuple):
    """A slot taken for one request, to be released when it completes."""

    key_id: str
    token: int | str


_SYNC_STORES: Final = (MemoryRateLimitStore,)


class RateLimiter:
    """Keeps every request of a session (and its views) under the limit of its key.

    Args:
        limit: the limit per key.
        store: where the state is kept.
        sleep: how to wait (injected by tests).
        on_wait: called before each wait for the limit or a lockout.
        owns_store: close ``store`` with the limiter (a store made from a name or URL).
    """

    __slots__ = ("_fast", "_giving_back", "_on_wait", "_owns_store", "_sleep", "limit", "store")

    def __init__(
        self,
        limit: RateLimit,
        store: RateLimitStore,
        *,
        sleep: Sleep,
        on_wait: Callable[[RateLimitWait], None] | None = None,
        owns_store: bool = False,
    ) -> None:
        """Limit with ``limit``, keeping the state in ``store``."""
        self.limit = limit
        self.store = store
        self._sleep = sleep
        self._on_wait = on_wait
        self._owns_store = owns_store
        # The in-process store answers without an await: the common case costs no coroutine.
        self._fast = store if isinstance(store, _SYNC_STORES) else None
        self._giving_back: set[asyncio.Future[None]] = set()

    def take_now(self, key_id: str, lease: float) -> Slot | None:
        """A free slot of the in-process store, taken without an await, or ``None``.

        ``None`` says: call :meth:`acquire` (another store, or no slot free now). The
        common case costs no coroutine: this runs on every attempt of every call.
        """
        fast = self._fast
        if fast is None:
            return None
        answer = fast.acquire_nowait(key_id, self.limit, lease)
        return None if isinstance(answer, Wait) else Slot(key_id, answer)

    def release_now(self, slot: Slot) -> bool:
        """Release ``slot`` without an await if the store allows; ``False``: :meth:`release`."""
        fast = self._fast
        if fast is None:
            return False
        fast.release_nowait(slot.key_id, slot.token, self.limit)
        return True

    async def acquire(
        self, key_id: str, api_key: str, *, lease: float, max_wait: float, attempts: int
    ) -> Slot:
        """Wait until the key may send, and take a slot.

        Raises:
            RateLimitError: at once, without waiting, when the wait is longer than
                ``max_wait`` (``retry_after`` says how long it would be).
        """
        limit = self.limit
        while True:
            fast = self._fast
            answer = (
                fast.acquire_nowait(key_id, limit, lease)
                if fast is not None
                else await self._from_store(key_id, lease)
            )
            if not isinstance(answer, Wait):
                return Slot(key_id, answer)
            reason: Literal["rate limit", "lockout"] = "lockout" if answer.lockout else "rate limit"
            if answer.seconds > max_wait:
                raise _refused(api_key, answer, attempts, limit)
            if self._on_wait is not None:
                self._on_wait(RateLimitWait(mask_secret(api_key), answer.seconds, reason))
            logger.debug(
                "waiting %.3f s for the %s of %s", answer.seconds, reason, mask_secret(api_key)
            )
            await self._sleep(answer.seconds)
            max_wait -= answer.seconds

    async def _from_store(self, key_id: str, lease: float) -> int | str | Wait:
        # The store's work runs to its end even if the caller is cancelled (SQLite in
        # its thread, a script in Redis): a slot it took then has nobody to release
        # it, and would stay held in every process until its lease ran out.
        taking = asyncio.ensure_future(self.store.acquire(key_id, self.limit, lease))
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            giving_back = asyncio.ensure_future(self._give_back(key_id, taking))
            self._giving_back.add(giving_back)
            giving_back.add_done_callback(self._giving_back.discard)
            raise

    async def _give_back(self, key_id: str, taking: asyncio.Future[int | str | Wait]) -> None:
        try:
            answer = await taking
        except Exception:  # noqa: BLE001 - nothing was taken: nothing to give back
            return
        if not isinstance(answer, Wait):
            await self.store.release(key_id, answer, self.limit)

    async def release(self, slot: Slot) -> None:
        """The slot's request completed now."""
        if not self.release_now(slot):
            await self.store.release(slot.key_id, slot.token, self.limit)

    async def lock(self, key_id: str, api_key: str, retry_after: float | None) -> None:
        """The service answered 429: every call on the key waits out the lockout.

        A ``Retry-After`` longer than :data:`MAX_LOCKOUT` is cut to it: a hostile or
        broken answer must not lock a key out of every process for a year.
        """
        seconds = self.limit.lockout if retry_after is None else min(retry_after, MAX_LOCKOUT)
        if seconds > 0 and await self.store.lock(key_id, seconds):
            # One line per lockout, not one per call that meets it.
            logger.warning(
                "the service locked %s out for %.0f s (429): its calls wait until then",
                mask_secret(api_key),
                seconds,
            )

    async def aclose(self) -> None:
        """Close the store if the limiter made it, once the slots being given back are."""
        if self._giving_back:
            await asyncio.gather(*self._giving_back, return_exceptions=True)
        if self._owns_store:
            await self.store.aclose()


def _refused(api_key: str, wait: Wait, attempts: int, limit: RateLimit) -> RateLimitError:
    key = mask_secret(api_key)
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
