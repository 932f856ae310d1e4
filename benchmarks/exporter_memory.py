"""RSS of ``stability-user exporter`` over many intervals, with 1,000 targets.

    python benchmarks/exporter_memory.py --targets 1000 --intervals 50 --interval 1

The emulator runs as a process of its own (``python -m stability_user.testing``,
no rate limit, no request log), with one demo account per target; the exporter
(``--rate-limit-store memory``) checks them all once per interval. After each
interval, once its /metrics counts every check of it, the exporter's own
``process_resident_memory_bytes`` is read from that scrape. Writes a Markdown
table (the machine, the command, RSS per interval) to ``--output``. Nothing here
is asserted: a memory leak shows as a climb.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import signal
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

import stability_user

MIB = 1024 * 1024


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STABILITY_")}


async def start_emulator(accounts: int) -> tuple[asyncio.subprocess.Process, str, list[str]]:
    """The standalone emulator: its process, base URL and demo keys."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "stability_user.testing", "--port", "0"),
        *("--accounts", str(accounts), "--no-rate-limit", "--max-recorded", "0"),
        stdout=asyncio.subprocess.PIPE,
        env=environment(),
    )
    assert process.stdout is not None
    base_url, keys = "", []
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        if not line:
            raise RuntimeError("the emulator exited before it was ready")
        if line.startswith("Stability user API emulator on "):
            base_url = line.split(" on ", 1)[1].strip()
        elif line.strip().startswith("demo key "):
            keys.append(line.rsplit(": ", 1)[1].strip())
        elif line.startswith("Press Ctrl+C"):
            return process, base_url, keys


async def metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The samples of one scrape by name, summed over their labels."""
    async with http.get(url) as response:
        text = await response.text()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found


Row = tuple[int, float, float, float]


async def measure(args: argparse.Namespace) -> list[Row]:
    """(interval, checks so far, failed checks so far, RSS in bytes) after each interval."""
    emulator, base_url, keys = await start_emulator(args.targets)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        targets = Path(folder) / "targets.csv"
        targets.write_text("".join(f"{key},,customer-{n}\n" for n, key in enumerate(keys)))
        exporter = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "stability_user.cli", "--base-url", base_url),
            *("--rate-limit-store", "memory", "exporter", str(targets), "--port", "0"),
            *("--interval", f"{args.interval:g}", "--concurrency", str(args.concurrency)),
            stderr=asyncio.subprocess.PIPE,
            env=environment(),
        )
        assert exporter.stderr is not None
        first = (await asyncio.wait_for(exporter.stderr.readline(), 60)).decode()
        url = first.split("serving ", 1)[1].split(";", 1)[0]
        try:
            async with aiohttp.ClientSession() as http:
                for interval in range(1, args.intervals + 1):
                    deadline = time.monotonic() + 10 * args.interval + 30
                    while True:  # until every check of this interval is counted
                        found = await metrics(http, url)
                        checks = found.get("stability_check_duration_seconds_count", 0.0)
                        if checks >= interval * args.targets:
                            break
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"interval {interval}: only {checks:.0f} checks")
                        await asyncio.sleep(args.interval / 20)  # the poll's period
                    failed = found.get("stability_check_failures_total", 0.0)
                    rss = found["process_resident_memory_bytes"]
                    rows.append((interval, checks, failed, rss))
                    print(
                        f"interval {interval}: {checks:,.0f} checks, "
                        f"{failed:,.0f} failed, RSS {rss / MIB:.1f} MiB",
                        file=sys.stderr,
                    )
        finally:
            for process in (exporter, emulator):
                process.send_signal(signal.SIGINT)
            await exporter.communicate()
            await emulator.wait()
    return rows


def report(args: argparse.Namespace, rows: list[Row]) -> str:
    machine = (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}, aiohttp {version('aiohttp')}, "
        f"prometheus-client {version('prometheus-client')}, "
        f"stability-user {stability_user.__version__}"
    )
    command = " ".join(["python", "benchmarks/exporter_memory.py", *sys.argv[1:]])
    settle = min(5, len(rows))  # the first intervals warm up: allocator arenas, series
    first, last = rows[settle - 1][3], rows[-1][3]
    settled = [row[3] for row in rows[settle - 1 :]]
    lines = [
        "# stability-user exporter: memory over many intervals",
        "",
        f"- command: `{command}`",
        f"- machine: {machine}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- setup: {args.targets:,} targets, each its own key, checked once per "
        f"{args.interval:g} s interval (--concurrency {args.concurrency}, rate-limit store "
        "memory) against the emulator in its own process (no rate limit); RSS is the "
        "exporter's own process_resident_memory_bytes, scraped once every check of the "
        "interval was counted",
        f"- RSS after interval {settle}: {first / MIB:.1f} MiB; after interval {rows[-1][0]}: "
        f"{last / MIB:.1f} MiB ({(last - first) / MIB:+.1f} MiB); from interval {settle} on, "
        f"between {min(settled) / MIB:.1f} and {max(settled) / MIB:.1f} MiB",
        "",
        "| interval | checks so far | failed so far | RSS |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {checks:,.0f} | {failed:,.0f} | {rss / MIB:.1f} MiB |"
        for n, checks, failed, rss in rows
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--intervals", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0, help="the exporter's --interval")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "exporter-memory.md"
    )
    args = parser.parse_args()
    rows = asyncio.run(measure(args))
    args.output.write_text(report(args, rows))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
