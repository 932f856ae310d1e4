"""The read cache of a session: one request for every concurrent caller of an entry.

A reading answers later calls for ``max_age`` seconds.

It sits on the call path above the retries and the rate limiter: a hit spends no
slot, passes no middleware, starts no retry loop. A miss starts one *flight*, a
task of its own that sends the request (retries, limiter and all); identical calls
join it meanwhile. A caller that leaves (cancelled, or past its deadline) leaves
the flight running for the others; the flight is cancelled only when nobody waits
for it. A failed read is never stored. Readings are kept in this process, at most
``max_entries`` of them, and, with a shared store, in the store as well
(:mod:`._shared`), so that a fleet sends one request per entry.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, TypeVar

import attrs

from .._closing import Closing
from .._errors import (
    SESSION_CLOSED,
    APIConnectionError,
    APITimeoutError,
    RateLimitError,
    ServerError,
    StabilityError,
)
from .._models import Freshness
from .._secrets import mask_secret
from .._types import Clock
from ._policy import CachePolicy

__all__ = ["Key", "ReadCache"]

T = TypeVar("T")

logger = logging.getLogger("stability_user")

Key = tuple[str, str, str, str, "str | None"]
"""An entry: ``(key id, base URL, API version, endpoint, organization)``."""

# The failures a stale reading may stand in for: the service or the way to it is
# down or busy. Never 400, 401, 403 or 404: a revoked key must show at once.
_STALE_IF: Final = (ServerError, APIConnectionError, RateLimitError)

Fetch = Callable[[], Awaitable[Any]]


@attrs.define
class _Entry:
    value: Any  # the model, without freshness
    fetched: float  # on the session's clock
    fetched_at: float  # Unix time
    warned: bool = False  # a stale reading was handed out for a failure: said once


class _Flight(Generic[T]):
    __slots__ = ("background", "key", "task", "waiters")

    def __init__(self, key: Key, task: asyncio.Task[T], *, background: bool) -> None:
        self.key = key
        self.task = task
        self.waiters = 0
        self.background = background


async def _ready(value: T) -> T:
    return value


class ReadCache:
    """Readings of one session (and its views), shared by every caller of an entry.

    Args:
        policy: what the cache is asked to do.
        closing: the session's life: flights end when it closes.
        clock: the session's monotonic clock.
        wall: Unix time, for ``Freshness.fetched_at``.
        shared: where a fleet shares readings and takes turns reading, or ``None``.
    """

    def __init__(
        self,
        policy: CachePolicy,
        *,
        closing: Closing,
        clock: Clock,
        wall: Clock = time.time,
        shared: Any = None,
    ) -> None:
        """An empty cache."""
        self.policy = policy
        self.shared = shared
        self._closing = closing
        self._clock = clock
        self._wall = wall
        self._entries: collections.OrderedDict[Key, _Entry] = collections.OrderedDict()
        self._flights: dict[Key, _Flight[Any]] = {}

    def __len__(self) -> int:
        """How many readings are kept."""
        return len(self._entries)

    def read(
        self,
        key: Key,
        max_age: float,
        fetch: Fetch,
        *,
        deadline: float | None,
        api_key: str,
    ) -> Awaitable[Any]:
        """The reading of ``key`` no older than ``max_age``, or one ``fetch`` for every caller.

        A fresh reading is handed back without a task, a request or a frame of its own.

        Args:
            key: the entry.
            max_age: the oldest reading this call accepts, in seconds.
            fetch: sends the request and decodes the answer (retries and limiter included).
            deadline: the call's seconds, if any: a call that joins another's read
                waits no longer.
            api_key: for messages (masked).
        """
        entry = self._entries.get(key)
        if entry is not None and max_age > 0:
            age = self._clock() - entry.fetched
            if age <= max_age:
                self._entries.move_to_end(key)  # the least recently used go first
                return _ready(_handed(entry, age, stale=False))
        return self._read(key, max_age, fetch, deadline, api_key)

    async def _read(
        self, key: Key, max_age: float, fetch: Fetch, deadline: float | None, api_key: str
    ) -> Any:
        entry = self._entries.get(key) if max_age > 0 else None
        if entry is not None:
            age = self._clock() - entry.fetched
            if age <= max_age + self.policy.stale_while_revalidate:
                self._entries.move_to_end(key)
                self._refresh(key, fetch, max_age, api_key)
                return _handed(entry, age, stale=True)
        flight = self._flights.get(key)
        if flight is None or flight.task.done():  # a flight that landed is nobody's to join
            flight = self._start(key, fetch, max_age, background=False)
        try:
            await self._join(flight, deadline)
        except _STALE_IF as error:
            stale = self._stale_for(key, entry, max_age, error, api_key)
            if stale is None:
                raise
            return stale
        fresh = self._entries.get(key)
        if fresh is None:  # evicted at once by a tiny max_entries: the flight's own
            return flight.task.result()
        age = self._clock() - fresh.fetched
        # Older than asked only when the fleet's reader is still at it (its store's, stale).
        return _handed(fresh, age, stale=age > max_age > 0)

    def _start(self, key: Key, fetch: Fetch, max_age: float, *, background: bool) -> _Flight[Any]:
        task = asyncio.ensure_future(self._fly(key, fetch, max_age))
        flight: _Flight[Any] = _Flight(key, task, background=background)
        self._flights[key] = flight
        task.add_done_callback(lambda done: self._landed(key, flight, done))
        return flight

    async def _fly(self, key: Key, fetch: Fetch, max_age: float) -> Any:
        if self.shared is None:
            value = await fetch()
            self._store(key, value, self._clock(), self._wall())
            return value
        # The fleet's reading may be older than this flight: its age, on this clock.
        value, fetched_at = await self.shared.read(key, max_age, fetch)
        age = max(0.0, self._wall() - fetched_at)
        self._store(key, value, self._clock() - age, fetched_at)
        return value

    def _landed(self, key: Key, flight: _Flight[Any], task: asyncio.Task[Any]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody waited for is not an asyncio warning

    def _store(self, key: Key, value: Any, fetched: float, fetched_at: float) -> None:
        if getattr(value, "freshness", None) is not None:
            value = attrs.evolve(value, freshness=None)
        self._entries[key] = _Entry(value, fetched, fetched_at)
        self._entries.move_to_end(key)
        while len(self._entries) > self.policy.max_entries:
            self._entries.popitem(last=False)

    async def _join(self, flight: _Flight[Any], deadline: float | None) -> None:
        """Wait for ``flight``; leaving it never cancels it while another caller waits."""
        task = flight.task
        flight.waiters += 1
        try:
            done, _ = await asyncio.wait((task,), timeout=deadline)
        except asyncio.CancelledError:
            self._leave(flight)
            raise
        if not done:
            self._leave(flight)
            raise APITimeoutError(
                f"the call's deadline ran out while it waited for a shared read ({deadline:g} s)",
                retryable=False,
            )
        flight.waiters -= 1
        if task.cancelled():
            if self._closing.closed:
                raise StabilityError(SESSION_CLOSED)
            raise asyncio.CancelledError
        error = task.exception()
        if error is not None:
            raise error

    def _leave(self, flight: _Flight[Any]) -> None:
        flight.waiters -= 1
        if flight.waiters <= 0 and not flight.background and not flight.task.done():
            flight.task.cancel()  # nobody waits for it any more...
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]  # ...and a later caller starts its own

    def _refresh(self, key: Key, fetch: Fetch, max_age: float, api_key: str) -> None:
        """One background refresh per entry; a failure is logged once, never raised."""
        running = self._flights.get(key)
        if running is not None and not running.task.done():
            return
        flight = self._start(key, fetch, max_age, background=True)

        def report(task: asyncio.Task[Any]) -> None:
            if task.cancelled():
                return
            error = task.exception()
            entry = self._entries.get(key)
            if error is None:
                return
            if entry is not None and not entry.warned:
                entry.warned = True
                logger.warning(
                    "the cache could not refresh the %s reading of %s (%s): handing out the "
                    "one it has while it may",
                    key[3],
                    mask_secret(api_key),
                    _describe(error),
                )

        flight.task.add_done_callback(report)

    def _stale_for(
        self,
        key: Key,
        entry: _Entry | None,
        max_age: float,
        error: BaseException,
        api_key: str,
    ) -> Any:
        """A stale reading instead of ``error``, when the policy allows one; else ``None``."""
        entry = self._entries.get(key) or entry
        if entry is None or max_age <= 0:
            return None
        age = self._clock() - entry.fetched
        if age > max_age + self.policy.stale_if_error or key not in self._entries:
            return None
        self._entries.move_to_end(key)
        if not entry.warned:
            entry.warned = True  # once per entry and outage: a fresh reading clears it
            logger.warning(
                "the %s reading of %s could not be refreshed (%s): handing out one %.1f s old",
                key[3],
                mask_secret(api_key),
                _describe(error),
                age,
            )
        return _handed(entry, age, stale=True)

    async def aclose(self) -> None:
        """End every flight and refresh (the session is closing); then the shared store."""
        flights = [flight.task for flight in self._flights.values()]
        for task in flights:
            task.cancel()
        if flights:
            await asyncio.gather(*flights, return_exceptions=True)
        self._flights.clear()
        if self.shared is not None:
            await self.shared.aclose()


def _handed(entry: _Entry, age: float, *, stale: bool) -> Any:
    """The reading, saying how old it is."""
    return attrs.evolve(entry.value, freshness=Freshness(max(age, 0.0), stale, entry.fetched_at))


def _describe(error: BaseException) -> str:
    status = getattr(error, "status", None)
    return f"status {status}" if status is not None else type(error).__name__
