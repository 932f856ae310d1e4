"""A fleet sweep defined as a user's module: ``arq tests.fleet_app.WorkerSettings`` runs a worker.

The tests set the environment: REDIS_URL, STABILITY_API_HOST (the emulator),
FLEET_TARGETS (a target file), FLEET_QUEUE, FLEET_CHUNK_SIZE, FLEET_JOB_TIMEOUT,
FLEET_RATE_LIMIT (REQUESTS/SECONDS, the service's 150/10 by default) and FLEET_STORE
(``redis``, or ``memory`` for a control whose workers share nothing). A worker prints
``ready`` on stdout once it has started.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from stability_user import RateLimit, RedisRateLimitStore, RetryPolicy, StabilitySession
from stability_user.fleet import Sweep, TargetFile


def session(store: RedisRateLimitStore) -> StabilitySession:
    shared = os.environ.get("FLEET_STORE", "redis") == "redis"
    return StabilitySession(
        rate_limit=RateLimit.parse(os.environ.get("FLEET_RATE_LIMIT", "150/10"), lockout=2.0),
        rate_limit_store=store if shared else "memory",
        # Waits for the limit are the point; a 429 is retried after its Retry-After.
        retry=RetryPolicy(max_attempts=5, backoff_base=0.05, max_retry_after=5.0),
    )


sweep = Sweep(
    os.environ["REDIS_URL"],
    TargetFile(os.environ["FLEET_TARGETS"]),
    chunk_size=int(os.environ.get("FLEET_CHUNK_SIZE", "10")),
    concurrency=4,
    chunks_per_worker=2,
    job_timeout=float(os.environ.get("FLEET_JOB_TIMEOUT", "20")),
    session=session,
    queue_name=os.environ["FLEET_QUEUE"],
)


async def startup(ctx: dict[str, Any]) -> None:
    await sweep.startup(ctx)
    sys.stdout.write("ready\n")
    sys.stdout.flush()


WorkerSettings = sweep.worker_settings(on_startup=startup, poll_delay=0.05)
