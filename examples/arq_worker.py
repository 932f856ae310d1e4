"""Spread balance checks over many processes with arq, a Redis-backed asyncio job queue.

Each worker process opens one StabilitySession in ``on_startup`` and closes it in
``on_shutdown``; the ``check_balance`` job checks one target and flags it when it
is below a threshold. The enqueuer fans a bulk check out as one job per target.

Jobs carry a target's *label*, never its key: job arguments are stored in Redis,
and API keys do not belong there. Each worker reads the targets from
``STABILITY_KEYS_FILE``, in the format ``stability-user balances`` reads
(``key,organization,label`` lines; every target needs a label here).

The workers share one rate limit per key through the Redis arq already uses
(``rate_limit_store=REDIS_URL``): however many processes or machines run
workers, together they stay under the service's limit.

    export REDIS_URL=redis://127.0.0.1:6379 STABILITY_KEYS_FILE=keys.csv
    python examples/arq_worker.py worker             # or: arq arq_worker.WorkerSettings
    python examples/arq_worker.py enqueue --below 10 # fan out one job per label, print results
    python examples/arq_worker.py                    # the whole thing on the bundled emulator

Needs the ``examples`` extra (``pip install -e '.[examples]'``) and a Redis server.

Exit status: 0 when every check succeeded, 1 when any failed or Redis cannot be
reached, 2 when the setup is wrong (no keys file, a target without a label) or
no worker took the jobs (they are taken off the queue again).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import default_queue_name, job_key_prefix
from arq.jobs import Job, JobStatus
from arq.worker import Worker, run_worker
from redis.exceptions import RedisError

from stability_user import (
    BalanceTarget,
    StabilityError,
    StabilitySession,
    TargetFileError,
    read_targets,
)
from stability_user.testing import StabilityEmulator

KEYS_FILE = "STABILITY_KEYS_FILE"


class SetupError(Exception):
    """The environment is not set up for this example; the message says what to set."""


class NoRedis(Exception):  # noqa: N818 - named for what the user sees
    """Redis cannot be reached; the message says where it was looked for."""


def redis_url() -> str:
    """Where Redis is: ``$REDIS_URL``, else the local default port."""
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")


def shown(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redis_settings() -> RedisSettings:
    """arq's connection settings for :func:`redis_url`."""
    return RedisSettings.from_dsn(redis_url())


async def connect() -> ArqRedis:
    """A pool on :func:`redis_url`, or :class:`NoRedis` at once if nothing answers there.

    arq would retry five times, logging each, then raise: a command run by hand
    had better say in one line that Redis is not running.
    """
    settings = redis_settings()
    settings.conn_retries = 0
    try:
        return await create_pool(settings)
    except (RedisError, OSError, asyncio.TimeoutError) as error:
        raise NoRedis(
            f"cannot reach Redis at {shown(redis_url())} ({type(error).__name__}): "
            "start Redis, or set REDIS_URL to where it runs"
        ) from None


def keys_file() -> str:
    """The path in ``$STABILITY_KEYS_FILE``."""
    path = os.environ.get(KEYS_FILE)
    if not path:
        raise SetupError(
            f"set {KEYS_FILE} to a file of key,organization,label lines "
            "(the stability-user balances format; every target needs a label)"
        )
    return path


def read_labelled(path: str) -> dict[str, BalanceTarget]:
    """``label -> target`` from a target file; every target must have a label."""
    targets: dict[str, BalanceTarget] = {}
    for target in read_targets(path):
        if not target.label:
            # display_name is the masked key here: safe to print.
            raise SetupError(
                f"{path}: {target.display_name} has no label (jobs name targets by it)"
            )
        targets[target.label] = target
    return targets


async def startup(ctx: dict[str, Any]) -> None:
    """One session per worker process, shared by all of its jobs."""
    path = keys_file()
    ctx["targets"] = read_labelled(path)
    ctx["views"] = {}
    # No key of its own (every job names one); the rate limit is shared through Redis.
    ctx["stability"] = StabilitySession(rate_limit_store=redis_url())
    print(
        f"worker running: jobs from {shown(redis_url())}, "
        f"{len(ctx['targets'])} targets from {path}",
        flush=True,
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close the worker's session."""
    await ctx["stability"].close()


async def check_balance(ctx: dict[str, Any], label: str, below: float = 10.0) -> dict[str, Any]:
    """Check one target's balance; flag it when under ``below`` credits."""
    target: BalanceTarget | None = ctx["targets"].get(label)
    if target is None or target.api_key is None:
        return {"label": label, "credits": None, "low": False, "error": "unknown label"}
    views: dict[str, StabilitySession] = ctx["views"]
    session = views.get(target.api_key)
    if session is None:
        session = views[target.api_key] = ctx["stability"].with_options(api_key=target.api_key)
    try:
        balance = await session.balance(organization=target.organization)
    except StabilityError as error:
        # str() of a library error never contains the key: safe to store in Redis.
        return {"label": label, "credits": None, "low": False, "error": str(error)}
    return {
        "label": label,
        "credits": balance.credits,
        "low": balance.credits < below,
        "error": None,
    }


class WorkerSettings:
    """``arq arq_worker.WorkerSettings`` runs a worker."""

    functions = [check_balance]  # noqa: RUF012 - arq reads these class attributes
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings()
    max_jobs = 64


async def enqueue_checks(pool: ArqRedis, labels: list[str], below: float) -> list[Job]:
    """Fan out one job per label; a job no worker starts within 10 minutes is dropped."""
    jobs = [
        await pool.enqueue_job("check_balance", label, below=below, _expires=600)
        for label in labels
    ]
    return [job for job in jobs if job is not None]


async def wait_for_a_worker(jobs: list[Job], seconds: float) -> None:
    """Return once a worker has taken a job; fail after ``seconds`` if none has."""
    deadline = time.monotonic() + seconds
    while jobs and await jobs[0].status() == JobStatus.queued:
        if time.monotonic() >= deadline:
            raise SetupError(
                f"no worker took a job within {seconds:g} s: start one with "
                f"'python examples/arq_worker.py worker' (REDIS_URL={shown(redis_url())})"
            )
        await asyncio.sleep(0.1)  # polling Redis: arq offers no notification for this


async def withdraw(pool: ArqRedis, jobs: list[Job]) -> None:
    """Take the jobs no worker has started off the queue, so no later worker runs them stale."""
    for job in jobs:
        # Atomic: a worker about to start the job finds it gone from the queue and skips it.
        if await pool.zrem(default_queue_name, job.job_id):
            await pool.delete(job_key_prefix + job.job_id)


async def collect(jobs: list[Job]) -> list[dict[str, Any]]:
    """Wait for the jobs' results, in order."""
    return [await job.result(timeout=120) for job in jobs]


async def enqueue_and_collect(
    labels: list[str], below: float, *, worker_wait: float = 10.0
) -> list[dict[str, Any]]:
    """Fan out the checks to whatever workers are running, and collect the results."""
    pool = await connect()
    try:
        jobs = await enqueue_checks(pool, labels, below)
        try:
            await wait_for_a_worker(jobs, worker_wait)
        except SetupError:
            await withdraw(pool, jobs)
            raise
        return await collect(jobs)
    finally:
        await pool.aclose()


def report(results: list[dict[str, Any]]) -> None:
    """Print the low and failed targets and a summary."""
    for result in results:
        if result["error"]:
            print(f"FAILED {result['label']}: {result['error']}")
        elif result["low"]:
            print(f"LOW    {result['label']}: {result['credits']:,.2f} credits")
    failed = sum(bool(r["error"]) for r in results)
    low = sum(bool(r["low"]) for r in results)
    print(f"checked {len(results)} in jobs, failed {failed}, low {low}")


DEMO_ENVIRONMENT = (KEYS_FILE, "STABILITY_API_HOST")


async def demo(accounts: int = 20, below: float = 10.0) -> list[dict[str, Any]]:
    """Emulator, keys file, one in-process worker and the enqueuer: the whole flow."""
    async with StabilityEmulator() as emulator:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "keys.csv"
            labels = [f"customer-{n}" for n in range(1, accounts + 1)]
            path.write_text(
                "".join(
                    f"{emulator.add_account(credits=float(n * 3))},,{label}\n"
                    for n, label in enumerate(labels)
                )
            )
            saved = {name: os.environ.get(name) for name in DEMO_ENVIRONMENT}
            os.environ[KEYS_FILE] = str(path)
            os.environ["STABILITY_API_HOST"] = emulator.base_url
            try:
                pool = await connect()
            except NoRedis:
                restore(saved)
                raise
            try:
                jobs = await enqueue_checks(pool, labels, below)
                worker = Worker(
                    functions=[check_balance],
                    on_startup=startup,
                    on_shutdown=shutdown,
                    redis_settings=redis_settings(),
                    burst=True,  # stop once the queue is empty
                    handle_signals=False,
                    poll_delay=0.05,
                )
                try:
                    await worker.async_run()
                finally:
                    await worker.close()
                results = await collect(jobs)
            finally:
                await pool.aclose()
                restore(saved)
    report(results)
    return results


def restore(saved: dict[str, str | None]) -> None:
    """Put the environment variables back as they were."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def main(argv: list[str]) -> int:
    """``worker``, ``enqueue`` or, with no command, the demo; returns the exit status."""
    parser = argparse.ArgumentParser(description="stability-user with arq")
    parser.add_argument("command", nargs="?", choices=["worker", "enqueue", "demo"], default="demo")
    parser.add_argument("--below", type=float, default=10.0)
    parser.add_argument(
        "--worker-wait",
        type=float,
        default=10.0,
        help="seconds enqueue waits for a worker to take a job (default 10)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "worker":
            read_labelled(keys_file())  # a bad file fails here, not in every worker start-up
            asyncio.run(reachable())  # and no Redis here, in one line
            run_worker(WorkerSettings)  # type: ignore[arg-type]
            return 0
        if args.command == "enqueue":
            labels = list(read_labelled(keys_file()))
            results = asyncio.run(
                enqueue_and_collect(labels, args.below, worker_wait=args.worker_wait)
            )
        else:
            results = asyncio.run(demo(below=args.below))
    except NoRedis as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (SetupError, TargetFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    if args.command == "enqueue":
        report(results)
    # As stability-user balances: 1 when any check failed.
    return 1 if any(result["error"] for result in results) else 0


async def reachable() -> None:
    """Raise :class:`NoRedis` unless Redis answers at :func:`redis_url`."""
    pool = await connect()
    await pool.aclose()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
