"""The rate limit shared across real processes: four workers, one key, one emulator.

Each worker is a separate Python process making 200 calls on the same key; the
emulator enforces a scaled-down limit and records every arrival. Sharing the
state through Redis or the machine-wide store, the emulator never answers 429
and no window holds more than the limit; with the state in each process, it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
from pathlib import Path

import pytest
import redis.asyncio

from stability_user._config import key_id_of, origin_of
from stability_user.testing import RateLimit, StabilityEmulator

from .processes import run_program

WORKERS = 4
CALLS = 200
LIMIT = RateLimit(100, 0.5, 1.0)  # the service's numbers scaled down: 100 per 0.5 s


async def run_workers(
    emulator: StabilityEmulator, key: str, store: str, cache: Path, calls: int = CALLS
) -> list[dict[str, object]]:
    env = {"STABILITY_API_KEY": key, "XDG_CACHE_HOME": str(cache)}
    argv = (sys.executable, "-m", "tests.rate_worker", emulator.base_url, store)
    limit = f"{LIMIT.requests}/{LIMIT.window}"
    runs = await asyncio.gather(
        *(run_program(*argv, limit, str(calls), env=env) for _ in range(WORKERS))
    )
    assert [run.code for run in runs] == [0] * WORKERS, [run.err for run in runs]
    return [json.loads(run.out) for run in runs]


def busiest_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(
        (sum(1 for t in times[n:] if t < start + window) for n, start in enumerate(times)),
        default=0,
    )


@pytest.mark.parametrize("store", ["redis", "local"])
async def test_shared_state_keeps_every_process_under_the_limit(
    store: str, redis_url: str, tmp_path: Path
) -> None:
    async with StabilityEmulator(rate_limit=LIMIT) as emulator:
        key = emulator.add_account()
        spec = redis_url if store == "redis" else "local"
        results = await run_workers(emulator, key, spec, tmp_path)
        statuses = [r.status for r in emulator.requests]
        times = [r.time for r in emulator.requests]
    assert [r["messages"] for r in results] == [{}] * WORKERS  # every call succeeded
    assert sum(r["ok"] for r in results) == WORKERS * CALLS  # type: ignore[misc]
    assert statuses.count(429) == 0
    assert len(statuses) == WORKERS * CALLS
    assert busiest_window(times, LIMIT.window) <= LIMIT.requests


async def test_state_in_each_process_lets_the_service_see_too_many(tmp_path: Path) -> None:
    async with StabilityEmulator(rate_limit=LIMIT) as emulator:
        key = emulator.add_account()
        results = await run_workers(emulator, key, "memory", tmp_path, calls=60)
        statuses = [r.status for r in emulator.requests]
    assert statuses.count(429) > 0  # four processes, four windows: the test can fail
    failed = [n for r in results for n in r["errors"].values()]  # type: ignore[attr-defined]
    assert sum(failed) > 0


@pytest.mark.parametrize("store", ["local", "redis"])
async def test_stress_with_cancellations_breaks_and_closes_across_processes(
    store: str, redis_url: str, tmp_path: Path
) -> None:
    """Random cancellations, early breaks, closes and queues for a connection, in four
    processes on three shared keys: the service never sees more than the limit, and
    afterwards no slot is held and no process holds anything of the store."""
    limit = RateLimit(20, 0.5, 1.0)
    async with StabilityEmulator(rate_limit=limit) as emulator:
        keys = [emulator.add_account() for _ in range(3)]
        spec = redis_url if store == "redis" else "local"
        env = {"XDG_CACHE_HOME": str(tmp_path)}
        runs = await asyncio.gather(
            *(
                run_program(
                    sys.executable,
                    "-m",
                    "tests.stress_worker",
                    emulator.base_url,
                    spec,
                    f"{limit.requests}/{limit.window}",
                    str(seed),
                    *keys,
                    env=env,
                )
                for seed in range(WORKERS)
            )
        )
        statuses = [r.status for r in emulator.requests]
        arrivals = {
            account: [r.time for r in emulator.requests if r.account_id == account]
            for account in {r.account_id for r in emulator.requests}
        }
    assert [run.code for run in runs] == [0] * WORKERS, [run.err for run in runs]
    reports = [json.loads(run.out) for run in runs]
    assert [r["left_open"] for r in reports] == [[]] * WORKERS
    assert sum(r["outcomes"].get("ok", 0) for r in reports) > 0
    assert statuses.count(429) == 0
    assert len(arrivals) == 3
    for times in arrivals.values():  # the limit is per key
        assert busiest_window(times, limit.window) <= limit.requests
    held = await slots_held(store, redis_url, tmp_path, keys, emulator.base_url)
    assert held == 0, [run.err for run in runs]


async def slots_held(
    store: str, redis_url: str, folder: Path, keys: list[str], base_url: str
) -> int:
    """Slots still marked in flight in the shared state, for these keys."""
    key_ids = [key_id_of(key, origin_of(base_url)) for key in keys]
    if store == "local":
        path = folder / "stability-user" / "ratelimit.sqlite3"
        with contextlib.closing(sqlite3.connect(path)) as db:
            marks = ",".join("?" * len(key_ids))
            (count,) = db.execute(
                f"SELECT COUNT(*) FROM slots WHERE in_flight = 1 AND key_id IN ({marks})",  # noqa: S608 - placeholders only
                key_ids,
            ).fetchone()
        return int(count)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        return sum([await client.zcard(f"stability-user:{{{k}}}:in-flight") for k in key_ids])
    finally:
        await client.aclose()
