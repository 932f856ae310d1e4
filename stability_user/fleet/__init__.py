"""Balance checks across an arq fleet: any number of targets, one result each, one limiter.

Needs the extra: ``pip install 'stability-user[fleet]'`` (arq and redis-py).

A :class:`Sweep` describes a recurring check of many targets: where Redis is, where
the targets come from, how big a chunk is. Each execution of it is a *run*, named
by the caller (a date, say). Three parts, each a few lines of the user's code::

    sweep = Sweep("redis://127.0.0.1:6379", TargetFile("keys.csv"))
    WorkerSettings = sweep.worker_settings()   # arq module.WorkerSettings, on each machine
    await sweep.enqueue("2026-12-07")           # the producer
    async for progress in sweep.watch("2026-12-07"):
        print(progress)

- The producer reads the targets as a stream and enqueues one arq job per chunk
  (1,000 targets by default), with a job id made of the run and the chunk's number,
  so enqueuing again never makes a second job for a chunk.
- Jobs carry where a chunk is, never an API key: a byte range of the target file
  (each worker reads its own copy, checked against a SHA-256 digest), or a list of
  labels that a lookup of the user's (a database query) turns into targets.
- Each worker checks its chunks with :meth:`StabilitySession.balances` through one
  :class:`~stability_user.RedisRateLimitStore` on the Redis arq uses, so the whole
  fleet stays under each key's limit together.
- Results go to a Redis hash per run, keyed by the target's label, in batches
  (250 results a write by default); the chunk's summary, written after its last
  batch, marks it done. A chunk arq runs again (its worker died, Redis failed, it ran
  out of time) checks only its targets without a result, and could only write the
  same fields again: never a second result for a target. Enqueuing a run again
  enqueues only the chunks that are neither done, queued nor running.

Why a Redis hash and not a callback into the user's database: it is on the Redis the
fleet already runs, a write keyed by target is idempotent by construction (no
upsert to get right), a chunk's results and its done mark live in one place, and the
progress of a run is read from the same place. :meth:`Sweep.results` streams a run's
results out to wherever they are needed afterwards.
"""

# Parts: _arq (the extra's libraries, imported once), _run (a run's name and keys, the
# queue, the error), _source (what a source of targets does), _target_file and
# _target_lookup (the two sources), _results (a result as stored), _progress (how far a
# run is), _producer (enqueuing a run), _worker (checking a chunk), _sweep (the Sweep).
from ._producer import Enqueued
from ._progress import Progress
from ._results import StoredResult
from ._run import CHECK_CHUNK, QUEUE_NAME, SweepError
from ._source import TargetSource
from ._sweep import Sweep
from ._target_file import TargetFile
from ._target_lookup import Lookup as Lookup  # an argument's type, named here as before
from ._target_lookup import TargetLookup
from ._worker import SessionFactory as SessionFactory  # the same

__all__ = [
    "CHECK_CHUNK",
    "QUEUE_NAME",
    "Enqueued",
    "Progress",
    "StoredResult",
    "Sweep",
    "SweepError",
    "TargetFile",
    "TargetLookup",
    "TargetSource",
]
