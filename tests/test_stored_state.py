"""What the shared stores find on disk or in Redis is checked, and what they write is private.

State written by hand, as a clock stepped back, a bug of another version or a
person with redis-cli would leave it: a lockout a day long, ``inf``, ``nan``, a
string, a huge number, a value of the wrong type at a key, rows of the SQLite
file holding text where numbers belong. Each is a miss with a WARNING: the call
goes on at once, without a wait, in a bounded number of round trips (counted by
the Redis server itself, ``INFO commandstats``). And the files: the store's
SQLite file and its WAL sidecars are 0600 whatever the umask; a symbolic link at
the store's path, dangling or not, is refused and never written through.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from stability_user import (
    LocalRateLimitStore,
    RateLimit,
    RedisRateLimitStore,
    RetryPolicy,
    StabilityError,
    StabilitySession,
)
from stability_user._config import key_id_of, origin_of
from stability_user._ratelimit import MAX_LEASE, held_for
from stability_user._ratelimit._redis_scripts import ACQUIRE, LOCK, RELEASE
from stability_user.testing import StabilityEmulator

from .fakes import FakeClock
from .servers import redis_server

LIMIT = RateLimit(3, 10.0)
DAY = 86_400.0


def corruption_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and ("cannot be" in r.getMessage() or "held" in r.getMessage())
    ]


def session_on(
    emulator: StabilityEmulator, key: str, clock: FakeClock, store: object
) -> StabilitySession:
    """A session whose waits only move the fake clock: a wait shows in ``clock.sleeps``."""
    return StabilitySession(
        key,
        base_url=emulator.base_url,
        rate_limit=LIMIT,
        rate_limit_store=store,  # type: ignore[arg-type]
        retry=RetryPolicy(max_attempts=1),
        sleep=clock.sleep,
        clock=clock,
        timeout=5.0,
    )


# -- Redis -------------------------------------------------------------------------


@pytest.fixture(name="own_redis", scope="module")
def _own_redis() -> Iterator[str]:
    """A Redis of this module's own: its command counts are this module's calls alone."""
    with redis_server() as url:
        with redis.Redis.from_url(url) as client:
            for script in (ACQUIRE, RELEASE, LOCK):  # a first run's NOSCRIPT is no round trip
                client.script_load(script)
        yield url


def scripts_run(client: redis.Redis) -> int:
    stats = cast(dict[str, Any], client.info("commandstats"))
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("eval", "evalsha"))


def server_ms(client: redis.Redis) -> int:
    seconds, micros = cast(tuple[int, int], client.time())
    return int(seconds) * 1000 + int(micros) // 1000


Writer = Callable[[redis.Redis, tuple[str, str, str], int], object]

REDIS_STATES: dict[str, Writer] = {
    # A lockout recorded before the clock stepped back a day: 86,460 s left.
    "lockout a day ahead": lambda r, k, now: r.set(k[2], now + int((DAY + 60) * 1000)),
    "lockout inf": lambda r, k, now: r.set(k[2], "inf"),
    "lockout -inf": lambda r, k, now: r.set(k[2], "-inf"),
    "lockout nan": lambda r, k, now: r.set(k[2], "nan"),
    "lockout a string": lambda r, k, now: r.set(k[2], "soon"),
    "lockout huge": lambda r, k, now: r.set(k[2], "1e300"),
    "lockout a list": lambda r, k, now: r.rpush(k[2], now + 30_000),
    "in flight a hash": lambda r, k, now: r.hset(k[0], "slot", str(now + 30_000)),
    "in flight a string": lambda r, k, now: r.set(k[0], "full"),
    "completed a set": lambda r, k, now: r.sadd(k[1], "a", "b", "c"),
    "completed a day ahead": lambda r, k, now: r.zadd(
        k[1], {f"slot-{n}": now + DAY * 1000 for n in range(3)}
    ),
    "completed inf": lambda r, k, now: r.zadd(k[1], {f"slot-{n}": "inf" for n in range(3)}),
    "in flight inf": lambda r, k, now: r.zadd(k[0], {f"slot-{n}": "inf" for n in range(3)}),
    "in flight a year": lambda r, k, now: r.zadd(
        k[0], {f"slot-{n}": now + 365 * DAY * 1000 for n in range(3)}
    ),
}


@pytest.mark.parametrize("state", REDIS_STATES)
async def test_redis_state_that_cannot_be_is_a_miss(
    own_redis: str,
    emulator: StabilityEmulator,
    key: str,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    state: str,
) -> None:
    caplog.set_level(logging.WARNING)
    client = redis.Redis.from_url(own_redis)
    store = RedisRateLimitStore(own_redis)
    encoded = store._keys(key_id_of(key, origin_of(emulator.base_url)))
    names = (encoded[0].decode(), encoded[1].decode(), encoded[2].decode())
    try:
        client.delete(*names)
        REDIS_STATES[state](client, names, server_ms(client))
        before = scripts_run(client)
        async with session_on(emulator, key, clock, store) as session:
            assert (await session.balance()).credits == 12.5
            await store.flush()  # its give-back, sent now
            round_trips = scripts_run(client) - before
            assert (await session.balance()).credits == 12.5  # and the next call too
    finally:
        await store.aclose()
        client.delete(*names)
        client.close()
    assert clock.sleeps == []  # no wait, not even a short one
    assert round_trips <= 2  # its slot taken, then given back: nothing more
    warnings = corruption_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]  # not an outage


async def test_a_stray_value_in_another_keys_state_stops_no_give_back(
    own_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Give-backs ride along with any key's script: a corrupt state of one key must not
    # make the script fail (an outage for every key), nor stop the others' give-backs.
    caplog.set_level(logging.WARNING)
    client = redis.Redis.from_url(own_redis)
    store = RedisRateLimitStore(own_redis)
    broken, other = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        token = await store.acquire(broken, LIMIT, 5.0)
        assert isinstance(token, str)
        client.zadd(store._keys(broken)[1], {"stray": "inf"})  # its completed slots: inf
        await store.release(broken, token, LIMIT)  # queued, carried by the next script
        assert isinstance(await store.acquire(other, LIMIT, 5.0), str)
        assert client.zscore(store._keys(broken)[1], token) is not None  # it was given back
        assert not store._link.breaker.down
    finally:
        await store.aclose()
        client.delete(*store._keys(broken), *store._keys(other))
        client.close()
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]


# -- the machine-wide SQLite file -------------------------------------------------


SQLiteWriter = Callable[[sqlite3.Connection, str, float], object]


def _slots(rows: Callable[[float], list[tuple[object, object, object]]]) -> SQLiteWriter:
    """Three slots of the key, (taken, frees, in flight) made from the time now."""

    def write(db: sqlite3.Connection, key_id: str, now: float) -> None:
        for n, (taken, frees, in_flight) in enumerate(rows(now) * 3):
            db.execute(
                "INSERT INTO slots VALUES (?, ?, ?, ?, ?)",
                (key_id, f"slot-{n}", taken, frees, in_flight),
            )

    return write


def _lockout(until: Callable[[float], object]) -> SQLiteWriter:
    def write(db: sqlite3.Connection, key_id: str, now: float) -> None:
        db.execute("INSERT INTO lockouts VALUES (?, ?)", (key_id, until(now)))

    return write


SQLITE_STATES: dict[str, SQLiteWriter] = {
    "lockout a day ahead": _lockout(lambda now: now + DAY + 60),
    "lockout inf": _lockout(lambda now: float("inf")),
    "lockout a string": _lockout(lambda now: "soon"),
    "lockout bytes": _lockout(lambda now: b"\x00\xff"),
    "completed a day ahead": _slots(lambda now: [(now, now + DAY, 0)]),
    "taken tomorrow": _slots(lambda now: [(now + DAY, now + DAY + 10, 1)]),
    "in flight a year": _slots(lambda now: [(now, now + 365 * DAY, 1)]),
    "text for times": _slots(lambda now: [("now", "later", 1)]),
    "neither in flight nor done": _slots(lambda now: [(now, now + 5, "maybe")]),
}


@pytest.mark.parametrize("state", SQLITE_STATES)
async def test_sqlite_state_that_cannot_be_is_a_miss(
    tmp_path: Path,
    emulator: StabilityEmulator,
    key: str,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    state: str,
) -> None:
    caplog.set_level(logging.WARNING)
    path = tmp_path / "limits.sqlite3"
    store = LocalRateLimitStore(path)
    await store.open()
    with sqlite3.connect(path) as db:
        SQLITE_STATES[state](db, key_id_of(key, origin_of(emulator.base_url)), time.time())
    try:
        async with session_on(emulator, key, clock, store) as session:
            assert (await session.balance()).credits == 12.5
            assert (await session.balance()).credits == 12.5
    finally:
        await store.aclose()
    assert clock.sleeps == []
    warnings = corruption_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "machine-wide rate-limit store" in warnings[0]


async def test_a_lease_longer_than_the_longest_is_recorded_as_the_longest(tmp_path: Path) -> None:
    # A slot in flight longer than its longest lease is state that cannot be: what a
    # store records may never be dropped as such later.
    clock = FakeClock(start=time.time())
    store = LocalRateLimitStore(tmp_path / "limits.sqlite3", clock=clock)
    try:
        token = await store.acquire("k", LIMIT, 10 * DAY)
        assert isinstance(token, str)
        (frees,) = await store._file.run(
            lambda db: db.execute("SELECT frees FROM slots WHERE token = ?", (token,)).fetchone()
        )
    finally:
        await store.aclose()
    assert frees - clock.now == pytest.approx(MAX_LEASE + held_for(LIMIT))


# -- the files ---------------------------------------------------------------------


@pytest.fixture(name="open_umask")
def _open_umask() -> Iterator[None]:
    """Nothing masked off: whatever mode a file is created with, it keeps."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("open_umask")
async def test_the_file_and_its_sidecars_are_the_users_alone(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "limits.sqlite3"
    store = LocalRateLimitStore(path)
    try:
        for n in range(20):
            token = await store.acquire(f"k{n}", LIMIT, 5.0)
            assert isinstance(token, str)
            await store.release(f"k{n}", token, LIMIT)
        await store.flush()
        files = sorted(p.name for p in path.parent.iterdir())
        assert files == ["limits.sqlite3", "limits.sqlite3-shm", "limits.sqlite3-wal"]
        modes = {name: stat.S_IMODE(os.stat(path.parent / name).st_mode) for name in files}
    finally:
        await store.aclose()
    assert modes == dict.fromkeys(files, 0o600)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


@pytest.mark.usefixtures("open_umask")
async def test_an_older_file_and_sidecars_are_made_private(tmp_path: Path) -> None:
    path = tmp_path / "limits.sqlite3"
    with sqlite3.connect(path) as db:  # as an older version made it: SQLite's 0644
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
        held = sqlite3.connect(path)  # keeps the sidecars there
        held.execute("SELECT * FROM t").fetchall()
    sidecars = [path.with_name(path.name + s) for s in ("-wal", "-shm")]
    assert all(stat.S_IMODE(os.stat(p).st_mode) & 0o077 for p in [path, *sidecars])
    store = LocalRateLimitStore(path)
    try:
        await store.open()
    finally:
        await store.aclose()
        held.close()
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in [path, *sidecars] if p.exists())


@pytest.mark.parametrize("target", ["dangling", "a file", "a store"])
@pytest.mark.parametrize("link_at", ["", "-wal", "-shm"])
async def test_a_symbolic_link_at_the_store_path_is_refused(
    tmp_path: Path, target: str, link_at: str
) -> None:
    path = tmp_path / "limits.sqlite3"
    elsewhere = tmp_path / "elsewhere"
    if target == "a file":
        elsewhere.write_bytes(b"the user's own file")
    elif target == "a store":  # a database there: SQLite would open it through the link
        with contextlib.closing(sqlite3.connect(elsewhere)) as db:
            db.execute("CREATE TABLE kept (x)")
    link = path.with_name(path.name + link_at)
    link.symlink_to(elsewhere)
    before = elsewhere.read_bytes() if elsewhere.exists() else None
    store = LocalRateLimitStore(path)
    try:
        with pytest.raises(StabilityError) as info:
            await store.open()
        with pytest.raises(StabilityError):  # and at a call, as clearly
            await store.acquire("k", LIMIT, 5.0)
    finally:
        await store.aclose()
    assert str(link) in str(info.value)
    assert "symbolic link" in str(info.value)
    assert link.is_symlink()
    assert (elsewhere.read_bytes() if elsewhere.exists() else None) == before  # untouched
    if target == "dangling":
        assert not elsewhere.exists()  # never created through the link


async def test_a_session_on_a_linked_store_fails_clearly(
    tmp_path: Path, emulator: StabilityEmulator, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "stability-user"
    folder.mkdir()
    (folder / "ratelimit.sqlite3").symlink_to(tmp_path / "nowhere")
    async with StabilitySession(
        key, base_url=emulator.base_url, rate_limit_store="local"
    ) as session:
        with pytest.raises(StabilityError, match="symbolic link"):
            await session.balance()
    assert not (tmp_path / "nowhere").exists()
