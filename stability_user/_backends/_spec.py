"""A store named in a session's options: ``"memory"``, ``"local"``, a Redis URL, or an object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final, Literal

import attrs

from .._secrets import mask_url

__all__ = ["REDIS_SCHEMES", "StoreSpec", "parse_store_spec"]

REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")


@attrs.frozen
class StoreSpec:
    """What a ``*_store=`` option names.

    Attributes:
        kind: ``"memory"`` (this event loop), ``"local"`` (this machine), ``"redis"``
            (a fleet) or ``"object"`` (a store given as it is).
        url: the Redis URL, for ``"redis"``.
        store: the object, for ``"object"``.
    """

    kind: Literal["memory", "local", "redis", "object"]
    url: str | None = attrs.field(default=None, repr=lambda url: repr(url and mask_url(url)))
    store: object = None


def parse_store_spec(
    spec: object,
    *,
    parameter: str,
    environment: str,
    environ: Mapping[str, str] | None = None,
) -> StoreSpec:
    """Read ``spec`` (``$environment`` when ``None``, else ``"memory"``).

    Raises:
        ValueError: a string that names none of the stores (its password masked).
    """
    if spec is None:
        env = os.environ if environ is None else environ
        spec = env.get(environment) or "memory"
    if not isinstance(spec, str):
        return StoreSpec("object", store=spec)
    if spec in ("memory", "local"):
        return StoreSpec(spec)  # type: ignore[arg-type]
    if spec.startswith(REDIS_SCHEMES):
        return StoreSpec("redis", url=spec)
    # Never echo a password of what may be a URL, however mistyped.
    raise ValueError(
        f"{parameter} must be 'memory', 'local', a redis:// URL or a store, got {mask_url(spec)!r}"
    )
