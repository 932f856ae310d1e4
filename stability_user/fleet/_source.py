"""Where a sweep's targets come from: what a source does, and the digest that pins a chunk."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from stability_user import BalanceTarget

__all__ = ["TargetSource", "digest"]


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


def digest(*parts: bytes) -> str:
    """The SHA-256 of ``parts`` one after the other, in hex: what a chunk was made of."""
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part)
    return sha.hexdigest()
