"""A worker process for the stress test: random cancellations, breaks and closes on shared keys.

    python -m tests.stress_worker BASE_URL STORE REQUESTS/SECONDS SEED KEY [KEY ...]

Runs a few rounds, each with a new session on STORE (a pool of one to three
connections, so calls queue for one): callers that give up at random
(``wait_for``), a bulk run over the keys left early, and, at random, the session
closed with calls in flight. After each round it checks that the session left
nothing open: no file of the store's folder, no socket to Redis. It prints a JSON
line: ``{"ok": N, "errors": {...}, "left_open": [...]}``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import sys
from urllib.parse import urlsplit

from stability_user import (
    BalanceTarget,
    RateLimit,
    RetryPolicy,
    StabilityError,
    StabilitySession,
)


def sockets_to(port: int) -> set[str]:
    """The inodes of the TCP sockets of this machine connected to ``port`` on loopback."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01":  # ESTABLISHED
                    found.add(fields[9])
    return found


def left_open(store: str) -> list[str]:
    """What this process still holds of the store: files of its folder, sockets to Redis."""
    held = []
    cache = os.environ.get("XDG_CACHE_HOME", "")
    redis_port = urlsplit(store).port if store.startswith("redis") else None
    redis_sockets = sockets_to(redis_port) if redis_port else set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if cache and target.startswith(cache):
                held.append(target)
            elif target.startswith("socket:[") and target[8:-1] in redis_sockets:
                held.append(f"a connection to Redis ({target})")
    return held


async def one_round(
    base_url: str, store: str, limit: RateLimit, rng: random.Random, keys: list[str]
) -> tuple[collections.Counter[str], list[str]]:
    outcomes: collections.Counter[str] = collections.Counter()
    session = StabilitySession(
        keys[0],
        base_url=base_url,
        rate_limit=limit,
        rate_limit_store=store,
        max_connections=rng.randint(1, 3),
        retry=RetryPolicy(max_attempts=2, max_retry_after=30),
    )

    async def caller() -> None:
        view = session.with_options(api_key=rng.choice(keys))
        for _ in range(rng.randint(5, 20)):
            try:
                await asyncio.wait_for(view.balance(), timeout=rng.uniform(0.01, 0.5))
                outcomes["ok"] += 1
            except asyncio.TimeoutError:
                outcomes["gave up"] += 1
            except StabilityError as error:
                outcomes[type(error).__name__] += 1

    async def bulk() -> None:
        targets = [BalanceTarget(api_key=rng.choice(keys)) for _ in range(60)]
        stop = rng.randint(1, 40)
        async with contextlib.aclosing(
            session.balances(targets, concurrency=rng.randint(2, 8))
        ) as results:
            async for result in results:
                outcomes["ok" if result.ok else type(result.error).__name__] += 1
                stop -= 1
                if stop == 0:
                    break

    work = [asyncio.ensure_future(caller()) for _ in range(rng.randint(2, 6))]
    work.append(asyncio.ensure_future(bulk()))
    if rng.random() < 0.5:
        await asyncio.sleep(rng.uniform(0.05, 1.0))
        await session.close()  # calls in flight and waiting
    await asyncio.gather(*work, return_exceptions=True)
    await session.close()
    return outcomes, left_open(store)


async def work(base_url: str, store: str, limit: str, seed: int, keys: list[str]) -> object:
    rng = random.Random(seed)  # noqa: S311 - a test's draw, not a secret
    total: collections.Counter[str] = collections.Counter()
    still_open: list[str] = []
    for _ in range(3):
        outcomes, held = await one_round(
            base_url, store, RateLimit.parse(limit, lockout=1.0), rng, keys
        )
        total.update(outcomes)
        still_open.extend(held)
    return {"outcomes": dict(total), "left_open": still_open}


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    base_url, store, limit, seed, *keys = sys.argv[1:]
    result = asyncio.run(work(base_url, store, limit, int(seed), keys))
    sys.stdout.write(json.dumps(result) + "\n")
