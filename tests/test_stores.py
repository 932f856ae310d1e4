"""The shared rate-limit stores: machine-wide (SQLite) and fleet-wide (a real Redis).

Every store is checked against one reference model, written from the definition,
with random acquisitions, releases, 429s and clock steps; then what only each
store has: files and their modes, Redis keys that expire and share a cluster
slot, Redis going away in the middle of a run and coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis.asyncio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from stability_user import (
    BalanceTarget,
    LocalRateLimitStore,
    MemoryRateLimitStore,
    RateLimit,
    RateLimitStore,
    RedisRateLimitStore,
    RetryPolicy,
    StabilityError,
    StabilitySession,
)
from stability_user._backends import Outage
from stability_user._backends._token import new_ordered_token
from stability_user._ratelimit import MAX_LOCKOUT, RateLimiter, Wait, held_for
from stability_user._ratelimit._local import _PRUNE_EVERY, _SWEEP_EVERY
from stability_user._ratelimit._open import open_store
from stability_user.testing import StabilityEmulator

from .fakes import FakeClock
from .servers import free_port, redis_cluster, redis_server

LIMIT = RateLimit(3, 10.0, 60.0)
HELD = held_for(LIMIT)  # what a shared store holds a slot for: the window and a margin
StoreFactory = Callable[[FakeClock], RateLimitStore]


def approx_wait(seconds: float, *, lockout: bool = False) -> Any:
    # Redis keeps milliseconds: a wait is right to the millisecond.
    return Wait(pytest.approx(seconds, abs=0.002), lockout=lockout)  # type: ignore[arg-type]


def make_model(factory: StoreFactory, leases: bool) -> type[RuleBasedStateMachine]:
    class StoreModel(RuleBasedStateMachine):
        """One key, random steps; the model decides each acquisition from scratch.

        A slot is held from taking until a window after completion; with leases, a
        slot not released by then frees ``lease + window`` after it was taken (and a
        late release changes nothing); a lockout
        refuses every acquisition; a wait is until the first completed slot frees,
        or a window when every held slot is in flight.
        """

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.clock = FakeClock()
            self.store = factory(self.clock)
            self.key = uuid.uuid4().hex
            self.taken: dict[int | str, tuple[float, float]] = {}  # token -> (taken, lease)
            self.completed: dict[int | str, float] = {}
            self.locked_until = 0.0

        def run(self, awaitable: Any) -> Any:
            return self.loop.run_until_complete(awaitable)

        def teardown(self) -> None:
            self.run(self.store.aclose())
            self.loop.close()

        def frees(self, now: float) -> tuple[list[float], list[float]]:
            """When each held slot frees: completed ones, and those in flight."""
            window = HELD if leases else LIMIT.window
            done = [c + window for c in self.completed.values() if c + window > now]
            flying = [
                taken + lease + window
                for token, (taken, lease) in self.taken.items()
                if token not in self.completed and (not leases or taken + lease + window > now)
            ]
            return done, flying

        @rule(lease=st.sampled_from([0.5, 5.0, 30.0]))
        def acquire(self, lease: float) -> None:
            now = self.clock.now
            answer = self.run(self.store.acquire(self.key, LIMIT, lease))
            if self.locked_until > now:
                assert answer == approx_wait(self.locked_until - now, lockout=True)
                return
            done, flying = self.frees(now)
            if len(done) + len(flying) < LIMIT.requests:
                assert not isinstance(answer, Wait)
                self.taken[answer] = (now, lease)
            else:
                in_flight = HELD if leases else LIMIT.window
                assert answer == approx_wait(min(done) - now if done else in_flight)

        @precondition(lambda self: len(self.completed) < len(self.taken))
        @rule(data=st.data())
        def release(self, data: st.DataObject) -> None:
            flying = [t for t in self.taken if t not in self.completed]
            token = data.draw(st.sampled_from(flying))
            self.run(self.store.release(self.key, token, LIMIT))
            taken, lease = self.taken[token]
            if leases and taken + lease + HELD <= self.clock.now:
                del self.taken[token]  # its lease ran out: the slot was handed on already
            else:
                self.completed[token] = self.clock.now

        @rule(seconds=st.sampled_from([1.0, 20.0, 90.0]))
        def answered_429(self, seconds: float) -> None:
            fresh = self.run(self.store.lock(self.key, seconds))
            assert fresh == (self.locked_until <= self.clock.now)
            self.locked_until = max(self.locked_until, self.clock.now + seconds)

        @rule(seconds=st.sampled_from([0.25, 1.0, 4.0, 9.5, 15.0, 40.0]))
        def time_passes(self, seconds: float) -> None:
            self.clock.advance(seconds)

        @invariant()
        def never_more_slots_than_the_limit(self) -> None:
            done, flying = self.frees(self.clock.now)
            assert len(done) + len(flying) <= LIMIT.requests

    StoreModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
    return StoreModel


def memory_store(clock: FakeClock) -> RateLimitStore:
    return MemoryRateLimitStore(clock=clock)


TestMemoryModel = make_model(memory_store, leases=False).TestCase


@pytest.fixture(name="local_model", scope="module")
def _local_model(tmp_path_factory: pytest.TempPathFactory) -> type[RuleBasedStateMachine]:
    folder = tmp_path_factory.mktemp("local-store")
    return make_model(
        lambda clock: LocalRateLimitStore(folder / f"{uuid.uuid4().hex}.sqlite3", clock=clock),
        leases=True,
    )


def test_local_store_against_the_model(local_model: type[RuleBasedStateMachine]) -> None:
    local_model.TestCase().runTest()


def test_redis_store_against_the_model(redis_url: str) -> None:
    model = make_model(lambda clock: RedisRateLimitStore(redis_url, clock=clock), leases=True)
    model.TestCase().runTest()


class TestLocal:
    async def test_file_and_folder_are_private(self, tmp_path: Path) -> None:
        store = LocalRateLimitStore(tmp_path / "cache" / "limits.sqlite3")
        try:
            assert isinstance(await store.acquire("k", LIMIT, 5.0), str)
        finally:
            await store.aclose()
        assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(store.path.parent).st_mode) == 0o700

    def test_default_path_is_under_the_users_cache(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        store = LocalRateLimitStore()
        assert store.path == tmp_path / "stability-user" / "ratelimit.sqlite3"
        assert str(tmp_path) in repr(store)

    async def test_two_stores_on_one_file_share_the_state(self, tmp_path: Path) -> None:
        clock = FakeClock()
        first = LocalRateLimitStore(tmp_path / "l.sqlite3", clock=clock)
        second = LocalRateLimitStore(tmp_path / "l.sqlite3", clock=clock)
        try:
            for store in (first, second, first):
                assert isinstance(await store.acquire("k", LIMIT, 5.0), str)
            assert await second.acquire("k", LIMIT, 5.0) == Wait(HELD)
            assert await first.lock("k", 30.0) is True
            assert await second.acquire("k", LIMIT, 5.0) == Wait(30.0, lockout=True)
        finally:
            await first.aclose()
            await second.aclose()

    async def test_a_clock_that_went_back_does_not_block_a_key(self, tmp_path: Path) -> None:
        clock = FakeClock(start=10_000.0)
        store = LocalRateLimitStore(tmp_path / "l.sqlite3", clock=clock)
        try:
            for _ in range(3):
                await store.acquire("k", LIMIT, 5.0)
            clock.now -= 3600  # the machine's clock was set an hour back
            assert isinstance(await store.acquire("k", LIMIT, 5.0), str)
        finally:
            await store.aclose()

    async def test_old_rows_of_every_key_are_swept(self, tmp_path: Path) -> None:
        clock = FakeClock()
        store = LocalRateLimitStore(tmp_path / "l.sqlite3", clock=clock)
        try:
            for n in range(300):
                token = await store.acquire(f"key-{n}", LIMIT, 5.0)
                await store.release(f"key-{n}", token, LIMIT)  # type: ignore[arg-type]
                clock.advance(0.1)
            clock.advance(20)
            for _ in range(_SWEEP_EVERY):
                await store.acquire("last", RateLimit(100_000, 10.0), 5.0)
            (rows,) = await store._file.run(
                lambda db: db.execute(
                    "SELECT COUNT(*) FROM slots WHERE key_id != 'last'"
                ).fetchone()
            )
        finally:
            await store.aclose()
        assert rows == 0  # what expired is gone, not only for the keys still in use

    async def test_the_count_of_each_key_is_the_count_of_its_rows(self, tmp_path: Path) -> None:
        # Three processes' worth of stores on one file, keys taken, given back, locked,
        # expired: what a take reads (``held``) is what a row-by-row count says.
        clock = FakeClock()
        stores = [LocalRateLimitStore(tmp_path / "l.sqlite3", clock=clock) for _ in range(3)]
        limit = RateLimit(50, 2.0)
        try:
            for step in range(400):
                store = stores[step % 3]
                key = f"key-{step % 7}"
                token = await store.acquire(key, limit, 1.0)
                if isinstance(token, str) and step % 4:
                    await store.release(key, token, limit)
                clock.advance(0.013 * (step % 11))
            for store in stores:
                await store.flush()
            counts = await stores[0]._file.run(
                lambda db: db.execute(
                    "SELECT held.key_id, held.slots, COUNT(slots.token) FROM held"
                    " LEFT JOIN slots USING (key_id) GROUP BY held.key_id"
                ).fetchall()
            )
        finally:
            for store in stores:
                await store.aclose()
        assert len(counts) == 7
        assert all(held == rows for _, held, rows in counts), counts

    async def test_freed_rows_are_counted_out_then_deleted_every_few_takes(
        self, tmp_path: Path
    ) -> None:
        clock = FakeClock()
        store = LocalRateLimitStore(tmp_path / "l.sqlite3", clock=clock)
        limit = RateLimit(2, 1.0)
        rows: list[int] = []
        try:
            for _ in range(3 * _PRUNE_EVERY):
                token = await store.acquire("k", limit, 5.0)
                assert isinstance(token, str)  # the freed rows never count
                await store.release("k", token, limit)
                clock.advance(2.0)  # past the window: the slot is free again
                (count,) = await store._file.run(
                    lambda db: db.execute("SELECT COUNT(*) FROM slots").fetchone()
                )
                rows.append(count)
        finally:
            await store.aclose()
        assert max(rows) <= _PRUNE_EVERY
        assert min(rows) <= 1

    def test_ordered_tokens_are_unique_and_in_the_order_made(self) -> None:
        tokens = [new_ordered_token() for _ in range(1000)]
        assert len(set(tokens)) == 1000
        made_at = [token[:16] for token in tokens]  # the time; random bits break ties
        assert made_at == sorted(made_at)
        assert all(len(token) == 32 and int(token, 16) >= 0 for token in tokens)

    async def test_a_limit_of_thousands_takes_a_slot_without_counting_rows(
        self, tmp_path: Path
    ) -> None:
        clock = FakeClock()
        store = LocalRateLimitStore(tmp_path / "l.sqlite3", clock=clock)
        limit = RateLimit(2_000, 10.0)
        try:
            tokens = [await store.acquire("k", limit, 5.0) for _ in range(limit.requests)]
            assert all(isinstance(token, str) for token in tokens)
            assert await store.acquire("k", limit, 5.0) == approx_wait(held_for(limit))
            await store.release("k", tokens[0], limit)  # type: ignore[arg-type]
            await store.flush()
            assert await store.acquire("k", limit, 5.0) == approx_wait(held_for(limit))
            clock.advance(held_for(limit))
            assert isinstance(await store.acquire("k", limit, 5.0), str)
        finally:
            await store.aclose()

    async def test_a_file_of_an_earlier_version_is_counted_when_opened(
        self, tmp_path: Path
    ) -> None:
        # Slots written before the counts existed: the file is counted when opened,
        # and a full window stays full.
        clock = FakeClock(start=10_000.0)
        path = tmp_path / "l.sqlite3"
        db = sqlite3.connect(path, isolation_level=None)
        db.executescript(
            "CREATE TABLE slots (key_id TEXT NOT NULL, token TEXT NOT NULL, taken REAL NOT NULL,"
            " frees REAL NOT NULL, in_flight INTEGER NOT NULL, PRIMARY KEY (key_id, token))"
            " WITHOUT ROWID;"
            "CREATE INDEX slots_frees ON slots (frees);"
            "CREATE INDEX slots_key_frees ON slots (key_id, frees);"
            "CREATE TABLE lockouts (key_id TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID;"
        )
        for n in range(LIMIT.requests):
            db.execute("INSERT INTO slots VALUES ('k', ?, ?, ?, 1)", (f"t{n}", 10_000.0, 10_030.0))
        db.close()
        store = LocalRateLimitStore(path, clock=clock)
        try:
            assert await store.acquire("k", LIMIT, 5.0) == Wait(HELD)
            assert isinstance(await store.acquire("other", LIMIT, 5.0), str)
            indexes = await store._file.run(
                lambda db: db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'slots'"
                ).fetchall()
            )
        finally:
            await store.aclose()
        assert ("slots_frees",) not in indexes

    @pytest.mark.parametrize("count", ["'many'", "-5", "1000000", "NULL"])
    async def test_a_count_edited_by_hand_never_makes_a_call_wait(
        self, tmp_path: Path, count: str
    ) -> None:
        clock = FakeClock()
        store = LocalRateLimitStore(tmp_path / "l.sqlite3", clock=clock)
        try:
            assert isinstance(await store.acquire("k", LIMIT, 5.0), str)
            await store._file.run(
                lambda db: (
                    db.execute(f"UPDATE held SET slots = {count} WHERE key_id = 'k'")  # noqa: S608
                    if count != "NULL"
                    else db.execute("DELETE FROM held WHERE key_id = 'k'")
                )
            )
            assert isinstance(await store.acquire("k", LIMIT, 5.0), str)
            assert isinstance(await store.acquire("k", LIMIT, 5.0), str)
            assert await store.acquire("k", LIMIT, 5.0) == Wait(HELD)
        finally:
            await store.aclose()

    @pytest.mark.parametrize("broken", ["not a database", "a folder"])
    async def test_a_broken_file_is_a_clear_error(self, tmp_path: Path, broken: str) -> None:
        path = tmp_path / "l.sqlite3"
        if broken == "a folder":
            path.mkdir()
        else:
            path.write_bytes(b"this is not a SQLite file at all" * 100)
        store = LocalRateLimitStore(path)
        try:
            with pytest.raises(StabilityError) as info:
                await store.acquire("k", LIMIT, 5.0)
        finally:
            await store.aclose()
        message = str(info.value)
        assert message.startswith(f"the machine-wide rate-limit store {path} cannot be used (")
        assert message.endswith("delete it, or choose another store (rate_limit_store='memory')")

    async def test_a_file_broken_while_in_use_is_a_clear_error_then_usable_again(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "l.sqlite3"
        store = LocalRateLimitStore(path)
        try:
            assert isinstance(await store.acquire("k", LIMIT, 5.0), str)
            with sqlite3.connect(path) as other:  # another process drops a table
                other.execute("DROP TABLE slots")
            with pytest.raises(StabilityError, match="cannot be used") as info:
                await store.acquire("k", LIMIT, 5.0)
            assert "no such table: slots" in str(info.value)
            path.unlink()  # what the message says to do
            assert isinstance(await store.acquire("k", LIMIT, 5.0), str)
        finally:
            await store.aclose()

    async def test_a_file_held_by_another_process_is_an_outage_not_an_error(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = tmp_path / "l.sqlite3"
        store = LocalRateLimitStore(path, busy_timeout=0.05)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            assert isinstance(await store.acquire("k", LIMIT, 5.0), str)
            other.execute("BEGIN IMMEDIATE")  # and holds it
            # The call goes on, limited in this process; one warning says why.
            assert isinstance(await store.acquire("k", LIMIT, 5.0), int)
            assert isinstance(await store.acquire("k", LIMIT, 5.0), int)
            warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
            assert len(warnings) == 1
            assert f"machine-wide rate-limit store {path} is unavailable" in warnings[0]
            assert "another process held it for more than 0.05 s" in warnings[0]
            other.execute("ROLLBACK")
        finally:
            other.close()
            await store.aclose()

    def test_needs_platformdirs_only_without_a_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(__import__("sys").modules, "platformdirs", None)
        with pytest.raises(ImportError, match=r"stability-user\[local\]"):
            LocalRateLimitStore()
        assert LocalRateLimitStore(tmp_path / "x.sqlite3").path.name == "x.sqlite3"


class TestRedis:
    async def test_a_keys_state_shares_one_cluster_slot_and_never_names_the_key(
        self, redis_url: str
    ) -> None:
        store = RedisRateLimitStore(redis_url)
        key_id = uuid.uuid4().hex
        names = store._keys(key_id)
        assert len({key_slot(name) for name in names}) == 1
        assert all(f"{{{key_id}}}".encode() in name for name in names)
        await store.aclose()

    async def test_keys_expire_with_their_last_entry(self, redis_url: str) -> None:
        store = RedisRateLimitStore(redis_url)
        client = redis.asyncio.Redis.from_url(redis_url)
        key_id = uuid.uuid4().hex
        try:
            token = await store.acquire(key_id, LIMIT, 5.0)
            in_flight, done, lockout = store._keys(key_id)
            # Upper bounds exact; lower ones only far enough to tell which term is there
            # (Redis counts down in real time while this runs).
            assert 10_000 < await client.pttl(in_flight) <= 15_011  # lease 5 + window 10 + 0.01
            await store.release(key_id, token, LIMIT)  # type: ignore[arg-type]
            await store.flush()  # a give-back is queued: it rides with the next script
            assert await client.exists(in_flight) == 0  # empty sets are deleted
            assert 5_000 < await client.pttl(done) <= 10_011
            await store.lock(key_id, 30.0)
            assert 20_000 < await client.pttl(lockout) <= 30_001
        finally:
            await store.aclose()
            await client.aclose()

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            ("redis://127.0.0.1:notaport", "its port is not a number"),
            ("redis://:hunter2@[::1", "it does not parse"),
        ],
    )
    def test_a_bad_url_is_refused_at_once(self, url: str, problem: str) -> None:
        with pytest.raises(ValueError, match="not a Redis URL") as info:
            RedisRateLimitStore(url)
        assert problem in str(info.value)
        assert "hunter2" not in str(info.value)

    @pytest.mark.parametrize(
        "url", ["redis://user:hunter2@127.0.0.1:1/0", "redis://127.0.0.1:1/0?password=hunter2"]
    )
    def test_url_password_is_never_shown(self, url: str) -> None:
        store = RedisRateLimitStore(url)
        assert "hunter2" not in repr(store)
        assert store.where == url.replace("hunter2", "***")
        with pytest.raises(ValueError, match="url or a client"):
            RedisRateLimitStore()

    @pytest.mark.parametrize(
        ("spec", "shown"),
        [
            ("redis:/user:hunter2@typo", "'redis:***@typo'"),  # mistyped: more is masked
            ("redis:/x?password=hunter2", "'redis:/x?password=***'"),
            ("redis://h:abc/0?password=hunter2", "'redis://h:abc/0?password=***'"),
        ],
    )
    def test_a_mistyped_url_is_shown_without_its_password(self, spec: str, shown: str) -> None:
        with pytest.raises(ValueError, match=r"rate_limit_store|not a Redis URL") as info:
            open_store(spec)
        assert shown in str(info.value)
        assert "hunter2" not in str(info.value)

    async def test_a_callers_client_is_used_and_left_open(self, redis_url: str) -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        store = RedisRateLimitStore(client=client)
        assert isinstance(await store.acquire(uuid.uuid4().hex, LIMIT, 5.0), str)
        await store.aclose()
        assert await client.ping()
        await client.aclose()

    async def test_a_server_that_forgot_the_scripts_is_given_them_again(
        self, redis_url: str
    ) -> None:
        # A restarted or flushed Redis knows no script: the store loads it and goes on,
        # the slot taken and the breaker closed.
        client = redis.asyncio.Redis.from_url(redis_url)
        store = RedisRateLimitStore(redis_url)
        key_id = uuid.uuid4().hex
        try:
            first = await store.acquire(key_id, LIMIT, 5.0)
            await client.script_flush()
            second = await store.acquire(key_id, LIMIT, 5.0)
            assert isinstance(first, str)
            assert isinstance(second, str)
            assert first != second
            assert await client.zcard(store._keys(key_id)[0]) == 2
            assert not store._link.breaker.down
        finally:
            await store.aclose()
            await client.aclose()

    async def test_without_hiredis_s_packer_redis_py_packs_the_commands(
        self, redis_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A hiredis without its packer (before 2.1): redis-py packs, hiredis still parses.
        monkeypatch.delattr(hiredis, "pack_command")
        store = RedisRateLimitStore(redis_url)
        client = redis.asyncio.Redis.from_url(redis_url)
        key_id = uuid.uuid4().hex
        limit = RateLimit(2, 10.0)
        try:
            first = await store.acquire(key_id, limit, 5.0)
            assert isinstance(first, str)
            line = store._link._lines[asyncio.get_running_loop()]
            assert "hiredis" not in repr(line._pack)
            assert isinstance(await store.acquire(key_id, limit, 5.0), str)
            assert await store.acquire(key_id, limit, 5.0) == approx_wait(held_for(limit))
            await store.release(key_id, first, limit)
            await store.flush()
            assert await client.zcard(store._keys(key_id)[0]) == 1  # one in flight
            assert await client.zcard(store._keys(key_id)[1]) == 1  # one held after it
        finally:
            await store.aclose()
            await client.aclose()

    async def test_an_error_answer_keeps_the_line_in_step(self, redis_url: str) -> None:
        # An error is an answer read whole: the connection stays, and the next
        # script gets its own answer, not one left over.
        store = RedisRateLimitStore(redis_url)
        link = store._link
        try:
            assert await link.run("return ARGV[1]", [], [b"first"]) == b"first"
            connection = link._lines[asyncio.get_running_loop()].connection
            with pytest.raises(Outage):
                await link.run("return redis.error_reply('no such thing')", [], [])
            link.breaker.succeeded()  # a script of the store's never fails: this one did
            assert await link.run("return ARGV[1]", [], [b"second"]) == b"second"
            assert link._lines[asyncio.get_running_loop()].connection is connection
            assert connection.is_connected
        finally:
            await store.aclose()

    async def test_works_on_a_redis_cluster(self, tmp_path: Path) -> None:
        with redis_cluster(tmp_path) as (host, port):
            client = RedisCluster(host=host, port=port)
            store = RedisRateLimitStore(client=client)
            limit = RateLimit(2, 10.0)
            try:
                for _ in range(10):  # keys spread over the nodes' slots
                    key_id = uuid.uuid4().hex
                    first = await store.acquire(key_id, limit, 5.0)
                    assert isinstance(first, str)
                    assert isinstance(await store.acquire(key_id, limit, 5.0), str)
                    assert await store.acquire(key_id, limit, 5.0) == approx_wait(held_for(limit))
                    await store.release(key_id, first, limit)
                    assert await store.lock(key_id, 30.0) is True
                    assert await store.acquire(key_id, limit, 5.0) == approx_wait(
                        30.0, lockout=True
                    )
            finally:
                await client.aclose()

    async def test_unavailable_then_back(self, caplog: pytest.LogCaptureFixture) -> None:
        port = free_port()
        url = f"redis://127.0.0.1:{port}"
        clock = FakeClock()
        store = RedisRateLimitStore(url, clock=clock)
        key_id = uuid.uuid4().hex
        try:
            # Nothing listens: limited in this process, one warning.
            tokens = [await store.acquire(key_id, LIMIT, 5.0) for _ in range(3)]
            assert all(isinstance(t, int) for t in tokens)
            assert await store.acquire(key_id, LIMIT, 5.0) == Wait(10.0)
            for token in tokens:
                await store.release(key_id, token, LIMIT)  # type: ignore[arg-type]
            warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
            assert len(warnings) == 1
            assert "unavailable (ConnectionError: " in warnings[0]
            assert f"127.0.0.1:{port}" in warnings[0]
            with redis_server(port):
                clock.advance(4.9)  # within the retry interval: still in this process
                assert await store.acquire(key_id, LIMIT, 5.0) == approx_wait(10.0 - 4.9)
                clock.advance(0.1)
                assert isinstance(await store.acquire(key_id, LIMIT, 5.0), str)
            assert "is back" in caplog.records[-1].getMessage()
        finally:
            await store.aclose()


class TestLimiterOnStores:
    async def test_a_years_retry_after_locks_for_ten_minutes_at_most(self, tmp_path: Path) -> None:
        clock = FakeClock()
        store = LocalRateLimitStore(tmp_path / "l.sqlite3", clock=clock)
        limiter = RateLimiter(LIMIT, store, sleep=clock.sleep)
        try:
            await limiter.lock("k", "sk-" + "k" * 20, 365 * 86400.0)
            assert await store.acquire("k", LIMIT, 5.0) == Wait(MAX_LOCKOUT, lockout=True)
        finally:
            await store.aclose()

    @pytest.mark.parametrize("name", ["local", "redis"])
    async def test_a_session_owns_and_closes_a_store_it_made(
        self,
        name: str,
        redis_url: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        emulator: StabilityEmulator,
        key: str,
    ) -> None:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        spec = redis_url if name == "redis" else "local"
        monkeypatch.setenv("STABILITY_RATE_LIMIT_STORE", spec)  # as a worker would be told
        async with StabilitySession(key, base_url=emulator.base_url) as session:
            assert (await session.balance()).credits == 12.5
            limiter = session._state.limiter
            assert limiter is not None
            store = limiter.store
            assert isinstance(
                store, LocalRateLimitStore if name == "local" else RedisRateLimitStore
            )
        if isinstance(store, LocalRateLimitStore):
            assert store._file.closed
        else:
            assert store._link.closed


@contextlib.asynccontextmanager
async def stoppable_redis() -> AsyncIterator[tuple[str, Callable[[], None]]]:
    port = free_port()
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server(port))
        yield url, stack.close


async def test_redis_stopped_in_the_middle_of_a_run(
    emulator: StabilityEmulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    keys = [emulator.add_account(credits=float(n)) for n in range(40)]
    async with (
        stoppable_redis() as (url, stop_redis),
        StabilitySession(
            rate_limit_store=url,
            base_url=emulator.base_url,
            retry=RetryPolicy(max_attempts=1),
            sleep=clock.sleep,
            clock=clock,
        ) as session,
    ):
        results = []
        async for result in session.balances(
            [BalanceTarget(api_key=k) for k in keys], concurrency=4
        ):
            results.append(result)
            if len(results) == 10:
                stop_redis()
    assert len(results) == 40
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    warnings = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1
