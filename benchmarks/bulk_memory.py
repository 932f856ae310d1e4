"""Peak RSS of one balances() run over generated targets, in a fresh process.

    python benchmarks/bulk_memory.py --targets 1000000 --base-url http://127.0.0.1:PORT

The targets come from a generator (1,000 keys in turn, as a platform holding many
customer keys would have), so nothing but the library can make memory grow with
their number. Prints JSON: targets, checked, failed, seconds, peak_rss_kib.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

from stability_user import BalanceTarget, StabilitySession


def targets(count: int, keys: int) -> Iterator[BalanceTarget]:
    for n in range(count):
        yield BalanceTarget(api_key=f"sk-bench-{n % keys:040d}")


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB: VmHWM where Linux has it.

    Not ru_maxrss: Linux carries it across execve, so a program started by a big
    one (the benchmark that runs this) would report its parent's peak.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS


async def run(args: argparse.Namespace) -> dict[str, float]:
    checked = failed = 0
    start = time.perf_counter()
    async with StabilitySession(
        "sk-bench", base_url=args.base_url, max_connections=args.concurrency
    ) as session:
        async for result in session.balances(
            targets(args.targets, args.keys), concurrency=args.concurrency
        ):
            checked += 1
            failed += not result.ok
    return {
        "targets": args.targets,
        "checked": checked,
        "failed": failed,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_kib": peak_rss_kib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", type=int, required=True)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--base-url", required=True)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
