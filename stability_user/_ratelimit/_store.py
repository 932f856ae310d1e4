"""What a store of the limiter's state must do: the protocol, written once.

Every store (in-process, machine-wide, fleet-wide, or one of yours) implements
:class:`RateLimitStore`. A store that can answer without awaiting anything also
offers the two methods of :class:`ImmediateStore`, and the limiter then costs a
request no coroutine and no round trip of its own.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._limit import RateLimit, Wait

__all__ = ["ImmediateStore", "RateLimitStore"]


class RateLimitStore(Protocol):
    """Where the limiter's state is kept; every method is atomic for its key.

    Keys are given as key ids (a hash of the service and the API key), never in clear.
    """

    async def acquire(self, key_id: str, limit: RateLimit, lease: float) -> int | str | Wait:
        """Take a slot now and return its token, or say how long until one may be free.

        ``lease`` is the longest the request may be in flight: a slot never released
        is freed ``lease + window`` seconds after it was taken.
        """

    async def release(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        """The request of ``token`` completed now: hold its slot ``window`` seconds more.

        A store may apply it later (with its next operation), never with a later
        completion time than now: a slot is then held longer, never shorter.
        """

    async def lock(self, key_id: str, seconds: float) -> bool:
        """Lock the key out for ``seconds``; ``True`` when it was not locked before."""

    async def aclose(self) -> None:
        """Give back what the store holds (connections, files), its pending releases applied."""


@runtime_checkable
class ImmediateStore(Protocol):
    """A store that can take and give back slots without awaiting (the limiter's fast path)."""

    def acquire_nowait(
        self, key_id: str, limit: RateLimit, lease: float
    ) -> int | str | Wait | None:
        """:meth:`RateLimitStore.acquire` at once; ``None``: it cannot now, await ``acquire``."""

    def release_nowait(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        """:meth:`RateLimitStore.release` at once (or queued, to be applied without a wait)."""
