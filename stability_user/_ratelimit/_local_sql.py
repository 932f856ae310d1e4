"""The machine-wide rate-limit store's transactions: plain SQL on one connection, no I/O of its own.

Each function is one step of :class:`~._local.LocalRateLimitStore`, run inside a
``BEGIN IMMEDIATE`` transaction by the file's plumbing. Times are wall-clock
seconds. Stored state is checked on read: a lockout or a slot further in the
future than it can be (a clock that stepped back, a hand-edited file), or not a
number, is dropped with a WARNING, never waited for. Slots are checked when the
window looks full, before a wait is answered: a row that cannot be only ever makes
the window look fuller, so no call waits for one.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from typing import Final

from .._secrets import display_text
from ._limit import MAX_LEASE, MAX_LOCKOUT, Wait

__all__ = ["SCHEMA", "WHAT", "Release", "apply_releases", "lock_key", "take_slot"]

logger = logging.getLogger("stability_user")

WHAT: Final = "machine-wide rate-limit store"

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS slots (
        key_id TEXT NOT NULL,
        token TEXT NOT NULL,
        taken REAL NOT NULL,
        frees REAL NOT NULL,
        in_flight INTEGER NOT NULL,
        PRIMARY KEY (key_id, token)
    ) WITHOUT ROWID""",
    # Every insert writes each index's pages to the WAL: the sweep of every key, rare,
    # scans the table instead (files of earlier versions had this index).
    "DROP INDEX IF EXISTS slots_frees",
    "CREATE INDEX IF NOT EXISTS slots_key_frees ON slots (key_id, frees)",
    """CREATE TABLE IF NOT EXISTS lockouts (
        key_id TEXT PRIMARY KEY,
        until REAL NOT NULL
    ) WITHOUT ROWID""",
    # How many rows each key has in ``slots``, kept by triggers, so that a take reads
    # one number instead of counting a window's rows: a limit of thousands per window
    # costs what the documented one does. Triggers count the rows of any process,
    # one of an earlier version of the library included.
    """CREATE TABLE IF NOT EXISTS held (
        key_id TEXT PRIMARY KEY,
        slots INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TRIGGER IF NOT EXISTS held_taken AFTER INSERT ON slots BEGIN
        INSERT INTO held VALUES (NEW.key_id, 1)
            ON CONFLICT (key_id) DO UPDATE SET slots = slots + 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS held_freed AFTER DELETE ON slots BEGIN
        UPDATE held SET slots = slots - 1 WHERE key_id = OLD.key_id;
    END""",
    # Counted afresh whenever a process opens the file: rows written before the
    # triggers existed, or a file edited by hand.
    "DELETE FROM held",
    "INSERT INTO held SELECT key_id, COUNT(*) FROM slots GROUP BY key_id",
)
"""The statements that create the file's tables, each run whole when a process opens it."""

_SKEW: Final = 1.0  # seconds of clock disagreement between processes tolerated

# Rows that cannot be: not numbers, neither in flight nor completed, taken in the
# future, completed slots that free later than a window from now, or slots in flight
# that free later than the longest lease and a window from now.
_CORRUPT_SLOTS: Final = (
    "DELETE FROM slots WHERE key_id = ?1 AND ("
    " typeof(taken) NOT IN ('real', 'integer') OR typeof(frees) NOT IN ('real', 'integer')"
    " OR in_flight NOT IN (0, 1) OR taken > ?2"
    " OR (in_flight = 0 AND frees > ?3) OR (in_flight = 1 AND frees > ?4))"
)

# The key's lockout, how many rows it has, and how many of them are freed (the first
# of its index, few: they are deleted every few takes).
_LOOK: Final = (
    "SELECT (SELECT until FROM lockouts WHERE key_id = ?1),"
    " (SELECT slots FROM held WHERE key_id = ?1),"
    " (SELECT COUNT(*) FROM slots WHERE key_id = ?1 AND frees <= ?2)"
)

Release = tuple[str, str, float, float]  # key id, token, when the response was read, hold


def apply_releases(db: sqlite3.Connection, releases: list[Release]) -> None:
    """The queued give-backs: each slot held until a window after its response was read."""
    # A slot whose lease ran out before its response was read was handed on already:
    # counting it again would hold more slots than the limit. A give-back that joined a
    # transaction that failed is lost: its slot frees when its lease runs out (never
    # early), as a dead process's does.
    db.executemany(
        "UPDATE slots SET frees = ?1, in_flight = 0"
        " WHERE key_id = ?2 AND token = ?3 AND in_flight = 1 AND frees > ?4",
        [(done + held, key, token, done) for key, token, done, held in releases],
    )


def take_slot(
    db: sqlite3.Connection,
    *,
    key_id: str,
    token: str,
    now: float,
    requests: int,
    held: float,
    lease: float,
    sweep: bool,
    prune: bool,
    releases: list[Release],
) -> str | Wait:
    """Take a slot of ``key_id`` for ``token``, or say how long until one may be free."""
    if releases:
        apply_releases(db, releases)
    if sweep:
        db.execute("DELETE FROM slots WHERE frees <= ?", (now,))
        db.execute("DELETE FROM lockouts WHERE until <= ?", (now,))
        db.execute("DELETE FROM held WHERE slots <= 0")
    if prune:
        _prune(db, key_id, now)
    until, rows, freed = db.execute(_LOOK, (key_id, now)).fetchone()
    if until is not None:
        if not is_time(until) or until > now + MAX_LOCKOUT + _SKEW:
            # Not a number (text, bytes, infinity), or longer than any lockout.
            db.execute("DELETE FROM lockouts WHERE key_id = ?", (key_id,))
            _corrupt(f"a lockout of {display_text(repr(until), limit=40)}")
        elif until > now:
            return Wait(until - now, lockout=True)
    count = rows - freed if type(rows) is int else -1
    if count < 0:
        # No count yet (a new key), or one that cannot be (a file edited by hand).
        count = _recount(db, key_id, now)
    if count >= requests or sweep:
        # The window looks full: counted row by row, the rows that cannot be dropped
        # first, so that no call waits for a count or a slot that is wrong.
        bounds = (now + _SKEW, now + held + _SKEW, now + MAX_LEASE + held + _SKEW)
        if db.execute(_CORRUPT_SLOTS, (key_id, *bounds)).rowcount:
            _corrupt("completed or in-flight slots that cannot be")
        count = _recount(db, key_id, now)
    if count < requests:
        db.execute(
            "INSERT INTO slots VALUES (?, ?, ?, ?, 1)", (key_id, token, now, now + lease + held)
        )
        return token
    (first,) = db.execute(
        "SELECT MIN(frees) FROM slots WHERE key_id = ? AND in_flight = 0 AND frees > ?",
        (key_id, now),
    ).fetchone()
    # A request still in flight frees its slot no sooner than a window from now.
    return Wait(first - now if first is not None else held)


def _prune(db: sqlite3.Connection, key_id: str, now: float) -> None:
    db.execute("DELETE FROM slots WHERE key_id = ?1 AND frees <= ?2", (key_id, now))


def _recount(db: sqlite3.Connection, key_id: str, now: float) -> int:
    """The slots ``key_id`` holds, counted row by row; its count in ``held`` set to it."""
    _prune(db, key_id, now)  # then every row of the key is one it holds
    (count,) = db.execute("SELECT COUNT(*) FROM slots WHERE key_id = ?", (key_id,)).fetchone()
    db.execute("INSERT OR REPLACE INTO held VALUES (?, ?)", (key_id, count))
    return int(count)


def lock_key(db: sqlite3.Connection, *, key_id: str, now: float, seconds: float) -> bool:
    """Lock ``key_id`` out for ``seconds``; ``True`` when it was not locked before."""
    row = db.execute("SELECT until FROM lockouts WHERE key_id = ?", (key_id,)).fetchone()
    previous = row[0] if row is not None and is_time(row[0]) else 0.0
    previous = min(previous, now + MAX_LOCKOUT)  # a corrupt lockout is not kept
    db.execute(
        "INSERT OR REPLACE INTO lockouts VALUES (?, ?)", (key_id, max(previous, now + seconds))
    )
    return bool(previous <= now)


def is_time(value: object) -> bool:
    """Whether a stored time is one: a finite number (SQLite gives text and bytes as they are)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def _corrupt(what: str) -> None:
    logger.warning(
        "the %s held %s: dropped (a clock that stepped back, or a file edited by hand)",
        WHAT,
        what,
    )
