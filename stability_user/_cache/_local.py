"""Readings on this machine: one SQLite file shared by every process of the user.

The same file plumbing as the machine-wide rate-limit store
(:mod:`stability_user._backends._sqlite`): private to the user, used from the
event loop while no other process holds it, from its thread when one does. A
file that is locked past the busy timeout or cannot be written is an outage:
reads go on in each process alone, with one WARNING. Times are wall-clock seconds
(``time.time``), the one clock every process shares.
"""

from __future__ import annotations

import math
import os
import pathlib
import sqlite3
import time
from collections.abc import Callable
from typing import Final, TypeVar

from .._backends import Breaker, Outage
from .._backends._sqlite import BUSY, FileUnavailable, SQLiteFile, default_path
from .._types import Clock
from ._store import Begun

__all__ = ["LocalReadingStore"]

T = TypeVar("T")

_WHAT: Final = "machine-wide cache store"
_SKEW: Final = 1.0  # seconds: a reading answered further ahead than this is corrupt
_SWEEP_EVERY: Final = 256  # begins between sweeps of every expired row

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS readings (
    name TEXT PRIMARY KEY,
    answered REAL NOT NULL,
    expires REAL NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    until REAL NOT NULL
) WITHOUT ROWID;
"""


class LocalReadingStore:
    """Readings and leases shared by every process of the user on this machine.

    Args:
        path: the SQLite file; ``cache.sqlite3`` in the user's cache directory by
            default (created private to the user). A symbolic link there is refused.
        clock: wall-clock seconds shared by the processes (for tests).
        busy_timeout: seconds to wait for another process's transaction before
            going on without the store.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        clock: Clock = time.time,
        busy_timeout: float = 0.75,
    ) -> None:
        """Remember where the file is; it is opened on first use."""
        self.path = pathlib.Path(path) if path is not None else default_path("cache.sqlite3")
        self._clock = clock
        self._file = SQLiteFile(self.path, what=_WHAT, schema=_SCHEMA, busy_timeout=busy_timeout)
        self.breaker = Breaker(
            _WHAT, str(self.path), errors=(FileUnavailable,), clock=time.monotonic
        )
        self._begins = 0

    def __repr__(self) -> str:
        """Where the readings are kept."""
        return f"<LocalReadingStore {self.path}>"

    @property
    def where(self) -> str:
        """The file."""
        return str(self.path)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` in one transaction: now if the file is free, else in its thread.

        Raises:
            Outage: the file is held past the busy timeout, or cannot be written.
        """
        try:
            answer = self._file.try_now(work)
        except FileUnavailable as error:
            self.breaker.failed(error)
            raise Outage(str(error)) from error
        if answer is not BUSY:
            self.breaker.succeeded()
            return answer  # type: ignore[return-value]
        return await self.breaker.call(lambda: self._file.run(work))

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
                if not _finite(answered) or not _finite(expires) or answered > now + _SKEW:
                    db.execute("DELETE FROM readings WHERE name = ?", (entry,))
                    corrupt = True
                elif expires > now and isinstance(text, str):
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

        return await self._run(work)

    async def put(self, key_id: str, name: str, body: str, *, keep: float, token: str) -> None:
        """Store ``body`` as answered now, for ``keep`` seconds, and end ``token``'s lease."""
        entry = f"{key_id}:{name}"

        def work(db: sqlite3.Connection) -> None:
            now = self._clock()
            db.execute(
                "INSERT OR REPLACE INTO readings VALUES (?, ?, ?, ?)",
                (entry, now, now + keep, body),
            )
            db.execute("DELETE FROM leases WHERE name = ? AND token = ?", (entry, token))

        await self._run(work)

    async def end(self, key_id: str, name: str, token: str) -> None:
        """End ``token``'s lease without a reading."""
        entry = f"{key_id}:{name}"
        await self._run(
            lambda db: db.execute("DELETE FROM leases WHERE name = ? AND token = ?", (entry, token))
        )

    async def aclose(self) -> None:
        """Close the file and its thread."""
        await self.breaker.settle()
        await self._file.aclose()


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
