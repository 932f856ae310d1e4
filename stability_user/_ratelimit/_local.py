"""The rate limiter's state on this machine: one SQLite file shared by every process of the user.

It keeps the same slots and lockouts as the in-process store, with one addition:
a slot taken by a process that dies before giving it back frees itself ``lease +
window`` seconds after it was taken. A request costs one transaction: taking its
slot. Giving it back is queued, and applied by the next transaction (any key's) or
a moment later, with the time the response was read, so a slot is never freed
early. The file is the plumbing of :mod:`stability_user._backends._sqlite`: used
from the event loop while no other process holds it, from its thread when one does.

Times are wall-clock seconds (``time.time``), the one clock every process shares.
Stored state is checked on every read: a lockout or a completed slot further in
the future than it can be (a clock stepped back, a hand-edited file), or not a
number, is dropped with a WARNING, never waited for. A file another process holds
past the busy timeout, or one that cannot be written, is an outage: calls go on
with this process's own state and one WARNING, and the file is tried again after
a few seconds. A file that is not a store's at all is an error naming it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import sqlite3
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

from .._backends import Breaker, Outage
from .._backends._soon import Soon
from .._backends._sqlite import BUSY, FileUnavailable, SQLiteFile, default_path
from .._backends._token import new_ordered_token
from .._errors import StabilityError
from .._types import Clock
from ._limit import MAX_LEASE, RateLimit, Wait, held_for
from ._local_sql import SCHEMA, WHAT, Release, apply_releases, lock_key, take_slot
from ._memory import MemoryRateLimitStore

__all__ = ["LocalRateLimitStore", "default_local_path"]

logger = logging.getLogger("stability_user")

# Acquisitions between sweeps of every key's freed rows: a key's own are deleted every
# few of its takes (_PRUNE_EVERY), so a sweep only finds those of keys no longer used,
# and it scans the whole table.
_SWEEP_EVERY: Final = 4096
_CHECKPOINT_EVERY: Final = 256  # acquisitions between copies of the WAL into the file
# Acquisitions between deletions of a key's freed rows: meanwhile a take counts them
# (the first rows of the key's index) and leaves them, a statement and pages fewer.
_PRUNE_EVERY: Final = 16
_FLUSH_AFTER: Final = 0.05  # seconds a queued give-back waits for a transaction to join


def default_local_path() -> pathlib.Path:
    """``ratelimit.sqlite3`` under the user's cache directory (platformdirs).

    Raises:
        ImportError: platformdirs is missing (``pip install 'stability-user[local]'``).
    """
    return default_path("ratelimit.sqlite3")


class LocalRateLimitStore:
    """Rate-limit state shared by every process of the user on this machine.

    Args:
        path: the SQLite file; ``ratelimit.sqlite3`` in the user's cache directory
            by default (created, with its directory, private to the user). A symbolic
            link there is refused.
        clock: wall-clock seconds shared by the processes (for tests, which then also
            time this process's own state and its retry interval during an outage by it).
        busy_timeout: seconds to wait for another process's transaction before
            going on with this process's own state.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        clock: Clock = time.time,
        busy_timeout: float = 0.75,
    ) -> None:
        """Remember where the file is; it is opened on first use."""
        self.path = pathlib.Path(path) if path is not None else default_local_path()
        self._clock = clock
        # This process's own timing (the outage's retry interval, its own state meanwhile)
        # is monotonic, unless a test gives a clock.
        local_clock = time.monotonic if clock is time.time else clock
        self._file = SQLiteFile(self.path, what=WHAT, schema=SCHEMA, busy_timeout=busy_timeout)
        self._breaker = Breaker(WHAT, str(self.path), errors=(FileUnavailable,), clock=local_clock)
        self._fallback = MemoryRateLimitStore(clock=local_clock)
        self._pending: list[Release] = []
        self._flush = Soon(_FLUSH_AFTER, self._flush_soon)
        self._work: set[asyncio.Future[None]] = set()
        self._acquisitions = 0

    def __repr__(self) -> str:
        """Where the state is kept."""
        return f"<LocalRateLimitStore {self.path}>"

    async def open(self) -> None:
        """Open (or create) the file now, rather than at the first request.

        A store that cannot be used at a request goes on with this process's own
        state; this says so at once instead, for a program that would rather choose.

        Raises:
            StabilityError: the file cannot be created or written, or is not a store's;
                its ``__cause__`` is the error of the operating system or SQLite.
        """
        try:
            await self._file.run(lambda db: None)
        except FileUnavailable as error:
            cause = error.__cause__ or error
            raise StabilityError(f"the {WHAT} {self.path} cannot be used ({error})") from cause

    def _acquire_work(
        self, key_id: str, limit: RateLimit, lease: float, token: str
    ) -> tuple[Callable[[sqlite3.Connection], str | Wait], list[Release]]:
        releases, self._pending = self._pending, []
        self._acquisitions += 1
        sweep = self._acquisitions % _SWEEP_EVERY == 0
        prune = self._acquisitions % _PRUNE_EVERY == 0
        held = held_for(limit)
        lease = min(lease, MAX_LEASE)  # a slot in flight longer than this cannot be

        def work(db: sqlite3.Connection) -> str | Wait:
            return take_slot(
                db,
                key_id=key_id,
                token=token,
                now=self._clock(),
                requests=limit.requests,
                held=held,
                lease=lease,
                sweep=sweep,
                prune=prune,
                releases=releases,
            )

        return work, releases

    def acquire_nowait(
        self, key_id: str, limit: RateLimit, lease: float
    ) -> str | int | Wait | None:
        """Take a slot without waiting; ``None`` when another process holds the file."""
        if not self._breaker.available():
            return self._fallback.acquire_nowait(key_id, limit, lease)
        answer = self._take_now(key_id, limit, lease)
        if answer is None and self._breaker.down:
            # The probe found the file held: acquire(), which may wait, probes again.
            self._breaker.probe_not_sent()
        return answer

    def _take_now(self, key_id: str, limit: RateLimit, lease: float) -> str | int | Wait | None:
        token = new_ordered_token()
        work, releases = self._acquire_work(key_id, limit, lease, token)
        try:
            answer = self._file.try_now(work)
        except FileUnavailable as error:
            self._breaker.failed(error)
            return self._fallback.acquire_nowait(key_id, limit, lease)
        if answer is BUSY:
            self._pending[:0] = releases  # they join the transaction that waits
            return None
        self._breaker.succeeded()
        self._maintain()
        return answer  # type: ignore[return-value]

    async def acquire(self, key_id: str, limit: RateLimit, lease: float) -> int | str | Wait:
        """Take a slot now and return its token, or say how long until one may be free."""
        if not self._breaker.available():
            return self._fallback.acquire_nowait(key_id, limit, lease)
        answer = self._take_now(key_id, limit, lease)
        if answer is not None:
            return answer
        # The file is held: wait for it in its thread (a probe stays the probe meanwhile).
        token = new_ordered_token()
        work, _ = self._acquire_work(key_id, limit, lease, token)

        def give_back(answer: str | Wait) -> None:
            # The caller left while the file's thread took its slot: it goes back.
            if isinstance(answer, str):
                self.release_nowait(key_id, answer, limit)

        try:
            result = await self._breaker.call(lambda: self._file.run(work), abandoned=give_back)
        except Outage:
            return self._fallback.acquire_nowait(key_id, limit, lease)
        self._maintain()
        return result

    def release_nowait(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        """The request of ``token`` completed now: queued, applied by the next transaction."""
        if isinstance(token, int):  # taken from this process's own state during an outage
            self._fallback.release_nowait(key_id, token, limit)
            return
        self._pending.append((key_id, token, self._clock(), held_for(limit)))
        self._flush.arm()

    async def release(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        """The request of ``token`` completed now: hold its slot ``window`` seconds more."""
        self.release_nowait(key_id, token, limit)

    def _flush_soon(self) -> None:
        if self._pending:
            self._spawn(self._flush_pending())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def _flush_pending(self) -> None:
        releases, self._pending = self._pending, []

        def work(db: sqlite3.Connection) -> None:
            apply_releases(db, releases)

        if not releases or self._file.closed:
            return
        try:
            if self._file.try_now(work) is BUSY:
                await self._breaker.call(lambda: self._file.run(work))
        except Exception:  # noqa: BLE001 - lost give-backs free with their leases (_apply)
            return

    def _maintain(self) -> None:
        if self._acquisitions % _CHECKPOINT_EVERY == 0:
            # Copying the WAL into the file takes a moment: the file's thread does it.
            self._spawn(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            await self._file.run(lambda db: db.execute("PRAGMA wal_checkpoint(PASSIVE)"))
        except Exception:  # noqa: BLE001 - a checkpoint can wait for the next one
            return

    async def lock(self, key_id: str, seconds: float) -> bool:
        """Lock the key out for ``seconds``; ``True`` when it was not locked before."""
        fresh = await self._fallback.lock(key_id, seconds)  # this process knows at once
        if not self._breaker.available():
            return fresh

        def work(db: sqlite3.Connection) -> bool:
            return lock_key(db, key_id=key_id, now=self._clock(), seconds=seconds)

        try:
            answer = self._file.try_now(work)
            if answer is BUSY:
                answer = await self._breaker.call(lambda: self._file.run(work))
            else:
                self._breaker.succeeded()  # this may have been the probe
        except (Outage, FileUnavailable) as error:
            if isinstance(error, FileUnavailable):
                self._breaker.failed(error)
            return fresh
        return bool(answer)

    async def flush(self) -> None:
        """Apply the queued give-backs now, rather than with the next transaction."""
        self._flush.cancel()
        await self._flush_pending()
        if self._work:
            await asyncio.wait(set(self._work), timeout=1.0)

    async def aclose(self) -> None:
        """Apply the queued give-backs, then close the file and its thread."""
        await self._breaker.settle()  # transactions their callers left: given back
        await self.flush()
        await self._file.aclose()
