"""The emulator's request log: the latest requests, with the API key redacted, and a count."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from typing import Final

import attrs

__all__ = ["REDACTED", "RecordedRequest", "RequestLog", "redact_headers"]

REDACTED: Final = "[redacted]"
_SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization"})


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with the credentials replaced by ``[redacted]``."""
    return {
        name: REDACTED if name.lower() in _SECRET_HEADERS else value
        for name, value in headers.items()
    }


@attrs.define
class RecordedRequest:
    """A request the emulator received, with the API key redacted.

    Attributes:
        method: the HTTP method.
        path: the path, without the query.
        headers: the headers; ``Authorization`` shows ``[redacted]``.
        time: the emulator's clock when it arrived.
        account_id: the ID of the account the key belongs to, or ``None``.
        status: the status answered; ``None`` while in flight, or when the connection
            was dropped or reset.
        request_id: the ``x-request-id`` the emulator gave the request (and its answer).
    """

    method: str
    path: str
    headers: Mapping[str, str]
    time: float
    account_id: str | None
    status: int | None
    request_id: str | None = None


class RequestLog:
    """The last ``max_recorded`` requests, the number that arrived in all, and their statuses.

    Attributes:
        enabled: whether requests are kept; counting goes on either way.
    """

    def __init__(self, *, max_recorded: int, enabled: bool = True) -> None:
        """Keep at most ``max_recorded`` requests (a ring: the oldest make way)."""
        if isinstance(max_recorded, bool) or max_recorded < 0:
            raise ValueError(f"max_recorded must be an int of at least 0, not {max_recorded!r}")
        self.enabled = enabled
        self._max_recorded = max_recorded
        self._records: collections.deque[RecordedRequest] = collections.deque(maxlen=max_recorded)
        self._total = 0
        self._statuses: collections.Counter[int] = collections.Counter()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def max_recorded(self) -> int:
        """How many requests are kept at most."""
        return self._max_recorded

    @property
    def records(self) -> list[RecordedRequest]:
        """The kept requests, oldest first (a copy)."""
        return list(self._records)

    @property
    def total(self) -> int:
        """How many requests have arrived, kept or not."""
        return self._total

    @property
    def statuses(self) -> dict[int, int]:
        """How many answers of each status were sent, kept or not (a copy)."""
        return dict(self._statuses)

    def answered(self, status: int) -> None:
        """Count an answer of ``status``."""
        self._statuses[status] += 1

    def add(self, record: RecordedRequest) -> None:
        """Count a request that arrived, keep it if enabled, and wake whoever waits for it."""
        self._total += 1
        if self.enabled:
            self._records.append(record)
        if self._waiters:
            waiting = []
            for count, waiter in self._waiters:
                if count > self._total:
                    waiting.append((count, waiter))
                elif not waiter.done():
                    waiter.set_result(None)
            self._waiters = waiting

    async def wait_for(self, count: int) -> None:
        """Return once at least ``count`` requests have arrived in all."""
        if self._total >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (count, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        finally:
            # A cancelled wait must not stay behind in the list.
            if entry in self._waiters:
                self._waiters.remove(entry)
