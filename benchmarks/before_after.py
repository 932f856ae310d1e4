"""This version of stability-user against an earlier one, and both against raw aiohttp.

    python benchmarks/before_after.py --before f38e394            # a full run
    python benchmarks/before_after.py --before f38e394 --quick    # proves it runs

The earlier version's package is taken from git (``git archive``) into a scratch
folder under another name, so both versions run in one process, against one
loopback server, taking turns round by round: the machine's drift and the process's
memory layout fall on both alike (between processes, the same code's CPU per call
varies by ±15 % here). Reported: client CPU per ``balance()`` and ``account()``
call, and bulk ``balances()`` throughput over many keys, each against raw aiohttp
doing the same work by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import stability_user
from stability_user import BalanceTarget, RateLimit, StabilitySession

sys.path.insert(0, str(Path(__file__).parent))
from run import (
    KEY,
    bulk_aiohttp,
    bulk_targets,
    cpu_per_call,
    earlier_version,
    fmt_row,
    machine,
    raw_aiohttp,
    server,
)

Call = Callable[[], Awaitable[object]]
# Every call of this version passes the rate limiter; one key's thousands of calls a
# second would wait at the service's limit, so the runs get one they never reach.
UNREACHED = RateLimit(1_000_000, 1.0)


def earlier_session(before: ModuleType, base: str, concurrency: int) -> Any:
    options: dict[str, Any] = {"base_url": base, "max_connections": concurrency}
    if "api_version" in before.StabilitySession.__init__.__code__.co_varnames:
        options["api_version"] = "v1"  # an earlier default may have been v1alpha
    return before.StabilitySession(KEY, **options)


def this_session(base: str, concurrency: int, rate_limit: RateLimit | None) -> Any:
    return StabilitySession(KEY, base_url=base, max_connections=concurrency, rate_limit=rate_limit)


async def bulk_rate(session: Any, target_class: Any, count: int, keys: int, conc: int) -> float:
    """``balances()`` checks per second; ``target_class`` is the version's ``BalanceTarget``.

    The keys are ``run.bulk_targets``' own, so raw aiohttp (``run.bulk_aiohttp``)
    calls with the same ones.
    """
    items = (target_class(api_key=t.api_key) for t in bulk_targets(count, keys))
    start = time.perf_counter()
    done = 0
    async for result in session.balances(items, concurrency=conc):
        done += result.error is None
    assert done == count, f"{count - done} bulk checks failed"
    return count / (time.perf_counter() - start)


async def measure(args: argparse.Namespace, before: ModuleType, base: str) -> list[str]:
    cpu: dict[str, list[float]] = {}
    bulk: dict[str, list[float]] = {"before": [], "this version": [], "raw aiohttp": []}
    old = earlier_session(before, base, args.concurrency)
    new = this_session(base, args.concurrency, UNREACHED)
    new_off = this_session(base, args.concurrency, None)
    async with (
        old,
        new,
        new_off,
        raw_aiohttp(base, args.concurrency, "balance") as by_hand_balance,
        raw_aiohttp(base, args.concurrency, "account") as by_hand_account,
    ):
        contenders = [
            ("before balance()", old.balance),
            ("this version balance()", new.balance),
            ("this version balance(), rate limit off", new_off.balance),
            ("raw aiohttp balance", by_hand_balance),
            ("before account()", old.account),
            ("this version account()", new.account),
            ("raw aiohttp account", by_hand_account),
        ]
        sizes = (args.bulk_checks, args.keys, args.concurrency)
        raw_sizes = (args.bulk_checks, args.concurrency, args.keys)
        for round_number in range(args.rounds):
            shift = round_number % len(contenders)
            for name, call in contenders[shift:] + contenders[:shift]:
                cpu.setdefault(name, []).append(await cpu_per_call(call, args.calls))
            async with this_session(base, args.concurrency, RateLimit()) as new_bulk:
                bulk_order: list[tuple[str, Callable[[], Awaitable[float]]]] = [
                    ("before", lambda: bulk_rate(old, before.BalanceTarget, *sizes)),
                    ("this version", lambda: bulk_rate(new_bulk, BalanceTarget, *sizes)),
                    ("raw aiohttp", lambda: bulk_aiohttp(base, *raw_sizes)),
                ]
                for name, run in bulk_order[shift % 3 :] + bulk_order[: shift % 3]:
                    bulk[name].append(await run())
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    raw_balance = statistics.median(cpu["raw aiohttp balance"])
    raw_account = statistics.median(cpu["raw aiohttp account"])
    lines = [
        f"### Client CPU per call ({args.calls:,} sequential calls, {args.rounds} rounds; "
        "lower is better)",
        "",
        "| contender | median | min .. max | vs raw aiohttp |",
        "|---|---|---|---|",
    ]
    for name, values in cpu.items():
        baseline = raw_account if "account" in name else raw_balance
        lines.append(fmt_row(name, values, baseline, "µs"))
    lines += [
        "",
        f"### Bulk balances() over {args.keys:,} keys ({args.bulk_checks:,} checks at "
        f"concurrency {args.concurrency}, the service's rate limit on; higher is better)",
        "",
        "| contender | median | min .. max | vs raw aiohttp |",
        "|---|---|---|---|",
    ]
    raw_bulk = statistics.median(bulk["raw aiohttp"])
    lines += [fmt_row(name, values, raw_bulk, "checks/s") for name, values in bulk.items()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", required=True, help="a git revision of the earlier version")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves it runs")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--bulk-checks", type=int, default=4000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/before-after.md"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls, args.bulk_checks, args.keys = 2, 50, 128, 16
    command = "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as scratch, server() as base:
        before = earlier_version(args.before, Path(scratch))
        lines = [
            "# stability-user: this version against an earlier one",
            "",
            f"- command: `{command}`",
            f"- machine: {machine()}",
            f"- before: {args.before} (stability-user {before.__version__}); "
            f"this version: {stability_user.__version__} from the working tree",
            f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            "",
            *asyncio.run(measure(args, before, base)),
        ]
    text = "\n".join(lines) + "\n"
    args.output.write_text(text)
    print(text)
    print(f"written to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
