"""How far a run is: read from its keys in Redis, and said in one line."""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from typing import Any

import attrs

from ._run import RunKeys, SweepError

__all__ = ["Progress", "read_progress"]


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@attrs.frozen
class Progress:
    """How far a run is, read from its results in Redis.

    Attributes:
        run: the run.
        targets: the targets enqueued, or ``None`` while the producer is still reading them.
        done: the targets with a result.
        failures: failed checks by error type, counted per finished chunk.
        chunks: the chunks enqueued, or ``None`` while the producer is still reading.
        chunks_done: the chunks whose results are all in.
        elapsed: seconds since the run was first enqueued (on Redis's clock).
        checks_per_second: results a second: since the start from :meth:`Sweep.progress`,
            over the last polls from :meth:`Sweep.watch`; ``None`` before there is any.
    """

    run: str
    targets: int | None
    done: int
    failures: Mapping[str, int]
    chunks: int | None
    chunks_done: int
    elapsed: float
    checks_per_second: float | None

    @property
    def failed(self) -> int:
        """Failed checks of the finished chunks."""
        return sum(self.failures.values())

    @property
    def complete(self) -> bool:
        """Whether every chunk of the run is done."""
        return self.chunks is not None and self.chunks_done >= self.chunks

    @property
    def eta(self) -> float | None:
        """Seconds until every target has a result at the current rate, if known."""
        if self.complete:
            return 0.0
        if self.targets is None or not self.checks_per_second:
            return None
        return max(self.targets - self.done, 0) / self.checks_per_second

    def __str__(self) -> str:
        """One line: ``run R: done/total (x %), N checks/s, ETA ...; F failed: Type n, ...``."""
        if self.targets is None:
            text = f"run {self.run}: {self.done:,} checked (the producer is still reading)"
        else:
            share = self.done / self.targets if self.targets else 1.0
            text = f"run {self.run}: {self.done:,}/{self.targets:,} checked ({share:.1%})"
        if self.checks_per_second is not None:
            text += f", {self.checks_per_second:,.0f} checks/s"
        if self.complete:
            text += f", done in {_duration(self.elapsed)}"
        elif self.eta is not None:
            text += f", ETA {_duration(self.eta)}"
        if self.failures:
            kinds = ", ".join(f"{kind} {count:,}" for kind, count in sorted(self.failures.items()))
            text += f"; {self.failed:,} failed: {kinds}"
        return text


async def read_progress(pool: Any, run: str, where: str) -> Progress:
    """The progress of ``run``, in one round trip to the Redis at ``where`` (an ArqRedis).

    Raises:
        SweepError: no such run in Redis.
    """
    keys = RunKeys.of(run)
    async with pool.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.meta)
        pipe.hlen(keys.results)
        pipe.hvals(keys.chunks)
        pipe.time()
        meta, done, summaries, (seconds, micros) = await pipe.execute()
    if not meta:
        raise SweepError(
            f"no run {run} in Redis at {where}: never enqueued, expired, or lost "
            "when Redis restarted without persistence (enqueue it again)"
        )
    fields = {key.decode(): value.decode() for key, value in meta.items()}
    failures: collections.Counter[str] = collections.Counter()
    for summary in summaries:
        failures.update(json.loads(summary)["failures"])
    elapsed = max(int(seconds) + int(micros) / 1e6 - float(fields["started"]), 0.0)
    return Progress(
        run=run,
        targets=int(fields["targets"]) if "targets" in fields else None,
        done=int(done),
        failures=dict(failures),
        chunks=int(fields["chunks"]) if "chunks" in fields else None,
        chunks_done=len(summaries),
        elapsed=elapsed,
        checks_per_second=done / elapsed if done and elapsed > 0 else None,
    )
