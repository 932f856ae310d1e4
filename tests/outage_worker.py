"""A worker process whose machine-wide rate-limit store stops being writable mid-run.

    python -m tests.outage_worker BASE_URL STORE_PATH CALLS

reads the keys from STABILITY_API_KEYS (comma-separated), makes CALLS balance()
calls 32 at a time through a session keeping its rate-limit state in
STORE_PATH, and, once a third of them are done, lets this process write no byte
more to any file (RLIMIT_FSIZE: what a full disk does to a writer). Prints a
JSON line: ``{"ok": N, "errors": {...}, "warnings": [...], "slowest": seconds}``.
Its output goes to pipes, which the limit does not touch.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import resource
import signal
import sys
import time

from stability_user import (
    LocalRateLimitStore,
    RateLimit,
    RetryPolicy,
    StabilityError,
    StabilitySession,
)


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def work(base_url: str, path: str, calls: int) -> dict[str, object]:
    keys = os.environ["STABILITY_API_KEYS"].split(",")
    warnings = Warnings()
    logging.getLogger("stability_user").addHandler(warnings)
    errors: collections.Counter[str] = collections.Counter()
    ok = 0
    slowest = 0.0
    remaining = iter(range(calls))
    store = LocalRateLimitStore(path)
    await store.open()
    async with StabilitySession(
        base_url=base_url,
        rate_limit=RateLimit(1000, 1.0),
        rate_limit_store=store,
        retry=RetryPolicy(max_attempts=1),
    ) as session:

        async def caller() -> None:
            nonlocal ok, slowest
            for n in remaining:
                if n == calls // 3:
                    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death
                    resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
                began = time.perf_counter()
                try:
                    await session.with_options(api_key=keys[n % len(keys)]).balance()
                except StabilityError as error:
                    errors[f"{type(error).__name__}: {error}"] += 1
                else:
                    ok += 1
                slowest = max(slowest, time.perf_counter() - began)

        await asyncio.gather(*(caller() for _ in range(32)))
    await store.aclose()
    return {"ok": ok, "errors": dict(errors), "warnings": warnings.messages, "slowest": slowest}


if __name__ == "__main__":
    base_url, path, calls = sys.argv[1:4]
    sys.stdout.write(json.dumps(asyncio.run(work(base_url, path, int(calls)))) + "\n")
