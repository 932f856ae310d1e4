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

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import io
import json
import os
import re
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Mapping,
)
from typing import Any, Final, Protocol

import attrs

from stability_user import (
    BalanceResult,
    BalanceTarget,
    RedisRateLimitStore,
    StabilitySession,
    TargetFileError,
    read_targets,
)

try:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.constants import job_key_prefix, result_key_prefix
    from arq.worker import Retry, func
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "stability_user.fleet needs arq and redis-py: pip install 'stability-user[fleet]'"
    ) from exc

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

QUEUE_NAME: Final = "arq:queue:stability-user-fleet"
"""The arq queue of a sweep's jobs: its own, so other jobs and their workers never mix in."""

CHECK_CHUNK: Final = "stability_user_check_chunk"
"""The name of the arq function that checks one chunk."""

_PREFIX: Final = "stability-user:fleet"
_RUN_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
_SESSION: Final = "stability_user_fleet"
_MAX_MESSAGE: Final = 300  # characters of an error's message kept with its result
_UNKNOWN_LABEL: Final = "UnknownLabel"
# The header a chunk of a file without one is read under: the chunk's first line is a
# target, as it was in the whole file, never taken for a header.
_HEADER: Final = b"api_key,organization,label\n"
_REDIS_RETRY: Final = 5.0  # seconds before arq runs a chunk again after a Redis error
# arq's own timeout comes this long after the sweep's: a chunk out of time is retried by
# the sweep (arq would fail it for good). arq leases a running job for its timeout + 10 s.
_DEADLINE_MARGIN: Final = 5.0


class SweepError(Exception):
    """A sweep cannot go on as asked; the message says why and what to do."""


def _check_run(run: object) -> str:
    if not isinstance(run, str) or not _RUN_ID.fullmatch(run):
        raise ValueError(
            "a run is named by 1 to 100 letters, digits and . _ : - (starting with a "
            f"letter or digit), not {run!r}"
        )
    return run


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int of at least 1, not {value!r}")
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e9:
        raise ValueError(f"{name} must be a number of seconds above 0, not {value!r}")
    return float(value)


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


@attrs.frozen
class _Keys:
    """The Redis keys of one run."""

    meta: str
    results: str
    chunks: str

    @classmethod
    def of(cls, run: str) -> _Keys:
        base = f"{_PREFIX}:{run}"
        return cls(f"{base}:meta", f"{base}:results", f"{base}:chunks")


class TargetSource(Protocol):
    """Where a sweep's targets come from: chunks for the producer, targets for a worker.

    :class:`TargetFile` and :class:`TargetLookup` are the two kinds; a chunk's
    description (``ref``) is stored in Redis with its job, so it never holds a key.
    """

    def describe(self) -> str:
        """What the targets are, for messages."""

    def chunks(self, size: int) -> AsyncIterator[tuple[dict[str, Any], int]]:
        """Each chunk's description and its number of targets, read as a stream."""

    async def load(self, ref: Mapping[str, Any]) -> tuple[list[BalanceTarget], list[str]]:
        """A chunk's targets, and the labels of the chunk that have no target."""


def _path(path: str | os.PathLike[str]) -> str:
    return os.fspath(path)


class _Lines:
    """The lines of a binary file, noting where the line handed out last starts and ends."""

    def __init__(self, file: io.BufferedReader) -> None:
        self._file = file
        self.start = self.end = 0
        self.number = 0
        self.first_content: tuple[int, int, int] | None = None  # start, end, line number

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> bytes:
        line = self._file.readline()
        if not line:
            raise StopIteration
        self.start, self.end = self.end, self.end + len(line)
        self.number += 1
        if self.first_content is None:
            # Blank and comment lines as read_targets sees them: the first other line
            # is a header or the first target.
            text = line.decode("utf-8", "replace").lstrip("\ufeff").strip()
            if text and not text.startswith("#"):
                self.first_content = (self.start, self.end, self.number)
        return line


@attrs.frozen
class TargetFile:
    """Targets in a file of the format ``stability-user balances`` reads, every one labelled.

    A chunk is a byte range of the file (and its header line, if it has one): each
    worker reads the range from its own copy at ``path`` and checks it against the
    digest the producer took, so jobs never carry a key and a changed file is found
    out instead of checked. See :func:`~stability_user.read_targets` for the format.

    Attributes:
        path: the file; the same path on every machine running workers.
    """

    path: str = attrs.field(converter=_path)

    def describe(self) -> str:
        """The file's path."""
        return self.path

    async def chunks(self, size: int) -> AsyncIterator[tuple[dict[str, Any], int]]:
        """Each chunk's byte range, digest and number of targets, from one pass over the file.

        Raises:
            TargetFileError: a line that is not a target, or a target without a label.
            OSError: the file cannot be read.
        """
        scan = self._scan(size)
        try:
            while True:
                # In a thread: a million lines take seconds to read and parse.
                chunk = await asyncio.to_thread(next, scan, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            scan.close()

    def _scan(self, size: int) -> Generator[tuple[dict[str, Any], int], None, None]:
        with open(self.path, "rb") as file:
            lines = _Lines(file)
            header: tuple[int, int] | None = None
            start = count = 0
            first = True
            for target in read_targets(lines, name=self.path):
                if target.label is None:
                    raise TargetFileError(
                        self.path, lines.number, "no label: a sweep keys its results by label"
                    )
                if first:
                    first = False
                    content = lines.first_content
                    if content is not None and content[0] != lines.start:
                        header = content[:2]  # a header line came before the first target
                    start = lines.start  # no BOM, no comment: the targets only
                count += 1
                if count == size:
                    yield self._chunk(file, header, start, lines.end, count), count
                    start, count = lines.end, 0
            if count:
                yield self._chunk(file, header, start, lines.end, count), count

    def _chunk(
        self,
        file: io.BufferedReader,
        header: tuple[int, int] | None,
        start: int,
        end: int,
        count: int,
    ) -> dict[str, Any]:
        position = file.tell()
        head = _read(file, header) if header else _HEADER
        body = _read(file, (start, end))
        file.seek(position)
        return {
            "header": list(header) if header else None,
            "start": start,
            "end": end,
            "count": count,
            "digest": _digest(head, body),
        }

    async def load(self, ref: Mapping[str, Any]) -> tuple[list[BalanceTarget], list[str]]:
        """The chunk's targets, read from this machine's copy of the file.

        Raises:
            SweepError: the bytes differ from what the producer read (the file changed).
        """
        return await asyncio.to_thread(self._load, ref), []

    def _load(self, ref: Mapping[str, Any]) -> list[BalanceTarget]:
        header = ref["header"]
        with open(self.path, "rb") as file:
            head = _read(file, header) if header else _HEADER
            body = _read(file, (ref["start"], ref["end"]))
        if _digest(head, body) != ref["digest"]:
            raise SweepError(
                f"{self.path} is not the file this run was enqueued from (bytes "
                f"{ref['start']} to {ref['end']} differ): enqueue a new run"
            )
        targets = list(read_targets([head, *io.BytesIO(body)], name=self.path))
        if len(targets) != ref["count"]:  # pragma: no cover - the digest matched
            raise SweepError(f"{self.path}: bytes {ref['start']} to {ref['end']} changed meaning")
        return targets


def _read(file: io.BufferedReader, span: Iterable[int]) -> bytes:
    start, end = span
    file.seek(start)
    return file.read(end - start)


Lookup = Callable[[list[str]], Awaitable[Iterable[BalanceTarget]]]
"""Turns a chunk's labels into their targets (keys included), e.g. with a database query."""


@attrs.frozen
class TargetLookup:
    """Targets named by label: the producer streams the labels, a worker looks them up.

    For targets kept in a database: the producer side reads the labels (customer IDs,
    say) from any iterable or async iterable, and jobs carry the labels only; a worker
    asks ``lookup`` for a chunk's targets, keys included, when it checks the chunk.
    A label the lookup returns no target for gets an ``UnknownLabel`` result.

    Attributes:
        labels: returns the labels of a run, in a stable order (called by the producer).
        lookup: returns the targets of a list of labels (called by workers); a target
            counts for the label it carries.
    """

    labels: Callable[[], Iterable[str] | AsyncIterable[str]]
    lookup: Lookup

    def describe(self) -> str:
        """The lookup's name."""
        return f"labels looked up by {getattr(self.lookup, '__qualname__', 'a lookup')}"

    async def chunks(self, size: int) -> AsyncIterator[tuple[dict[str, Any], int]]:
        """Chunks of ``size`` labels, as they come.

        Raises:
            ValueError: a label that is not a non-empty string.
        """
        chunk: list[str] = []
        async for label in _each(self.labels()):
            if not isinstance(label, str) or not label:  # type: ignore[redundant-expr]
                raise ValueError(f"a label is a non-empty str, not {label!r}")
            chunk.append(label)
            if len(chunk) == size:
                yield _labels_ref(chunk), size
                chunk = []
        if chunk:
            yield _labels_ref(chunk), len(chunk)

    async def load(self, ref: Mapping[str, Any]) -> tuple[list[BalanceTarget], list[str]]:
        """The targets of the chunk's labels, in its order, and the labels without one."""
        labels: list[str] = list(ref["labels"])
        found = {target.label: target for target in await self.lookup(labels)}
        targets = [found[label] for label in labels if label in found]
        return targets, [label for label in labels if label not in found]


def _labels_ref(labels: list[str]) -> dict[str, Any]:
    return {"labels": labels, "digest": _digest("\n".join(labels).encode())}


async def _each(items: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


@attrs.frozen
class StoredResult:
    """The result of one target of a run, as stored: a balance, or why there is none.

    Attributes:
        label: the target's label.
        credits: the balance read, or ``None`` when the check failed.
        error: the failure's type (``AuthenticationError``, ``APIConnectionError``...,
            ``UnknownLabel`` for a label a lookup did not find), or ``None``.
        message: the failure's message (never holding a key), or ``None``.
        status: the HTTP status of a failure the service answered, or ``None``.
    """

    label: str
    credits: float | None = None
    error: str | None = None
    message: str | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the balance was read."""
        return self.error is None

    @classmethod
    def parse(cls, label: str, value: str | bytes) -> StoredResult:
        """The result stored for ``label``: the hash field's value."""
        fields = json.loads(value)
        return cls(
            label,
            credits=fields.get("credits"),
            error=fields.get("error"),
            message=fields.get("message"),
            status=fields.get("status"),
        )


def _stored(result: BalanceResult) -> str:
    error = result.error
    if error is None:
        assert result.balance is not None  # noqa: S101 - a result without an error has one
        fields: dict[str, Any] = {"credits": result.balance.credits}
    else:
        # str() of the library's errors never holds a key; capped, since it comes
        # from the server.
        fields = {"error": type(error).__name__, "message": str(error)[:_MAX_MESSAGE]}
        status = getattr(error, "status", None)
        if isinstance(status, int):
            fields["status"] = status
    return json.dumps(fields, separators=(",", ":"))


_UNKNOWN: Final = json.dumps(
    {"error": _UNKNOWN_LABEL, "message": "the lookup returned no target for this label"},
    separators=(",", ":"),
)


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


SessionFactory = Callable[[RedisRateLimitStore], StabilitySession]
"""Makes a worker's session, given the fleet's rate-limit store to pass as ``rate_limit_store``."""


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
        store = RedisRateLimitStore(url=self._redis_url)
        try:
            session = self.session(store)
        except BaseException:
            await store.aclose()
            raise
        ctx[_SESSION] = (session, store)

    async def shutdown(self, ctx: dict[str, Any]) -> None:
        """The workers' ``on_shutdown``: close the process's session and store."""
        held = ctx.pop(_SESSION, None)
        if held is not None:
            session, store = held
            await session.close()
            await store.aclose()

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
        redis: Any = ctx["redis"]  # an ArqRedis; redis-py's types do not say it awaits
        keys = _Keys.of(run)
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
        self, ctx: dict[str, Any], redis: Any, keys: _Keys, number: int, ref: dict[str, Any]
    ) -> dict[str, Any]:
        started = time.monotonic()
        session: StabilitySession = ctx[_SESSION][0]
        targets, unknown = await self.targets.load(ref)
        failures: collections.Counter[str] = collections.Counter()
        pending: dict[str, str] = dict.fromkeys(unknown, _UNKNOWN)
        failures[_UNKNOWN_LABEL] += len(unknown)
        attempt = int(ctx.get("job_try") or 1)
        if attempt > 1 and targets:
            # Run again: the targets whose results are in keep them, and count.
            labels = [target.label for target in targets]
            stored = await redis.hmget(keys.results, labels)
            for label, value in zip(labels, stored, strict=True):
                if value is not None:
                    kept = StoredResult.parse(label or "", value)
                    if kept.error is not None:
                        failures[kept.error] += 1
            targets = [t for t, value in zip(targets, stored, strict=True) if value is None]
        async with contextlib.aclosing(
            session.balances(targets, concurrency=self.concurrency)
        ) as results:
            async for result in results:
                pending[result.target.label or ""] = _stored(result)
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
        keys: _Keys,
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

    # -- the producer ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _pool(self) -> AsyncIterator[Any]:  # an ArqRedis, see check_chunk
        settings = self.redis_settings()
        settings.conn_retries = 0  # a producer run by hand says at once that Redis is away
        try:
            pool = await create_pool(settings)
        except (RedisError, OSError, asyncio.TimeoutError) as error:
            raise SweepError(
                f"cannot reach Redis at {self.where} ({type(error).__name__})"
            ) from None
        try:
            yield pool
        except RedisError as error:
            # Whatever was done is in Redis: running the same call again goes on from there.
            raise SweepError(
                f"lost Redis at {self.where} ({type(error).__name__}): once it is back, "
                "run this again"
            ) from None
        finally:
            await pool.aclose()

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
        run = _check_run(run)
        keys = _Keys.of(run)
        ttl = int(self.keep_for)
        async with self._pool() as pool:
            now = await _server_time(pool)
            async with pool.pipeline(transaction=False) as pipe:
                pipe.hsetnx(keys.meta, "started", repr(now))
                pipe.hset(keys.meta, mapping={"chunk_size": self.chunk_size})
                pipe.hdel(keys.meta, "targets", "chunks")  # counted again below
                pipe.expire(keys.meta, ttl)
                await pipe.execute()
            targets = chunks = enqueued = done = pending = 0
            async for ref, count in self.targets.chunks(self.chunk_size):
                number = chunks
                chunks += 1
                targets += count
                summary = await pool.hget(keys.chunks, str(number))
                if summary is not None:
                    if json.loads(summary)["digest"] != ref["digest"]:
                        raise SweepError(
                            f"chunk {number} of run {run} was enqueued from other targets "
                            f"than {self.targets.describe()} holds now: enqueue a new run"
                        )
                    done += 1
                elif await self._enqueue_chunk(pool, run, number, ref):
                    enqueued += 1
                else:
                    pending += 1
            async with pool.pipeline(transaction=False) as pipe:
                pipe.hset(keys.meta, mapping={"targets": targets, "chunks": chunks})
                pipe.expire(keys.meta, ttl)
                await pipe.execute()
        return Enqueued(run, targets, chunks, enqueued, done, pending)

    async def _enqueue_chunk(self, pool: Any, run: str, number: int, ref: dict[str, Any]) -> bool:
        """Enqueue one chunk under its own job id; ``False`` when it is queued or running."""
        job_id = f"{_PREFIX}:{run}:{number}"
        for _ in range(2):
            job = await pool.enqueue_job(
                CHECK_CHUNK, run, number, ref, _job_id=job_id, _queue_name=self.queue_name
            )
            if job is not None:
                return True
            if await pool.exists(job_key_prefix + job_id):
                return False  # queued or running: it will be done
            # Not done, not queued: arq kept the result of a run that failed for good
            # (with a keep_result of its own). Forget it and enqueue the chunk again.
            await pool.delete(result_key_prefix + job_id)
        return False  # pragma: no cover - enqueued by another producer meanwhile

    async def progress(self, run: str) -> Progress:
        """How far ``run`` is, read from Redis; the rate is the average since it started.

        Raises:
            SweepError: no such run in Redis (never enqueued, expired, or lost with a
                Redis that restarted without persistence), or Redis cannot be reached.
        """
        run = _check_run(run)
        async with self._pool() as pool:
            return await self._progress(pool, run)

    async def _progress(self, pool: Any, run: str) -> Progress:
        keys = _Keys.of(run)
        async with pool.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.meta)
            pipe.hlen(keys.results)
            pipe.hvals(keys.chunks)
            pipe.time()
            meta, done, summaries, (seconds, micros) = await pipe.execute()
        if not meta:
            raise SweepError(
                f"no run {run} in Redis at {self.where}: never enqueued, expired, or lost "
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
        run = _check_run(run)
        interval = _seconds("interval", interval)
        samples: collections.deque[tuple[float, int]] = collections.deque()
        async with self._pool() as pool:
            while True:
                progress = await self._progress(pool, run)
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
        run = _check_run(run)
        async with self._pool() as pool:
            async for label, value in pool.hscan_iter(_Keys.of(run).results, count=1000):
                yield StoredResult.parse(label.decode(), value)


async def _server_time(pool: Any) -> float:
    seconds, micros = await pool.time()
    return int(seconds) + int(micros) / 1e6
