"""The part of the client that performs no I/O.

It validates the configuration, turns a call into a :class:`Request`, and turns
a :class:`Response` into a model or a typed error. Everything here is a plain
function of its inputs (the wall clock is a parameter), so it is tested without
a socket or an event loop.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import platform
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import aiohttp
import attrs
from multidict import CIMultiDict, CIMultiDictProxy

from ._converter import structure, structure_error_body
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    StabilityError,
)
from ._http import Request, Response, mask_secret
from ._models import Account, Balance
from ._version import __version__

__all__ = [
    "API_VERSIONS",
    "DEFAULT_BASE_URL",
    "ClientConfig",
    "decode_account",
    "decode_balance",
    "derive_config",
    "error_for_response",
    "make_config",
    "parse_retry_after",
    "redact",
]

T = TypeVar("T")

DEFAULT_BASE_URL: Final = "https://api.stability.ai"
API_VERSIONS: Final = ("v1alpha", "v1")
ENV_API_KEY: Final = "STABILITY_API_KEY"
ENV_API_HOST: Final = "STABILITY_API_HOST"
ENV_API_VERSION: Final = "STABILITY_API_VERSION"

USER_AGENT: Final = (
    f"stability-user/{__version__} aiohttp/{aiohttp.__version__} Python/{platform.python_version()}"
)

_REDACTED: Final = "[redacted]"
_STATUS_ERRORS: Final[Mapping[int, type[APIError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


def _frozen_headers(headers: Mapping[str, str]) -> CIMultiDictProxy[str]:
    # aiohttp takes a CIMultiDictProxy as it is; a dict it would copy into one on
    # every request. Immutable, too: a middleware changes headers by copying them.
    return CIMultiDictProxy(CIMultiDict(headers))


def check_header_value(name: str, value: str) -> str:
    """Refuse a header value that could split the request (CR, LF or NUL).

    Raises:
        ValueError: naming the argument, never echoing the value (it may be a key).
    """
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"{name} must not contain CR, LF or NUL characters")
    return value


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str) -> str:
    """Validate the service's base URL and return it without a trailing slash.

    Raises:
        StabilityError: for anything but ``https://``, or ``http://`` to a loopback host
            (the API key would otherwise travel in clear text).
    """
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise StabilityError(
            f"base_url must be an absolute http(s) URL such as {DEFAULT_BASE_URL!r}, "
            f"got {base_url!r}"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise StabilityError("base_url must not carry credentials, a query or a fragment")
    if parts.scheme == "http" and not _is_loopback(host):
        raise StabilityError(
            f"refusing clear-text http:// to {host!r}: the API key would travel unencrypted; "
            "use https://, or http:// only to a loopback address (127.0.0.1, ::1, localhost)"
        )
    return base_url.rstrip("/")


def check_api_version(api_version: str) -> str:
    """Return ``api_version`` when it is one the service has.

    Raises:
        ValueError: for anything but ``"v1alpha"`` or ``"v1"``.
    """
    if api_version not in API_VERSIONS:
        raise ValueError(f"api_version must be 'v1alpha' or 'v1', got {api_version!r}")
    return api_version


@attrs.frozen
class ClientConfig:
    """Everything a call needs, checked once, with its constant parts built once.

    Attributes:
        api_key: the key, sent as the ``Authorization`` header (never in the ``repr``).
        base_url: the service's base URL, without a trailing slash.
        api_version: ``"v1alpha"`` or ``"v1"``.
        organization: the default ``Organization`` header of ``balance()``.
        client_id: sent as ``Stability-Client-ID`` when set.
        client_version: sent as ``Stability-Client-Version`` when set.
        timeout: seconds per attempt.
    """

    api_key: str = attrs.field(repr=mask_secret)
    base_url: str
    api_version: str
    organization: str | None
    client_id: str | None
    client_version: str | None
    timeout: float
    account_request: Request = attrs.field(init=False, repr=False, eq=False)
    balance_request: Request = attrs.field(init=False, repr=False, eq=False)
    _headers: Mapping[str, str] = attrs.field(init=False, repr=False, eq=False)
    _balance_url: str = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        """Build the constant headers and the two default requests once, not per call."""
        headers = {
            "Authorization": self.api_key,
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if self.client_id is not None:
            headers["Stability-Client-ID"] = self.client_id
        if self.client_version is not None:
            headers["Stability-Client-Version"] = self.client_version
        prefix = f"{self.base_url}/{self.api_version}/user"
        balance_url = f"{prefix}/balance"
        set_ = object.__setattr__  # the class is frozen; these are derived once here
        frozen = _frozen_headers(headers)
        set_(self, "_headers", frozen)
        set_(self, "_balance_url", balance_url)
        set_(self, "account_request", Request("GET", f"{prefix}/account", frozen, self.timeout))
        set_(self, "balance_request", self._balance(self.organization))

    def _balance(self, organization: str | None) -> Request:
        headers = self._headers
        if organization is not None:
            headers = _frozen_headers({**headers, "Organization": organization})
        return Request("GET", self._balance_url, headers, self.timeout)

    def request_balance(self, organization: str | None = None) -> Request:
        """The balance request, for ``organization`` or else the configured default.

        Raises:
            ValueError: when ``organization`` contains CR, LF or NUL.
        """
        if organization is None or organization == self.organization:
            return self.balance_request
        return self._balance(check_header_value("organization", organization))


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

    Raises:
        StabilityError: no API key anywhere, or a base URL that is not safe.
        ValueError: an unknown API version, a non-positive timeout, or a header value
            containing CR, LF or NUL.
    """
    env = os.environ if environ is None else environ
    if api_key is None:
        api_key = env.get(ENV_API_KEY) or None
    if not api_key:
        raise StabilityError(
            f"no API key: pass api_key= or set the {ENV_API_KEY} environment variable"
        )
    for name, value in (("client_id", client_id), ("client_version", client_version)):
        if value is not None:
            check_header_value(name, value)
    return ClientConfig(
        api_key=_check_api_key(api_key),
        base_url=check_base_url(base_url or env.get(ENV_API_HOST) or DEFAULT_BASE_URL),
        api_version=check_api_version(api_version or env.get(ENV_API_VERSION) or "v1alpha"),
        organization=_check_organization(organization),
        client_id=client_id,
        client_version=client_version,
        timeout=_check_timeout(timeout),
    )


def _check_api_key(api_key: str) -> str:
    if not api_key:
        raise ValueError("api_key must not be empty")
    check_header_value("api_key", api_key)
    if api_key != api_key.strip():
        raise ValueError("api_key must not start or end with white space")
    return api_key


def _check_organization(organization: str | None) -> str | None:
    return (
        organization if organization is None else check_header_value("organization", organization)
    )


def _check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


_CHECKS: Final[Mapping[str, Callable[[Any], Any]]] = {
    "api_key": _check_api_key,
    "organization": _check_organization,
    "timeout": _check_timeout,
}


def derive_config(config: ClientConfig, **changes: Any) -> ClientConfig:
    """``config`` with ``api_key``, ``organization`` or ``timeout`` changed and checked.

    Only the changed values are checked; the rest were checked when ``config`` was made.

    Raises:
        ValueError: a changed value that is not acceptable.
    """
    return attrs.evolve(config, **{name: _CHECKS[name](value) for name, value in changes.items()})


def redact(text: str, secret: str) -> str:
    """Replace every occurrence of ``secret`` (and of it without ``Bearer``) in ``text``."""
    bare = secret[7:] if secret.startswith("Bearer ") else secret
    for value in (secret, bare):
        if value and value in text:
            text = text.replace(value, _REDACTED)
    return text


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from ``now`` (a Unix time) until the time a ``Retry-After`` value names.

    Both forms are read: delta-seconds (``"120"``) and an HTTP-date. A date in the
    past gives ``0.0``; an absent or unparseable value gives ``None``.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # HTTP-dates are GMT; parsedate gives naive for "-0000"
        return None
    return max(0.0, moment.timestamp() - now)


def _error_body_text(body: bytes, secret: str) -> Any:
    try:
        return json.loads(redact(body.decode("utf-8", "replace"), secret))
    except ValueError:
        return None


def error_for_response(
    response: Response, config: ClientConfig, *, now: float | None = None
) -> APIError:
    """The typed error for a response whose status is not a success."""
    status = response.status
    error = structure_error_body(_error_body_text(response.body, config.api_key))
    detail = None
    if 300 <= status < 400:
        location = redact(response.headers.get("Location", "?"), config.api_key)
        detail = f"redirect to {location} not followed: redirects could forward the API key"
    elif status == 404 and config.api_version == "v1alpha":
        detail = (
            "the v1alpha endpoints were retired in favour of v1: "
            "pass api_version='v1' or set STABILITY_API_VERSION=v1"
        )
    cls = _STATUS_ERRORS.get(status) or (ServerError if status >= 500 else APIError)
    if cls is RateLimitError or cls is ServerError:
        retry_after = parse_retry_after(
            response.headers.get("Retry-After"), time.time() if now is None else now
        )
        return cls(
            status,
            error,
            headers=response.headers,
            attempts=response.attempt,
            detail=detail,
            retry_after=retry_after,
        )
    return cls(status, error, headers=response.headers, attempts=response.attempt, detail=detail)


def _decode(response: Response, cls: type[T], config: ClientConfig) -> T:
    status = response.status
    if not 200 <= status < 300:
        raise error_for_response(response, config)
    try:
        # JSON is UTF-8 (RFC 8259): decoding it directly skips json's encoding sniffing.
        data = json.loads(response.body.decode())
    except ValueError as exc:
        raise ResponseValidationError(
            f"{status} response body is not JSON ({len(response.body)} bytes)", status=status
        ) from exc
    return structure(data, cls, status=status)


def decode_account(response: Response, config: ClientConfig) -> Account:
    """The :class:`Account` in a response, or the typed error it stands for.

    Raises:
        APIError: for a status that is not a success (the subclass by status).
        ResponseValidationError: for a 2xx body that is not a valid account.
    """
    return _decode(response, Account, config)


def decode_balance(response: Response, config: ClientConfig) -> Balance:
    """The :class:`Balance` in a response, or the typed error it stands for.

    Raises:
        APIError: for a status that is not a success (the subclass by status).
        ResponseValidationError: for a 2xx body that is not a valid balance.
    """
    return _decode(response, Balance, config)
