"""stability-user against raw aiohttp and httpx, side by side, in one run.

    python benchmarks/run.py                 # the full run (a few minutes)
    python benchmarks/run.py --quick         # a tiny run that only proves it works (CI)

Every contender calls the same loopback server, which runs in a separate process
(``benchmarks/server.py``), and the contenders take turns round by round, in a
rotating order, so drift of the machine (turbo, other load) falls on all of them.
Reported: client CPU time per call (``time.process_time`` over N sequential calls:
independent of the server's speed), throughput at a concurrency, bulk throughput
over many keys, the peak RSS of a bulk run over 10,000 and 1,000,000 targets, and
import time. Results go to stdout and to a Markdown file with the machine's
description and the exact command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import httpx

from stability_user import (
    BalanceTarget,
    CachePolicy,
    RateLimit,
    Request,
    Response,
    StabilitySession,
    __version__,
)

HERE = Path(__file__).parent
KEY = "sk-bench-" + "0" * 40
# Every call passes the rate limiter, as in use; one key's thousands of calls a second
# would wait at the service's 150 per 10 s, so the single-key runs get a limit they
# never reach (the limiter does all its work, it just never makes a call wait).
UNREACHED = RateLimit(1_000_000, 1.0)

Call = Callable[[], Awaitable[object]]

# Main as it was before this version's work, compared in the same run (--before).
MAIN_BEFORE = "f298302"
BEFORE: dict[str, Any] = {}  # "package": the earlier version, imported under another name


def earlier_version(ref: str, scratch: Path) -> ModuleType:
    """The package as it was at ``ref``, imported as ``stability_user_before``."""
    archive = subprocess.run(
        ["git", "archive", ref, "stability_user"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(scratch, filter="data")
    (scratch / "stability_user").rename(scratch / "stability_user_before")
    sys.path.insert(0, str(scratch))
    return importlib.import_module("stability_user_before")


@contextlib.asynccontextmanager
async def before_balance(base: str, connections: int) -> AsyncIterator[Call]:
    before = BEFORE["package"]
    async with before.StabilitySession(
        KEY,
        base_url=base,
        max_connections=connections,
        rate_limit=before.RateLimit(1_000_000, 1.0),
        api_version="v1",
    ) as s:
        yield s.balance


@contextlib.asynccontextmanager
async def before_account(base: str, connections: int) -> AsyncIterator[Call]:
    before = BEFORE["package"]
    async with before.StabilitySession(
        KEY,
        base_url=base,
        max_connections=connections,
        rate_limit=before.RateLimit(1_000_000, 1.0),
        api_version="v1",
    ) as s:
        yield s.account


async def bulk_before(base: str, calls: int, concurrency: int, keys: int) -> float:
    before = BEFORE["package"]
    async with before.StabilitySession(base_url=base, max_connections=concurrency) as s:
        targets = (before.BalanceTarget(api_key=t.api_key) for t in bulk_targets(calls, keys))
        start = time.perf_counter()
        async for result in s.balances(targets, concurrency=concurrency):
            assert result.error is None, result.error
        return calls / (time.perf_counter() - start)


def session(base: str, connections: int, store: str | None = None) -> StabilitySession:
    return StabilitySession(
        KEY,
        base_url=base,
        max_connections=connections,
        rate_limit=UNREACHED,
        rate_limit_store=store or "memory",
    )


@contextlib.asynccontextmanager
async def stability_balance(base: str, connections: int) -> AsyncIterator[Call]:
    async with session(base, connections) as s:
        yield s.balance


@contextlib.asynccontextmanager
async def stability_account(base: str, connections: int) -> AsyncIterator[Call]:
    async with session(base, connections) as s:
        yield s.account


@contextlib.asynccontextmanager
async def stability_local_store(base: str, connections: int) -> AsyncIterator[Call]:
    async with session(base, connections, "local") as s:
        yield s.balance


@contextlib.asynccontextmanager
async def stability_redis_store(base: str, connections: int) -> AsyncIterator[Call]:
    async with session(base, connections, os.environ["BENCH_REDIS_URL"]) as s:
        yield s.balance


@contextlib.asynccontextmanager
async def raw_aiohttp(
    base: str, connections: int, endpoint: str = "balance"
) -> AsyncIterator[Call]:
    url = f"{base}/v1/user/{endpoint}"
    headers = {"Authorization": KEY}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> object:
            async with session.get(url, headers=headers) as response:
                return await response.json()

        yield call


@contextlib.asynccontextmanager
async def raw_httpx(base: str, connections: int) -> AsyncIterator[Call]:
    url = f"{base}/v1/user/balance"
    headers = {"Authorization": KEY}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits) as client:

        async def call() -> object:
            response = await client.get(url, headers=headers)
            return response.json()

        yield call


def raw_aiohttp_account(
    base: str, connections: int
) -> contextlib.AbstractAsyncContextManager[Call]:
    return raw_aiohttp(base, connections, "account")


CONTENDERS = {
    "stability_user balance()": stability_balance,
    "raw aiohttp get+json (balance)": raw_aiohttp,
    "httpx AsyncClient (balance)": raw_httpx,
    "stability_user account()": stability_account,
    "raw aiohttp get+json (account)": raw_aiohttp_account,
    "stability_user balance(), machine-wide store": stability_local_store,
    "stability_user balance(), Redis store": stability_redis_store,
    "main before: balance()": before_balance,
    "main before: account()": before_account,
}
# Each contender is compared with raw aiohttp calling the same endpoint.
BASELINE = {
    "stability_user balance()": "raw aiohttp get+json (balance)",
    "raw aiohttp get+json (balance)": "raw aiohttp get+json (balance)",
    "httpx AsyncClient (balance)": "raw aiohttp get+json (balance)",
    "stability_user account()": "raw aiohttp get+json (account)",
    "raw aiohttp get+json (account)": "raw aiohttp get+json (account)",
    "stability_user balance(), machine-wide store": "raw aiohttp get+json (balance)",
    "stability_user balance(), Redis store": "raw aiohttp get+json (balance)",
    "main before: balance()": "raw aiohttp get+json (balance)",
    "main before: account()": "raw aiohttp get+json (account)",
}


async def cpu_per_call(call: Call, calls: int) -> float:
    """Client CPU microseconds per call over ``calls`` sequential calls."""
    for _ in range(min(50, calls)):  # warm the pool and the caches
        await call()
    start = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - start) / calls * 1e6


async def throughput(call: Call, calls: int, concurrency: int) -> float:
    """Calls per second for ``calls`` calls by ``concurrency`` workers."""
    per_worker = calls // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per_worker * concurrency / (time.perf_counter() - start)


def bulk_targets(count: int, keys: int) -> Iterator[BalanceTarget]:
    for n in range(count):
        yield BalanceTarget(api_key=f"sk-bulk-{n % keys:040d}")  # not KEY: its own limits


async def bulk_stability(base: str, calls: int, concurrency: int, keys: int) -> float:
    async with StabilitySession(KEY, base_url=base, max_connections=concurrency) as session:
        start = time.perf_counter()
        done = 0
        async for result in session.balances(bulk_targets(calls, keys), concurrency=concurrency):
            done += result.ok
        elapsed = time.perf_counter() - start
    assert done == calls, f"{calls - done} bulk checks failed"
    return calls / elapsed


async def bulk_aiohttp(base: str, calls: int, concurrency: int, keys: int) -> float:
    url = f"{base}/v1/user/balance"
    targets = bulk_targets(calls, keys)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for target in targets:  # the workers share one generator
                headers = {"Authorization": target.api_key or KEY}
                async with session.get(url, headers=headers) as response:
                    await response.json()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return calls / (time.perf_counter() - start)


class Instant:
    """A transport that answers at once: everything stability-user does, nothing aiohttp does."""

    body = b'{"credits": 1234.5}'

    async def __call__(self, request: Request) -> Response:
        await asyncio.sleep(0)  # a real transport always yields to the loop at least once
        return Response(200, {"Content-Type": "application/json"}, self.body)

    async def aclose(self) -> None:
        """Nothing to close."""


async def library_only(calls: int, concurrency: int, keys: int) -> tuple[float, float, float]:
    """The library's own CPU per call, with no socket: a transport answers at once.

    This runs everything stability-user does for a call (request, retry loop,
    middleware chain, the connection gate, the rate limiter, decoding, strict
    structuring, and for bulk the views and the result stream) and nothing aiohttp
    does. The stand-in transport has a cost of its own (a turn of the event loop,
    a response made): it is measured alone, the same way, and taken off.
    Returns (balance() µs, balances() µs per check, the stand-in alone µs).
    """
    transport = Instant()
    async with StabilitySession(
        KEY, base_url="https://api.stability.ai", transport=transport, rate_limit=UNREACHED
    ) as s:
        for _ in range(100):
            await s.balance()
        start = time.process_time()
        for _ in range(calls):
            await s.balance()
        single = (time.process_time() - start) / calls * 1e6
        start = time.process_time()
        async for _ in s.balances(bulk_targets(calls * 10, keys), concurrency=concurrency):
            pass
        bulk = (time.process_time() - start) / (calls * 10) * 1e6
    request = Request("GET", "https://api.stability.ai/v1/user/balance", {}, 30.0)
    start = time.process_time()
    for _ in range(calls):
        await transport(request)
    stand_in = (time.process_time() - start) / calls * 1e6
    return single, bulk, stand_in


JOINERS = 64  # callers on one read in flight, for the joined call's cost


async def cache_costs(base: str, calls: int) -> tuple[float, float]:
    """Client CPU µs of a cache hit, and of one more caller joining a read in flight.

    A hit: ``balance()`` with a fresh reading, every call after the first. A joined
    call: ``JOINERS`` concurrent ``balance(max_age=0)`` calls (one read, the others
    join it) against one alone, the difference shared by the ``JOINERS - 1`` who
    joined; each caller is a task, as callers are.
    """
    async with StabilitySession(
        KEY, base_url=base, rate_limit=UNREACHED, cache=CachePolicy(max_age=3600.0)
    ) as s:
        for _ in range(100):  # the first reads, then hits: warm
            await s.balance()
        start = time.process_time()
        for _ in range(calls):
            await s.balance()
        hit = (time.process_time() - start) / calls * 1e6

        async def together(callers: int) -> None:
            await asyncio.gather(*(s.balance(max_age=0) for _ in range(callers)))

        reads = max(10, calls // 10)
        for _ in range(5):
            await together(JOINERS)
        start = time.process_time()
        for _ in range(reads):
            await together(1)
        alone = time.process_time() - start
        start = time.process_time()
        for _ in range(reads):
            await together(JOINERS)
        crowd = time.process_time() - start
    return hit, (crowd - alone) / reads / (JOINERS - 1) * 1e6


def summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt_row(name: str, values: list[float], baseline: float, unit: str) -> str:
    median, low, high = summary(values)
    ratio = median / baseline
    return f"| {name} | {median:,.1f} {unit} | {low:,.1f} .. {high:,.1f} | {ratio:.3f}x |"


def peak_rss_kib(targets: int, concurrency: int, base: str) -> int:
    """Peak RSS of a fresh process running balances() over ``targets`` generated targets."""
    command = [
        sys.executable,
        str(HERE / "bulk_memory.py"),
        "--targets",
        str(targets),
        "--concurrency",
        str(concurrency),
        "--base-url",
        base,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return int(json.loads(output)["peak_rss_kib"])


def import_ms(modules: list[str], runs: int) -> dict[str, list[float]]:
    """Milliseconds to import each module in a fresh interpreter, the modules taking turns.

    Each module is imported once first, untimed, with bytecode writing on: an
    installed package has its ``.pyc`` files (pip writes them), and a module
    compiled on every import would time the compiler.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times: dict[str, list[float]] = {module: [] for module in modules}
    for turn in range(runs + 1):
        for module in modules:
            code = (
                f"import time; t = time.perf_counter(); import {module}; "
                "print((time.perf_counter() - t) * 1000)"
            )
            output = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
            ).stdout
            if turn:
                times[module].append(float(output))
    return times


def import_row(name: str, values: list[float]) -> str:
    median, low, high = summary(values)
    return f"| {name} | {median:.1f} ms | {low:.1f} .. {high:.1f} |"


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
        f"httpx {httpx.__version__}, stability-user {__version__}"
    )


@contextlib.contextmanager
def server() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(HERE / "server.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def redis_for_the_store() -> Iterator[str | None]:
    """$REDIS_URL, else a redis-server of its own on a free loopback port, else None."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(500):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def benchmark(args: argparse.Namespace, base: str) -> list[str]:
    names = [
        name
        for name in CONTENDERS
        if ("Redis" not in name or os.environ.get("BENCH_REDIS_URL"))  # no Redis: not measured
        and ("main before" not in name or "package" in BEFORE)  # no history: not measured
    ]
    cpu: dict[str, list[float]] = {name: [] for name in names}
    rate: dict[str, list[float]] = {name: [] for name in names}
    bulk: dict[str, list[float]] = {"stability_user balances()": [], "raw aiohttp workers": []}
    if "package" in BEFORE:
        bulk["main before: balances()"] = []
    alone: dict[str, list[float]] = {
        "balance(), the library's own": [],
        "balances() per check, the library's own": [],
        "balance(), with the stand-in transport": [],
        "the stand-in transport alone": [],
    }
    cache: dict[str, list[float]] = {
        "a cache hit": [],
        f"a joined call ({JOINERS} on one read)": [],
    }
    for round_number in range(args.rounds):
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in order:
            async with CONTENDERS[name](base, args.concurrency) as call:
                cpu[name].append(await cpu_per_call(call, args.calls))
                calls = args.httpx_calls if name.startswith("httpx") else args.throughput_calls
                rate[name].append(await throughput(call, calls, args.concurrency))
        bulk_order = [
            ("stability_user balances()", bulk_stability),
            ("raw aiohttp workers", bulk_aiohttp),
        ]
        if "package" in BEFORE:
            bulk_order.append(("main before: balances()", bulk_before))
        shift = round_number % len(bulk_order)
        bulk_order = bulk_order[shift:] + bulk_order[:shift]
        for name, run in bulk_order:
            bulk[name].append(await run(base, args.throughput_calls, args.concurrency, args.keys))
        single, per_check, stand_in = await library_only(args.calls, args.concurrency, args.keys)
        alone["balance(), the library's own"].append(single - stand_in)
        alone["balances() per check, the library's own"].append(per_check - stand_in)
        alone["balance(), with the stand-in transport"].append(single)
        alone["the stand-in transport alone"].append(stand_in)
        hit, joined = await cache_costs(base, args.calls)
        cache["a cache hit"].append(hit)
        cache[f"a joined call ({JOINERS} on one read)"].append(joined)
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)

    lines = [
        f"### Client CPU per call ({args.calls:,} sequential calls, {args.rounds} rounds; "
        "lower is better)",
        "",
        "| contender | median | min .. max | vs raw aiohttp |",
        "|---|---|---|---|",
    ]
    lines += [
        fmt_row(name, cpu[name], statistics.median(cpu[BASELINE[name]]), "µs") for name in names
    ]
    lines += [
        "",
        f"### Throughput ({args.throughput_calls:,} calls at concurrency {args.concurrency}, "
        f"httpx {args.httpx_calls:,}; higher is better)",
        "",
        "| contender | median | min .. max | vs raw aiohttp |",
        "|---|---|---|---|",
    ]
    lines += [
        fmt_row(name, rate[name], statistics.median(rate[BASELINE[name]]), "calls/s")
        for name in names
    ]
    lines += [
        "",
        f"### Bulk over {args.keys:,} keys ({args.throughput_calls:,} checks at concurrency "
        f"{args.concurrency}, per-key rate limit on; higher is better)",
        "",
        "| contender | median | min .. max | vs raw aiohttp |",
        "|---|---|---|---|",
    ]
    base_bulk = statistics.median(bulk["raw aiohttp workers"])
    lines += [fmt_row(name, bulk[name], base_bulk, "checks/s") for name in bulk]
    raw_cpu = statistics.median(cpu["raw aiohttp get+json (balance)"])
    lines += [
        "",
        "### The library's own CPU, no socket (a transport answers at once)",
        "",
        "What stability-user itself costs per call, without aiohttp's share: calls go to",
        "a stand-in transport that answers at once, whose own cost (a turn of the event",
        "loop, a response made), measured alone, is taken off. The share of a raw",
        "aiohttp call's CPU is against the median of the first table.",
        "",
        "| path | median | min .. max | vs a raw aiohttp call |",
        "|---|---|---|---|",
    ]
    lines += [fmt_row(name, alone[name], raw_cpu, "µs") for name in alone]
    lines += [
        "",
        "### The read cache: a hit and a joined call, next to a request",
        "",
        "Client CPU of `balance()` through `cache=CachePolicy(...)`: a hit (a fresh reading",
        "answers, no request) and one more caller joining a read in flight, against the",
        "median of the first table's raw aiohttp call.",
        "",
        "| path | median | min .. max | vs a raw aiohttp call |",
        "|---|---|---|---|",
    ]
    lines += [
        fmt_row(
            "a request: stability_user balance()", cpu["stability_user balance()"], raw_cpu, "µs"
        )
    ]
    lines += [fmt_row(name, cache[name], raw_cpu, "µs") for name in cache]
    if "package" in BEFORE:
        lines += against_main_before(cpu, rate, bulk)
    return lines


def against_main_before(
    cpu: dict[str, list[float]], rate: dict[str, list[float]], bulk: dict[str, list[float]]
) -> list[str]:
    """This version over main before it, measured in the same run (lower CPU, higher rate)."""

    def ratio(values: dict[str, list[float]], ours: str, theirs: str) -> str:
        return f"{statistics.median(values[ours]) / statistics.median(values[theirs]):.3f}x"

    return [
        "",
        f"### This version against main before it ({BEFORE['ref']}), in the same run",
        "",
        "| measure | this version / main before |",
        "|---|---|",
        "| client CPU per `balance()` (lower is better) | "
        + ratio(cpu, "stability_user balance()", "main before: balance()")
        + " |",
        "| client CPU per `account()` (lower is better) | "
        + ratio(cpu, "stability_user account()", "main before: account()")
        + " |",
        "| throughput, `balance()` at the concurrency (higher is better) | "
        + ratio(rate, "stability_user balance()", "main before: balance()")
        + " |",
        "| `balances()` over many keys (higher is better) | "
        + ratio(bulk, "stability_user balances()", "main before: balances()")
        + " |",
    ]


def write_report(lines: list[str], output: Path) -> None:
    """Print the report's Markdown lines and write them to ``output``."""
    text = "\n".join(lines) + "\n"
    print(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f"written to {output}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves it runs (CI)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=600, help="sequential calls per round, CPU")
    parser.add_argument("--throughput-calls", type=int, default=8_000)
    parser.add_argument(
        "--httpx-calls",
        type=int,
        default=1000,
        help="httpx's throughput calls: at its rate here the full number would dominate the run",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--keys", type=int, default=1000, help="distinct keys in the bulk run")
    parser.add_argument("--rss-targets", type=int, nargs=2, default=[10_000, 1_000_000])
    parser.add_argument("--import-runs", type=int, default=15)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.md")
    parser.add_argument(
        "--before",
        default=MAIN_BEFORE,
        help="a git revision to compare with in the same run ('' for none)",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls, args.throughput_calls, args.httpx_calls = 1, 50, 256, 256
        args.keys, args.rss_targets, args.import_runs = 16, [500, 2_000], 2

    command = "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]])
    lines = [
        "# stability-user benchmark",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
    ]
    with (
        server() as base,
        redis_for_the_store() as redis_url,
        tempfile.TemporaryDirectory() as cache,
        tempfile.TemporaryDirectory() as scratch,
    ):
        # The machine-wide store's file goes to a scratch cache, not the user's.
        os.environ["XDG_CACHE_HOME"] = cache
        if args.before:
            try:
                BEFORE["package"] = earlier_version(args.before, Path(scratch))
                BEFORE["ref"] = args.before
                lines.append(f"- main before: {args.before}, compared in the same run")
            except subprocess.CalledProcessError:  # a shallow clone: no history to take
                lines.append(f"- main before: {args.before} is not in this clone's history")
        if redis_url is not None:
            os.environ["BENCH_REDIS_URL"] = redis_url
        lines += asyncio.run(benchmark(args, base))
        small, large = args.rss_targets
        rss_small = peak_rss_kib(small, args.concurrency, base)
        rss_large = peak_rss_kib(large, args.concurrency, base)
    lines += [
        "",
        f"### Peak RSS of balances() over generated targets (concurrency {args.concurrency})",
        "",
        "| targets | peak RSS | vs the smaller run |",
        "|---|---|---|",
        f"| {small:,} | {rss_small / 1024:,.1f} MiB | 1.000x |",
        f"| {large:,} | {rss_large / 1024:,.1f} MiB | {rss_large / rss_small:.3f}x |",
    ]
    imports = import_ms(["aiohttp", "stability_user"], args.import_runs)
    ours, theirs = imports["stability_user"], imports["aiohttp"]
    lines += [
        "",
        f"### Import time in a fresh interpreter (median of {args.import_runs})",
        "",
        "| module | median | min .. max |",
        "|---|---|---|",
        import_row("import aiohttp", theirs),
        import_row("import stability_user", ours),
        f"| difference | {statistics.median(ours) - statistics.median(theirs):+.1f} ms | |",
        f"| ratio | {statistics.median(ours) / statistics.median(theirs):.3f}x | |",
    ]
    write_report(lines, args.output)


if __name__ == "__main__":
    main()
