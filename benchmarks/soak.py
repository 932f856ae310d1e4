"""Soak: a long bulk check against the emulator injecting a mix of faults.

    python benchmarks/soak.py                    # 100,000 checks
    python benchmarks/soak.py --size 2000        # a short run (CI)

Reports results returned against targets (they must be equal: nothing lost),
failures by error type (each one typed, none unexpected), retries made, the
connections open at the end (zero) and peak RSS, and appends them to the results
file. Exits 1 when anything is lost, untyped, or left open.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from stability_user import (
    APIConnectionError,
    APIError,
    BalanceTarget,
    Request,
    Response,
    RetryPolicy,
    StabilitySession,
)
from stability_user._http import Handler
from stability_user.testing import Fault, StabilityEmulator

HERE = Path(__file__).parent
EXPECTED = (APIError, APIConnectionError)


def open_sockets() -> int:
    """TCP and Unix sockets this process holds, read from /proc/self/fd."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


def targets(keys: list[str], size: int) -> Iterator[BalanceTarget]:
    for n in range(size):
        yield BalanceTarget(api_key=keys[n % len(keys)], label=f"t{n}")


async def soak(args: argparse.Namespace) -> dict[str, object]:
    attempts = 0

    async def count_attempts(request: Request, handler: Handler) -> Response:
        nonlocal attempts
        attempts += 1
        return await handler(request)

    sockets_before = open_sockets()
    failures: collections.Counter[str] = collections.Counter()
    unexpected: list[str] = []
    returned = 0
    seen: set[int] = set()
    start = time.perf_counter()
    # The emulator runs in this process: its request log would be most of the RSS.
    async with StabilityEmulator(record=False) as emulator:
        keys = [emulator.add_account(credits=float(n)) for n in range(args.keys)]
        emulator.random_faults(
            args.fault_rate,
            kinds=(
                Fault.respond(503),
                Fault.respond(429, retry_after=1),
                Fault.drop(),
                Fault.stall(30),
            ),
            seed=args.seed,
        )
        async with StabilitySession(
            keys[0],
            base_url=emulator.base_url,
            timeout=args.timeout,
            retry=RetryPolicy(max_attempts=3, backoff_base=0.05, backoff_max=0.5),
            middlewares=[count_attempts],
        ) as session:
            async for result in session.balances(
                targets(keys, args.size), concurrency=args.concurrency
            ):
                returned += 1
                seen.add(result.index)
                if result.error is not None:
                    failures[type(result.error).__name__] += 1
                    if not isinstance(result.error, EXPECTED):
                        unexpected.append(repr(result.error))
    seconds = time.perf_counter() - start
    return {
        "targets": args.size,
        "results returned": returned,
        "distinct results": len(seen),
        "failed (typed)": sum(failures.values()),
        "failures by type": dict(failures) or "none",
        "unexpected errors": unexpected or "none",
        "attempts": attempts,
        "retries": attempts - args.size,
        "connections open at the end": open_sockets() - sockets_before,
        "peak RSS": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB",
        "seconds": round(seconds, 1),
    }


def main() -> int:
    # Thousands of retries are the point here: count them, do not print each one.
    logging.getLogger("stability_user").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000, help="bulk checks to make")
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=0.5, help="client seconds per attempt")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "soak.md")
    args = parser.parse_args()
    report = asyncio.run(soak(args))
    command = "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]])
    lines = [
        "# stability-user soak",
        "",
        f"- command: `{command}`",
        f"- faults: {args.fault_rate:.0%} of responses: 503, 429 with Retry-After: 1, "
        f"connection dropped, stalled past the {args.timeout:g} s timeout (seed {args.seed})",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in report.items()),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    ok = (
        report["results returned"] == args.size == report["distinct results"]
        and report["unexpected errors"] == "none"
        and report["connections open at the end"] == 0
    )
    print("soak: OK" if ok else "soak: FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
