"""The read cache shared by a fleet: real processes, a real redis-server, the machine-wide file.

What a fleet of processes sharing ``cache_store=`` gets: about one request a second
for one key however many processes call it (with ``"memory"``, each process sends
its own: the control), one reader per entry at a time through a lease that
expires, so a reader killed mid-read holds the others up for the lease at most;
stored readings that carry no key and expire by themselves; a corrupt or foreign
entry read as a miss with a WARNING, never a crash nor a wrong balance; and a store
that goes away (Redis stopped or frozen, the file locked) costing one WARNING while
reads go on in each process, until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from stability_user import (
    APITimeoutError,
    CachePolicy,
    RetryPolicy,
    StabilitySession,
)
from stability_user._cache._local import LocalReadingStore
from stability_user._cache._redis import RedisReadingStore
from stability_user._cache._shared import SharedReads
from stability_user._cache._store import entry_name
from stability_user._config import key_id_of, origin_of
from stability_user.testing import Fault, StabilityEmulator

from .fakes import FakeClock
from .processes import clean_environment, run_program
from .servers import free_port, redis_binary, redis_process

WORKERS = 4
RATE = 250  # calls a second in each process
SECONDS = 4  # the benchmark runs the full 10 s (benchmarks/cache_load.py)
CREDITS = 12.5


def key_id(key: str, emulator: StabilityEmulator) -> str:
    return key_id_of(key, origin_of(emulator.base_url))


def spec_of(store: str, redis_url: str) -> str:
    return redis_url if store == "redis" else store


def warnings_in(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]


# -- a fleet on one key ---------------------------------------------------------------


async def run_fleet(emulator: StabilityEmulator, spec: str, cache: Path) -> list[dict[str, Any]]:
    key = emulator.add_account(credits=CREDITS)
    env = {
        "STABILITY_API_KEY": key,
        "STABILITY_TEST_CREDITS": str(CREDITS),
        "XDG_CACHE_HOME": str(cache),
    }
    argv = (sys.executable, "-m", "tests.cache_worker", "load", emulator.base_url, spec, "1")
    runs = await asyncio.gather(
        *(run_program(*argv, str(RATE), str(SECONDS), env=env) for _ in range(WORKERS))
    )
    assert [run.code for run in runs] == [0] * WORKERS, [run.err for run in runs]
    return [json.loads(run.out) for run in runs]


@pytest.mark.parametrize("store", ["redis", "local"])
async def test_a_fleet_sends_about_one_request_a_second_for_a_key(
    store: str, redis_url: str, tmp_path: Path, live: StabilityEmulator
) -> None:
    """4 processes x 250 calls a second, max_age=1, the documented limit (150 per 10 s)."""
    reports = await run_fleet(live, spec_of(store, redis_url), tmp_path)
    assert [r["messages"] for r in reports] == [{}] * WORKERS  # not one error
    assert sum(r["ok"] for r in reports) == WORKERS * RATE * SECONDS
    assert sum(r["wrong"] for r in reports) == 0
    assert live.status_counts.get(429, 0) == 0
    # One a second for the fleet (the full run's bound, 15 in 10 s, scaled to the run).
    assert 1 <= live.request_count <= 15 * SECONDS // 10


async def test_with_readings_in_each_process_each_sends_its_own(
    tmp_path: Path, live: StabilityEmulator
) -> None:
    """The control: the same fleet with ``"memory"`` sends about four times as many."""
    reports = await run_fleet(live, "memory", tmp_path)
    assert sum(r["ok"] for r in reports) == WORKERS * RATE * SECONDS
    assert live.request_count >= 3 * SECONDS  # about WORKERS * SECONDS: the test can fail


# -- the lease -------------------------------------------------------------------------


async def start_once(
    emulator: StabilityEmulator,
    key: str,
    spec: str,
    cache: Path,
    lease: float,
    deadline: float | None = None,
) -> asyncio.subprocess.Process:
    """A process making one balance() call; returns once it has said ``started``."""
    argv = [sys.executable, "-m", "tests.cache_worker", "once", emulator.base_url, spec, "60"]
    argv += [str(lease)] + ([str(deadline)] if deadline is not None else [])
    env = {"STABILITY_API_KEY": key, "XDG_CACHE_HOME": str(cache)}
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_environment(env),
    )
    assert process.stdout is not None
    assert await process.stdout.readline() == b"started\n"
    return process


async def report_of(process: asyncio.subprocess.Process) -> dict[str, Any]:
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out)
    return report


@pytest.mark.parametrize("store", ["redis", "local"])
async def test_a_reader_killed_holding_the_lease_blocks_the_others_for_the_lease_at_most(
    store: str, redis_url: str, tmp_path: Path, live: StabilityEmulator
) -> None:
    lease = 3.0  # long enough for the waiters to start while it is held
    spec = spec_of(store, redis_url)
    key = live.add_account(credits=CREDITS)
    live.script(Fault.stall(30.0), api_key=key)  # the first reader's request never ends
    processes: list[asyncio.subprocess.Process] = []
    try:
        holder = await start_once(live, key, spec, tmp_path, lease)
        processes.append(holder)
        await live.wait_for_requests(1)  # it holds the lease, and is reading
        waiters = await asyncio.gather(
            *(start_once(live, key, spec, tmp_path, lease) for _ in range(3))
        )
        processes += waiters
        assert live.request_count == 1  # they wait for the holder's reading...
        holder.kill()  # ...which never comes: SIGKILL, before it stores anything
        await holder.wait()
        reports = [await report_of(w) for w in waiters]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
            await process.communicate()
    # Once the lease expired, one of them read for all three.
    assert [r.get("credits") for r in reports] == [CREDITS] * 3, reports
    readings = sorted(r["fetched_at"] for r in reports)  # each process's view of one time
    assert readings[-1] - readings[0] < 0.5
    assert live.request_count == 2
    first, second = (r.time for r in live.requests)
    assert second - first >= lease * 0.9  # not before the lease had expired


@pytest.mark.parametrize("store", ["redis", "local"])
async def test_a_caller_past_its_deadline_while_a_lease_is_held_gets_a_clear_error(
    store: str, redis_url: str, tmp_path: Path, emulator: StabilityEmulator, key: str
) -> None:
    reading = make_store(store, redis_url, tmp_path, lease=30.0)
    entry = entry_name((key_id(key, emulator), emulator.base_url, "v1", "balance", None))
    try:
        # A process that took the entry's lease, and died (its lease runs 30 s).
        begun = await reading.begin(*entry, max_age=60.0, lease=30.0, token="dead")
        assert begun.granted
        async with StabilitySession(
            key,
            base_url=emulator.base_url,
            cache=CachePolicy(max_age=60),
            cache_store=reading,
            retry=RetryPolicy(max_attempts=1, deadline=0.3),
        ) as session:
            with pytest.raises(APITimeoutError, match="waited for a shared read"):
                await session.balance()
        assert emulator.request_count == 0  # at most one reads an entry at a time
    finally:
        await reading.aclose()


class WithoutRenew:
    """A store of the user's that cannot renew a lease: each read has one lease."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.lease = store.lease
        self.begin, self.put, self.end = store.begin, store.put, store.end


@pytest.mark.parametrize("renews", [True, False])
async def test_a_read_that_outlasts_its_lease_keeps_it_while_it_lasts(
    renews: bool, redis_url: str, live: StabilityEmulator
) -> None:
    key = live.add_account(credits=CREDITS)
    live.script(Fault.stall(1.5), api_key=key)  # an answer three leases long
    stores = [RedisReadingStore(redis_url, lease=0.5) for _ in range(2)]
    given = [s if renews else WithoutRenew(s) for s in stores]
    try:
        async with contextlib.AsyncExitStack() as stack:
            first, second = [
                await stack.enter_async_context(
                    StabilitySession(
                        key,
                        base_url=live.base_url,
                        cache=CachePolicy(max_age=60),
                        cache_store=store,
                        timeout=5.0,
                    )
                )
                for store in given
            ]
            slow = asyncio.ensure_future(first.balance())
            await live.wait_for_requests(1)
            await asyncio.sleep(1.0)  # twice the lease: held still only if renewed
            late = await second.balance()
            assert (await slow).credits == late.credits == CREDITS
    finally:
        for store in stores:
            await store.aclose()
    # Renewed, the second process waited for the first's reading; else it read too.
    assert live.request_count == (1 if renews else 2)


# -- what is stored ----------------------------------------------------------------------


def make_store(
    store: str,
    redis_url: str,
    folder: Path,
    *,
    clock: Callable[[], float] | None = None,
    lease: float = 5.0,
) -> Any:
    if store == "redis":
        return RedisReadingStore(redis_url, clock=clock, lease=lease)
    return LocalReadingStore(folder / "cache.sqlite3", clock=clock, lease=lease, busy_timeout=0.1)


@contextlib.asynccontextmanager
async def cached_session(
    emulator: StabilityEmulator, key: str, store: Any, clock: FakeClock, max_age: float = 60.0
) -> AsyncIterator[StabilitySession]:
    async with StabilitySession(
        key,
        base_url=emulator.base_url,
        cache=CachePolicy(max_age=max_age),
        cache_store=store,
        retry=RetryPolicy(max_attempts=1),
        clock=clock,
        sleep=clock.sleep,
    ) as session:
        yield session


async def stored_entries(store: str, redis_url: str, folder: Path, key_id: str) -> dict[str, Any]:
    """What the store holds for ``key_id``: name -> (value, milliseconds left or expiry)."""
    if store == "redis":
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            names = [n.decode() async for n in client.scan_iter(f"stability-user:{{{key_id}}}:*")]
            return {n: (await client.get(n), await client.pttl(n)) for n in names}
        finally:
            await client.aclose()
    with contextlib.closing(sqlite3.connect(folder / "cache.sqlite3")) as db:
        rows = db.execute(
            "SELECT name, body, expires FROM readings WHERE name LIKE ?", (f"{key_id}:%",)
        ).fetchall()
        leases = db.execute(
            "SELECT name, token, until FROM leases WHERE name LIKE ?", (f"{key_id}:%",)
        ).fetchall()
    return {f"read {n}": (b, e) for n, b, e in rows} | {f"lease {n}": (t, u) for n, t, u in leases}


@pytest.mark.parametrize("store", ["redis", "local"])
async def test_a_stored_reading_carries_no_key_and_expires_by_itself(
    store: str, redis_url: str, tmp_path: Path, emulator: StabilityEmulator, key: str
) -> None:
    clock = FakeClock(time.time())
    reading = make_store(store, redis_url, tmp_path, clock=clock)
    try:
        async with cached_session(emulator, key, reading, clock, max_age=3.0) as session:
            assert (await session.balance()).credits == 12.5
        entries = await stored_entries(store, redis_url, tmp_path, key_id(key, emulator))
        # One reading, the lease ended with it; the service's JSON and nothing else.
        assert len(entries) == 1, entries
        ((name, (value, left)),) = entries.items()
        assert ":read:" in name or name.startswith("read ")
        text = value.decode() if isinstance(value, bytes) else value
        assert text.endswith('{"credits":12.5}')
        assert key not in name
        assert key[3:] not in text
        if store == "redis":
            keep = 3.0 + 1.0  # max_age, and a second more
            assert keep * 1000 - 500 < left <= keep * 1000  # Redis drops it by itself
        else:
            assert left == pytest.approx(clock() + 4.0)
            raw = (tmp_path / "cache.sqlite3").read_bytes()
            assert key.encode() not in raw
    finally:
        await reading.aclose()
    if store == "local":
        # Past its time it answers nobody, and the next reading stored sweeps it out.
        clock.advance(4.5)
        reading = make_store(store, redis_url, tmp_path, clock=clock)
        try:
            other = emulator.add_account(credits=1.0)
            async with cached_session(emulator, key, reading, clock) as session:
                await session.balance()  # read again: the old one has expired
            assert emulator.request_count == 2
            async with cached_session(emulator, other, reading, clock) as session:
                await session.balance()
            entries = await stored_entries(store, redis_url, tmp_path, key_id(key, emulator))
            assert [v[1] for v in entries.values()] == [pytest.approx(clock() + 61.0)]
        finally:
            await reading.aclose()


async def test_a_lease_expires_by_itself_in_redis(redis_url: str) -> None:
    reading = RedisReadingStore(redis_url, lease=2.0)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        name = os.urandom(8).hex()
        begun = await reading.begin("lease-test", name, max_age=1.0, lease=2.0, token="t")
        assert begun.granted
        left = await client.pttl(f"stability-user:{{lease-test}}:lease:{name}")
        assert 1500 < left <= 2000
        again = await reading.begin("lease-test", name, max_age=1.0, lease=2.0, token="u")
        assert not again.granted  # held: at most one reads an entry
    finally:
        await client.aclose()
        await reading.aclose()


async def test_a_lease_granted_to_a_caller_that_left_is_ended() -> None:
    # Redis granted the lease after its caller had left (cancelled while Redis was
    # frozen): nobody will read, so the lease ends, and another process reads at once.
    with redis_process() as (url, server):
        reading = RedisReadingStore(url, lease=30.0)
        client = redis.asyncio.Redis.from_url(url)
        name = os.urandom(8).hex()
        lease_key = f"stability-user:{{lease-test}}:lease:{name}"
        try:
            await reading.begin("lease-test", "warm", max_age=1.0, lease=30.0, token="w")
            server.send_signal(signal.SIGSTOP)
            try:
                call = asyncio.ensure_future(
                    reading.begin("lease-test", name, max_age=1.0, lease=30.0, token="t")
                )
                for _ in range(20):  # its script is written; its answer cannot come
                    await asyncio.sleep(0)
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
            finally:
                server.send_signal(signal.SIGCONT)
            assert reading._ending, "the lease was left to expire"
            await asyncio.wait(set(reading._ending), timeout=10)  # its end, sent
            assert not await client.exists(lease_key)
            again = await reading.begin("lease-test", name, max_age=1.0, lease=30.0, token="u")
            assert again.granted
        finally:
            await client.aclose()
            await reading.aclose()


async def test_a_lease_expires_by_itself_in_the_local_store(tmp_path: Path) -> None:
    clock = FakeClock()
    reading = LocalReadingStore(tmp_path / "cache.sqlite3", clock=clock)
    try:
        assert (await reading.begin("k", "n", max_age=1.0, lease=2.0, token="t")).granted
        clock.advance(1.9)
        assert not (await reading.begin("k", "n", max_age=1.0, lease=2.0, token="u")).granted
        clock.advance(0.2)
        assert (await reading.begin("k", "n", max_age=1.0, lease=2.0, token="u")).granted
    finally:
        await reading.aclose()


# -- corrupt and foreign entries -----------------------------------------------------------

NOW = "{now}"  # replaced by the store's clock, in milliseconds
REDIS_GARBAGE = {
    "bytes": b"\xff\xfe\x00\x81garbage",
    "no time": b'{"credits": 999}',
    "not utf-8": NOW.encode() + b'|{"credits": 9\xff9}',
    "not json": NOW.encode() + b"|not json",
    "empty": NOW.encode() + b"|",
    "a string": NOW.encode() + b'|{"credits": "999"}',
    "no credits": NOW.encode() + b'|{"credit": 999}',
    "an array": NOW.encode() + b"|[999]",
    "an account": NOW.encode() + b'|{"id": "u", "email": "e", "organizations": []}',
    "nan": b'nan|{"credits": 999}',
    "inf": b'inf|{"credits": 999}',
    "minus inf": b'-inf|{"credits": 999}',
    "clock far ahead": b'{ahead}|{"credits": 999}',
    "too large": NOW.encode() + b'|{"credits": 999, "x": "' + b"a" * 1_100_000 + b'"}',
}


async def redis_entry(redis_url: str, emulator: StabilityEmulator, key: str) -> tuple[str, str]:
    kid, name = entry_name((key_id(key, emulator), emulator.base_url, "v1", "balance", None))
    base = f"stability-user:{{{kid}}}"
    return f"{base}:read:{name}", f"{base}:lease:{name}"


@pytest.mark.parametrize("kind", [*REDIS_GARBAGE, "a hash", "a foreign lease"])
async def test_a_corrupt_or_foreign_redis_entry_is_a_miss_with_a_warning(
    kind: str,
    redis_url: str,
    emulator: StabilityEmulator,
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(time.time())
    reading = RedisReadingStore(redis_url, clock=clock)
    client = redis.asyncio.Redis.from_url(redis_url)
    read_key, lease_key = await redis_entry(redis_url, emulator, key)
    now = int(clock() * 1000)
    try:
        if kind == "a hash":
            await client.hset(read_key, "credits", "999")
        elif kind == "a foreign lease":
            await client.set(lease_key, "someone else's, forever")  # no expiry
        else:
            raw = REDIS_GARBAGE[kind].replace(b"{now}", str(now).encode())
            raw = raw.replace(b"{ahead}", str(now + 3_600_000).encode())
            await client.set(read_key, raw, px=60_000)
        emulator.set_balance(key, 20.0)
        async with cached_session(emulator, key, reading, clock) as session:
            balance = await asyncio.wait_for(session.balance(), 10)
        assert balance.credits == 20.0  # the service's, never the entry's
        assert emulator.request_count == 1
        warned = warnings_in(caplog, "cannot be")
        assert len(warned) == 1, warned
        assert key not in warned[0]
        # The reading stored over it answers the next process.
        async with cached_session(emulator, key, reading, clock) as session:
            assert (await session.balance()).credits == 20.0
        assert emulator.request_count == 1
    finally:
        await client.delete(read_key, lease_key)
        await client.aclose()
        await reading.aclose()


LOCAL_GARBAGE = {
    "time not a number": ("'yesterday'", "{now} + 60", "'{{\"credits\": 999}}'"),
    "clock far ahead": ("{now} + 3600", "{now} + 7200", "'{{\"credits\": 999}}'"),
    "a blob": ("{now}", "{now} + 60", "x'00ff'"),
    "not json": ("{now}", "{now} + 60", "'not json'"),
    "a string": ("{now}", "{now} + 60", '\'{{"credits": "999"}}\''),
    "no credits": ("{now}", "{now} + 60", "'{{\"credit\": 999}}'"),
    "expiry not a number": ("{now}", "'never'", "'{{\"credits\": 999}}'"),
}


@pytest.mark.parametrize("kind", LOCAL_GARBAGE)
async def test_a_corrupt_or_foreign_local_entry_is_a_miss_with_a_warning(
    kind: str,
    tmp_path: Path,
    emulator: StabilityEmulator,
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(time.time())
    reading = LocalReadingStore(tmp_path / "cache.sqlite3", clock=clock)
    kid, name = entry_name((key_id(key, emulator), emulator.base_url, "v1", "balance", None))
    try:
        await reading.end(kid, name, "nobody")  # the file and its tables
        answered, expires, body = (part.format(now=clock()) for part in LOCAL_GARBAGE[kind])
        with contextlib.closing(sqlite3.connect(tmp_path / "cache.sqlite3")) as db:
            db.execute(
                f"INSERT INTO readings VALUES (?, {answered}, {expires}, {body})",  # noqa: S608 - the test's own values
                (f"{kid}:{name}",),
            )
            db.commit()
        emulator.set_balance(key, 20.0)
        async with cached_session(emulator, key, reading, clock) as session:
            assert (await session.balance()).credits == 20.0
        assert emulator.request_count == 1
        assert len(warnings_in(caplog, "cannot be")) == 1
        async with cached_session(emulator, key, reading, clock) as session:
            assert (await session.balance()).credits == 20.0
        assert emulator.request_count == 1
    finally:
        await reading.aclose()


async def test_a_local_file_that_is_no_store_is_an_outage_not_a_failed_read(
    tmp_path: Path, emulator: StabilityEmulator, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cache.sqlite3").write_bytes(b"not a database, " * 1000)
    clock = FakeClock()
    reading = LocalReadingStore(tmp_path / "cache.sqlite3", clock=clock)
    try:
        async with cached_session(emulator, key, reading, clock, max_age=1.0) as session:
            assert (await session.balance()).credits == 12.5
            clock.advance(2.0)
            assert (await session.balance()).credits == 12.5
        assert emulator.request_count == 2
        warned = warnings_in(caplog, "unavailable")
        assert len(warned) == 1
        assert "cache.sqlite3" in warned[0]
    finally:
        await reading.aclose()


# -- the store unavailable, then back -------------------------------------------------------


@contextlib.contextmanager
def own_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of the test's own, to stop and freeze."""
    argv = [redis_binary(), "--bind", "127.0.0.1", "--port", str(port)]
    argv += ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        for _ in range(1000):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            time.sleep(0.01)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("outage", ["stopped", "frozen", "file locked"])
async def test_reads_go_on_without_the_store_with_one_warning_then_use_it_again(
    outage: str,
    tmp_path: Path,
    emulator: StabilityEmulator,
    key: str,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    with contextlib.ExitStack() as stack:
        if outage == "file locked":
            reading: Any = LocalReadingStore(tmp_path / "c.sqlite3", clock=clock, busy_timeout=0.1)
            other: Any = LocalReadingStore(tmp_path / "c.sqlite3", clock=clock)
            holder = sqlite3.connect(tmp_path / "c.sqlite3", isolation_level=None)
            stack.callback(holder.close)

            def away() -> None:
                holder.execute("BEGIN EXCLUSIVE")  # another process, stuck in a transaction

            def back() -> None:
                holder.execute("ROLLBACK")

        else:
            server = stack.enter_context(own_redis(port))
            url = f"redis://127.0.0.1:{port}"
            reading, other = (RedisReadingStore(url, clock=clock) for _ in range(2))

            def away() -> None:
                if outage == "frozen":
                    server.send_signal(signal.SIGSTOP)
                else:
                    server.terminate()
                    server.wait()

            def back() -> None:
                if outage == "frozen":
                    server.send_signal(signal.SIGCONT)
                else:
                    stack.enter_context(own_redis(port))

        try:
            async with cached_session(emulator, key, reading, clock, max_age=1.0) as session:
                assert (await session.balance()).credits == 12.5  # stored
                away()
                for _ in range(3):  # each in this process alone, the first after a wait
                    clock.advance(1.5)
                    assert (await session.balance()).credits == 12.5
                assert emulator.request_count == 4
                assert len(warnings_in(caplog, "unavailable")) == 1
                back()
                clock.advance(5.0)  # the store is tried again
                emulator.set_balance(key, 20.0)
                assert (await session.balance()).credits == 20.0
                assert emulator.request_count == 5
                assert len(warnings_in(caplog, "is back:")) == 1
            # Shared again: another process's session gets the stored reading.
            async with cached_session(emulator, key, other, clock, max_age=1.0) as session:
                assert (await session.balance()).credits == 20.0
            assert emulator.request_count == 5
            assert len(warnings_in(caplog, "unavailable")) == 1
        finally:
            await reading.aclose()
            await other.aclose()


async def test_a_store_object_may_set_the_lease() -> None:
    class Store:
        lease = 0.5

    assert SharedReads(Store(), owns_store=False).lease == 0.5  # type: ignore[arg-type]
