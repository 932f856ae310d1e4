"""A rate-limit store from a name, a URL or an object: what ``rate_limit_store=`` takes.

``"memory"`` is the running event loop's state, ``"local"`` this machine's
(every process of the user), a ``redis://`` URL a fleet's; an object with the
store methods is used as it is. The machine-wide and Redis stores are imported
only when named.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final, Union

from .._types import Clock
from ._memory import MemoryRateLimitStore
from ._store import RateLimitStore

__all__ = ["ENV_RATE_LIMIT_STORE", "STORE_NAMES", "RateLimitStoreLike", "open_store"]

ENV_RATE_LIMIT_STORE: Final = "STABILITY_RATE_LIMIT_STORE"
STORE_NAMES: Final = ("memory", "local", "redis://...")

RateLimitStoreLike = Union[str, RateLimitStore]  # noqa: UP007 - a runtime alias on 3.10
"""A store's name (``"memory"``, ``"local"``), a ``redis://`` URL, or a store."""


def open_store(
    spec: RateLimitStoreLike | None,
    *,
    clock: Clock = time.monotonic,
    environ: Mapping[str, str] | None = None,
) -> tuple[RateLimitStore | None, bool]:
    """The store ``spec`` names (``$STABILITY_RATE_LIMIT_STORE``, else ``"memory"``).

    Returns the store, ``None`` for "the running event loop's" (``"memory"`` on the
    default clock), and whether the caller made it (and so closes it).

    Raises:
        ImportError: the store needs an extra that is not installed.
        ValueError: a name that is none of the stores'.
    """
    from .._backends import parse_store_spec  # noqa: PLC0415 - with the first session

    found = parse_store_spec(
        spec, parameter="rate_limit_store", environment=ENV_RATE_LIMIT_STORE, environ=environ
    )
    if found.kind == "object":
        return found.store, False  # type: ignore[return-value]
    if found.kind == "memory":
        # Times of different clocks never mix: a session on an injected clock keeps its own.
        if clock is time.monotonic:
            return None, False
        return MemoryRateLimitStore(clock=clock), True
    if found.kind == "local":
        from ._local import LocalRateLimitStore  # noqa: PLC0415 - imported when named

        return LocalRateLimitStore(), True
    from ._redis import RedisRateLimitStore  # noqa: PLC0415 - imported when named

    return RedisRateLimitStore(found.url), True
