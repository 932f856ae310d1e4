"""Choosing a rate-limit store from a name, a URL or an object.

``"memory"`` is this process, ``"local"`` this machine (every process of the
user), a ``redis://`` URL a fleet of machines; an object with the store methods
is used as it is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Final, Union

from ._ratelimit import RateLimitStore
from ._ratelimit_local import LocalRateLimitStore
from ._ratelimit_memory import MemoryRateLimitStore
from ._ratelimit_redis import RedisRateLimitStore
from ._secrets import mask_url
from ._types import Clock

__all__ = ["ENV_RATE_LIMIT_STORE", "STORE_NAMES", "RateLimitStoreLike", "open_store"]

ENV_RATE_LIMIT_STORE: Final = "STABILITY_RATE_LIMIT_STORE"
STORE_NAMES: Final = ("memory", "local", "redis://...")
_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")

RateLimitStoreLike = Union[str, RateLimitStore]  # noqa: UP007 - a runtime alias on 3.10
"""A store's name (``"memory"``, ``"local"``), a ``redis://`` URL, or a store."""


def open_store(
    spec: RateLimitStoreLike | None,
    *,
    clock: Clock = time.monotonic,
    environ: Mapping[str, str] | None = None,
) -> tuple[RateLimitStore, bool]:
    """The store ``spec`` names (``$STABILITY_RATE_LIMIT_STORE``, else ``"memory"``).

    Returns the store and whether the caller made it (and so closes it).

    Raises:
        ImportError: the store needs an extra that is not installed.
        ValueError: a name that is none of the stores'.
    """
    if spec is None:
        env = os.environ if environ is None else environ
        spec = env.get(ENV_RATE_LIMIT_STORE) or "memory"
    if not isinstance(spec, str):
        return spec, False
    if spec == "memory":
        # Times of different clocks never mix: a session on an injected clock keeps its own.
        if clock is time.monotonic:
            return MemoryRateLimitStore.shared(), False
        return MemoryRateLimitStore(clock=clock), True
    if spec == "local":
        return LocalRateLimitStore(), True
    if spec.startswith(_REDIS_SCHEMES):
        return RedisRateLimitStore(spec), True
    # Never echo a password of what may be a URL, however mistyped.
    raise ValueError(
        "rate_limit_store must be 'memory', 'local', a redis:// URL or a store, "
        f"got {mask_url(spec)!r}"
    )
