"""Spread balance checks over many processes with arq, a Redis-backed asyncio job queue.

Each worker process opens one StabilitySession in ``on_startup`` and closes it in
``on_shutdown``; the ``check_balance`` job checks one target and flags it when it
is below a threshold. The enqueuer fans a bulk check out as one job per target.

Jobs carry a key's *label*, never the key: job arguments are stored in Redis,
and API keys do not belong there. Each worker reads the labels' keys from
``STABILITY_KEYS_FILE`` (CSV lines of ``label,api_key``) at start-up.

    export REDIS_URL=redis://127.0.0.1:6379 STABILITY_KEYS_FILE=keys.csv
    arq examples.arq_worker.WorkerSettings           # or: python examples/arq_worker.py worker
    python examples/arq_worker.py enqueue --below 10 # fan out one job per label, print results
    python examples/arq_worker.py                    # the whole thing on the bundled emulator

Needs the ``examples`` extra (``pip install -e '.[examples]'``) and a Redis server.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job
from arq.worker import Worker, run_worker

from stability_user import StabilityError, StabilitySession
from stability_user.testing import StabilityEmulator


def redis_settings() -> RedisSettings:
    """Where Redis is: ``$REDIS_URL``, else the local default port."""
    return RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))


def read_keys(path: str | os.PathLike[str]) -> dict[str, str]:
    """``label -> api_key`` from CSV lines of ``label,api_key``."""
    with open(path, newline="") as lines:
        return {row[0].strip(): row[1].strip() for row in csv.reader(lines) if len(row) >= 2}


async def startup(ctx: dict[str, Any]) -> None:
    """One session per worker process, shared by all of its jobs."""
    keys = read_keys(os.environ["STABILITY_KEYS_FILE"])
    ctx["keys"] = keys
    ctx["views"] = {}
    # The session's own key is never used: every job names the key it checks with.
    ctx["stability"] = StabilitySession(api_key=next(iter(keys.values()), "unused"))


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close the worker's session."""
    await ctx["stability"].close()


async def check_balance(
    ctx: dict[str, Any], label: str, organization: str | None = None, below: float = 10.0
) -> dict[str, Any]:
    """Check one target's balance; flag it when under ``below`` credits."""
    api_key = ctx["keys"].get(label)
    if api_key is None:
        return {"label": label, "credits": None, "low": False, "error": "unknown label"}
    views: dict[str, StabilitySession] = ctx["views"]
    session = views.get(api_key)
    if session is None:
        session = views[api_key] = ctx["stability"].with_options(api_key=api_key)
    try:
        balance = await session.balance(organization=organization)
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
    """``arq examples.arq_worker.WorkerSettings`` runs a worker."""

    functions = [check_balance]  # noqa: RUF012 - arq reads these class attributes
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings()
    max_jobs = 64


async def enqueue_checks(pool: ArqRedis, labels: list[str], below: float) -> list[Job]:
    """Fan out one job per label."""
    jobs = [await pool.enqueue_job("check_balance", label, below=below) for label in labels]
    return [job for job in jobs if job is not None]


async def collect(jobs: list[Job]) -> list[dict[str, Any]]:
    """Wait for the jobs' results, in order."""
    return [await job.result(timeout=120) for job in jobs]


async def enqueue_and_collect(labels: list[str], below: float) -> list[dict[str, Any]]:
    """Fan out the checks to whatever workers are running, and collect the results."""
    pool = await create_pool(redis_settings())
    try:
        return await collect(await enqueue_checks(pool, labels, below))
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


DEMO_ENVIRONMENT = ("STABILITY_KEYS_FILE", "STABILITY_API_HOST")


async def demo(accounts: int = 20, below: float = 10.0) -> list[dict[str, Any]]:
    """Emulator, keys file, one in-process worker and the enqueuer: the whole flow."""
    async with StabilityEmulator() as emulator:
        with tempfile.TemporaryDirectory() as scratch:
            keys_file = Path(scratch) / "keys.csv"
            labels = [f"customer-{n}" for n in range(1, accounts + 1)]
            keys_file.write_text(
                "".join(
                    f"{label},{emulator.add_account(credits=float(n * 3))}\n"
                    for n, label in enumerate(labels)
                )
            )
            saved = {name: os.environ.get(name) for name in DEMO_ENVIRONMENT}
            os.environ["STABILITY_KEYS_FILE"] = str(keys_file)
            os.environ["STABILITY_API_HOST"] = emulator.base_url
            pool = await create_pool(redis_settings())
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
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
    report(results)
    return results


def main(argv: list[str]) -> None:
    """``worker``, ``enqueue`` or, with no command, the demo."""
    parser = argparse.ArgumentParser(description="stability-user with arq")
    parser.add_argument("command", nargs="?", choices=["worker", "enqueue", "demo"], default="demo")
    parser.add_argument("--below", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.command == "worker":
        run_worker(WorkerSettings)  # type: ignore[arg-type]
    elif args.command == "enqueue":
        labels = list(read_keys(os.environ["STABILITY_KEYS_FILE"]))
        report(asyncio.run(enqueue_and_collect(labels, args.below)))
    else:
        asyncio.run(demo(below=args.below))


if __name__ == "__main__":
    main(sys.argv[1:])
