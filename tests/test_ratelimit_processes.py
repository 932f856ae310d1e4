"""The rate limit shared across real processes: four workers, one key, one emulator.

Each worker is a separate Python process making 200 calls on the same key; the
emulator enforces a scaled-down limit and records every arrival. Sharing the
state through Redis or the machine-wide store, the emulator never answers 429
and no window holds more than the limit; with the state in each process, it does.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

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
