"""Bulk balance checks: many targets, a bounded number in flight, results streamed.

It only orchestrates: it takes the function that checks one target (the
session's), so requests, retries, rate limits and errors are the session's own.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from typing import Final

import attrs

from ._checks import check_api_key, check_optional_header_value, check_type
from ._errors import StabilityError
from ._models import Balance
from ._secrets import mask_secret

__all__ = ["BalanceResult", "BalanceTarget", "CheckBalance", "TargetLike", "check_balances"]


def _mask_optional(key: str | None) -> str:
    return "None" if key is None else repr(mask_secret(key))


def _api_key(_: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None:
        check_api_key(value, name="BalanceTarget.api_key")


def _organization(_: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    check_optional_header_value("BalanceTarget.organization", value)


def _label(_: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None:
        check_type("BalanceTarget.label", value, str)


@attrs.frozen
class BalanceTarget:
    """One balance to check in a bulk run.

    Its fields are checked when it is built, so a bad target fails where it is
    made (naming the field, never echoing a key), not deep inside a run.

    Attributes:
        api_key: the key to check with; ``None`` uses the session's key. Masked in the ``repr``.
        organization: the organization whose balance to read; ``None`` for the key's default.
        label: a name for reports (e.g. the customer the key belongs to).

    Raises:
        TypeError: a field that is not a string (or ``None``).
        ValueError: an empty key, or a key or organization with CR, LF or NUL.
    """

    api_key: str | None = attrs.field(default=None, repr=_mask_optional, validator=_api_key)
    organization: str | None = attrs.field(default=None, validator=_organization)
    label: str | None = attrs.field(default=None, validator=_label)

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


_INVALID: Final = BalanceTarget(label="(invalid target)")
"""The target of the result of a ``str`` that cannot be one."""


def _as_target(item: TargetLike) -> BalanceTarget:
    """The target an item stands for.

    Raises:
        ValueError: a plain ``str`` that cannot be an ``Organization`` header (CR,
            LF, NUL): one target's failure, reported in its result.
        TypeError: an item of another type: a programming error, which stops the run.
    """
    if isinstance(item, BalanceTarget):
        return item
    if isinstance(item, str):
        return BalanceTarget(organization=item)
    raise TypeError(f"a bulk target must be a BalanceTarget or str, got {type(item).__name__}")


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

    def next_sync(self) -> tuple[int, TargetLike] | None:
        """The next target of a sync iterable and its position, or ``None`` at the end."""
        assert self._sync is not None  # noqa: S101 - callers check is_sync
        return self._number(next(self._sync, _END))

    async def next(self) -> tuple[int, TargetLike] | None:
        """The next target of an async iterable and its position, or ``None`` at the end."""
        assert self._async is not None  # noqa: S101 - callers check is_sync
        async with self._lock:
            return self._number(await anext(self._async, _END))

    def _number(self, item: object) -> tuple[int, TargetLike] | None:
        if item is _END:
            return None
        index = self.count
        self.count += 1
        return index, item  # type: ignore[return-value]

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


CheckBalance = Callable[[BalanceTarget], Awaitable[Balance]]
"""Reads one target's balance, or raises the typed error of its failure."""


async def _worker(source: _Targets, check: CheckBalance, mailbox: _Mailbox) -> None:
    """Check targets one after another until there are none, posting each result."""
    try:
        while True:
            if mailbox.outstanding >= mailbox.limit:
                await mailbox.wait_for_room()
            mailbox.outstanding += 1
            taken = source.next_sync() if source.is_sync else await source.next()
            if taken is None:
                return
            index, item = taken
            target = _INVALID
            try:
                target = _as_target(item)
                balance = await check(target)
            except (StabilityError, ValueError) as exc:
                mailbox.put(BalanceResult(target, index, error=exc))
            else:
                mailbox.put(BalanceResult(target, index, balance=balance))
    except Exception as exc:  # noqa: BLE001 - handed to the consumer, who raises it
        mailbox.put(exc)
    finally:
        mailbox.put(None)  # this worker is finished


async def check_balances(
    check: CheckBalance,
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
    mailbox = _Mailbox((4 if ordered else 2) * concurrency)

    workers = [asyncio.ensure_future(_worker(source, check, mailbox)) for _ in range(concurrency)]
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
