"""A sweep's worker side: a session per process, and each chunk checked, its results stored."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any, Final

import attrs

from stability_user import RedisRateLimitStore, StabilitySession

from ._arq import RedisError, Retry
from ._results import UNKNOWN, UNKNOWN_LABEL, StoredResult, stored
from ._run import RunKeys, SweepError
from ._source import TargetSource

__all__ = ["ChunkChecker", "SessionFactory", "close_worker", "open_worker"]

_SESSION: Final = "stability_user_fleet"  # where a worker keeps its session in arq's ctx
_REDIS_RETRY: Final = 5.0  # seconds before arq runs a chunk again after a Redis error

SessionFactory = Callable[[RedisRateLimitStore], StabilitySession]
"""Makes a worker's session, given the fleet's rate-limit store to pass as ``rate_limit_store``."""


async def open_worker(
    ctx: dict[str, Any],
    redis_url: str,
    session: SessionFactory,
) -> None:
    """Keep the process's session, on a rate-limit store of the sweep's Redis, in ``ctx``."""
    store = RedisRateLimitStore(url=redis_url)
    try:
        made = session(store)
    except BaseException:
        await store.aclose()
        raise
    ctx[_SESSION] = (made, store)


async def close_worker(ctx: dict[str, Any]) -> None:
    """Close the process's session and store, if :func:`open_worker` kept them."""
    held = ctx.pop(_SESSION, None)
    if held is not None:
        session, store = held
        await session.close()
        await store.aclose()


@attrs.frozen
class ChunkChecker:
    """Checks one chunk of a run on a worker and writes its results to the run's hash.

    Attributes:
        targets: where the sweep's targets come from.
        job_timeout: seconds a chunk may take before it is run again from where it stopped.
        concurrency: checks in flight.
        batch_size: results per write to Redis.
        keep_for: seconds a run's results are kept after its last write.
    """

    targets: TargetSource
    job_timeout: float
    concurrency: int
    batch_size: int
    keep_for: float

    async def check(
        self, ctx: dict[str, Any], run: str, number: int, ref: dict[str, Any]
    ) -> dict[str, Any]:
        """Check chunk ``number`` of ``run`` (see :meth:`Sweep.check_chunk`)."""
        redis: Any = ctx["redis"]  # an ArqRedis; redis-py's types do not say it awaits
        keys = RunKeys.of(run)
        try:
            if await redis.hexists(keys.chunks, str(number)):
                return {"skipped": True}
            # Our own deadline, before arq's: arq fails a job that times out for good.
            return await asyncio.wait_for(
                self._check(ctx, redis, keys, number, ref), self.job_timeout
            )
        except asyncio.TimeoutError as error:  # before OSError: a subclass of it from 3.11
            raise Retry(defer=0) from error
        except FileNotFoundError as error:
            raise SweepError(f"{error.filename}: no such file on this worker") from None
        except (RedisError, OSError) as error:
            raise Retry(defer=_REDIS_RETRY) from error

    async def _check(
        self, ctx: dict[str, Any], redis: Any, keys: RunKeys, number: int, ref: dict[str, Any]
    ) -> dict[str, Any]:
        started = time.monotonic()
        session: StabilitySession = ctx[_SESSION][0]
        targets, unknown = await self.targets.load(ref)
        failures: collections.Counter[str] = collections.Counter()
        pending: dict[str, str] = dict.fromkeys(unknown, UNKNOWN)
        failures[UNKNOWN_LABEL] += len(unknown)
        attempt = int(ctx.get("job_try") or 1)
        if attempt > 1 and targets:
            # Run again: the targets whose results are in keep them, and count.
            labels = [target.label for target in targets]
            kept = await redis.hmget(keys.results, labels)
            for label, value in zip(labels, kept, strict=True):
                if value is not None:
                    earlier = StoredResult.parse(label or "", value)
                    if earlier.error is not None:
                        failures[earlier.error] += 1
            targets = [t for t, value in zip(targets, kept, strict=True) if value is None]
        async with contextlib.aclosing(
            session.balances(targets, concurrency=self.concurrency)
        ) as results:
            async for result in results:
                pending[result.target.label or ""] = stored(result)
                if result.error is not None:
                    failures[type(result.error).__name__] += 1
                if len(pending) >= self.batch_size:
                    await self._write(redis, keys, pending)
                    pending = {}
        summary = {
            "targets": ref.get("count", len(ref.get("labels", ()))),
            "failures": dict(+failures),
            "digest": ref["digest"],
            "attempt": attempt,
            "checked": len(targets),
            "seconds": round(time.monotonic() - started, 3),
        }
        await self._write(redis, keys, pending, (number, summary))
        return summary

    async def _write(
        self,
        redis: Any,
        keys: RunKeys,
        results: dict[str, str],
        done: tuple[int, dict[str, Any]] | None = None,
    ) -> None:
        """One round trip: a batch of results, and the chunk's done mark after them."""
        ttl = int(self.keep_for)
        async with redis.pipeline(transaction=False) as pipe:
            if results:
                pipe.hset(keys.results, mapping=results)
                pipe.expire(keys.results, ttl)
            if done is not None:
                number, summary = done
                pipe.hset(keys.chunks, str(number), json.dumps(summary, separators=(",", ":")))
                pipe.expire(keys.chunks, ttl)
            await pipe.execute()
