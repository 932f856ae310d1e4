"""A burst of page views on one key, and what the sync client costs per call.

    python benchmarks/web_burst.py             # 300 page views against the service's limit
    python benchmarks/web_burst.py --quick     # a short run (the tests)

Part 1: ``views`` concurrent ``balance()`` calls on one API key against the
emulator holding the service's limit (150 requests per 10 s), once with the
default ``RetryPolicy()`` and once with a web policy
(``RetryPolicy(deadline=5.0, max_retry_after=2.0)``): how many answered, how
many were refused at once, and how long each waited. Part 2: the sync client
against the async one, against ``server.py`` in a process of its own: wall time
and CPU per sequential call, and calls a second from eight threads (eight tasks).
Writes ``benchmarks/results/web-burst.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

from stability_user import RateLimit, RateLimitError, RetryPolicy, StabilitySession, sync
from stability_user.testing import RateLimit as ServiceRateLimit
from stability_user.testing import StabilityEmulator

HERE = Path(__file__).parent
WEB_POLICY = RetryPolicy(deadline=5.0, max_retry_after=2.0)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


async def burst(
    base_url: str, key: str, views: int, name: str, policy: RetryPolicy, limit: RateLimit
) -> str:
    """``views`` page views at once on one key: answered, refused, and their latencies."""
    answered: list[float] = []
    refused: list[float] = []
    async with StabilitySession(key, base_url=base_url, retry=policy, rate_limit=limit) as session:

        async def view() -> None:
            started = time.perf_counter()
            try:
                await session.balance()
            except RateLimitError:
                refused.append(time.perf_counter() - started)
            else:
                answered.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(view() for _ in range(views)))
        elapsed = time.perf_counter() - started
    slow = sum(t > 1.0 for t in answered)
    return (
        f"| {name} | {len(answered)} | {len(refused)} | "
        f"{statistics.median(answered):.3f} | {percentile(answered, 0.99):.2f} | "
        f"{max(answered):.2f} | {slow} | {max(refused, default=0.0):.3f} | {elapsed:.1f} |"
    )


def sync_calls(base_url: str, calls: int, threads: int) -> tuple[float, float, float]:
    """µs per sequential call (wall, CPU), and calls a second from ``threads`` threads."""
    with sync.StabilitySession(KEY, base_url=base_url, rate_limit=None) as session:
        session.balance()  # the thread, the loop and a connection
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            session.balance()
        wall = (time.perf_counter() - started) / calls * 1e6
        cpu = (time.process_time() - cpu) / calls * 1e6
        with ThreadPoolExecutor(threads) as pool:
            started = time.perf_counter()
            list(pool.map(lambda _: session.balance(), range(calls)))
            rate = calls / (time.perf_counter() - started)
    return wall, cpu, rate


async def async_calls(base_url: str, calls: int, concurrency: int) -> tuple[float, float, float]:
    """The same with the async session, ``concurrency`` tasks at once."""
    async with StabilitySession(KEY, base_url=base_url, rate_limit=None) as session:
        await session.balance()
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await session.balance()
        wall = (time.perf_counter() - started) / calls * 1e6
        cpu = (time.process_time() - cpu) / calls * 1e6
        semaphore = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with semaphore:
                await session.balance()

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        rate = calls / (time.perf_counter() - started)
    return wall, cpu, rate


KEY = "sk-" + "b" * 48


@contextlib.contextmanager
def fixed_server() -> Iterator[str]:
    """``server.py`` in a process of its own: the client's CPU is the client's alone."""
    process = subprocess.Popen(
        [sys.executable, str(HERE / "server.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{int(process.stdout.readline())}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


class EmulatorThread:
    """The emulator in a thread of its own, as a server would be to a sync program."""

    def __init__(self, emulator: StabilityEmulator) -> None:
        self.emulator = emulator
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(emulator.start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.emulator.close(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, a small limit")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "web-burst.md")
    args = parser.parse_args()
    # --quick scales the limit down (15 per 3 s): the default policy's waits last 3 s.
    requests, window = (15, 3.0) if args.quick else (150, 10.0)
    views, calls = (2 * requests, 200) if args.quick else (2 * requests, 5000)
    limit = RateLimit(requests, window)
    lines = [
        "# A burst of page views on one key, and the sync client per call",
        "",
        f"`python benchmarks/web_burst.py{' --quick' if args.quick else ''}`; "
        f"{platform.machine()}, Python {platform.python_version()}, aiohttp "
        f"{aiohttp.__version__}; {os.cpu_count()} cores, shared with other work.",
        "",
        f"{views} page views at once on one key, against the emulator (in a thread of the "
        f"same process); it and the client hold {requests} requests per {window:g} s. "
        "Times in seconds.",
        "",
        "| policy | answered | refused at once | median | p99 | max | answered after > 1 s "
        "| slowest refusal | run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    policies = {
        "`RetryPolicy()`": RetryPolicy(),
        "`RetryPolicy(deadline=5.0, max_retry_after=2.0)`": WEB_POLICY,
    }
    for name, policy in policies.items():
        # A fresh emulator each time: the first run's slots must not hold the second back.
        served = EmulatorThread(
            StabilityEmulator(rate_limit=ServiceRateLimit(requests, window, 60.0))
        )
        try:
            key = served.emulator.add_account(credits=10.0)
            line = asyncio.run(burst(served.emulator.base_url, key, views, name, policy, limit))
        finally:
            served.stop()
        lines.append(line)
        print(line, flush=True)
    with fixed_server() as base_url:
        rows = []
        for _ in range(3):  # alternate, so the machine's drift falls on both
            sync_row = sync_calls(base_url, calls, 8)
            async_row = asyncio.run(async_calls(base_url, calls, 8))
            rows.append((sync_row, async_row))
    sync_median = [statistics.median(r[0][n] for r in rows) for n in range(3)]
    async_median = [statistics.median(r[1][n] for r in rows) for n in range(3)]
    lines += [
        "",
        f"{calls} `balance()` calls (no rate limit) against `server.py` in a process of its "
        "own; the median of 3 rounds:",
        "",
        "| client | µs per sequential call | µs CPU per sequential call | calls/s, 8 at once |",
        "| --- | ---: | ---: | ---: |",
        f"| `stability_user.sync.StabilitySession` (8 threads) | {sync_median[0]:.0f} "
        f"| {sync_median[1]:.0f} | {sync_median[2]:,.0f} |",
        f"| `stability_user.StabilitySession` (8 tasks) | {async_median[0]:.0f} "
        f"| {async_median[1]:.0f} | {async_median[2]:,.0f} |",
        "",
    ]
    print("\n".join(lines[-5:]), flush=True)
    args.output.write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
