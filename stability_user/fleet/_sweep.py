"""The :class:`Sweep`: its settings, the calls its workers make, and those of its producer."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import attrs

from stability_user import RedisRateLimitStore, StabilitySession

from ._arq import RedisSettings, func
from ._producer import Enqueued, enqueue_run, open_pool
from ._progress import Progress, read_progress
from ._results import StoredResult
from ._run import CHECK_CHUNK, QUEUE_NAME, RunKeys, check_run
from ._source import TargetSource
from ._worker import ChunkChecker, SessionFactory, close_worker, open_worker

__all__ = ["Sweep"]

# arq's own timeout comes this long after the sweep's: a chunk out of time is retried by
# the sweep (arq would fail it for good). arq leases a running job for its timeout + 10 s.
_DEADLINE_MARGIN: Final = 5.0


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int of at least 1, not {value!r}")
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e9:
        raise ValueError(f"{name} must be a number of seconds above 0, not {value!r}")
    return float(value)


def _default_session(store: RedisRateLimitStore) -> StabilitySession:
    # No key of its own: every target names one. The service's address and the
    # rest come from the environment (STABILITY_API_HOST...), as for any session.
    return StabilitySession(rate_limit_store=store)


class Sweep:
    """A balance check of many targets spread over arq workers; each execution is a run.

    Define it once, in a module both the producer and the workers import::

        sweep = Sweep(os.environ["REDIS_URL"], TargetFile("keys.csv"))
        WorkerSettings = sweep.worker_settings()      # arq that_module.WorkerSettings

    Args:
        redis_url: the Redis of arq, the rate limit and the results (``redis://``,
            ``rediss://`` or ``unix://``); its password is never shown.
        targets: a :class:`TargetFile` or :class:`TargetLookup`.
        chunk_size: targets per job.
        concurrency: checks in flight per chunk (``balances(concurrency=...)``).
        chunks_per_worker: chunks a worker process checks at once (arq's ``max_jobs``).
        batch_size: results per write to Redis (a chunk's last write may hold fewer).
        job_timeout: seconds a chunk may take before it is run again from where it
            stopped; a chunk whose worker died is run again this long and 15 s more
            after it started (arq's lease on a running job).
        max_tries: runs of a chunk, retries after a worker died or Redis failed included.
        keep_for: seconds a run's results are kept after its last write.
        session: makes each worker's session from the rate-limit store; by default
            ``StabilitySession(rate_limit_store=store)``, configured by the environment.
        queue_name: the arq queue of the sweep's jobs.

    Attributes:
        where: the Redis URL without its password, for messages.

    Raises:
        ValueError: a bad Redis URL or number.
    """

    def __init__(
        self,
        redis_url: str,
        targets: TargetSource,
        *,
        chunk_size: int = 1000,
        concurrency: int = 32,
        chunks_per_worker: int = 2,
        batch_size: int = 250,
        job_timeout: float = 300.0,
        max_tries: int = 5,
        keep_for: float = 7 * 86400.0,
        session: SessionFactory = _default_session,
        queue_name: str = QUEUE_NAME,
    ) -> None:
        """Check the settings; nothing connects until a method is called."""
        # The store checks the URL as the workers will use it, and masks its password.
        self.where = RedisRateLimitStore(url=redis_url).where
        self._redis_url = redis_url
        self.targets = targets
        self.chunk_size = _positive("chunk_size", chunk_size)
        self.concurrency = _positive("concurrency", concurrency)
        self.chunks_per_worker = _positive("chunks_per_worker", chunks_per_worker)
        self.batch_size = _positive("batch_size", batch_size)
        self.job_timeout = _seconds("job_timeout", job_timeout)
        self.max_tries = _positive("max_tries", max_tries)
        self.keep_for = _seconds("keep_for", keep_for)
        self.session = session
        self.queue_name = queue_name

    def __repr__(self) -> str:
        """Where the sweep's Redis and targets are (no password)."""
        return f"<Sweep {self.targets.describe()} on {self.where}>"

    # -- workers ---------------------------------------------------------------

    def worker_settings(self, **overrides: Any) -> dict[str, Any]:
        """An arq worker's settings for this sweep: ``WorkerSettings = sweep.worker_settings()``.

        ``arq module.WorkerSettings`` runs a worker, as does ``arq.run_worker``;
        ``overrides`` replace or add arq ``Worker`` arguments (``poll_delay``...).
        """
        settings: dict[str, Any] = {
            "functions": [
                func(
                    self.check_chunk,
                    name=CHECK_CHUNK,
                    timeout=self.job_timeout + _DEADLINE_MARGIN,
                    keep_result=0,
                    max_tries=self.max_tries,
                )
            ],
            "on_startup": self.startup,
            "on_shutdown": self.shutdown,
            "redis_settings": self.redis_settings(),
            "queue_name": self.queue_name,
            "max_jobs": self.chunks_per_worker,
            "job_timeout": self.job_timeout + _DEADLINE_MARGIN,
            "max_tries": self.max_tries,
            # A chunk that failed for good can be enqueued again at once: arq keeps no
            # result under its id (the run's results are in the run's hash).
            "keep_result": 0,
        }
        settings.update(overrides)
        return settings

    def redis_settings(self) -> RedisSettings:
        """The arq connection settings of the sweep's Redis."""
        return RedisSettings.from_dsn(self._redis_url)

    async def startup(self, ctx: dict[str, Any]) -> None:
        """The workers' ``on_startup``: one session and one rate-limit store per process.

        Call it from an ``on_startup`` of your own if you need one.
        """
        await open_worker(ctx, self._redis_url, self.session)

    async def shutdown(self, ctx: dict[str, Any]) -> None:
        """The workers' ``on_shutdown``: close the process's session and store."""
        await close_worker(ctx)

    async def check_chunk(
        self, ctx: dict[str, Any], run: str, number: int, ref: dict[str, Any]
    ) -> dict[str, Any]:
        """The arq job: check chunk ``number`` of ``run`` and store its results.

        A chunk that is done already is skipped; a chunk run again (its worker died,
        Redis failed, it ran out of time) checks only the targets that have no result
        yet. A Redis error makes arq run it again a few seconds later; a chunk that
        takes longer than ``job_timeout`` keeps the results it wrote and is run again
        at once, to go on where it stopped.

        Returns:
            The chunk's summary, as stored (``skipped`` when it was done already).
        """
        checker = ChunkChecker(
            self.targets, self.job_timeout, self.concurrency, self.batch_size, self.keep_for
        )
        return await checker.check(ctx, run, number, ref)

    # -- the producer ------------------------------------------------------------

    def _pool(self) -> contextlib.AbstractAsyncContextManager[Any]:  # an ArqRedis
        return open_pool(self.redis_settings(), self.where)

    async def enqueue(self, run: str) -> Enqueued:
        """Enqueue the chunks of ``run`` that are not done, reading the targets as a stream.

        Enqueuing a run again (after the producer, a worker or the whole fleet
        stopped) enqueues only the chunks without a done mark that are neither queued
        nor running: no chunk is checked twice, none is left out.

        Raises:
            SweepError: Redis cannot be reached, or the targets are not those the run
                started with.
            TargetFileError: a line of the target file that is not a labelled target.
            ValueError: a bad run name.
        """
        run = check_run(run)
        async with self._pool() as pool:
            return await enqueue_run(
                pool,
                run,
                self.targets,
                chunk_size=self.chunk_size,
                keep_for=self.keep_for,
                queue_name=self.queue_name,
            )

    async def progress(self, run: str) -> Progress:
        """How far ``run`` is, read from Redis; the rate is the average since it started.

        Raises:
            SweepError: no such run in Redis (never enqueued, expired, or lost with a
                Redis that restarted without persistence), or Redis cannot be reached.
        """
        run = check_run(run)
        async with self._pool() as pool:
            return await read_progress(pool, run, self.where)

    async def watch(
        self,
        run: str,
        interval: float = 2.0,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> AsyncIterator[Progress]:
        """Yield the progress of ``run`` every ``interval`` seconds, until it is complete.

        The rate is over the last 30 seconds of polls, so it shows what the fleet
        does now (after a worker was lost, say), and the ETA follows it.

        Raises:
            SweepError: as :meth:`progress`.
        """
        run = check_run(run)
        interval = _seconds("interval", interval)
        samples: collections.deque[tuple[float, int]] = collections.deque()
        async with self._pool() as pool:
            while True:
                progress = await read_progress(pool, run, self.where)
                samples.append((progress.elapsed, progress.done))
                while len(samples) > 2 and samples[-1][0] - samples[1][0] >= 30.0:
                    samples.popleft()
                (then, before), (now, done) = samples[0], samples[-1]
                if now > then:
                    rate = (done - before) / (now - then)
                    progress = attrs.evolve(progress, checks_per_second=rate)
                yield progress
                if progress.complete:
                    return
                await sleep(interval)

    async def results(self, run: str) -> AsyncIterator[StoredResult]:
        """Every result of ``run`` in Redis, streamed (in no particular order).

        For a report or an export to a database once the run is complete:
        ``[r async for r in sweep.results(run) if r.ok and r.credits < 10]``.
        """
        run = check_run(run)
        async with self._pool() as pool:
            async for label, value in pool.hscan_iter(RunKeys.of(run).results, count=1000):
                yield StoredResult.parse(label.decode(), value)
