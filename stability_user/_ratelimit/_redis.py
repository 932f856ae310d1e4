"""The rate limiter's state in Redis: shared by a fleet of workers on many machines.

Needs the extra: ``pip install 'stability-user[redis]'`` (redis-py's asyncio client).

Each step is one Lua script (:mod:`._redis_scripts`), atomic on the server and on
the server's clock. A key's state lives under ``stability-user:{<key id>}:...``
(the key id in a hash tag, so one Redis Cluster slot holds it) and expires when
its last entry does. A request costs one round trip: taking its slot. Giving a
slot back is queued and rides along with the next script the store runs (any
key's on a plain Redis, the same key's on a Cluster), or is sent a moment later,
with the time the response was read, so a slot is never freed early.

Redis unavailable (down, hanging, dropping packets): the store's breaker
(:mod:`stability_user._backends._breaker`) makes the first call that meets it
decide for all, within a second; calls go on limited in this process, with one
WARNING, and Redis is tried again every few seconds. Slots taken during the
outage are given back where they were taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Final

from .._backends import Outage
from .._backends._redis import RedisLink, import_redis
from .._backends._soon import Soon
from .._backends._token import new_token
from .._types import Clock
from ._limit import MAX_LEASE, MAX_LOCKOUT, RateLimit, Wait, held_for
from ._memory import MemoryRateLimitStore
from ._redis_scripts import ACQUIRE, LOCK, RELEASE

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisRateLimitStore"]

logger = logging.getLogger("stability_user")

_PREFIX: Final = "stability-user"
_WHAT: Final = "rate-limit store"
_FLUSH_AFTER: Final = 0.05  # seconds a queued give-back waits for a script to join
_JOIN_AT_MOST: Final = 64  # give-backs riding along with one script
_QUEUED_AT_MOST: Final = 10_000  # give-backs kept while Redis is away (their leases free them)
_SKEW_MS: Final = b"1000"  # clock disagreement tolerated in stored state
_LONGEST_LOCKOUT_MS: Final = b"%d" % int(MAX_LOCKOUT * 1000)
_LONGEST_LEASE_MS: Final = b"%d" % int(MAX_LEASE * 1000)
_NAMES_KEPT: Final = 4096  # keys whose names are kept encoded; cleared when full

Release = tuple[str, str, float, bytes]  # key id, token, when read (local clock), held ms


class RedisRateLimitStore:
    """Rate-limit state in Redis, shared by every process on every machine using it.

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL (redis-py's forms).
        client: a ``redis.asyncio.Redis`` or ``RedisCluster`` of the caller's instead
            of ``url`` (never closed here).
        clock: seconds to use instead of the server's clock, and for this
            process's own limiting and retry interval while Redis is away (for tests).

    Raises:
        ImportError: redis-py is not installed (``pip install 'stability-user[redis]'``).
        ValueError: a URL redis-py cannot use (its password never shown), or both or
            neither of ``url`` and ``client``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | Any | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Remember where Redis is; connections open on first use, in the running loop."""
        import_redis(_WHAT)
        self._clock = clock
        self._local_clock = clock or time.monotonic
        self._link = RedisLink(url, client, what=_WHAT, clock=self._local_clock)
        self._cluster = self._link.is_cluster
        self._fallback = MemoryRateLimitStore(clock=self._local_clock)
        self._pending: list[Release] = []
        self._names: dict[str, tuple[bytes, bytes, bytes]] = {}
        self._encoded: dict[RateLimit, tuple[bytes, bytes]] = {}
        self._flush = Soon(_FLUSH_AFTER, self._flush_soon)
        self._work: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:
        """Where the state is kept, the password hidden."""
        return f"<RedisRateLimitStore {self.where}>"

    @property
    def where(self) -> str:
        """The Redis URL without its password (or the client's repr)."""
        return self._link.where

    def _keys(self, key_id: str) -> tuple[bytes, bytes, bytes]:
        # Encoded once per key, not per call: redis-py passes bytes through as they are.
        names = self._names.get(key_id)
        if names is None:
            if len(self._names) >= _NAMES_KEPT:
                self._names.clear()
            base = f"{_PREFIX}:{{{key_id}}}"
            names = self._names[key_id] = (
                f"{base}:in-flight".encode(),
                f"{base}:done".encode(),
                f"{base}:lockout".encode(),
            )
        return names

    def _limit_args(self, limit: RateLimit) -> tuple[bytes, bytes]:
        """The limit's requests and the ms a completed slot is held, encoded once."""
        found = self._encoded.get(limit)
        if found is None:
            if len(self._encoded) >= _NAMES_KEPT:
                self._encoded.clear()
            found = self._encoded[limit] = (
                b"%d" % limit.requests,
                b"%d" % math.ceil(held_for(limit) * 1000),
            )
        return found

    def _now_ms(self) -> bytes:
        return b"" if self._clock is None else b"%d" % int(self._clock() * 1000)

    def _joining(self, key_id: str | None) -> list[Release]:
        """The queued give-backs one script can carry (on a Cluster, one key's only)."""
        pending = self._pending
        if not pending:
            return []
        if not self._cluster:
            joining, self._pending = pending[:_JOIN_AT_MOST], pending[_JOIN_AT_MOST:]
            return joining
        joining = [r for r in pending if r[0] == key_id][:_JOIN_AT_MOST]
        if joining:
            tokens = {r[1] for r in joining}
            self._pending = [r for r in pending if r[1] not in tokens]
        return joining

    def _queue_again(self, releases: list[Release]) -> None:
        """Give-backs a script carried that may not have reached Redis: first in the queue."""
        if releases:
            pending = self._pending
            pending[:0] = releases
            if len(pending) > _QUEUED_AT_MOST:
                del pending[: len(pending) - _QUEUED_AT_MOST]  # their leases free those slots
            self._flush.arm()

    def _carry(self, releases: list[Release]) -> tuple[list[bytes], list[bytes]]:
        keys: list[bytes] = []
        args: list[bytes] = []
        now = self._local_clock()
        for key_id, token, read_at, held_ms in releases:
            keys.extend(self._keys(key_id)[:2])
            args.extend((token.encode(), b"%d" % max(0, int((now - read_at) * 1000)), held_ms))
        return keys, args

    async def acquire(self, key_id: str, limit: RateLimit, lease: float) -> int | str | Wait:
        """Take a slot now and return its token, or say how long until one may be free."""
        if not self._link.breaker.available():
            return self._fallback.acquire_nowait(key_id, limit, lease)
        token = new_token()
        releases = self._joining(key_id)
        keys, args = self._carry(releases)

        def give_back(answer: Any) -> None:
            # The caller left before the answer came: the slot it took goes back.
            if answer[0]:
                self.release_nowait(key_id, token, limit)

        try:
            taken, wait_ms, lockout, corrupt = await self._link.run(
                ACQUIRE,
                [*self._keys(key_id), *keys],
                [
                    self._now_ms(),
                    *self._limit_args(limit),
                    b"%d" % int(min(lease, MAX_LEASE) * 1000),  # longer cannot be: see MAX_LEASE
                    token.encode(),
                    _LONGEST_LOCKOUT_MS,
                    _SKEW_MS,
                    b"%d" % len(releases),
                    _LONGEST_LEASE_MS,
                    *args,
                ],
                abandoned=give_back,
            )
        except (Outage, asyncio.CancelledError) as unanswered:
            # No answer (Redis failed or hung, or the caller left), yet Redis may have
            # run the script: the give-backs it carried are queued again and the slot
            # it may have taken goes back, with the next script (a give-back applied
            # twice, or of a slot never taken, changes nothing).
            self._queue_again(releases)
            self.release_nowait(key_id, token, limit)
            if isinstance(unanswered, Outage):
                return self._fallback.acquire_nowait(key_id, limit, lease)
            raise
        if corrupt:
            _corrupt(self.where)
        if taken:
            return token
        return Wait(max(int(wait_ms), 1) / 1000, lockout=bool(lockout))

    def release_nowait(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        """The request of ``token`` completed now: queued, carried by the next script."""
        if isinstance(token, int):  # taken in this process while Redis was away
            self._fallback.release_nowait(key_id, token, limit)
            return
        pending = self._pending
        pending.append((key_id, token, self._local_clock(), self._limit_args(limit)[1]))
        if len(pending) > _QUEUED_AT_MOST:
            del pending[: len(pending) - _QUEUED_AT_MOST]  # their leases free those slots
        self._flush.arm()

    async def release(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        """The request of ``token`` completed now: hold its slot ``window`` seconds more."""
        self.release_nowait(key_id, token, limit)

    def acquire_nowait(self, key_id: str, limit: RateLimit, lease: float) -> int | Wait | None:
        """Only this process's own state answers without a round trip: during an outage."""
        # Asked, not taken: the probe of a Redis that may be back is acquire()'s to make.
        if self._link.breaker.usable():
            return None
        return self._fallback.acquire_nowait(key_id, limit, lease)

    def _flush_soon(self) -> None:
        if self._pending:
            # Only the give-backs no script carried for a while: the newer ones ride
            # along with the next acquisition (a steady stream of calls costs none).
            cutoff = self._local_clock() - _FLUSH_AFTER / 2
            task = asyncio.ensure_future(self._send_pending(cutoff))
            self._work.add(task)
            task.add_done_callback(self._work.discard)

    async def _send_pending(self, cutoff: float | None = None) -> None:
        """Send the queued give-backs (those read before ``cutoff``, when one is given)."""
        while self._pending and not self._link.closed:
            if cutoff is not None and self._pending[0][2] > cutoff:
                # The rest are recent: the next script carries them, or the next timer.
                self._flush.arm()
                return
            if not self._link.breaker.available():
                return  # Redis is away: the leases of these slots free them
            releases = self._joining(self._pending[0][0])
            keys, args = self._carry(releases)
            try:
                corrupt = await self._link.run(
                    RELEASE, keys, [self._now_ms(), b"%d" % len(releases), *args]
                )
            except (Outage, asyncio.CancelledError) as unanswered:
                self._queue_again(releases)  # sent when Redis is back, or their leases end
                if isinstance(unanswered, Outage):
                    return
                raise
            if corrupt:
                _corrupt(self.where)

    async def lock(self, key_id: str, seconds: float) -> bool:
        """Lock the key out for ``seconds``; ``True`` when it was not locked before."""
        fresh = await self._fallback.lock(key_id, seconds)  # this process knows at once
        if self._link.breaker.available():
            with contextlib.suppress(Outage):  # this process knows: that has to do
                fresh = bool(
                    await self._link.run(
                        LOCK,
                        self._keys(key_id)[2:],
                        [self._now_ms(), b"%d" % int(seconds * 1000), _LONGEST_LOCKOUT_MS],
                    )
                )
        return fresh

    async def flush(self) -> None:
        """Send the queued give-backs now, rather than with the next script."""
        self._flush.cancel()
        if self._work:
            await asyncio.wait(set(self._work), timeout=1.0)
        if not self._link.closed:
            await self._send_pending()

    async def aclose(self) -> None:
        """Send the queued give-backs, then close the connections this store opened."""
        await self._link.breaker.settle()  # scripts their callers left: their slots queued
        await self.flush()
        await self._link.aclose()


def _corrupt(where: str) -> None:
    logger.warning(
        "the rate-limit store %s held state that cannot be (a value of the wrong type, "
        "a lockout beyond the longest one, or a slot beyond its window): dropped",
        where,
    )
