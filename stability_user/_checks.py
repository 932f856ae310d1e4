"""Argument checks shared by every public constructor and method, in one style.

Each check returns the value it accepts and raises ``ValueError`` (``TypeError``
for a value of the wrong type) naming the argument. A check of something that
may be a secret never quotes the value.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Final

from yarl import URL

from ._errors import StabilityError

__all__ = [
    "check_api_key",
    "check_api_version",
    "check_base_url",
    "check_count",
    "check_header_value",
    "check_optional_header_value",
    "check_optional_seconds",
    "check_seconds",
    "check_type",
    "is_loopback",
]

DEFAULT_BASE_URL: Final = "https://api.stability.ai"


def check_type(name: str, value: object, kind: type | tuple[type, ...]) -> None:
    """Refuse ``value`` unless it is a ``kind``, naming only its type (never the value).

    Raises:
        TypeError: naming the argument and the type given.
    """
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise TypeError(f"{name} must be a {names}, got {type(value).__name__}")


def check_count(name: str, value: object) -> int:
    """Return ``value`` when it is an integer >= 1 (``bool`` excluded).

    Raises:
        ValueError: naming the argument.
    """
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_seconds(name: str, value: object, *, zero: bool = False) -> float:
    """Return ``value`` as a float when it is a finite number of seconds > 0 (>= 0 with ``zero``).

    Infinity and NaN are refused: a wait or a timeout of either never ends.

    Raises:
        ValueError: naming the argument.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        least = ">= 0" if zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {least}, got {value!r}")
    return float(value)


def check_optional_seconds(name: str, value: object) -> float | None:
    """:func:`check_seconds`, with ``None`` allowed."""
    return None if value is None else check_seconds(name, value)


def check_header_value(name: str, value: object) -> str:
    """Refuse a header value that is not a string or could split the request (CR, LF, NUL).

    Raises:
        TypeError: not a string.
        ValueError: naming the argument, never echoing the value (it may be a key).
    """
    check_type(name, value, str)
    assert isinstance(value, str)  # noqa: S101 - for the type checker; checked just above
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"{name} must not contain CR, LF or NUL characters")
    return value


def check_optional_header_value(name: str, value: object) -> str | None:
    """:func:`check_header_value`, with ``None`` allowed."""
    return None if value is None else check_header_value(name, value)


def check_api_key(value: object, name: str = "api_key") -> str:
    """Return an API key that can be sent as it is: a non-empty string, no edge white space.

    Raises:
        TypeError: not a string.
        ValueError: empty, white space at either end, or CR, LF or NUL (never echoed).
    """
    key = check_header_value(name, value)
    if not key:
        raise ValueError(f"{name} must not be empty")
    if key != key.strip():
        raise ValueError(f"{name} must not start or end with white space")
    return key


def check_api_version(value: object, versions: tuple[str, ...]) -> str:
    """Return ``value`` when it is one of ``versions``.

    Raises:
        ValueError: anything else, the empty string included.
    """
    if value not in versions:
        choices = ", ".join(repr(v) for v in versions)
        raise ValueError(f"api_version must be one of {choices}, got {value!r}")
    assert isinstance(value, str)  # noqa: S101 - every version is a str
    return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(value: object) -> str:
    """Validate the service's base URL with aiohttp's own parser; return it without a trailing /.

    What is checked is what aiohttp will send: the URL is parsed by yarl, as
    aiohttp parses it, and must come out the same.

    Raises:
        StabilityError: not an absolute ``https://`` URL, or ``http://`` to a host that is
            not loopback (the API key would travel in clear text), or with credentials,
            a query, a fragment, white space or control characters.
    """
    check_type("base_url", value, str)
    assert isinstance(value, str)  # noqa: S101 - for the type checker
    example = f"such as {DEFAULT_BASE_URL!r}"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise StabilityError("base_url must not contain white space or control characters")
    try:
        url = URL(value)
        port = url.port  # a port that is not a number fails here, not when sending
    except (ValueError, TypeError) as exc:
        raise StabilityError(f"base_url is not a valid URL {example}: {exc}") from None
    host = url.host or ""
    if url.scheme not in ("http", "https") or not url.is_absolute() or not host:
        raise StabilityError(f"base_url must be an absolute http(s) URL {example}, got {value!r}")
    if port is not None and not 0 < port < 65536:
        raise StabilityError(f"base_url has no valid port: {value!r}")
    if url.user is not None or url.password is not None or url.query_string or url.fragment:
        raise StabilityError("base_url must not carry credentials, a query or a fragment")
    if url.scheme == "http" and not is_loopback(host):
        raise StabilityError(
            f"refusing clear-text http:// to {host!r}: the API key would travel unencrypted; "
            "use https://, or http:// only to a loopback address (127.0.0.1, ::1, localhost)"
        )
    return value.rstrip("/")
