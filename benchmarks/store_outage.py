"""What a shared rate-limit store's outage costs each call: the worst delay, measured.

    python benchmarks/store_outage.py                      # every outage, 12 s each
    python benchmarks/store_outage.py --seconds 3 --quick  # proves it runs

For each outage, 32 workers call ``balance()`` in a loop for ``--seconds`` through
one session whose rate-limit state is in the store, against the emulator on
loopback (its rate limit off, the client's out of reach, so only the store can
make a call wait). One second in, the outage starts and lasts to the end:

- ``redis frozen``: a ``redis-server`` of its own (from PATH) gets SIGSTOP: its
  connections stay open and silent.
- ``redis dropping SYNs``: the store's Redis URL names a port whose backlog is
  full: the kernel drops the SYNs, a connection never completes (from the start).
- ``redis refusing``: nothing listens there (from the start).
- ``file held``: another process holds the machine-wide SQLite file in a
  transaction (``BEGIN IMMEDIATE``).
- ``none``: Redis up, for comparison.

Each call's delay is its duration less the median duration of the calls of the
``none`` run. Reported: calls, failures, WARNINGs, the worst call and when it
started (seconds after the outage did), the 99th percentile, and how many calls
took longer than 100 ms. Writes ``results/store-outage.md`` (with ``--output``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import attrs

from stability_user import (
    LocalRateLimitStore,
    RateLimit,
    RetryPolicy,
    StabilityError,
    StabilitySession,
    __version__,
)
from stability_user.testing import StabilityEmulator

HERE = Path(__file__).parent
OUTAGE_AFTER = 1.0  # seconds into a run
SLOW = 0.1  # seconds: a call this much slower than usual met the outage


@attrs.define
class Run:
    name: str
    calls: list[tuple[float, float]] = attrs.Factory(list)  # (start after the outage, seconds)
    failures: int = 0
    warnings: list[str] = attrs.Factory(list)


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("store_outage.py needs redis-server (Debian: apt-get install redis-server)")
    port = free_port()
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        for _ in range(500):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def dropping_syns() -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        yield f"redis://127.0.0.1:{port}"


HOLD = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
sys.stdin.readline()
db.execute("BEGIN IMMEDIATE")
sys.stdin.read()
"""


async def calls(
    name: str,
    emulator: StabilityEmulator,
    keys: list[str],
    store: object,
    *,
    seconds: float,
    concurrency: int,
    outage: Callable[[], None],
) -> Run:
    run = Run(name)
    warnings = Warnings()
    logging.getLogger("stability_user").addHandler(warnings)
    started = time.perf_counter()
    outage_at = started + OUTAGE_AFTER
    try:
        async with StabilitySession(
            base_url=emulator.base_url,
            rate_limit=RateLimit(1_000_000, 1.0),
            rate_limit_store=store,  # type: ignore[arg-type]
            retry=RetryPolicy(max_attempts=1),
            max_connections=concurrency,
        ) as session:
            views = [session.with_options(api_key=key) for key in keys]
            done = started + seconds
            began = False

            async def worker(n: int) -> None:
                nonlocal began
                while (now := time.perf_counter()) < done:
                    if not began and now >= outage_at:
                        began = True
                        outage()
                    try:
                        await views[n % len(views)].balance()
                    except StabilityError:
                        run.failures += 1
                    run.calls.append((now - outage_at, time.perf_counter() - now))
                    n += concurrency

            await asyncio.gather(*(worker(n) for n in range(concurrency)))
    finally:
        logging.getLogger("stability_user").removeHandler(warnings)
    run.warnings = warnings.messages
    return run


@contextlib.asynccontextmanager
async def held_file(path: Path) -> AsyncIterator[Callable[[], None]]:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD, str(path), stdin=asyncio.subprocess.PIPE
    )
    assert holder.stdin is not None
    stdin = holder.stdin
    try:
        yield lambda: stdin.write(b"take it\n")
    finally:
        stdin.close()
        await holder.wait()


async def measure(seconds: float, concurrency: int, only: list[str]) -> list[Run]:
    runs: list[Run] = []
    async with StabilityEmulator(rate_limit=None, record=False) as emulator:
        keys = [emulator.add_account(credits=float(n)) for n in range(64)]

        def nothing() -> None:
            pass

        async def run(name: str, store: object, outage: Callable[[], None]) -> None:
            runs.append(
                await calls(
                    name,
                    emulator,
                    keys,
                    store,
                    seconds=seconds,
                    concurrency=concurrency,
                    outage=outage,
                )
            )

        if "none" in only:
            with redis_server() as (url, _):
                await run("none", url, nothing)
        if "frozen" in only:
            with redis_server() as (url, process):
                await run("redis frozen", url, lambda: process.send_signal(signal.SIGSTOP))
        if "syn" in only:
            with dropping_syns() as url:
                await run("redis dropping SYNs", url, nothing)
        if "refused" in only:
            await run("redis refusing", f"redis://127.0.0.1:{free_port()}", nothing)
        if "held" in only:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "limits.sqlite3"
                store = LocalRateLimitStore(path)
                await store.open()
                async with held_file(path) as hold:
                    await run("file held", store, hold)
                await store.aclose()
    return runs


def table(runs: list[Run]) -> str:
    usual = next((r for r in runs if r.name == "none"), runs[0])
    typical = statistics.median(d for _, d in usual.calls)
    lines = [
        "| outage | calls | failed | WARNINGs | worst call | it started | p99 "
        "| calls over 100 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        durations = sorted(d for _, d in run.calls)
        start, worst = max(run.calls, key=lambda call: call[1])
        p99 = durations[int(len(durations) * 0.99)]
        slow = sum(1 for d in durations if d - typical > SLOW)
        outage = [w for w in run.warnings if "unavailable" in w]
        lines.append(
            f"| {run.name} | {len(durations):,} | {run.failures} | {len(outage)} | "
            f"{worst * 1000:,.0f} ms | {start:+.2f} s | {p99 * 1000:,.1f} ms | {slow} |"
        )
    lines.append("")
    lines.append(f"A call of the `none` run took {typical * 1000:.1f} ms (median).")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    redis_version = "no redis-server"
    binary = shutil.which("redis-server")
    if binary:
        redis_version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False
        ).stdout.split(" sha=")[0]
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}; Python {platform.python_version()}, "
        f"{redis_version}, stability-user {__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--outage",
        action="append",
        choices=["none", "frozen", "syn", "refused", "held"],
        help="the outages to run (all by default)",
    )
    parser.add_argument("--output", type=Path, help="write the Markdown table there")
    parser.add_argument("--quick", action="store_true", help="no output file: proves it runs")
    args = parser.parse_args()
    only = args.outage or ["none", "frozen", "syn", "refused", "held"]
    runs = asyncio.run(measure(args.seconds, args.concurrency, only))
    command = "python benchmarks/store_outage.py " + " ".join(sys.argv[1:])
    text = (
        "# What a shared rate-limit store's outage costs each call\n\n"
        f"- machine: {machine()}\n- command: `{command.strip()}`\n"
        f"- {args.concurrency} workers calling for {args.seconds:g} s; the outage from "
        f"{OUTAGE_AFTER:g} s in (dropping SYNs and refusing: from the start) to the end\n\n"
        + table(runs)
        + "\n"
    )
    sys.stdout.write(text)
    if args.output and not args.quick:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
