"""A sweep's producer: the connection to Redis, and a run's chunks enqueued, each at most once."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs

from ._arq import RedisError, RedisSettings, create_pool, job_key_prefix, result_key_prefix
from ._run import CHECK_CHUNK, PREFIX, RunKeys, SweepError
from ._source import TargetSource

__all__ = ["Enqueued", "enqueue_run", "open_pool"]


@attrs.frozen
class Enqueued:
    """What :meth:`Sweep.enqueue` did.

    Attributes:
        run: the run.
        targets: the targets read.
        chunks: the chunks they make.
        enqueued: chunks enqueued now.
        done: chunks done already (their results are in), not enqueued.
        pending: chunks queued or running already, not enqueued again.
    """

    run: str
    targets: int
    chunks: int
    enqueued: int
    done: int
    pending: int


@contextlib.asynccontextmanager
async def open_pool(settings: RedisSettings, where: str) -> AsyncIterator[Any]:
    """An arq pool on the sweep's Redis (an ArqRedis; redis-py's types do not say it awaits).

    Raises:
        SweepError: Redis cannot be reached at ``where``, or was lost on the way.
    """
    settings.conn_retries = 0  # a producer run by hand says at once that Redis is away
    try:
        pool = await create_pool(settings)
    except (RedisError, OSError, asyncio.TimeoutError) as error:
        raise SweepError(f"cannot reach Redis at {where} ({type(error).__name__})") from None
    try:
        yield pool
    except RedisError as error:
        # Whatever was done is in Redis: running the same call again goes on from there.
        raise SweepError(
            f"lost Redis at {where} ({type(error).__name__}): once it is back, run this again"
        ) from None
    finally:
        await pool.aclose()


async def enqueue_run(
    pool: Any,
    run: str,
    targets: TargetSource,
    *,
    chunk_size: int,
    keep_for: float,
    queue_name: str,
) -> Enqueued:
    """Enqueue the chunks of ``run`` that are neither done, queued nor running.

    Raises:
        SweepError: the targets are not those the run started with.
    """
    keys = RunKeys.of(run)
    ttl = int(keep_for)
    now = await _server_time(pool)
    async with pool.pipeline(transaction=False) as pipe:
        pipe.hsetnx(keys.meta, "started", repr(now))
        pipe.hset(keys.meta, mapping={"chunk_size": chunk_size})
        pipe.hdel(keys.meta, "targets", "chunks")  # counted again below
        pipe.expire(keys.meta, ttl)
        await pipe.execute()
    count = chunks = enqueued = done = pending = 0
    async for ref, size in targets.chunks(chunk_size):
        number = chunks
        chunks += 1
        count += size
        summary = await pool.hget(keys.chunks, str(number))
        if summary is not None:
            if json.loads(summary)["digest"] != ref["digest"]:
                raise SweepError(
                    f"chunk {number} of run {run} was enqueued from other targets "
                    f"than {targets.describe()} holds now: enqueue a new run"
                )
            done += 1
        elif await _enqueue_chunk(pool, run, number, ref, queue_name):
            enqueued += 1
        else:
            pending += 1
    async with pool.pipeline(transaction=False) as pipe:
        pipe.hset(keys.meta, mapping={"targets": count, "chunks": chunks})
        pipe.expire(keys.meta, ttl)
        await pipe.execute()
    return Enqueued(run, count, chunks, enqueued, done, pending)


async def _enqueue_chunk(
    pool: Any, run: str, number: int, ref: dict[str, Any], queue_name: str
) -> bool:
    """Enqueue one chunk under its own job id; ``False`` when it is queued or running."""
    job_id = f"{PREFIX}:{run}:{number}"
    for _ in range(2):
        job = await pool.enqueue_job(
            CHECK_CHUNK, run, number, ref, _job_id=job_id, _queue_name=queue_name
        )
        if job is not None:
            return True
        if await pool.exists(job_key_prefix + job_id):
            return False  # queued or running: it will be done
        # Not done, not queued: arq kept the result of a run that failed for good
        # (with a keep_result of its own). Forget it and enqueue the chunk again.
        await pool.delete(result_key_prefix + job_id)
    return False  # pragma: no cover - enqueued by another producer meanwhile


async def _server_time(pool: Any) -> float:
    seconds, micros = await pool.time()
    return int(seconds) + int(micros) / 1e6
