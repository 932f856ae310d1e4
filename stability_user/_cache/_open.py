"""A shared store of readings from a name, a URL or an object: what ``cache_store=`` takes.

``"memory"`` keeps readings in this process only (the default), ``"local"`` shares
them with every process of the user on this machine, a ``redis://`` URL with a
fleet; an object with the store methods is used as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Union

from .._backends import parse_store_spec
from ._policy import CachePolicy

__all__ = ["ENV_CACHE_STORE", "CacheStoreLike", "open_shared"]

ENV_CACHE_STORE: Final = "STABILITY_CACHE_STORE"

CacheStoreLike = Union[str, Any]  # noqa: UP007 - a runtime alias on 3.10
"""A store's name (``"memory"``, ``"local"``), a ``redis://`` URL, or a store of readings."""


def open_shared(
    spec: object, policy: CachePolicy, *, environ: Mapping[str, str] | None = None
) -> Any:
    """The shared side of the cache ``spec`` names, or ``None`` for this process only.

    Raises:
        ImportError: the store needs an extra that is not installed.
        ValueError: a name that is none of the stores'.
    """
    found = parse_store_spec(
        spec, parameter="cache_store", environment=ENV_CACHE_STORE, environ=environ
    )
    if found.kind == "memory":
        return None
    from ._shared import SharedReads  # noqa: PLC0415 - imported when a store is named

    if found.kind == "object":
        return SharedReads(found.store, owns_store=False, policy=policy)  # type: ignore[arg-type]
    if found.kind == "local":
        from ._local import LocalReadingStore  # noqa: PLC0415 - imported when named

        return SharedReads(LocalReadingStore(), owns_store=True, policy=policy)
    from ._redis import RedisReadingStore  # noqa: PLC0415 - imported when named

    assert found.url is not None  # noqa: S101 - a redis spec has its URL
    return SharedReads(RedisReadingStore(found.url), owns_store=True, policy=policy)
