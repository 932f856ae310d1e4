"""The machine-wide SQLite file a shared store keeps its state in.

It is opened once and private, used from the event loop when it is free and
from the file's own thread when not.

SQLite, from the standard library, is the engine. Each operation is one short
``BEGIN IMMEDIATE`` transaction, so processes take turns atomically. While no other
process holds the file, a transaction takes tens of microseconds, and runs in the
calling thread without waiting (busy timeout 0): no thread hop. When another
process holds it, the transaction runs in the file's one thread instead, waiting
up to ``busy_timeout``. The file and its WAL sidecars are the user's alone (0600,
in a 0700 folder), and a symbolic link at the path is refused, never written through.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import pathlib
import sqlite3
import stat
import threading
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from .._errors import StabilityError

__all__ = ["BUSY", "FileUnavailable", "SQLiteFile", "default_path"]

T = TypeVar("T")

BUSY: Final = object()
"""What :meth:`SQLiteFile.try_now` returns when another process holds the file."""

_SIDECARS: Final = ("-wal", "-shm", "-journal")
_UNWRITABLE: Final = (
    "readonly",
    "unable to open",
    "disk i/o",
    "locked",
    "busy",
    "disk is full",
    "permission",
)


class FileUnavailable(OSError):  # noqa: N818 - an outage the store handles, not a user error
    """The file is held by another process past the busy timeout, or cannot be written."""


def default_path(name: str) -> pathlib.Path:
    """``name`` under the user's cache directory (platformdirs).

    Raises:
        ImportError: platformdirs is missing (``pip install 'stability-user[local]'``).
    """
    try:
        import platformdirs  # noqa: PLC0415 - an optional dependency, needed only here
    except ImportError as exc:
        raise ImportError(
            "the machine-wide store needs platformdirs to find the cache directory: "
            "pip install 'stability-user[local]', or pass path="
        ) from exc
    return pathlib.Path(platformdirs.user_cache_dir("stability-user")) / name


def _refuse_link(path: pathlib.Path, what: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise StabilityError(
                f"the {what} {path} is a symbolic link: refusing to write through it "
                "(remove the link, or pass another path)"
            )


def _create_private(path: pathlib.Path, what: str) -> None:
    """The file and its sidecars, 0600, before SQLite opens them (it copies the mode).

    A file that exists is never opened here, only its mode set: closing a
    descriptor of a file drops every POSIX lock this process holds on it, the
    locks of SQLite's own connections included (SQLite's "how to corrupt" list).
    """
    _refuse_link(path, what)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        os.close(os.open(path, flags, 0o600))  # new: nobody holds a lock on it yet
    except FileExistsError:
        _refuse_link(path, what)
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path)) from None
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path)) from None
        if stat.S_IMODE(mode) != 0o600:
            os.chmod(path, 0o600)  # an older file, made before the store was private
    for suffix in _SIDECARS:
        sidecar = path.with_name(path.name + suffix)
        _refuse_link(sidecar, what)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(os.stat(sidecar).st_mode) != 0o600:
                os.chmod(sidecar, 0o600)


def _unavailable(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in (
            errno.EACCES,
            errno.EPERM,
            errno.EROFS,
            errno.ENOSPC,
            errno.EMFILE,
            errno.ENFILE,
            None,
        )
    text = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and any(w in text for w in _UNWRITABLE)


class SQLiteFile:
    """One SQLite file of the user's, with a schema, opened on first use.

    Args:
        path: the file.
        what: what it holds, for messages (``"rate-limit store"``).
        schema: the statements creating its tables (``IF NOT EXISTS``), run in order,
            each whole (a trigger's body has statements of its own), in one transaction.
        busy_timeout: seconds a transaction waits while another process holds the file.
    """

    def __init__(
        self, path: pathlib.Path, *, what: str, schema: Sequence[str], busy_timeout: float
    ) -> None:
        """Remember the file; nothing is opened yet."""
        self.path = path
        self.what = what
        self._schema = schema
        self._busy_timeout = busy_timeout
        self._now: sqlite3.Connection | None = None  # the caller's thread, busy timeout 0
        self._now_lock = threading.Lock()
        self._waiting: sqlite3.Connection | None = None  # the file's thread, which waits
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="stability-user-sqlite"
        )
        self.closed = False

    def _connect(self, timeout: float) -> sqlite3.Connection:
        _create_private(self.path, self.what)
        connection = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            # Ephemeral state: a crash may lose the last writes, never corrupt the file.
            # WAL lets readers and the one writer overlap.
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute("BEGIN IMMEDIATE")
            for statement in self._schema:
                connection.execute(statement)
            connection.execute("COMMIT")
        except BaseException:
            connection.close()
            raise
        return connection

    def _transaction(
        self, connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]
    ) -> T:
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(connection)
            connection.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back by itself (a busy or full file): only an
            # open transaction is rolled back here.
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return result

    def try_now(self, work: Callable[[sqlite3.Connection], T]) -> T | object:
        """Run ``work`` in one transaction in this thread, never waiting; :data:`BUSY` if it would.

        Raises:
            FileUnavailable: the file cannot be created or written.
            StabilityError: the file is not a store's (corrupt, foreign), or it is closed.
        """
        if self.closed:
            raise StabilityError(f"the {self.what} {self.path} is closed")
        if not self._now_lock.acquire(blocking=False):
            return BUSY  # another thread of this process is in it
        try:
            if self._now is None:
                self._now = self._connect(timeout=0.0)
                # Checkpoints copy pages: they run in the file's thread (maintain()).
                self._now.execute("PRAGMA wal_autocheckpoint=0")
            return self._transaction(self._now, work)
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                return BUSY
            raise self._failed(error, "_now") from error
        except (sqlite3.Error, OSError) as error:
            raise self._failed(error, "_now") from error
        finally:
            self._now_lock.release()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one transaction in the file's thread, waiting up to the busy timeout.

        Raises:
            FileUnavailable: busy past the timeout, or the file cannot be written.
            StabilityError: the file is not a store's (corrupt, foreign), or it is closed.
        """

        def transaction() -> T:
            try:
                if self._waiting is None:
                    self._waiting = self._connect(timeout=self._busy_timeout)
                return self._transaction(self._waiting, work)
            except (sqlite3.Error, OSError) as error:
                raise self._failed(error, "_waiting") from error

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, transaction)
        except RuntimeError as error:  # the executor was shut down: close() won the race
            if self.closed:
                raise StabilityError(f"the {self.what} {self.path} is closed") from error
            raise

    def _failed(self, error: BaseException, which: str) -> BaseException:
        # The next operation opens the file afresh: it may have been repaired or replaced.
        connection = getattr(self, which)
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
            setattr(self, which, None)
        if isinstance(error, StabilityError):
            return error
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        if _unavailable(error):
            if "locked" in reason or "busy" in reason:
                reason = f"another process held it for more than {self._busy_timeout:g} s"
            return FileUnavailable(f"{self.path}: {reason}")
        return StabilityError(
            f"the {self.what} {self.path} cannot be used ({reason}): it is not a "
            f"{self.what} file; delete it, or choose another store "
            "(rate_limit_store='memory')"
        )

    async def aclose(self) -> None:
        """Close the file and its thread; idempotent."""
        if self.closed:
            return
        self.closed = True

        def close() -> None:
            with self._now_lock:  # another thread may be in a transaction on it
                for which in ("_now", "_waiting"):
                    connection = getattr(self, which)
                    if connection is not None:
                        with contextlib.suppress(sqlite3.Error):
                            connection.close()
                        setattr(self, which, None)

        await asyncio.get_running_loop().run_in_executor(self._thread, close)
        self._thread.shutdown(wait=False)  # its one job is done: nothing left to wait for
