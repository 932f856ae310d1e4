"""What one Redis round trip costs the client, at the least, against a whole call.

    python benchmarks/redis_floor.py            # 8 rounds of 600 calls each
    python benchmarks/redis_floor.py --quick    # proves it runs

The Redis rate-limit store asks Redis once per request. This prices that round
trip with redis-py (the client the store is built on), apart from everything the
store does around it, so the store's cost can be read against the least any
store on redis-py could cost. Contenders, taking turns round by round against
the loopback server of ``run.py`` and a ``redis-server`` of their own:

- ``memory store``: ``balance()`` with the rate limit in this process: the baseline.
- ``Redis store``: ``balance()`` with the rate limit in Redis, as users run it.
- ``memory store + bare EVALSHA``: ``balance()`` with the memory store, then one
  ``EVALSHA`` of the store's own acquisition script, with the arguments a real
  acquisition carries (the give-back of the call before it too), sent the leanest
  way redis-py offers: on a connection of its own (no pool, no lock, no health
  check), packed once by hiredis in C, the answer parsed by hiredis. Nothing of
  the store's own work is in it: no token made, no arguments packed per call, no
  breaker, no queue of give-backs. (The script's time on the server matters even
  so: a client that waits longer sleeps in the kernel and is woken, and that is
  CPU of its own.)
- ``memory store + PING``: the same, with redis-py's ``ping()``: the least a
  command costs through redis-py's public client.

Reported: client CPU per call (``time.process_time``: Redis's own work is in
another process and not counted) and its ratio to the memory store's, median
and range over the rounds. Writes ``results/redis-floor.md`` (with ``--output``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import hiredis
import redis.asyncio

sys.path.insert(0, str(Path(__file__).parent))

from run import cpu_per_call, machine, redis_for_the_store, server, session, write_report

from stability_user._ratelimit._redis_scripts import ACQUIRE  # the store's own script

HERE = Path(__file__).parent
# An acquisition that carries the give-back of the call before it: its KEYS (in
# flight, completed, lockout, then the pair given back) and ARGV (now, requests,
# held ms, lease ms, token, longest lockout ms, skew ms, count given back, longest
# lease ms, then the triple given back), as the store sends them.
KEYS = [
    b"stability-user:{0123456789abcdef0123456789abcdef}:" + part
    for part in (b"in-flight", b"done", b"lockout", b"in-flight", b"done")
]
ARGS = [b"", b"1000000", b"1000", b"31000", b"019a3c6b-5f1e-7d2a-8c3b-4e5f6a7b8c9d",
        b"3600000", b"1000", b"1", b"3600000",
        b"019a3c6b-5f1e-7d2a-8c3b-4e5f6a7b8c9c", b"0", b"1000"]  # fmt: skip

Call = Callable[[], Awaitable[object]]


async def contenders(base: str, url: str) -> tuple[dict[str, Call], Callable[[], Awaitable[None]]]:
    """Each contender's call, and what closes them all."""
    memory = session(base, 8)
    stored = session(base, 8, url)
    with_script = session(base, 8)
    with_ping = session(base, 8)
    client: Any = redis.asyncio.Redis.from_url(url)
    connection: Any = client.connection_pool.make_connection()  # of its own: not pooled
    await connection.connect()
    sha = await client.script_load(ACQUIRE)
    packed = [hiredis.pack_command((b"EVALSHA", sha, len(KEYS), *KEYS, *ARGS))]

    async def balance_then_script() -> object:
        await with_script.balance()
        # What EVALSHA costs at the least: the packing is done once (a store packs
        # per call), the bytes written as they are, the answer read by hiredis.
        await connection.send_packed_command(packed, check_health=False)
        return await connection.read_response()

    async def balance_then_ping() -> object:
        await with_ping.balance()
        return await client.ping()

    async def close() -> None:
        for each in (memory, stored, with_script, with_ping):
            await each.close()
        await connection.disconnect()
        await client.aclose()

    calls: dict[str, Call] = {
        "memory store": memory.balance,
        "Redis store": stored.balance,
        "memory store + bare EVALSHA": balance_then_script,
        "memory store + PING": balance_then_ping,
    }
    return calls, close


async def measure(base: str, url: str, rounds: int, calls: int) -> dict[str, list[float]]:
    """CPU µs per call of each contender, per round, in a rotating order."""
    calls_of, close = await contenders(base, url)
    names = list(calls_of)
    results: dict[str, list[float]] = {name: [] for name in names}
    try:
        for turn in range(rounds):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                results[name].append(await cpu_per_call(calls_of[name], calls))
            print(f"round {turn + 1}/{rounds} done", file=sys.stderr)
    finally:
        await close()
    return results


def table(results: dict[str, list[float]]) -> list[str]:
    """The Markdown table: median and range, and the ratio to the memory store."""
    baseline = statistics.median(results["memory store"])
    lines = [
        "| contender | CPU per call (median) | min .. max | vs memory store |",
        "|---|---|---|---|",
    ]
    for name, values in results.items():
        median = statistics.median(values)
        lines.append(
            f"| {name} | {median:.1f} µs | {min(values):.1f} .. {max(values):.1f} µs "
            f"| {median / baseline:.3f}x |"
        )
    lines.append(f"| 1.5x the memory store | {1.5 * baseline:.1f} µs | | 1.500x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves it runs (CI)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=600, help="sequential calls per round")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "redis-floor.md")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls = 2, 50
    command = "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]])
    with server() as base, redis_for_the_store() as url:
        if url is None:
            sys.exit("redis_floor.py needs a redis-server on PATH (or REDIS_URL)")
        results = asyncio.run(measure(base, url, args.rounds, args.calls))
    lines = [
        "# One Redis round trip against a whole call",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- {args.rounds} rounds of {args.calls} sequential calls, client CPU per call",
        "",
        *table(results),
    ]
    write_report(lines, args.output)


if __name__ == "__main__":
    main()
