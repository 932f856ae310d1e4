"""Bulk balance checks and balance watching, built on the session's calls.

Both only orchestrate: requests, retries and errors are the session's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Literal

import attrs

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


async def _aiter_sync(items: Iterator[TargetLike]) -> AsyncIterator[TargetLike]:
    for item in items:
        yield item


def _source(targets: Iterable[TargetLike] | AsyncIterable[TargetLike]) -> AsyncIterator[TargetLike]:
    if isinstance(targets, AsyncIterable):
        return aiter(targets)
    return _aiter_sync(iter(targets))


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


async def _check(views: _Views, index: int, target: BalanceTarget) -> BalanceResult:
    from ._errors import StabilityError  # noqa: PLC0415 - avoids an import cycle at load

    try:
        balance = await views.get(target.api_key).balance(organization=target.organization)
    except (StabilityError, ValueError) as exc:
        return BalanceResult(target, index, error=exc)
    return BalanceResult(target, index, balance=balance)


async def check_balances(
    base: StabilitySession,
    targets: Iterable[TargetLike] | AsyncIterable[TargetLike],
    *,
    concurrency: int,
    ordered: bool,
) -> AsyncGenerator[BalanceResult, None]:
    """Check ``targets``, ``concurrency`` at a time (see ``StabilitySession.balances``)."""
    source = _source(targets)
    views = _Views(base, size=max(256, 4 * concurrency))
    # In order, a slow target holds back the ones after it: bound what waits behind it.
    max_ahead = 4 * concurrency
    pending: set[asyncio.Task[BalanceResult]] = set()
    waiting: dict[int, BalanceResult] = {}
    started = 0
    next_out = 0
    exhausted = False
    try:
        while True:
            while (
                not exhausted
                and len(pending) < concurrency
                and (not ordered or started - next_out < max_ahead)
            ):
                try:
                    item = await anext(source)
                except StopAsyncIteration:
                    exhausted = True
                    break
                pending.add(asyncio.ensure_future(_check(views, started, _as_target(item))))
                started += 1
            if not pending:
                return
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                result = task.result()
                if not ordered:
                    yield result
                else:
                    waiting[result.index] = result
            while next_out in waiting:
                yield waiting.pop(next_out)
                next_out += 1
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
