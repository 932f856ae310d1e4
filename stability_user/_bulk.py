"""Bulk balance checks and balance watching, built on the session's calls.

Both only orchestrate: requests, retries and errors are the session's own.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Final, Literal

import attrs

from ._errors import StabilityError
from ._http import mask_secret
from ._models import Balance

if TYPE_CHECKING:
    from ._session import StabilitySession

__all__ = ["BalanceReading", "BalanceResult", "BalanceTarget", "TargetLike", "check_balances"]


def _mask_optional(key: str | None) -> str:
    return "None" if key is None else repr(mask_secret(key))


@attrs.frozen
class BalanceTarget:
    """One balance to check in a bulk run.

    Attributes:
        api_key: the key to check with; ``None`` uses the session's key. Masked in the ``repr``.
        organization: the organization whose balance to read; ``None`` for the key's default.
        label: a name for reports (e.g. the customer the key belongs to).
    """

    api_key: str | None = attrs.field(default=None, repr=_mask_optional)
    organization: str | None = None
    label: str | None = None

    @property
    def display_name(self) -> str:
        """The label, else the masked key and organization: safe to print."""
        if self.label:
            return self.label
        parts = [mask_secret(self.api_key)] if self.api_key else []
        if self.organization:
            parts.append(self.organization)
        return " ".join(parts) or "(session key)"


TargetLike = BalanceTarget | str
"""A target, or a plain ``str``: an organization under the session's key."""


@attrs.frozen
class BalanceResult:
    """The outcome of one target of a bulk run.

    Attributes:
        target: the target checked.
        index: its position in the input, from 0.
        balance: the balance read, or ``None`` when the check failed.
        error: why the check failed (a :class:`StabilityError`, or ``ValueError`` for a
            target that could not be sent), or ``None``.
    """

    target: BalanceTarget
    index: int
    balance: Balance | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """Whether the balance was read."""
        return self.error is None


@attrs.frozen
class BalanceReading:
    """One poll of :meth:`StabilitySession.watch_balance`.

    Attributes:
        balance: the balance read, or ``None`` when this poll failed.
        error: why the poll failed, or ``None``.
        below: whether the balance is below the threshold (``None``: no threshold,
            or the poll failed).
        crossing: ``"below"`` when this reading first fell below the threshold,
            ``"recovered"`` when it first came back to or above it, else ``None``.
        time: the session clock's reading when the poll finished.
    """

    balance: Balance | None
    error: Exception | None
    below: bool | None
    crossing: Literal["below", "recovered"] | None
    time: float

    @property
    def ok(self) -> bool:
        """Whether the poll read a balance."""
        return self.error is None


def _as_target(item: TargetLike) -> BalanceTarget:
    if isinstance(item, BalanceTarget):
        return item
    if isinstance(item, str):
        return BalanceTarget(organization=item)
    raise TypeError(f"a bulk target must be a BalanceTarget or str, got {type(item).__name__}")


class _Views:
    """A small cache of per-key views, so a key's headers are built once per run."""

    __slots__ = ("_base", "_cache", "_size")

    def __init__(self, base: StabilitySession, size: int) -> None:
        self._base = base
        self._cache: dict[str, StabilitySession] = {}
        self._size = size

    def get(self, api_key: str | None) -> StabilitySession:
        if api_key is None:
            return self._base
        view = self._cache.get(api_key)
        if view is None:
            if len(self._cache) >= self._size:
                del self._cache[next(iter(self._cache))]  # oldest first: bounded memory
            view = self._cache[api_key] = self._base.with_options(api_key=api_key)
        return view


class _Targets:
    """Hands out targets with their input positions to any number of workers.

    A sync iterable is read with ``next()``, which cannot interleave in one event
    loop; an async one is read under a lock, since an async generator refuses a
    second ``anext`` while the first is pending.
    """

    __slots__ = ("_async", "_lock", "_sync", "count")

    def __init__(self, targets: Iterable[TargetLike] | AsyncIterable[TargetLike]) -> None:
        self.count = 0
        self._sync: Iterator[TargetLike] | None = None
        self._async: AsyncIterator[TargetLike] | None = None
        if isinstance(targets, AsyncIterable):
            self._async = aiter(targets)
        else:
            self._sync = iter(targets)
        self._lock = asyncio.Lock()

    @property
    def is_sync(self) -> bool:
        """Whether :meth:`next_sync` may be used (no await needed per target)."""
        return self._sync is not None

    def next_sync(self) -> tuple[int, BalanceTarget] | None:
        """The next target of a sync iterable and its position, or ``None`` at the end."""
        assert self._sync is not None  # noqa: S101 - callers check is_sync
        return self._number(next(self._sync, _END))

    async def next(self) -> tuple[int, BalanceTarget] | None:
        """The next target of an async iterable and its position, or ``None`` at the end."""
        assert self._async is not None  # noqa: S101 - callers check is_sync
        async with self._lock:
            return self._number(await anext(self._async, _END))

    def _number(self, item: object) -> tuple[int, BalanceTarget] | None:
        if item is _END:
            return None
        index = self.count
        self.count += 1
        return index, _as_target(item)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        close = getattr(self._async, "aclose", None)
        if close is not None:
            await close()


_END: Final = object()


class _Mailbox:
    """Results on their way from the workers to the consumer, with backpressure.

    Workers wait for room while ``limit`` results are taken but not yet yielded,
    so a slow consumer (or, in order, a slow target holding back the ones after
    it) bounds the memory of the run. Hand-rolled rather than an asyncio.Queue and
    Semaphore: it is on the path of every target, and this costs a fraction.
    """

    __slots__ = ("_changed", "_room", "items", "limit", "outstanding")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.outstanding = 0  # targets taken whose results are not yet yielded
        self.items: collections.deque[BalanceResult | BaseException | None] = collections.deque()
        self._changed: asyncio.Event | None = None  # the consumer waits for items
        self._room: asyncio.Event | None = None  # workers wait for room

    async def wait_for_room(self) -> None:
        """Wait until one more target may be taken (check ``full`` first: it is cheaper)."""
        while self.outstanding >= self.limit:
            if self._room is None:
                self._room = asyncio.Event()
            await self._room.wait()

    def done(self) -> None:
        """A result was yielded: make room for one more target."""
        self.outstanding -= 1
        if self._room is not None:
            self._room.set()
            self._room = None

    def put(self, item: BalanceResult | BaseException | None) -> None:
        self.items.append(item)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait(self) -> None:
        """Wait until there is at least one item."""
        while not self.items:
            self._changed = asyncio.Event()
            await self._changed.wait()


async def _worker(source: _Targets, views: _Views, mailbox: _Mailbox) -> None:
    """Check targets one after another until there are none, posting each result."""
    try:
        while True:
            if mailbox.outstanding >= mailbox.limit:
                await mailbox.wait_for_room()
            mailbox.outstanding += 1
            taken = source.next_sync() if source.is_sync else await source.next()
            if taken is None:
                return
            index, target = taken
            try:
                view = views.get(target.api_key)
                balance = await view.balance(organization=target.organization)
            except (StabilityError, ValueError) as exc:
                mailbox.put(BalanceResult(target, index, error=exc))
            else:
                mailbox.put(BalanceResult(target, index, balance=balance))
    except Exception as exc:  # noqa: BLE001 - handed to the consumer, who raises it
        mailbox.put(exc)
    finally:
        mailbox.put(None)  # this worker is finished


async def check_balances(
    base: StabilitySession,
    targets: Iterable[TargetLike] | AsyncIterable[TargetLike],
    *,
    concurrency: int,
    ordered: bool,
) -> AsyncGenerator[BalanceResult, None]:
    """Check ``targets``, ``concurrency`` at a time (see ``StabilitySession.balances``).

    ``concurrency`` workers each take the next target, check it and post the
    result; the generator yields what they post. A worker takes a target only
    when it is free and the mailbox has room, so the targets are read no faster
    than they are checked and consumed.
    """
    source = _Targets(targets)
    views = _Views(base, size=max(4096, 4 * concurrency))
    mailbox = _Mailbox((4 if ordered else 2) * concurrency)

    workers = [asyncio.ensure_future(_worker(source, views, mailbox)) for _ in range(concurrency)]
    waiting: dict[int, BalanceResult] = {}
    next_out = 0
    running = concurrency
    items = mailbox.items
    try:
        while running:
            await mailbox.wait()
            while items:
                result = items.popleft()
                if result is None:
                    running -= 1
                elif isinstance(result, BaseException):
                    raise result
                elif not ordered:
                    yield result
                    mailbox.done()
                else:
                    waiting[result.index] = result
                    while next_out in waiting:
                        yield waiting.pop(next_out)
                        next_out += 1
                        mailbox.done()
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await source.aclose()
