"""What a shared store of readings must do: the protocol, written once.

A fleet shares readings through it, and takes turns reading an entry: among the
processes that share a store, at most one reads a given entry at a time, holding
its *lease*; the others wait for that reading. The holder renews its lease while
its read lasts; a lease expires by itself, so a holder that crashed blocks nobody
for long. Entries are named by a hash of the
service, the key and the read (:func:`entry_name`), never by the key itself, and a
stored reading expires by itself too.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import attrs

__all__ = ["Begun", "ReadingStore", "entry_name"]


def entry_name(key: tuple[str, str, str, str, str | None]) -> tuple[str, str]:
    """``(key id, name)`` of an entry in a shared store: hashes, never the key in clear."""
    key_id, base_url, version, endpoint, organization = key
    material = "\0".join((key_id, base_url, version, endpoint, organization or "")).encode()
    return key_id, hashlib.sha256(b"stability-user read\0" + material).hexdigest()[:32]


@attrs.frozen
class Begun:
    """What the store says when a process is about to read an entry.

    Attributes:
        body: the stored reading (the service's JSON), or ``None``.
        age: its age in seconds, on the store's clock; ``None`` without one.
        granted: whether this process holds the lease now, and should read.
        corrupt: whether the store dropped state that cannot be (a WARNING is due).
    """

    body: str | None
    age: float | None
    granted: bool
    corrupt: bool = False


class ReadingStore(Protocol):
    """Where a fleet keeps its readings; every method is atomic for its entry."""

    async def begin(
        self, key_id: str, name: str, *, max_age: float, lease: float, token: str
    ) -> Begun:
        """The stored reading if it is no older than ``max_age``; else the lease if free.

        Without a fresh reading, the lease is granted to ``token`` for ``lease``
        seconds when nobody holds it; any older reading is still returned, for an
        answer the policy allows while another process reads.
        """

    async def put(self, key_id: str, name: str, body: str, *, keep: float, token: str) -> None:
        """Store ``body`` as answered now, for ``keep`` seconds, and end ``token``'s lease."""

    async def renew(self, key_id: str, name: str, token: str, *, lease: float) -> bool:
        """Extend ``token``'s lease to ``lease`` seconds from now; ``False`` if it is not held.

        Optional: a store without it gives each read ``lease`` seconds at most.
        """

    async def end(self, key_id: str, name: str, token: str) -> None:
        """End ``token``'s lease without a reading (the read failed)."""

    async def aclose(self) -> None:
        """Give back what the store holds (connections, files)."""
