"""A fleet sweep end to end: Redis, the emulator, W arq workers and the producer, on loopback.

    python benchmarks/fleet.py --targets 1000000 --workers 4
    python benchmarks/fleet.py --targets 1000000 --workers 4 --kill-worker-after 120
    python benchmarks/fleet.py --targets 2000 --workers 2 --kill-worker-after 1 --chunk-size 100

Starts a redis-server (from PATH) on a free port, the emulator in one process serving
generated accounts, W worker processes running ``stability_user.fleet`` under arq, and
the producer, which enqueues the run and watches it until every chunk is done. With
``--kill-worker-after`` one worker is SIGKILLed that many seconds into the run; arq
runs its chunks again once their lease is up (``--job-timeout`` + 15 s).

Then it checks the run's results in Redis against the targets: every target's result
present once and with the balance the emulator computes for its key. It counts Redis
operations from the server (``INFO stats`` and ``INFO commandstats`` before and after
the run), 429s from the emulator, and samples every process's peak RSS (``VmHWM``) and
CPU time from /proc. It prints a table and, last, one line:

    fleet: N targets, R results, D duplicates, M missing, T x 429, C checks/s,
    O Redis operations per check                      (on one line)

and exits 1 unless R = N and D = M = T = 0 (and, with --kill-worker-after, the worker
was killed before the run was over).
"""

from __future__ import annotations

import argparse
import asyncio
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

import arq
import redis

from stability_user import __version__
from stability_user.fleet import Sweep, TargetFile
from stability_user.testing import StabilityEmulator

RUN = "bench"
RESULTS = f"stability-user:fleet:{RUN}:results"
CHUNKS = f"stability-user:fleet:{RUN}:chunks"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the processes' own parts ---------------------------------------------------------


def make_sweep(args: argparse.Namespace) -> Sweep:
    return Sweep(
        args.redis_url,
        TargetFile(args.targets_file),
        chunk_size=args.chunk_size,
        concurrency=args.concurrency,
        chunks_per_worker=args.chunks_per_worker,
        job_timeout=args.job_timeout,
    )


def serve_emulator(args: argparse.Namespace) -> int:
    """The emulator's process: print the base URL, serve until SIGTERM, print the statuses."""

    async def serve() -> None:
        emulator = StabilityEmulator(generated_accounts=args.keys, record=False)
        async with emulator:
            print(emulator.base_url, flush=True)
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()
            counts = {str(status): n for status, n in emulator.status_counts.items()}
            print(json.dumps({"statuses": counts, "requests": emulator.request_count}), flush=True)

    asyncio.run(serve())
    return 0


def run_worker(args: argparse.Namespace) -> int:
    """A worker's process: arq's worker for the sweep; says "ready" once it has started."""
    sweep = make_sweep(args)

    async def startup(ctx: dict[str, Any]) -> None:
        await sweep.startup(ctx)
        print("ready", flush=True)

    arq.run_worker(sweep.worker_settings(on_startup=startup, poll_delay=0.1))
    return 0


def run_producer(args: argparse.Namespace) -> int:
    """The producer's process: enqueue the run, then show its progress until it is done."""

    async def produce() -> None:
        sweep = make_sweep(args)
        enqueued = await sweep.enqueue(RUN)
        print(f"producer: {enqueued}", file=sys.stderr, flush=True)
        async for progress in sweep.watch(RUN, interval=args.interval):
            print(f"producer: {progress}", file=sys.stderr, flush=True)

    asyncio.run(produce())
    return 0


# -- the benchmark ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Sampled:
    """A child process and the peak RSS and CPU time last read from /proc."""

    def __init__(self, name: str, process: subprocess.Popen[str]) -> None:
        self.name = name
        self.process = process
        self.peak_rss_kib = 0
        self.cpu_seconds = 0.0

    def sample(self) -> None:
        pid = self.process.pid
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            self.cpu_seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextlib.contextmanager
def redis_server(scratch: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "fleet.py needs redis-server on PATH (Debian: apt-get install redis-server)"
        )
    port = free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd=scratch,
        text=True,
    )
    url = f"redis://127.0.0.1:{port}"
    try:
        client = connect(url)
        for _ in range(500):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.02)
        client.close()
        yield process, url
    finally:
        process.terminate()
        process.wait(timeout=30)


def write_targets(path: Path, targets: int, keys: int) -> None:
    """``key,,label`` lines: target n (from 0) is checked with generated account n % keys + 1."""
    with path.open("w") as file:
        file.write("# key,organization,label\n")
        for start in range(0, targets, 10_000):
            file.write(
                "".join(
                    f"{StabilityEmulator.generated_key(n % keys + 1)},,t{n}\n"
                    for n in range(start, min(start + 10_000, targets))
                )
            )


def connect(url: str) -> Any:
    """A synchronous client (redis-py's types would have every answer maybe awaitable)."""
    return redis.Redis.from_url(url)


def command_counts(client: Any) -> tuple[int, dict[str, int]]:
    stats: dict[str, Any] = client.info("stats")
    commands: dict[str, Any] = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in commands.items()}
    return int(stats["total_commands_processed"]), calls


def verify(client: Any, targets: int, keys: int) -> dict[str, int]:
    """Every target's result, read back in batches and checked against the emulator's rule."""
    rule = StabilityEmulator(generated_accounts=keys)  # never started: it only computes
    present = missing = wrong = failed = 0
    for start in range(0, targets, 1000):
        numbers = range(start, min(start + 1000, targets))
        values = client.hmget(RESULTS, [f"t{n}" for n in numbers])
        for n, value in zip(numbers, values, strict=True):
            if value is None:
                missing += 1
                continue
            present += 1
            stored = json.loads(value)
            if "error" in stored:
                failed += 1
            elif stored["credits"] != rule.balance(rule.generated_key(n % keys + 1)):
                wrong += 1
    summaries = [json.loads(v) for v in client.hvals(CHUNKS)]
    return {
        "results": int(client.hlen(RESULTS)),
        "present": present,
        "missing": missing,
        "wrong": wrong,
        "failed": failed,
        "chunks done": len(summaries),
        "chunks run more than once": sum(s["attempt"] > 1 for s in summaries),
        "targets checked again in a later run of their chunk": sum(
            s["checked"] for s in summaries if s["attempt"] > 1
        ),
    }


def start(
    name: str, args: argparse.Namespace, role: str, env: dict[str, str], **popen: Any
) -> Sampled:
    argv = [sys.executable, __file__, "--role", role, *forwarded(args)]
    process = subprocess.Popen(argv, env=env, text=True, **popen)
    return Sampled(name, process)


def forwarded(args: argparse.Namespace) -> list[str]:
    return [
        "--redis-url", args.redis_url, "--targets-file", str(args.targets_file),
        "--targets", str(args.targets), "--keys", str(args.keys),
        "--chunk-size", str(args.chunk_size), "--concurrency", str(args.concurrency),
        "--chunks-per-worker", str(args.chunks_per_worker),
        "--job-timeout", str(args.job_timeout), "--interval", str(args.interval),
    ]  # fmt: skip


def benchmark(args: argparse.Namespace) -> int:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        args.targets_file = scratch / "targets.csv"
        write_targets(args.targets_file, args.targets, args.keys)
        with redis_server(scratch) as (redis_process, url):
            args.redis_url = url
            return run_fleet(args, Sampled("redis-server", redis_process), load_before)


def run_fleet(
    args: argparse.Namespace, redis_sampled: Sampled, load_before: tuple[float, ...]
) -> int:
    client = connect(args.redis_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILITY_")}
    emulator = start("emulator", args, "emulator", env, stdout=subprocess.PIPE)
    assert emulator.process.stdout is not None
    env["STABILITY_API_HOST"] = emulator.process.stdout.readline().strip()
    workers = [
        start(f"worker {n}", args, "worker", env, stdout=subprocess.PIPE)
        for n in range(1, args.workers + 1)
    ]
    for worker in workers:
        assert worker.process.stdout is not None
        if worker.process.stdout.readline().strip() != "ready":
            raise SystemExit(f"{worker.name} did not start")
    processes = [redis_sampled, emulator, *workers]
    commands_before, calls_before = command_counts(client)
    started = time.perf_counter()
    producer = start("producer", args, "producer", env)
    processes.append(producer)
    killed: tuple[float, int] | None = None
    deadline = started + args.timeout
    while producer.process.poll() is None:
        for sampled in processes:
            if sampled.process.poll() is None:
                sampled.sample()
        elapsed = time.perf_counter() - started
        if (
            args.kill_worker_after is not None
            and killed is None
            and elapsed >= args.kill_worker_after
        ):
            victim = workers[0]
            victim.sample()
            victim.process.send_signal(signal.SIGKILL)
            killed = (elapsed, int(client.hlen(RESULTS)))
            print(f"fleet: SIGKILLed {victim.name} at {elapsed:.1f} s", file=sys.stderr)
            victim.name += " (SIGKILLed)"
        if time.perf_counter() > deadline:
            producer.process.kill()
            print(f"fleet: the run took longer than --timeout {args.timeout:g} s", file=sys.stderr)
            break
        # Finer while a kill is due, so that it lands when asked even in a short run.
        time.sleep(0.1 if args.kill_worker_after is not None and killed is None else 0.5)
    seconds = time.perf_counter() - started
    commands_after, calls_after = command_counts(client)
    redis_memory = int(client.info("memory")["used_memory"])
    for sampled in processes:
        if sampled.process.poll() is None:
            sampled.sample()
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)  # arq finishes its jobs and closes
    for worker in workers:
        worker.process.wait(timeout=60)
    emulator.process.send_signal(signal.SIGTERM)
    emulator_out, _ = emulator.process.communicate(timeout=60)
    served = json.loads(emulator_out.strip().splitlines()[-1])
    checked = verify(client, args.targets, args.keys)
    client.close()

    statuses: dict[str, int] = served["statuses"]
    too_many = statuses.get("429", 0)
    duplicates = checked["results"] - checked["present"]
    operations = commands_after - commands_before
    per_check = operations / args.targets
    rate = args.targets / seconds
    calls = {
        name: calls_after.get(name, 0) - calls_before.get(name, 0)
        for name in calls_after
        if calls_after.get(name, 0) - calls_before.get(name, 0) > 0 and name != "info"
    }
    limiter = calls.get("evalsha", 0) + calls.get("eval", 0)
    lines = report(
        args, seconds, checked, statuses, served["requests"], operations, calls, limiter,
        processes, killed, redis_memory, load_before,
    )  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("a" if args.append else "w") as file:
            file.write(text + "\n")
    ok = (
        checked["results"] == args.targets
        and duplicates == 0
        and checked["missing"] == 0
        and checked["wrong"] == 0
        and too_many == 0
        and (args.kill_worker_after is None or killed is not None)
    )
    print(
        f"fleet: {args.targets} targets, {checked['results']} results, {duplicates} duplicates, "
        f"{checked['missing']} missing, {too_many} x 429, {rate:.1f} checks/s, "
        f"{per_check:.1f} Redis operations per check"
    )
    return 0 if ok else 1


def report(
    args: argparse.Namespace,
    seconds: float,
    checked: dict[str, int],
    statuses: dict[str, int],
    requests: int,
    operations: int,
    calls: dict[str, int],
    limiter: int,
    processes: list[Sampled],
    killed: tuple[float, int] | None,
    redis_memory: int,
    load_before: tuple[float, ...],
) -> list[str]:
    n = args.targets
    duplicates = checked["results"] - checked["present"]
    command = "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]])
    kill = "none"
    if args.kill_worker_after is not None:
        kill = (
            f"worker 1 SIGKILLed at {killed[0]:.1f} s, {killed[1]:,} results in"
            if killed
            else "none: the run was over before --kill-worker-after"
        )
    return [
        f"## {n:,} targets, {args.workers} workers" + (", one killed" if killed else ""),
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- load average (1 min) before / after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- setup: {args.keys:,} generated accounts, target n checked with account n % "
        f"{args.keys:,} + 1; chunks of {args.chunk_size:,}, {args.chunks_per_worker} chunks "
        f"per worker at concurrency {args.concurrency}; job timeout {args.job_timeout:g} s; "
        "the emulator enforces the service's 150 requests per 10 s per key",
        f"- worker lost: {kill}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| targets | {n:,} |",
        f"| results in Redis | {checked['results']:,} |",
        f"| targets with their result | {checked['present']:,} |",
        f"| duplicates (results beyond one per target) | {duplicates:,} |",
        f"| missing | {checked['missing']:,} |",
        f"| wrong balance | {checked['wrong']:,} |",
        f"| failed checks (an error stored) | {checked['failed']:,} |",
        f"| chunks done | {checked['chunks done']:,} |",
        f"| chunks run more than once | {checked['chunks run more than once']:,} |",
        "| targets checked in a later run of their chunk | "
        f"{checked['targets checked again in a later run of their chunk']:,} |",
        f"| requests the emulator answered | {requests:,} |",
        "| answers by status | "
        + ", ".join(f"{s}: {c:,}" for s, c in sorted(statuses.items()))
        + " |",
        f"| seconds, producer start to last chunk done | {seconds:,.1f} |",
        f"| checks/s | {n / seconds:,.1f} |",
        f"| Redis commands per check (all, scripts' own included) | {operations / n:.2f} |",
        f"| limiter round trips per check (EVALSHA) | {limiter / n:.2f} |",
        f"| Redis memory at the end (used_memory) | {redis_memory / 2**20:,.1f} MiB |",
        "",
        "| process | peak RSS | CPU seconds |",
        "|---|---|---|",
        *(
            f"| {p.name} | {p.peak_rss_kib / 1024:,.1f} MiB | {p.cpu_seconds:,.1f} |"
            for p in processes
        ),
        "",
        "| Redis command | calls | per check |",
        "|---|---|---|",
        *(
            f"| {name} | {count:,} | {count / n:.3f} |"
            for name, count in sorted(calls.items(), key=lambda item: -item[1])
        ),
    ]


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    server = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    version = next((f[2:] for f in server if f.startswith("v=")), "?")
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}, redis-server {version}, arq {arq.VERSION}, "
        f"redis-py {redis.__version__}, stability-user {__version__}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--targets", type=int, required=True, help="targets in the run (N)")
    add("--workers", type=int, default=4, help="arq worker processes (W)")
    add("--kill-worker-after", type=float, metavar="SECONDS", help="SIGKILL a worker this far in")
    add("--keys", type=int, help="generated accounts the targets use in turn (default: N)")
    add("--chunk-size", type=int, default=1000)
    add("--concurrency", type=int, default=32, help="checks in flight per chunk")
    add("--chunks-per-worker", type=int, default=2)
    add(
        "--job-timeout",
        type=float,
        default=60.0,
        help="seconds a chunk may take; a lost chunk runs again this + 15 s after it started",
    )
    add("--interval", type=float, default=2.0, help="seconds between the producer's progress lines")
    add("--timeout", type=float, help="seconds the run may take (default: 600 + N / 100)")
    add("--output", type=Path, help="also write the table to this Markdown file")
    add("--append", action="store_true", help="append to --output instead of replacing it")
    add("--role", default="benchmark", help=argparse.SUPPRESS)
    add("--redis-url", help=argparse.SUPPRESS)
    add("--targets-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.keys = args.keys or args.targets
    if args.timeout is None:
        args.timeout = 600 + args.targets / 100
    roles = {
        "emulator": serve_emulator,
        "worker": run_worker,
        "producer": run_producer,
        "benchmark": benchmark,
    }
    return roles[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
