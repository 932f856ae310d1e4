"""The read cache under load: one key, the emulator's documented rate limit, max_age=1.

    python benchmarks/cache_load.py              # both runs, 10 s each, and their controls
    python benchmarks/cache_load.py --quick      # a tiny run that only proves it works (CI)

(a) one process, one key: ``--rate`` (1,000) ``balance()`` calls a second for
``--seconds`` (10) through a session with ``CachePolicy(max_age=1)``; then the same
load without a cache (the control: the service's limit, 150 requests per 10 s,
answers most calls with 429, and they fail with RateLimitError).

(b) a fleet: ``--workers`` (4) processes, each ``--rate / --workers`` calls a second
on the same key for ``--seconds``, sharing their readings through Redis (a
``redis-server`` from PATH on a free loopback port, or $REDIS_URL); then the same
fleet with ``cache_store="memory"`` (the control: each process reads for itself).

The emulator (``stability_user.testing``, its default documented limit) runs in a
process of its own and counts what reaches it. Reported for each run: calls, errors
by type, wrong balances, requests that reached the emulator and its 429s, and the
latency of a cache hit (a call answered by a reading that was there when it began)
and of every call. Nothing is asserted; the tables go to stdout and to
``benchmarks/results/cache.md`` with the machine and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from stability_user import (
    CachePolicy,
    RateLimit,
    RetryPolicy,
    StabilityError,
    StabilitySession,
    __version__,
)
from stability_user.testing import StabilityEmulator

HERE = Path(__file__).parent
CREDITS = 42.5
TICK = 0.01  # calls start in bursts every 10 ms, the rate spread over them


# -- the load: run in this process (a) and in each worker process (b) ------------------


async def drive(session: StabilitySession, rate: float, seconds: float) -> dict[str, Any]:
    """``rate`` balance() calls a second for ``seconds``; what they got and how long they took."""
    errors: collections.Counter[str] = collections.Counter()
    hits: list[float] = []  # µs, calls a reading already there answered
    every: list[float] = []  # µs, every call that got a balance
    wrong = 0

    async def call() -> None:
        nonlocal wrong
        began_at = time.time()
        began = time.perf_counter()
        try:
            balance = await session.balance()
        except StabilityError as error:
            errors[type(error).__name__] += 1
            return
        took = (time.perf_counter() - began) * 1e6
        every.append(took)
        wrong += balance.credits != CREDITS
        if balance.freshness is not None and balance.freshness.fetched_at < began_at:
            hits.append(took)

    loop = asyncio.get_running_loop()
    start = loop.time()
    calls: list[asyncio.Task[None]] = []
    owed = 0.0
    for n in range(round(seconds / TICK)):
        owed += rate * TICK
        burst, owed = int(owed), owed - int(owed)
        calls += [asyncio.ensure_future(call()) for _ in range(burst)]
        await asyncio.sleep(max(0.0, start + (n + 1) * TICK - loop.time()))
    # Calls still waiting (a control run's, for the rate limit) get a few seconds more.
    _, pending = await asyncio.wait(calls, timeout=5.0) if calls else (set(), set())
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        errors["still waiting, cancelled"] += len(pending)
    return {
        "calls": len(calls),
        "errors": dict(errors),
        "wrong": wrong,
        "hits": [round(t, 1) for t in hits],
        "every": [round(t, 1) for t in every],
    }


def session_for(
    base_url: str, key: str, cached: bool, store: str, *, limited: bool = True
) -> StabilitySession:
    """A session on the emulator; ``limited=False``: without the client's own rate limit."""
    return StabilitySession(
        key,
        base_url=base_url,
        cache=CachePolicy(max_age=1.0) if cached else None,
        cache_store=store if cached else None,
        retry=RetryPolicy(max_attempts=1),
        rate_limit=RateLimit() if limited else None,
    )


def worker(args: argparse.Namespace) -> int:
    """A fleet worker's process: its share of the load, one JSON line on stdout."""

    async def run() -> dict[str, Any]:
        async with session_for(args.base_url, args.key, True, args.store) as session:
            return await drive(session, args.rate, args.seconds)

    print(json.dumps(asyncio.run(run())), flush=True)
    return 0


# -- the emulator in a process of its own -----------------------------------------------


def serve_emulator(_: argparse.Namespace) -> int:
    """Print the base URL and a key; serve until SIGTERM; print what reached it."""

    async def serve() -> None:
        async with StabilityEmulator(record=False) as emulator:  # the documented limit
            key = emulator.add_account(credits=CREDITS)
            print(json.dumps({"base_url": emulator.base_url, "key": key}), flush=True)
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()
            counts = {str(k): v for k, v in emulator.status_counts.items()}
            print(json.dumps({"requests": emulator.request_count, "statuses": counts}))

    asyncio.run(serve())
    return 0


@contextlib.contextmanager
def emulator_process() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(base URL, key, a dict filled with what reached the emulator once it has stopped)."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-emulator"], stdout=subprocess.PIPE, text=True
    )
    seen: dict[str, Any] = {}
    try:
        assert process.stdout is not None
        started = json.loads(process.stdout.readline())
        yield started["base_url"], started["key"], seen
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        if out.strip():
            seen.update(json.loads(out.strip().splitlines()[-1]))


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """$REDIS_URL, else a redis-server of its own on a free loopback port."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("cache_load.py: the fleet run needs redis-server on PATH (or REDIS_URL)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        for _ in range(500):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- the runs ----------------------------------------------------------------------------


def one_process(args: argparse.Namespace, cached: bool, *, limited: bool = True) -> dict[str, Any]:
    """Run (a), or a control: the load in this process, the emulator in its own."""
    with emulator_process() as (base_url, key, seen):

        async def run() -> dict[str, Any]:
            async with session_for(base_url, key, cached, "memory", limited=limited) as session:
                return await drive(session, args.rate, args.seconds)

        report = asyncio.run(run())
    return {**report, **seen}


def fleet(args: argparse.Namespace, store: str) -> dict[str, Any]:
    """Run (b), or its control: ``--workers`` processes sharing ``store``."""
    with emulator_process() as (base_url, key, seen):
        argv = [sys.executable, __file__, "--worker", "--base-url", base_url, "--key", key]
        argv += ["--store", store, "--rate", str(args.rate / args.workers)]
        argv += ["--seconds", str(args.seconds)]
        workers = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(args.workers)
        ]
        outputs = [w.communicate(timeout=args.seconds + 120)[0] for w in workers]
        if any(w.returncode for w in workers):
            raise SystemExit(f"cache_load.py: a worker failed: {[w.returncode for w in workers]}")
    reports = [json.loads(out) for out in outputs]
    errors: collections.Counter[str] = collections.Counter()
    for report in reports:
        errors.update(report["errors"])
    return {
        "calls": sum(r["calls"] for r in reports),
        "errors": dict(errors),
        "wrong": sum(r["wrong"] for r in reports),
        "hits": [t for r in reports for t in r["hits"]],
        "every": [t for r in reports for t in r["every"]],
        **seen,
    }


def percentile(values: list[float], share: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    value = ordered[min(len(ordered) - 1, int(share * len(ordered)))]
    return f"{value / 1000:,.3f} ms"


def row(name: str, report: dict[str, Any]) -> str:
    errors = sum(report["errors"].values())
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(report["errors"].items()))
    statuses = report.get("statuses", {})
    hits, every = report["hits"], report["every"]
    return (
        f"| {name} | {report['calls']:,} | {errors:,}{f' ({kinds})' if kinds else ''} "
        f"| {report['wrong']:,} | {report.get('requests', 0):,} | {statuses.get('429', 0):,} "
        f"| {len(hits):,} | {percentile(hits, 0.5)} | {percentile(hits, 0.99)} "
        f"| {percentile(every, 0.99)} | {percentile(every, 1.0)} |"
    )


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"stability-user {__version__}"
    )


HEADER = [
    "| run | calls | errors | wrong balances | requests that reached the emulator | 429s "
    "| hits | hit p50 | hit p99 | every call p99 | slowest call |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves it runs (CI)")
    parser.add_argument("--rate", type=float, default=1000.0, help="calls a second in all")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4, help="processes of the fleet run")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "cache.md")
    parser.add_argument("--serve-emulator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_emulator:
        return serve_emulator(args)
    if args.worker:
        return worker(args)
    if args.quick:
        args.rate, args.seconds, args.workers = 100.0, 1.5, 2

    command = "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]])
    per_worker = args.rate / args.workers
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache  # nothing of the user's is touched
        single = one_process(args, cached=True)
        print("(a) done", file=sys.stderr)
        single_control = one_process(args, cached=False)
        unlimited_control = one_process(args, cached=False, limited=False)
        print("(a) controls done", file=sys.stderr)
        with redis_server() as redis_url:
            shared = fleet(args, redis_url)
        print("(b) done", file=sys.stderr)
        alone = fleet(args, "memory")
        print("(b) control done", file=sys.stderr)
    lines = [
        "# The read cache under load",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "- the emulator: `stability_user.testing.StabilityEmulator` in a process of its own, "
        "its documented limit (150 requests per 10 s per key, then 60 s locked out)",
        "- every session: `RetryPolicy(max_attempts=1)`, the client's own rate limit "
        "(150 per 10 s) as by default unless said; calls still waiting 5 s after the "
        "run are cancelled and counted as errors",
        "- a hit: a call answered by a reading that was there when it began (its "
        "`freshness.fetched_at` is earlier): in (b) also one that another process's reading, "
        "taken from the store, answered; latencies are of `await session.balance()`",
        "",
        f"## (a) One process, one key: {args.rate:,.0f} `balance()` calls a second for "
        f"{args.seconds:g} s",
        "",
        *HEADER,
        row("`CachePolicy(max_age=1)`", single),
        row("no cache (a control): calls wait for the client's rate limit", single_control),
        row("no cache, `rate_limit=None` (a control): the service answers 429", unlimited_control),
        "",
        f"## (b) A fleet: {args.workers} processes x {per_worker:,.0f} calls a second for "
        f"{args.seconds:g} s, one key",
        "",
        *HEADER,
        row("`max_age=1`, `cache_store=` Redis", shared),
        row('`max_age=1`, `cache_store="memory"` (the control)', alone),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
