"""A worker process for the cross-process read-cache tests: one key, many calls, a shared store.

    python -m tests.cache_worker load BASE_URL STORE MAX_AGE RATE SECONDS
    python -m tests.cache_worker once BASE_URL STORE MAX_AGE LEASE [DEADLINE]

reads the key from STABILITY_API_KEY and its balance from STABILITY_TEST_CREDITS.
STORE is ``memory``, ``local`` or a ``redis://`` URL.

``load`` makes RATE ``balance()`` calls a second for SECONDS seconds through a
session with ``CachePolicy(max_age=MAX_AGE)`` and ``cache_store=STORE``, and prints a
JSON line: ``{"calls": N, "ok": N, "wrong": N, "errors": {"RateLimitError": M, ...}}``
(``wrong``: a balance other than the account's).

``once`` prints ``started``, makes one ``balance()`` call through the store made
with a lease of LEASE seconds (a call deadline of DEADLINE seconds, if given), and
prints a JSON line: ``{"credits": C, "fetched_at": T}`` or ``{"error": NAME, "message": M}``.
A process killed while it reads holds its lease: the others must wait for its expiry.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
from typing import Any

from stability_user import CachePolicy, RetryPolicy, StabilityError, StabilitySession


def store_for(spec: str, lease: float) -> Any:
    """The reading store ``spec`` names, with leases of ``lease`` seconds."""
    if spec.startswith("redis"):
        from stability_user._cache._redis import RedisReadingStore  # noqa: PLC0415

        return RedisReadingStore(spec, lease=lease)
    from stability_user._cache._local import LocalReadingStore  # noqa: PLC0415

    return LocalReadingStore(lease=lease)


async def load(base_url: str, store: str, max_age: float, rate: int, seconds: float) -> object:
    credits = float(os.environ["STABILITY_TEST_CREDITS"])
    errors: collections.Counter[str] = collections.Counter()
    messages: dict[str, str] = {}
    ok = wrong = 0
    tick = 0.02  # calls are started in bursts every 20 ms, rate per second in all

    async def call(session: StabilitySession) -> None:
        nonlocal ok, wrong
        try:
            balance = await session.balance()
        except StabilityError as error:
            errors[type(error).__name__] += 1
            messages.setdefault(type(error).__name__, str(error))
        else:
            ok += 1
            wrong += balance.credits != credits

    async with StabilitySession(
        base_url=base_url,
        cache=CachePolicy(max_age=max_age),
        cache_store=store,
        retry=RetryPolicy(max_attempts=1),
    ) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        ticks = round(seconds / tick)
        per_tick, carry = divmod(rate * tick, 1)
        calls: list[asyncio.Task[None]] = []
        owed = 0.0
        for n in range(ticks):
            owed += carry
            burst = int(per_tick) + int(owed)
            owed -= int(owed)
            calls += [asyncio.ensure_future(call(session)) for _ in range(burst)]
            await asyncio.sleep(max(0.0, start + (n + 1) * tick - loop.time()))
        await asyncio.gather(*calls)
    return {
        "calls": len(calls),
        "ok": ok,
        "wrong": wrong,
        "errors": dict(errors),
        "messages": messages,
    }


async def once(
    base_url: str, spec: str, max_age: float, lease: float, deadline: float | None
) -> object:
    store = store_for(spec, lease)
    try:
        async with StabilitySession(
            base_url=base_url,
            cache=CachePolicy(max_age=max_age),
            cache_store=store,
            retry=RetryPolicy(max_attempts=1, deadline=deadline),
        ) as session:
            sys.stdout.write("started\n")
            sys.stdout.flush()
            try:
                balance = await session.balance()
            except StabilityError as error:
                return {"error": type(error).__name__, "message": str(error)}
            assert balance.freshness is not None
            return {"credits": balance.credits, "fetched_at": balance.freshness.fetched_at}
    finally:
        await store.aclose()


if __name__ == "__main__":
    mode, base, store_spec, age = sys.argv[1:5]
    rest = sys.argv[5:]
    if mode == "load":
        report = asyncio.run(load(base, store_spec, float(age), int(rest[0]), float(rest[1])))
    else:
        limit = float(rest[1]) if len(rest) > 1 else None
        report = asyncio.run(once(base, store_spec, float(age), float(rest[0]), limit))
    sys.stdout.write(json.dumps(report) + "\n")
