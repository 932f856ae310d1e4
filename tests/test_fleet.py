"""stability_user.fleet: chunks, exactly one result per target, progress, and real worker fleets.

The unit-sized tests run arq's worker in this process (burst mode) against a real
Redis and the emulator; the fleet tests run arq workers as subprocesses
(``arq tests.fleet_app.WorkerSettings``), SIGKILL one mid-chunk, and re-run a sweep
after the fleet's queue was lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import pathlib
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import pytest
import redis
import redis.asyncio
from arq import create_pool
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix, result_key_prefix
from arq.worker import Retry, Worker

from stability_user import (
    BalanceTarget,
    RateLimit,
    RedisRateLimitStore,
    RetryPolicy,
    StabilitySession,
    TargetFileError,
    read_targets,
)
from stability_user.fleet import (
    CHECK_CHUNK,
    QUEUE_NAME,
    Enqueued,
    Progress,
    StoredResult,
    Sweep,
    SweepError,
    TargetFile,
    TargetLookup,
)
from stability_user.testing import Fault, StabilityEmulator
from stability_user.testing import RateLimit as EmulatorRateLimit

from .processes import clean_environment
from .servers import redis_server

ROOT = pathlib.Path(__file__).parent.parent
generated_key = StabilityEmulator.generated_key

# arq's Worker.close() still calls redis-py's deprecated close(); not ours to fix.
ARQ_DEPRECATED_CLOSE = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning"
)


@attrs.frozen
class Names:
    """A run and an arq queue of one test's own, the Redis they live in, and a client of it."""

    redis_url: str
    run: str
    queue: str
    client: Any  # a synchronous redis.Redis

    def summaries(self) -> dict[int, dict[str, Any]]:
        """The run's chunk summaries, by chunk number."""
        stored = self.client.hgetall(f"stability-user:fleet:{self.run}:chunks")
        return {int(k): json.loads(v) for k, v in stored.items()}


@pytest.fixture(name="names")
def _names(redis_url: str) -> Iterator[Names]:
    """Names no other test uses; every Redis key holding them is deleted afterwards."""
    token = uuid.uuid4().hex[:12]
    client = redis.Redis.from_url(redis_url)
    try:
        yield Names(redis_url, f"run-{token}", f"arq:queue:test-{token}", client)
        for key in client.scan_iter(f"*{token}*"):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture(name="generated")
async def _generated() -> AsyncIterator[StabilityEmulator]:
    """An emulator serving 1,000 generated accounts, on the real clock."""
    async with StabilityEmulator(generated_accounts=1000) as emulator:
        yield emulator


def write_targets(path: pathlib.Path, numbers: Iterator[int] | range, *extra: str) -> None:
    """``key,,tN`` lines for generated accounts ``numbers``, then ``extra`` lines."""
    lines = [f"{generated_key(n)},,t{n}\n" for n in numbers]
    path.write_text("# key,organization,label\n" + "".join(lines) + "".join(extra))


def sweep_for(names: Names, emulator: StabilityEmulator, targets: Any, **options: Any) -> Sweep:
    def session(store: Any) -> StabilitySession:
        # One attempt: a dropped connection is a failure at once, not a retry.
        return StabilitySession(
            base_url=emulator.base_url,
            rate_limit_store=store,
            retry=RetryPolicy(max_attempts=1),
        )

    return Sweep(names.redis_url, targets, session=session, queue_name=names.queue, **options)


async def work_off(sweep: Sweep) -> None:
    """An arq worker in this process until the queue is empty."""
    worker = Worker(**sweep.worker_settings(burst=True, poll_delay=0.01, handle_signals=False))
    try:
        await worker.async_run()
    finally:
        await worker.close()


async def stored(sweep: Sweep, run: str) -> dict[str, StoredResult]:
    return {result.label: result async for result in sweep.results(run)}


def balance_requests(emulator: StabilityEmulator) -> collections.Counter[str]:
    """Balance requests per account id, as the emulator recorded them."""
    return collections.Counter(
        r.account_id or "" for r in emulator.requests if r.path == "/v1/user/balance"
    )


@contextlib.asynccontextmanager
async def chunk_context(sweep: Sweep, redis_url: str, job_try: int = 1) -> AsyncIterator[Any]:
    """What arq hands the job: its Redis and try, and the worker's session from startup."""
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    ctx: dict[str, Any] = {"redis": pool, "job_try": job_try}
    await sweep.startup(ctx)
    try:
        yield ctx
    finally:
        await sweep.shutdown(ctx)
        await pool.aclose()


# -- target sources ---------------------------------------------------------------


async def chunks_of(source: Any, size: int) -> list[tuple[dict[str, Any], int]]:
    return [chunk async for chunk in source.chunks(size)]


async def test_a_file_in_chunks_reads_back_as_the_same_targets(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "keys.csv"
    keys = [generated_key(n) for n in range(1, 9)]
    path.write_bytes(
        "\ufeff# customers\r\n"
        "label,api_key,org\r\n"
        f"a,{keys[0]},org-1\r\n"
        "\r\n"
        f"b,{keys[1]},\r\n"
        f'"c,with comma",{keys[2]},org-3\r\n'
        "# a comment between chunks\r\n"
        f"d,{keys[3]},\r\n"
        f"e,{keys[4]},\r\n"
        f"f,{keys[5]},\r\n"
        f"g,{keys[6]},\r\n".encode()
    )
    source = TargetFile(path)
    chunks = await chunks_of(source, 3)
    assert [count for _, count in chunks] == [3, 3, 1]
    loaded = [target for ref, _ in chunks for target in (await source.load(ref))[0]]
    assert loaded == list(read_targets(path))
    assert [t.label for t in loaded] == ["a", "b", "c,with comma", "d", "e", "f", "g"]
    # A job carries byte ranges and a digest, never a key.
    text = json.dumps([ref for ref, _ in chunks])
    assert not any(key in text for key in keys)
    assert "sk-" not in text


async def test_a_chunk_of_a_file_without_a_header_never_starts_with_one(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "keys.csv"
    # A target whose organization and label read like column names, first in its chunk.
    path.write_text(f"{generated_key(1)},,one\n{generated_key(2)},org,name\n")
    source = TargetFile(path)
    chunks = await chunks_of(source, 1)
    second, unknown = await source.load(chunks[1][0])
    assert (second, unknown) == ([BalanceTarget(generated_key(2), "org", "name")], [])


async def test_a_target_without_a_label_is_refused_before_anything_is_enqueued(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "keys.csv"
    path.write_text(f"{generated_key(1)},,one\n{generated_key(2)},org-2\n")
    with pytest.raises(TargetFileError) as caught:
        await chunks_of(TargetFile(path), 10)
    assert str(caught.value) == f"{path}:2: no label: a sweep keys its results by label"
    assert generated_key(2) not in str(caught.value)


async def test_a_changed_file_is_found_out_not_checked(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "keys.csv"
    write_targets(path, range(1, 5))
    source = TargetFile(path)
    (ref, _), *_ = await chunks_of(source, 2)
    write_targets(path, range(2, 6))
    with pytest.raises(SweepError, match=r"is not the file this run was enqueued from"):
        await source.load(ref)


async def test_labels_looked_up_in_chunks() -> None:
    known = {f"c{n}": BalanceTarget(generated_key(n), label=f"c{n}") for n in range(1, 6)}
    asked: list[list[str]] = []

    async def labels() -> AsyncIterator[str]:
        for n in range(1, 8):
            yield f"c{n}"

    async def lookup(wanted: list[str]) -> list[BalanceTarget]:
        asked.append(wanted)
        return [known[label] for label in reversed(wanted) if label in known]

    source = TargetLookup(labels, lookup)
    chunks = await chunks_of(source, 3)
    assert [(ref["labels"], count) for ref, count in chunks] == [
        (["c1", "c2", "c3"], 3),
        (["c4", "c5", "c6"], 3),
        (["c7"], 1),
    ]
    targets, unknown = await source.load(chunks[1][0])
    assert ([t.label for t in targets], unknown) == (["c4", "c5"], ["c6"])  # in the chunk's order
    assert asked == [["c4", "c5", "c6"]]
    assert "lookup" in source.describe()
    plain = TargetLookup(lambda: ["x", "y"], lookup)
    assert [ref["labels"] for ref, _ in await chunks_of(plain, 5)] == [["x", "y"]]
    assert [ref["labels"] for ref, _ in await chunks_of(plain, 2)] == [["x", "y"]]
    for bad in ("", None):
        labelled: list[Any] = ["ok", bad]
        with pytest.raises(ValueError, match="a label is a non-empty str"):
            await chunks_of(TargetLookup(lambda: labelled, lookup), 5)  # noqa: B023


# -- one process: a sweep's run from start to end ------------------------------------


@ARQ_DEPRECATED_CLOSE
async def test_a_run_from_start_to_end(
    names: Names, generated: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "keys.csv"
    revoked = f"sk-{'7' * 48}"
    write_targets(path, range(1, 44), f"{revoked},,revoked-1\n", f"{revoked},,revoked-2\n")
    sweep = sweep_for(names, generated, TargetFile(path), chunk_size=10, batch_size=4)
    enqueued = await sweep.enqueue(names.run)
    assert enqueued == Enqueued(names.run, targets=45, chunks=5, enqueued=5, done=0, pending=0)
    before = names.client.info("commandstats").get("cmdstat_hset", {}).get("calls", 0)
    await work_off(sweep)
    after = names.client.info("commandstats")["cmdstat_hset"]["calls"]
    # Results land in batches: 3 writes for each chunk of 10 (4 + 4 + 2), 2 for the
    # last chunk of 5 (4 + 1), and one done mark a chunk.
    assert after - before == 4 * 3 + 2 + 5

    progress = await sweep.progress(names.run)
    assert progress.complete
    assert (progress.targets, progress.done, progress.chunks, progress.chunks_done) == (
        45,
        45,
        5,
        5,
    )
    assert progress.failures == {"AuthenticationError": 2}
    assert progress.checks_per_second is not None
    assert progress.checks_per_second > 0
    assert str(progress).startswith(f"run {names.run}: 45/45 checked (100.0%), ")
    assert str(progress).endswith("; 2 failed: AuthenticationError 2")
    assert ", done in " in str(progress)

    results = await stored(sweep, names.run)
    assert sorted(results) == sorted([f"t{n}" for n in range(1, 44)] + ["revoked-1", "revoked-2"])
    for n in range(1, 44):
        assert results[f"t{n}"] == StoredResult(
            f"t{n}", credits=generated.balance(generated_key(n))
        )
    failed = results["revoked-1"]
    assert (failed.ok, failed.error, failed.status, failed.credits) == (
        False,
        "AuthenticationError",
        401,
        None,
    )
    assert failed.message is not None
    assert failed.message.startswith("401 unauthorized")
    assert revoked not in failed.message
    assert balance_requests(generated).total() == 45

    # Enqueued again: every chunk is done, nothing is checked twice.
    again = await sweep.enqueue(names.run)
    assert again == Enqueued(names.run, targets=45, chunks=5, enqueued=0, done=5, pending=0)
    await work_off(sweep)
    assert balance_requests(generated).total() == 45
    watched = [p async for p in sweep.watch(names.run, interval=0.01)]
    assert [p.complete for p in watched] == [True]


@ARQ_DEPRECATED_CLOSE
async def test_a_run_of_looked_up_labels(names: Names, generated: StabilityEmulator) -> None:
    known = {f"customer-{n}": generated_key(n) for n in range(1, 25)}

    async def lookup(labels: list[str]) -> list[BalanceTarget]:
        return [BalanceTarget(known[label], label=label) for label in labels if label in known]

    labels = [*known, "customer-gone"]
    sweep = sweep_for(names, generated, TargetLookup(lambda: labels, lookup), chunk_size=10)
    assert (await sweep.enqueue(names.run)).chunks == 3
    await work_off(sweep)
    results = await stored(sweep, names.run)
    assert len(results) == 25
    assert results["customer-3"].credits == generated.balance(generated_key(3))
    assert results["customer-gone"] == StoredResult(
        "customer-gone",
        error="UnknownLabel",
        message="the lookup returned no target for this label",
    )
    assert (await sweep.progress(names.run)).failures == {"UnknownLabel": 1}


# -- a chunk run again -------------------------------------------------------------


async def test_a_chunk_run_again_checks_only_the_targets_without_a_result(
    names: Names, generated: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "keys.csv"
    write_targets(path, range(1, 10), f"sk-{'7' * 48},,revoked\n")
    # Target 9's connection is dropped (twice: aiohttp re-sends once on a fresh drop).
    generated.script(Fault.drop(), Fault.drop(), api_key=generated_key(9))
    sweep = sweep_for(names, generated, TargetFile(path), chunk_size=10)
    ((ref, _),) = await chunks_of(sweep.targets, 10)
    async with chunk_context(sweep, names.redis_url) as ctx:
        first = await sweep.check_chunk(ctx, names.run, 0, ref)
    failures = {"AuthenticationError": 1, "APIConnectionError": 1}
    assert (first["attempt"], first["checked"], first["failures"]) == (1, 10, failures)
    dropped = (await stored(sweep, names.run))["t9"]
    assert (dropped.error, dropped.status) == ("APIConnectionError", None)
    # As if the first run had died before writing three of its results and its done mark.
    client = names.client
    client.hdel(f"stability-user:fleet:{names.run}:chunks", "0")
    client.hdel(f"stability-user:fleet:{names.run}:results", "t1", "t2", "t3")
    requests = balance_requests(generated).total()
    async with chunk_context(sweep, names.redis_url, job_try=2) as ctx:
        second = await sweep.check_chunk(ctx, names.run, 0, ref)
        skipped = await sweep.check_chunk(ctx, names.run, 0, ref)
    assert balance_requests(generated).total() == requests + 3
    # The failures the first run stored still count.
    assert (second["attempt"], second["checked"], second["failures"]) == (2, 3, failures)
    assert skipped == {"skipped": True}
    assert balance_requests(generated).total() == requests + 3
    assert len(await stored(sweep, names.run)) == 10


async def test_a_chunk_out_of_time_keeps_its_results_and_goes_on_where_it_stopped(
    names: Names, generated: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "keys.csv"
    write_targets(path, range(1, 7))
    generated.script(Fault.stall(30), api_key=generated_key(4))
    sweep = sweep_for(
        names, generated, TargetFile(path), chunk_size=6, batch_size=1, concurrency=1,
        job_timeout=0.5,
    )  # fmt: skip
    ((ref, _),) = await chunks_of(sweep.targets, 6)
    async with chunk_context(sweep, names.redis_url) as ctx:
        with pytest.raises(Retry) as caught:
            await sweep.check_chunk(ctx, names.run, 0, ref)
    assert caught.value.defer_score == 0  # at once: the chunk goes on where it stopped
    assert sorted(await stored(sweep, names.run)) == ["t1", "t2", "t3"]
    async with chunk_context(sweep, names.redis_url, job_try=2) as ctx:
        summary = await sweep.check_chunk(ctx, names.run, 0, ref)
    assert (summary["attempt"], summary["checked"]) == (2, 3)
    assert len(await stored(sweep, names.run)) == 6


async def test_redis_failing_mid_chunk_makes_arq_run_it_again(
    names: Names, generated: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "keys.csv"
    write_targets(path, range(1, 3))
    sweep = sweep_for(names, generated, TargetFile(path))
    ((ref, _),) = await chunks_of(sweep.targets, 10)
    # Nothing listens on port 1 of loopback.
    gone = redis.asyncio.Redis.from_url("redis://127.0.0.1:1")
    try:
        async with chunk_context(sweep, names.redis_url) as ctx:
            with pytest.raises(Retry) as caught:
                await sweep.check_chunk({**ctx, "redis": gone}, names.run, 0, ref)
    finally:
        await gone.aclose()
    assert caught.value.defer_score == 5000
    path.unlink()
    async with chunk_context(sweep, names.redis_url) as ctx:
        with pytest.raises(SweepError, match=r"keys.csv: no such file on this worker"):
            await sweep.check_chunk(ctx, names.run, 0, ref)


# -- the producer ----------------------------------------------------------------------


async def test_enqueue_skips_queued_chunks_and_forgets_a_kept_failure(
    names: Names, generated: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "keys.csv"
    write_targets(path, range(1, 31))
    sweep = sweep_for(names, generated, TargetFile(path), chunk_size=10)
    assert (await sweep.enqueue(names.run)).enqueued == 3
    again = await sweep.enqueue(names.run)
    assert (again.enqueued, again.pending, again.done) == (0, 3, 0)  # queued: not twice
    # Chunk 1 failed for good under a worker that kept arq's result (keep_result > 0):
    # its job is gone from the queue, its result stays under the job's id.
    client = names.client
    job_id = f"stability-user:fleet:{names.run}:1"
    client.delete(f"arq:job:{job_id}")
    client.zrem(names.queue, job_id)
    client.set(result_key_prefix + job_id, b"a failure")
    third = await sweep.enqueue(names.run)
    assert (third.enqueued, third.pending) == (1, 2)
    assert client.exists(f"arq:job:{job_id}") == 1
    assert client.zcard(names.queue) == 3


async def test_a_run_cannot_go_on_with_other_targets(
    names: Names, generated: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "keys.csv"
    write_targets(path, range(1, 11))
    sweep = sweep_for(names, generated, TargetFile(path), chunk_size=10)
    ((ref, _),) = await chunks_of(sweep.targets, 10)
    await sweep.enqueue(names.run)
    async with chunk_context(sweep, names.redis_url) as ctx:
        await sweep.check_chunk(ctx, names.run, 0, ref)
    write_targets(path, range(2, 12))
    with pytest.raises(SweepError) as caught:
        await sweep.enqueue(names.run)
    assert str(caught.value) == (
        f"chunk 0 of run {names.run} was enqueued from other targets than {path} "
        "holds now: enqueue a new run"
    )


async def test_an_unknown_run_and_a_missing_redis_are_one_line(
    names: Names, tmp_path: pathlib.Path
) -> None:
    sweep = Sweep(names.redis_url, TargetFile(tmp_path / "keys.csv"))
    with pytest.raises(SweepError) as unknown:
        await sweep.progress(names.run)
    assert str(unknown.value) == (
        f"no run {names.run} in Redis at {names.redis_url}: never enqueued, expired, or "
        "lost when Redis restarted without persistence (enqueue it again)"
    )
    away = Sweep("redis://:hunter2@127.0.0.1:1/0", TargetFile(tmp_path / "keys.csv"))
    for call in (away.enqueue, away.progress):
        with pytest.raises(SweepError) as caught:
            await call(names.run)
        assert str(caught.value) == (
            "cannot reach Redis at redis://:***@127.0.0.1:1/0 (ConnectionError)"
        )
    assert "hunter2" not in repr(away)
    assert repr(away) == f"<Sweep {tmp_path / 'keys.csv'} on redis://:***@127.0.0.1:1/0>"


async def test_redis_lost_while_watching_is_one_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "keys.csv"
    write_targets(path, range(1, 3))
    with redis_server() as url:
        sweep = Sweep(url, TargetFile(path))
        await sweep.enqueue("nightly")

        async def redis_goes_away(_: float) -> None:
            with redis.Redis.from_url(url) as client:
                client.shutdown(nosave=True)

        with pytest.raises(SweepError) as caught:
            async for _ in sweep.watch("nightly", sleep=redis_goes_away):
                pass
    assert str(caught.value) == (
        f"lost Redis at {url} (ConnectionError): once it is back, run this again"
    )


async def test_watch_follows_a_run_until_it_is_complete(
    names: Names, generated: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "keys.csv"
    write_targets(path, range(1, 21))
    sweep = sweep_for(names, generated, TargetFile(path), chunk_size=10)
    refs = await chunks_of(sweep.targets, 10)
    await sweep.enqueue(names.run)
    checked = 0

    async def check_a_chunk(_: float) -> None:
        # The watch's wait between polls: a worker checks a chunk meanwhile.
        nonlocal checked
        async with chunk_context(sweep, names.redis_url) as ctx:
            await sweep.check_chunk(ctx, names.run, checked, refs[checked][0])
        checked += 1

    seen = [p async for p in sweep.watch(names.run, interval=5, sleep=check_a_chunk)]
    assert [(p.done, p.chunks_done, p.complete) for p in seen] == [
        (0, 0, False),
        (10, 1, False),
        (20, 2, True),
    ]
    assert seen[0].checks_per_second is None
    assert seen[1].checks_per_second is not None
    assert seen[1].checks_per_second > 0
    assert seen[1].eta is not None
    assert seen[1].eta > 0
    assert seen[2].eta == 0


def test_progress_in_one_line() -> None:
    def progress(**changes: Any) -> Progress:
        base = Progress(
            run="nightly",
            targets=1_000_000,
            done=412_000,
            failures={},
            chunks=1000,
            chunks_done=410,
            elapsed=280.0,
            checks_per_second=1480.0,
        )
        return attrs.evolve(base, **changes)

    assert str(progress()) == (
        "run nightly: 412,000/1,000,000 checked (41.2%), 1,480 checks/s, ETA 6 min 37 s"
    )
    assert str(progress(failures={"RateLimitError": 2, "APIConnectionError": 10})) == (
        "run nightly: 412,000/1,000,000 checked (41.2%), 1,480 checks/s, ETA 6 min 37 s; "
        "12 failed: APIConnectionError 10, RateLimitError 2"
    )
    assert str(progress(targets=None, chunks=None, checks_per_second=None)) == (
        "run nightly: 412,000 checked (the producer is still reading)"
    )
    assert progress(checks_per_second=None).eta is None
    assert str(progress(checks_per_second=10.0)).endswith("ETA 16 h 20 min")
    assert str(progress(checks_per_second=100_000.0)).endswith("ETA 6 s")
    done = progress(done=1_000_000, chunks_done=1000, elapsed=700.0)
    assert str(done).endswith("done in 11 min 40 s")
    empty = progress(targets=0, done=0, chunks=0, chunks_done=0, checks_per_second=None)
    assert str(empty) == "run nightly: 0/0 checked (100.0%), done in 4 min 40 s"


async def test_a_worker_process_holds_one_session_and_one_store(
    names: Names,
    generated: StabilityEmulator,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STABILITY_API_HOST", generated.base_url)
    sweep = Sweep(names.redis_url, TargetFile(tmp_path / "keys.csv"))  # the default session
    ctx: dict[str, Any] = {}
    await sweep.startup(ctx)
    ((session, store),) = ctx.values()
    try:
        assert isinstance(session, StabilitySession)
        assert session.rate_limit == RateLimit()  # the service's numbers
        assert isinstance(store, RedisRateLimitStore)
        assert store.where == names.redis_url
        # Its checks take their slots in Redis, where every worker takes them. (Account
        # 997 is this test's: another test's slots of a key last a window in Redis.)
        before = set(names.client.scan_iter("stability-user:{*"))
        await session.with_options(api_key=generated_key(997)).balance()
        slots = set(names.client.scan_iter("stability-user:{*")) - before
        assert slots
        names.client.delete(*slots)
    finally:
        await sweep.shutdown(ctx)
    assert session.closed
    assert ctx == {}
    await sweep.shutdown(ctx)  # nothing left to close

    def no_session(store: RedisRateLimitStore) -> StabilitySession:
        raise RuntimeError("cannot make a session")

    broken = Sweep(names.redis_url, TargetFile(tmp_path / "keys.csv"), session=no_session)
    with pytest.raises(RuntimeError, match="cannot make a session"):
        await broken.startup(ctx)
    assert ctx == {}


def test_settings_are_checked_and_give_arq_what_it_needs(tmp_path: pathlib.Path) -> None:
    source = TargetFile(tmp_path / "keys.csv")
    sweep = Sweep("redis://127.0.0.1:6379/2", source, chunks_per_worker=3, job_timeout=30)
    settings = sweep.worker_settings(poll_delay=0.2)
    (function,) = settings["functions"]
    assert (function.name, function.keep_result_s, function.timeout_s) == (CHECK_CHUNK, 0, 35.0)
    assert settings["queue_name"] == QUEUE_NAME
    assert (settings["max_jobs"], settings["keep_result"], settings["poll_delay"]) == (3, 0, 0.2)
    assert settings["redis_settings"].database == 2
    assert settings["on_startup"] == sweep.startup
    for name, value in [
        ("chunk_size", 0),
        ("concurrency", True),
        ("batch_size", 2.5),
        ("job_timeout", 0),
        ("keep_for", float("inf")),
    ]:
        options: dict[str, Any] = {name: value}
        with pytest.raises(ValueError, match=name):
            Sweep("redis://127.0.0.1", source, **options)
    with pytest.raises(ValueError, match="not a Redis URL"):
        Sweep("http://127.0.0.1", source)


async def test_run_names(names: Names, tmp_path: pathlib.Path) -> None:
    sweep = Sweep(names.redis_url, TargetFile(tmp_path / "keys.csv"))
    for bad in ("", "-x", "has space", "x" * 101, "a*b"):
        with pytest.raises(ValueError, match="a run is named by"):
            await sweep.progress(bad)


# -- a fleet of worker processes ---------------------------------------------------------


@attrs.define
class Fleet:
    """arq worker processes of ``tests.fleet_app``, and what each wrote on stderr."""

    env: dict[str, str]
    scratch: pathlib.Path
    processes: list[asyncio.subprocess.Process] = attrs.Factory(list)

    async def start(self) -> asyncio.subprocess.Process:
        """A worker, once it says it is ready."""
        number = len(self.processes)
        with (self.scratch / f"worker-{number}.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "arq",
                "tests.fleet_app.WorkerSettings",
                cwd=ROOT,
                env=clean_environment(self.env),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        self.processes.append(process)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line == b"ready\n", self.log(number)
        return process

    def log(self, number: int) -> str:
        return (self.scratch / f"worker-{number}.log").read_text()

    async def until_idle(self) -> None:
        """Wait until arq has finished every job: none queued, none in progress.

        A sweep is complete once its results are stored, from inside each job; arq
        then still ends the job (its result, its queue entry). A worker told to stop
        in between cancels that ending, and arq exits with an error.
        """
        client = redis.asyncio.Redis.from_url(self.env["REDIS_URL"])
        try:
            for _ in range(600):  # arq's state is in Redis, with no event to wait on
                queued = await client.zcard(self.env["FLEET_QUEUE"])
                if not queued and not await client.keys(f"{in_progress_key_prefix}*"):
                    return
                await asyncio.sleep(0.05)
            pytest.fail("arq never finished its jobs")
        finally:
            await client.aclose()

    async def stop(self) -> list[int]:
        """SIGTERM the workers still running once they are idle; their exit statuses."""
        await self.until_idle()
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        return [await asyncio.wait_for(p.wait(), 30) for p in self.processes]


@contextlib.asynccontextmanager
async def fleet(
    names: Names, emulator: StabilityEmulator, targets: pathlib.Path, **env: str
) -> AsyncIterator[Fleet]:
    workers = Fleet(
        {
            "REDIS_URL": names.redis_url,
            "STABILITY_API_HOST": emulator.base_url,
            "FLEET_TARGETS": str(targets),
            "FLEET_QUEUE": names.queue,
            **env,
        },
        targets.parent,
    )
    try:
        yield workers
    finally:
        for process in workers.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


def producer(names: Names, targets: pathlib.Path, chunk_size: int = 10) -> Sweep:
    """The producer's side of ``tests.fleet_app``'s sweep."""
    return Sweep(
        names.redis_url, TargetFile(targets), chunk_size=chunk_size, queue_name=names.queue
    )


async def until_complete(sweep: Sweep, run: str) -> Progress:
    async def watch() -> Progress:
        seen = [progress async for progress in sweep.watch(run, interval=0.05)]
        return seen[-1]

    return await asyncio.wait_for(watch(), 50)


async def until_requested(emulator: StabilityEmulator, account_id: str) -> None:
    """Wait until the emulator has received a request of ``account_id``."""

    async def requested() -> None:
        while not any(r.account_id == account_id for r in emulator.requests):
            await emulator.wait_for_requests(emulator.request_count + 1)

    await asyncio.wait_for(requested(), 30)


async def every_result_once(
    sweep: Sweep, names: Names, emulator: StabilityEmulator, numbers: range
) -> None:
    results = await stored(sweep, names.run)
    assert sorted(results) == sorted(f"t{n}" for n in numbers)
    assert all(results[f"t{n}"].credits == emulator.balance(generated_key(n)) for n in numbers)


@pytest.mark.timeout(90)
async def test_a_worker_killed_mid_chunk(
    names: Names, generated: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    targets = tmp_path / "keys.csv"
    write_targets(targets, range(1, 61))  # 6 chunks of 10
    generated.script(Fault.stall(60), api_key=generated_key(35))  # in chunk 3
    sweep = producer(names, targets)
    async with fleet(names, generated, targets, FLEET_JOB_TIMEOUT="1") as workers:
        first = await workers.start()
        await sweep.enqueue(names.run)
        await until_requested(generated, "generated-35")
        first.send_signal(signal.SIGKILL)  # mid-chunk: its answer is 60 s away
        assert await first.wait() == -signal.SIGKILL
        await workers.start()
        # arq leases a running chunk for its timeout + 15 s: then the new worker runs it.
        progress = await until_complete(sweep, names.run)
        assert (await workers.stop())[1] == 0, workers.log(1)
    assert (progress.done, progress.failures) == (60, {})
    await every_result_once(sweep, names, generated, range(1, 61))
    summaries = names.summaries()
    assert summaries[3]["attempt"] == 2
    run_again = {n for n, summary in summaries.items() if summary["attempt"] > 1}
    # Only the chunks the killed worker held were checked twice, and only their targets.
    requests = balance_requests(generated)
    assert {f"generated-{n}" for n in range(1, 61)} == set(requests)
    twice = {account for account, count in requests.items() if count > 1}
    assert twice <= {f"generated-{10 * c + k}" for c in run_again for k in range(1, 11)}
    assert "generated-35" in twice
    assert generated.status_counts.get(429, 0) == 0


@pytest.mark.timeout(90)
async def test_a_sweep_run_again_after_its_fleet_crashed_checks_only_what_is_not_done(
    names: Names, generated: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    targets = tmp_path / "keys.csv"
    write_targets(targets, range(1, 61))  # 6 chunks of 10
    generated.script(Fault.stall(60), api_key=generated_key(35))
    sweep = producer(names, targets)
    async with fleet(names, generated, targets) as workers:
        first = await workers.start()
        await sweep.enqueue(names.run)
        await until_requested(generated, "generated-35")
        first.send_signal(signal.SIGKILL)
        await first.wait()
        done = set(names.summaries())
        assert 3 not in done
        # The crash took the queue too (a Redis restored from a backup, say): arq's jobs
        # are gone, the results and done marks are not.
        for key in names.client.scan_iter(f"arq:*{names.run}*"):
            names.client.delete(key)
        names.client.delete(names.queue)
        again = await sweep.enqueue(names.run)
        assert (again.done, again.enqueued, again.pending) == (len(done), 6 - len(done), 0)
        await workers.start()
        await until_complete(sweep, names.run)
        await workers.stop()
    await every_result_once(sweep, names, generated, range(1, 61))
    requests = balance_requests(generated)
    for chunk in done:  # the chunks done before the crash were not checked again
        assert [requests[f"generated-{10 * chunk + k}"] for k in range(1, 11)] == [1] * 10


def busiest_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(
        (sum(1 for t in times[n:] if t < start + window) for n, start in enumerate(times)),
        default=0,
    )


@pytest.mark.timeout(90)
@pytest.mark.parametrize("store", ["redis", "memory"])
async def test_the_limit_holds_across_the_fleet(
    store: str, names: Names, tmp_path: pathlib.Path
) -> None:
    limit = EmulatorRateLimit(20, 1.0, 2.0)  # the service's numbers scaled down: 20 a second
    targets = tmp_path / "keys.csv"
    keys = 3
    targets.write_text(
        "".join(f"{generated_key(n % keys + 1)},,t{n}\n" for n in range(150))  # 50 a key
    )
    async with (
        StabilityEmulator(generated_accounts=keys, rate_limit=limit) as emulator,
        fleet(names, emulator, targets, FLEET_RATE_LIMIT="20/1", FLEET_STORE=store) as workers,
    ):
        for _ in range(3):
            await workers.start()
        sweep = producer(names, targets)
        await sweep.enqueue(names.run)
        progress = await until_complete(sweep, names.run)
        assert await workers.stop() == [0, 0, 0]
        statuses = emulator.status_counts
        by_key = collections.defaultdict(list)
        for request in emulator.requests:
            by_key[request.account_id].append(request.time)
    if store == "memory":
        # Three workers, three windows: the service sees too many. The test can fail.
        assert statuses.get(429, 0) > 0
        return
    assert statuses == {200: 150}
    assert progress.failures == {}
    assert max(busiest_window(times, limit.window) for times in by_key.values()) <= 20
