"""A session's configuration: the arguments checked, the environment read, once.

The only module that reads the environment. :class:`ClientConfig` is a frozen
value; a view from ``with_options`` is the same value with a field or two
changed by :func:`derive_config`, which checks only what changed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from ._checks import (
    DEFAULT_BASE_URL,
    check_api_key,
    check_api_version,
    check_base_url,
    check_optional_header_value,
    check_seconds,
)
from ._endpoints import API_VERSIONS, DEFAULT_API_VERSION
from ._secrets import bare_key, mask_secret

__all__ = [
    "DEFAULT_BASE_URL",
    "ENV_API_HOST",
    "ENV_API_KEY",
    "ENV_API_VERSION",
    "ClientConfig",
    "KeyIds",
    "derive_config",
    "key_id_of",
    "make_config",
    "origin_of",
]

ENV_API_KEY: Final = "STABILITY_API_KEY"
ENV_API_HOST: Final = "STABILITY_API_HOST"
ENV_API_VERSION: Final = "STABILITY_API_VERSION"

_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


def origin_of(url: str) -> str:
    """The service a URL reaches: ``scheme://host:port``, lower case, the port explicit.

    ``https://API.stability.ai/v1/user/balance`` and ``https://api.stability.ai:443``
    are one service; ``http://127.0.0.1:8700`` and ``http://127.0.0.1:8701`` are two.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: the URL names no known service
        port = None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme, 0)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def key_id_of(api_key: str, origin: str) -> str:
    """A stable, non-reversible name for one key's shared state at one service.

    State (rate-limit windows and lockouts, cached readings) is named by the service
    (:func:`origin_of`) and the key, so a lockout met at a local emulator never
    touches the real service's key, nor one emulator another's. A ``Bearer`` prefix
    does not change it: both forms reach the same account.
    """
    material = f"{origin}\0{bare_key(api_key)}".encode()
    return hashlib.sha256(b"stability-user key id\0" + material).hexdigest()[:32]


# Key ids a session keeps, cleared when full: the keys a process calls often (a web
# backend's few, a bulk run's views in flight) hash once; a sweep over a million keys
# keeps about 1 MiB here, not the 20 MiB that 65,536 entries took.
_KEY_IDS_KEPT: Final = 4_096


class KeyIds:
    """The key ids of the requests a session sends, each hashed once while it is kept.

    A session's own, not the process's: it holds the keys themselves, so they are
    forgotten when the session closes (:meth:`clear`), never kept beyond it.
    """

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        """Nothing kept yet."""
        self._kept: dict[tuple[str, str], str] = {}  # (url, key) -> key id

    def __len__(self) -> int:
        """How many are kept."""
        return len(self._kept)

    def of(self, url: str, api_key: str) -> str:
        """:func:`key_id_of` ``api_key`` at the service of ``url``, hashed if not kept."""
        key_id = self._kept.get((url, api_key))
        if key_id is None:
            kept = self._kept
            if len(kept) >= _KEY_IDS_KEPT:
                kept.clear()
            key_id = kept[url, api_key] = key_id_of(api_key, origin_of(url))
        return key_id

    def clear(self) -> None:
        """Forget every key kept."""
        self._kept.clear()


def _mask_optional(api_key: str | None) -> str:
    return "None" if api_key is None else mask_secret(api_key)


@attrs.frozen
class ClientConfig:
    """Everything a call needs to build its request, checked once.

    Attributes:
        api_key: the key, sent as the ``Authorization`` header (masked in the ``repr``);
            ``None`` when every call names its own (bulk targets with their keys).
        base_url: the service's base URL, without a trailing slash.
        api_version: one of :data:`~stability_user._endpoints.API_VERSIONS`.
        organization: the default ``Organization`` header of ``balance()``.
        client_id: sent as ``Stability-Client-ID`` when set.
        client_version: sent as ``Stability-Client-Version`` when set.
        timeout: seconds per attempt.
        origin: the service, ``scheme://host:port`` (:func:`origin_of`), derived.
        key_id: the key's name in shared state at this service (:func:`key_id_of`), derived.
    """

    api_key: str | None = attrs.field(repr=_mask_optional)
    base_url: str
    api_version: str
    organization: str | None
    client_id: str | None
    client_version: str | None
    timeout: float
    origin: str = attrs.field(init=False, repr=False, eq=False)
    key_id: str | None = attrs.field(init=False, repr=False, eq=False)

    @origin.default
    def _origin(self) -> str:
        return origin_of(self.base_url)

    @key_id.default
    def _key_id(self) -> str | None:
        return None if self.api_key is None else key_id_of(self.api_key, self.origin)


def make_config(
    api_key: str | None = None,
    *,
    base_url: str | None = None,
    api_version: str | None = None,
    organization: str | None = None,
    client_id: str | None = None,
    client_version: str | None = None,
    timeout: float = 30.0,
    environ: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Check the arguments, fill the gaps from the environment, and build a config.

    An argument given explicitly is used as it is (and checked), never replaced
    by the environment or a default: ``api_version=""`` is an error, not v1.

    Raises:
        StabilityError: a base URL that is not safe.
        TypeError: an argument of the wrong type.
        ValueError: an unknown API version, a bad timeout, or a header value
            containing CR, LF or NUL.
    """
    env = os.environ if environ is None else environ
    if api_key is None:
        api_key = env.get(ENV_API_KEY) or None
    if base_url is None:
        base_url = env.get(ENV_API_HOST) or DEFAULT_BASE_URL
    if api_version is None:
        api_version = env.get(ENV_API_VERSION) or DEFAULT_API_VERSION
    return ClientConfig(
        api_key=None if api_key is None else check_api_key(api_key),
        base_url=check_base_url(base_url),
        api_version=check_api_version(api_version, API_VERSIONS),
        organization=check_optional_header_value("organization", organization),
        client_id=check_optional_header_value("client_id", client_id),
        client_version=check_optional_header_value("client_version", client_version),
        timeout=check_seconds("timeout", timeout),
    )


_CHECKS: Final[Mapping[str, Callable[[Any], Any]]] = {
    "api_key": check_api_key,
    "organization": lambda value: check_optional_header_value("organization", value),
    "timeout": lambda value: check_seconds("timeout", value),
}


def derive_config(config: ClientConfig, **changes: Any) -> ClientConfig:
    """``config`` with ``api_key``, ``organization`` or ``timeout`` changed and checked.

    Only the changed values are checked; the rest were checked when ``config`` was made.

    Raises:
        TypeError, ValueError: a changed value that is not acceptable.
    """
    return attrs.evolve(config, **{name: _CHECKS[name](value) for name, value in changes.items()})
