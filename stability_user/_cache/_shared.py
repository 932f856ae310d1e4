"""Taking turns with a fleet: a read goes to the shared store before it goes to the service.

A flight (:mod:`._reader`) that finds no fresh reading in this process asks the
store first. A fresh reading there answers at once. Otherwise the process that
gets the entry's lease reads from the service and stores the reading; the others
wait for it (polling the store, a few times a second), or take an older reading
when the policy allows one, or take the lease themselves once it has expired. A
reading that does not parse is a miss with a WARNING, never a wrong balance. When
the store is unavailable, reads go on in this process alone, with one WARNING, and
the store is tried again every few seconds (the store's breaker).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs

from .._backends import Breaker, Outage
from .._backends._token import new_token
from .._converter import structure
from .._endpoints import ENDPOINTS
from .._errors import ResponseValidationError, StabilityError
from .._types import Clock
from ._policy import CachePolicy
from ._store import ReadingStore, entry_name

__all__ = ["SharedReads"]

logger = logging.getLogger("stability_user")

_LEASE: Final = 5.0  # seconds a process may read an entry before another may (default)
_POLL_FIRST: Final = 0.02  # seconds between looks at the store while another reads...
_POLL_MOST: Final = 0.2  # ...growing to this
# The largest stored reading read (a session's default max_body_size): a larger one is
# no reading of this library's, and is not decoded.
_MAX_BODY: Final = 1_048_576
_MODELS: Final = {endpoint.name: endpoint.model for endpoint in ENDPOINTS}


class SharedReads:
    """The fleet's side of a session's read cache, on one shared store.

    Args:
        store: where readings and leases are kept.
        owns_store: close ``store`` with the cache (a store made from a name or URL).
        policy: the cache's policy: a stored reading is kept as long as it may answer.
        wall: Unix time.
        sleep: how a process waits for another's reading.
    """

    def __init__(
        self,
        store: ReadingStore,
        *,
        owns_store: bool,
        policy: CachePolicy | None = None,
        wall: Clock = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Share readings through ``store``."""
        self.store = store
        self.policy = policy
        self._owns_store = owns_store
        self._wall = wall
        self._sleep = sleep
        # How long a process may read an entry before another may: the store may say.
        self.lease = float(getattr(store, "lease", None) or _LEASE)
        self.where = str(getattr(store, "where", None) or repr(store))
        # The built-in stores say when their backend is away (their breaker), and
        # raise Outage while it is: reads then go on in this process alone.
        self._breaker: Breaker | None = getattr(store, "breaker", None)
        self._tasks: set[asyncio.Future[None]] = set()

    def _keep(self) -> float:
        policy = self.policy
        if policy is None:
            return 60.0
        return policy.max_age + max(policy.stale_while_revalidate, policy.stale_if_error) + 1.0

    async def read(
        self, key: tuple[str, str, str, str, str | None], max_age: float, fetch: Callable[[], Any]
    ) -> tuple[Any, float]:
        """The entry's reading and the Unix time it was answered: the fleet's, or a new one."""
        key_id, name = entry_name(key)
        model = _MODELS[key[3]]
        token = new_token()
        pause = _POLL_FIRST
        # A stored body that is no reading (garbage, a foreign writer's): never handed out,
        # and no longer taken as fresh, so that its entry's lease can be had and a
        # reading stored over it; said once per read, not at every look.
        refused: str | None = None
        warned = asked_past = False
        while True:
            if self._breaker is not None and not self._breaker.available():
                return await fetch(), self._wall()
            try:
                begun = await self.store.begin(
                    key_id,
                    name,
                    max_age=max_age if refused is None else -1.0,
                    lease=self.lease,
                    token=token,
                )
            except Outage:
                return await fetch(), self._wall()
            stored = None
            found_bad = begun.corrupt
            if begun.body is not None and begun.body != refused:
                stored = self._parse(begun.body, model)
                if stored is None:
                    refused, found_bad = begun.body, True
            if found_bad and not warned:
                warned = True
                _warn_corrupt(self.where)
            age = begun.age
            if stored is not None and age is not None and age <= max_age:
                if begun.granted:  # asked past a refused body: the lease is not needed
                    self._spawn(self.store.end(key_id, name, token))
                return stored, self._wall() - age
            if begun.granted:
                return await self._read_for_all(key_id, name, token, fetch)
            if refused is not None and not asked_past:
                asked_past = True
                continue  # ask again at once, this time for the lease
            stale = self._stale_allowed(max_age)
            if stored is not None and age is not None and age <= max_age + stale:
                return stored, self._wall() - age  # another process is reading it
            await self._sleep(pause)
            pause = min(pause * 2, _POLL_MOST)

    def _stale_allowed(self, max_age: float) -> float:
        policy = self.policy
        return 0.0 if policy is None or max_age <= 0 else policy.stale_while_revalidate

    async def _read_for_all(
        self, key_id: str, name: str, token: str, fetch: Callable[[], Any]
    ) -> tuple[Any, float]:
        # A read may outlast the lease (a slow answer, retries, a wait for the rate
        # limit): the lease is renewed meanwhile, so that no other process reads too.
        renewing = asyncio.ensure_future(self._renew(key_id, name, token))
        try:
            value = await fetch()
        except BaseException:
            # The read failed (or its caller left): the lease goes, a failure is never stored.
            self._spawn(self.store.end(key_id, name, token))
            raise
        finally:
            renewing.cancel()
        answered = self._wall()
        body = json.dumps(_document(value), separators=(",", ":"))
        with contextlib.suppress(Outage):  # the reading answers this process all the same
            await self.store.put(key_id, name, body, keep=self._keep(), token=token)
        return value, answered

    async def _renew(self, key_id: str, name: str, token: str) -> None:
        renew = getattr(self.store, "renew", None)
        if renew is None:
            return  # a store of the user's without renew(): each read has one lease
        while True:
            await self._sleep(self.lease / 3)
            # Unavailable or closed: it expires, and another process may read.
            with contextlib.suppress(Outage, StabilityError):
                if not await renew(key_id, name, token, lease=self.lease):
                    return

    def _spawn(self, work: Awaitable[None]) -> None:
        async def quietly() -> None:
            with contextlib.suppress(Outage):  # else the lease expires by itself
                await work

        task = asyncio.ensure_future(quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _parse(self, body: str, model: type) -> Any:
        """The reading in ``body``, or ``None`` when it is none (the caller warns)."""
        if len(body) > _MAX_BODY:
            return None
        try:
            return structure(json.loads(body), model, status=200)
        except (ValueError, RecursionError, ResponseValidationError):
            return None

    async def aclose(self) -> None:
        """Close the store if this cache made it, once the leases being ended are."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0)
        if self._owns_store:
            await self.store.aclose()


def _document(value: Any) -> Any:
    """The reading as the service sent it (without what the cache added)."""
    return attrs.asdict(value, filter=lambda attribute, _: attribute.name != "freshness")


def _warn_corrupt(where: str) -> None:
    logger.warning(
        "the cache store %s held a reading that cannot be (not a reading of this library, "
        "or from a clock far ahead): it is read again from the service",
        where,
    )
