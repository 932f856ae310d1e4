"""Targets named by label: the producer streams the labels, a worker looks the targets up."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs

from stability_user import BalanceTarget

from ._source import digest

__all__ = ["Lookup", "TargetLookup"]

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
    return {"labels": labels, "digest": digest("\n".join(labels).encode())}


async def _each(items: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
