"""A worker process for the cross-process rate-limit tests: many calls on one key.

    python -m tests.rate_worker BASE_URL STORE REQUESTS/SECONDS CALLS

reads the key from STABILITY_API_KEY, makes CALLS balance() calls eight at a time
through a session limited by REQUESTS/SECONDS with STORE, and prints a JSON line:
``{"ok": N, "errors": {"RateLimitError": M, ...}}``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys

from stability_user import RateLimit, RetryPolicy, StabilityError, StabilitySession


async def work(base_url: str, store: str, limit: str, calls: int) -> dict[str, object]:
    errors: collections.Counter[str] = collections.Counter()
    messages: dict[str, str] = {}  # the first message of each kind, to tell what failed
    ok = 0
    remaining = iter(range(calls))
    async with StabilitySession(
        base_url=base_url,
        rate_limit=RateLimit.parse(limit, lockout=1.0),
        rate_limit_store=store,
        retry=RetryPolicy(max_attempts=1),
    ) as session:

        async def caller() -> None:
            nonlocal ok
            for _ in remaining:
                try:
                    await session.balance()
                except StabilityError as error:
                    errors[type(error).__name__] += 1
                    messages.setdefault(type(error).__name__, str(error))
                else:
                    ok += 1

        await asyncio.gather(*(caller() for _ in range(8)))
    return {"ok": ok, "errors": dict(errors), "messages": messages}


if __name__ == "__main__":
    base_url, store, limit, calls = sys.argv[1:5]
    sys.stdout.write(json.dumps(asyncio.run(work(base_url, store, limit, int(calls)))) + "\n")
