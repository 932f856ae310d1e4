"""Readings on this machine: one SQLite file shared by every process of the user.

The same file plumbing as the machine-wide rate-limit store
(:mod:`stability_user._backends._sqlite`): private to the user, used from the
event loop while no other process holds it, from its thread when one does. A
file that is locked past the busy timeout or cannot be written is an outage:
reads go on in each process alone, with one WARNING. Times are wall-clock seconds
(``time.time``), the one clock every process shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import pathlib
import sqlite3
import time
from collections.abc import Callable
from typing import Final, TypeVar

from .._backends import Breaker, Outage
from .._backends._sqlite import BUSY, FileUnavailable, SQLiteFile, default_path
from .._checks import check_seconds
from .._errors import StabilityError
from .._types import Clock
from ._store import Begun

__all__ = ["LocalReadingStore"]

T = TypeVar("T")

_WHAT: Final = "machine-wide cache store"
_SKEW: Final = 1.0  # seconds: a reading answered further ahead than this is corrupt
_SWEEP_EVERY: Final = 256  # begins between sweeps of every expired row

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS readings (
        name TEXT PRIMARY KEY,
        answered REAL NOT NULL,
        expires REAL NOT NULL,
        body TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        until REAL NOT NULL
    ) WITHOUT ROWID""",
)


class LocalReadingStore:
    """Readings and leases shared by every process of the user on this machine.

    Args:
        path: the SQLite file; ``cache.sqlite3`` in the user's cache directory by
            default (created private to the user). A symbolic link there is refused.
        clock: seconds instead of the wall clock the processes share, for the
            entries and for when to try the file again after an outage (for tests).
        busy_timeout: seconds to wait for another process's transaction before
            going on without the store.
        lease: seconds a process may read an entry before another process may: a
            process that dies while reading holds the others up this long at most.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        clock: Clock | None = None,
        busy_timeout: float = 0.75,
        lease: float = 5.0,
    ) -> None:
        """Remember where the file is; it is opened on first use."""
        self.path = pathlib.Path(path) if path is not None else default_path("cache.sqlite3")
        self.lease = check_seconds("lease", lease)
        self._clock = clock or time.time
        self._file = SQLiteFile(self.path, what=_WHAT, schema=_SCHEMA, busy_timeout=busy_timeout)
        self.breaker = Breaker(
            _WHAT, str(self.path), errors=(FileUnavailable,), clock=clock or time.monotonic
        )
        self._ending: set[asyncio.Future[None]] = set()
        self._begins = 0

    def __repr__(self) -> str:
        """Where the readings are kept."""
        return f"<LocalReadingStore {self.path}>"

    @property
    def where(self) -> str:
        """The file."""
        return str(self.path)

    async def _run(
        self,
        work: Callable[[sqlite3.Connection], T],
        *,
        abandoned: Callable[[T], object] | None = None,
    ) -> T:
        """``work`` in one transaction: now if the file is free, else in its thread.

        Raises:
            Outage: the file is held past the busy timeout, cannot be written, or is
                not a store's (a cache goes on without it: it never fails a read).
        """
        try:
            answer = self._file.try_now(work)
            if answer is BUSY:
                return await self.breaker.call(lambda: self._file.run(work), abandoned=abandoned)
        except (FileUnavailable, StabilityError) as error:
            if self._file.closed:
                raise
            self.breaker.failed(error)
            raise Outage(str(error)) from error
        self.breaker.succeeded()
        return answer  # type: ignore[return-value]

    async def begin(
        self, key_id: str, name: str, *, max_age: float, lease: float, token: str
    ) -> Begun:
        """The stored reading if fresh enough, else the lease if nobody holds it."""
        self._begins += 1
        sweep = self._begins % _SWEEP_EVERY == 0
        entry = f"{key_id}:{name}"

        def work(db: sqlite3.Connection) -> Begun:
            now = self._clock()
            if sweep:
                db.execute("DELETE FROM readings WHERE expires <= ?", (now,))
                db.execute("DELETE FROM leases WHERE until <= ?", (now,))
            corrupt = False
            row = db.execute(
                "SELECT answered, expires, body FROM readings WHERE name = ?", (entry,)
            ).fetchone()
            body, age = None, None
            if row is not None:
                answered, expires, text = row
                if (
                    not _finite(answered)
                    or not _finite(expires)
                    or not 0 <= answered <= now + _SKEW
                    or not isinstance(text, str)
                ):
                    db.execute("DELETE FROM readings WHERE name = ?", (entry,))
                    corrupt = True
                elif expires > now:
                    body, age = text, max(0.0, now - answered)
            if age is not None and age <= max_age:
                return Begun(body, age, False, corrupt)
            held = db.execute("SELECT until FROM leases WHERE name = ?", (entry,)).fetchone()
            if held is not None and _finite(held[0]) and now < held[0] <= now + lease + _SKEW:
                return Begun(body, age, False, corrupt)
            db.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (entry, token, now + lease)
            )
            return Begun(body, age, True, corrupt)

        def give_back(begun: Begun) -> None:
            if begun.granted:  # granted after its caller left: nobody will read
                self._end_later(key_id, name, token)

        return await self._run(work, abandoned=give_back)

    def _end_later(self, key_id: str, name: str, token: str) -> None:
        async def end() -> None:
            with contextlib.suppress(Outage):
                await self.end(key_id, name, token)

        task = asyncio.ensure_future(end())
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def put(self, key_id: str, name: str, body: str, *, keep: float, token: str) -> None:
        """Store ``body`` as answered now, for ``keep`` seconds, and end ``token``'s lease."""
        entry = f"{key_id}:{name}"

        def work(db: sqlite3.Connection) -> None:
            now = self._clock()
            # Readings expire by themselves: each new one sweeps out those past their time.
            db.execute("DELETE FROM readings WHERE expires <= ?", (now,))
            db.execute(
                "INSERT OR REPLACE INTO readings VALUES (?, ?, ?, ?)",
                (entry, now, now + keep, body),
            )
            db.execute("DELETE FROM leases WHERE name = ? AND token = ?", (entry, token))

        await self._run(work)

    async def renew(self, key_id: str, name: str, token: str, *, lease: float) -> bool:
        """Extend ``token``'s lease to ``lease`` seconds from now; ``False`` if it is not held."""
        entry = f"{key_id}:{name}"

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE leases SET until = ? WHERE name = ? AND token = ?",
                (self._clock() + lease, entry, token),
            )
            return cursor.rowcount == 1

        return await self._run(work)

    async def end(self, key_id: str, name: str, token: str) -> None:
        """End ``token``'s lease without a reading."""
        entry = f"{key_id}:{name}"
        await self._run(
            lambda db: db.execute("DELETE FROM leases WHERE name = ? AND token = ?", (entry, token))
        )

    async def aclose(self) -> None:
        """Close the file and its thread, once the leases being ended are."""
        await self.breaker.settle()
        if self._ending:
            await asyncio.wait(set(self._ending), timeout=1.0)
        await self._file.aclose()


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
