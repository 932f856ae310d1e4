"""The rate limiter's state on this machine: one SQLite file shared by every process of the user.

SQLite, from the standard library, is the engine: each operation is one short
``BEGIN IMMEDIATE`` transaction, so processes take turns atomically, and the file
lives under the user's cache directory. It keeps the same slots and lockouts as
the in-process store, with one addition: a slot taken by a process that dies
before releasing it frees itself ``lease + window`` seconds after it was taken.

Calls run in one thread per store (SQLite blocks), never in the event loop.
Times are wall-clock seconds (``time.time``), the one clock every process shares.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pathlib
import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import Final, TypeVar

from ._errors import StabilityError
from ._ratelimit import RateLimit, Wait, held_for
from ._types import Clock

__all__ = ["LocalRateLimitStore", "default_local_path"]

T = TypeVar("T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS slots (
    key_id TEXT NOT NULL,
    token TEXT NOT NULL,
    taken REAL NOT NULL,
    frees REAL NOT NULL,
    in_flight INTEGER NOT NULL,
    PRIMARY KEY (key_id, token)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS slots_frees ON slots (frees);
CREATE TABLE IF NOT EXISTS lockouts (
    key_id TEXT PRIMARY KEY,
    until REAL NOT NULL
) WITHOUT ROWID;
"""

_SWEEP_EVERY: Final = 256  # acquisitions between sweeps of every key's expired rows


def default_local_path() -> pathlib.Path:
    """``ratelimit.sqlite3`` under the user's cache directory (platformdirs).

    Raises:
        ImportError: platformdirs is missing (``pip install 'stability-user[cli]'``).
    """
    try:
        import platformdirs  # noqa: PLC0415 - an optional dependency, needed only here
    except ImportError as exc:
        raise ImportError(
            "the machine-wide rate-limit store needs platformdirs to find the cache "
            "directory: pip install 'stability-user[local]', or pass path="
        ) from exc
    return pathlib.Path(platformdirs.user_cache_dir("stability-user")) / "ratelimit.sqlite3"


class LocalRateLimitStore:
    """Rate-limit state shared by every process of the user on this machine.

    Args:
        path: the SQLite file; ``ratelimit.sqlite3`` in the user's cache directory
            by default (created, with its directory, private to the user).
        clock: wall-clock seconds shared by the processes (for tests).
        busy_timeout: seconds to wait for another process's transaction.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        clock: Clock = time.time,
        busy_timeout: float = 10.0,
    ) -> None:
        """Remember where the file is; it is opened on first use."""
        self.path = pathlib.Path(path) if path is not None else default_local_path()
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._connection: sqlite3.Connection | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="stability-user-ratelimit"
        )
        self._acquisitions = 0

    def __repr__(self) -> str:
        """Where the state is kept."""
        return f"<LocalRateLimitStore {self.path}>"

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None
            )
            # The state is ephemeral: a crash may lose the last writes, never corrupt
            # the file. WAL lets readers and the one writer overlap.
            self._while_locked(lambda: connection.execute("PRAGMA journal_mode=WAL"))
            connection.execute("PRAGMA synchronous=OFF")
            # The schema in a write transaction: other processes opening the file at
            # the same moment wait their turn (the busy timeout) instead of failing.
            connection.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute("COMMIT")
            self._connection = connection
            os.chmod(self.path, 0o600)  # key ids only, but the user's business alone
        return self._connection

    def _while_locked(self, step: Callable[[], object]) -> None:
        # Changing the journal mode takes the file to itself and does not wait for the
        # busy timeout: while another process has it, try again for as long.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                step()
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)  # this store's own thread, never the event loop's
            else:
                return

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def transaction() -> T:
            try:
                connection = self._connect()
                connection.execute("BEGIN IMMEDIATE")
                try:
                    result = work(connection)
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                raise self._unusable(exc) from exc
            return result

        return await asyncio.get_running_loop().run_in_executor(self._thread, transaction)

    def _unusable(self, error: BaseException) -> StabilityError:
        # The next call opens the file afresh: it may have been repaired or replaced.
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        if isinstance(error, sqlite3.OperationalError) and "locked" in reason:
            # Busy, not broken: another process held the file past the busy timeout.
            return StabilityError(
                f"the machine-wide rate-limit store {self.path} stayed busy for "
                f"{self._busy_timeout:g} s (another process holds it): try again, or "
                "choose another store (rate_limit_store='memory')"
            )
        return StabilityError(
            f"the machine-wide rate-limit store {self.path} cannot be used ({reason}): "
            "delete the file, or choose another store (rate_limit_store='memory')"
        )

    async def acquire(self, key_id: str, limit: RateLimit, lease: float) -> str | Wait:
        """Take a slot now and return its token, or say how long until one may be free."""
        self._acquisitions += 1
        sweep = self._acquisitions % _SWEEP_EVERY == 0

        def work(db: sqlite3.Connection) -> str | Wait:
            now = self._clock()
            if sweep:
                db.execute("DELETE FROM slots WHERE frees <= ?", (now,))
                db.execute("DELETE FROM lockouts WHERE until <= ?", (now,))
            row = db.execute("SELECT until FROM lockouts WHERE key_id = ?", (key_id,)).fetchone()
            if row is not None and row[0] > now:
                return Wait(row[0] - now, lockout=True)
            # Rows taken "in the future" are left by a clock that went back: stale.
            db.execute(
                "DELETE FROM slots WHERE key_id = ? AND (frees <= ? OR taken > ?)",
                (key_id, now, now + 1.0),
            )
            (held,) = db.execute(
                "SELECT COUNT(*) FROM slots WHERE key_id = ?", (key_id,)
            ).fetchone()
            if held < limit.requests:
                token = uuid.uuid4().hex
                db.execute(
                    "INSERT INTO slots VALUES (?, ?, ?, ?, 1)",
                    (key_id, token, now, now + lease + held_for(limit)),
                )
                return token
            (first,) = db.execute(
                "SELECT MIN(frees) FROM slots WHERE key_id = ? AND in_flight = 0", (key_id,)
            ).fetchone()
            # A request still in flight frees its slot no sooner than a window from now.
            return Wait(first - now if first is not None else held_for(limit))

        return await self._run(work)

    async def release(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        """The request of ``token`` completed now: hold its slot ``window`` seconds more."""

        def work(db: sqlite3.Connection) -> None:
            now = self._clock()
            # A slot whose lease ran out was handed on already: counting it again
            # would hold more slots than the limit (leases outlast any live request).
            db.execute(
                "UPDATE slots SET frees = ?, in_flight = 0"
                " WHERE key_id = ? AND token = ? AND frees > ?",
                (now + held_for(limit), key_id, str(token), now),
            )

        await self._run(work)

    async def lock(self, key_id: str, seconds: float) -> bool:
        """Lock the key out for ``seconds``; ``True`` when it was not locked before."""

        def work(db: sqlite3.Connection) -> bool:
            now = self._clock()
            row = db.execute("SELECT until FROM lockouts WHERE key_id = ?", (key_id,)).fetchone()
            previous = row[0] if row is not None else 0.0
            db.execute(
                "INSERT OR REPLACE INTO lockouts VALUES (?, ?)",
                (key_id, max(previous, now + seconds)),
            )
            return bool(previous <= now)

        return await self._run(work)

    async def aclose(self) -> None:
        """Close the file and the store's thread."""

        def close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await asyncio.get_running_loop().run_in_executor(self._thread, close)
        self._thread.shutdown(wait=False)
