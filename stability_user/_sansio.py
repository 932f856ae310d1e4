"""The protocol without I/O: a call becomes a :class:`Request`, a response a model or an error.

Plain functions of their inputs; the wall clock is a parameter (``now``). It
imports only the standard library, attrs and the package's own pure modules,
so it is tested without a socket, an event loop or the environment.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Final, TypeVar

from ._checks import check_header_value
from ._config import ENV_API_KEY, ClientConfig
from ._converter import structure, structure_error_body
from ._endpoints import Endpoint
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
from ._http import Request, Response, header, request_id_of
from ._secrets import display_text, redact
from ._version import __version__

__all__ = [
    "USER_AGENT",
    "build_request",
    "decode",
    "error_for_response",
    "parse_retry_after",
    "retry_after_of",
]

T = TypeVar("T")

# sys.version_info, not platform.python_version(): importing platform costs milliseconds.
_PYTHON: Final = ".".join(map(str, sys.version_info[:3]))
USER_AGENT: Final = f"stability-user/{__version__} Python/{_PYTHON}"
"""The product tokens of the library; the transport adds its own (``aiohttp/...``)."""

_STATUS_ERRORS: Final[Mapping[int, type[APIError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}

_NO_KEY: Final = (
    f"no API key: pass api_key= to StabilitySession or set the {ENV_API_KEY} environment variable"
)


def build_request(
    config: ClientConfig, endpoint: Endpoint[Any], *, organization: str | None = None
) -> Request:
    """The request for ``endpoint`` under ``config``.

    Args:
        config: the session's configuration.
        endpoint: a row of the endpoint table.
        organization: the ``Organization`` header, instead of the configured default
            (only for an endpoint that takes one).

    Raises:
        StabilityError: the configuration has no API key.
        ValueError: ``organization`` contains CR, LF or NUL, or the endpoint takes none.
    """
    if config.api_key is None:
        raise StabilityError(_NO_KEY)
    headers = {
        "Authorization": config.api_key,
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }
    if config.client_id is not None:
        headers["Stability-Client-ID"] = config.client_id
    if config.client_version is not None:
        headers["Stability-Client-Version"] = config.client_version
    if endpoint.takes_organization:
        if organization is None:
            organization = config.organization
        if organization is not None:
            headers["Organization"] = check_header_value("organization", organization)
    elif organization is not None:
        raise ValueError(f"the {endpoint.name} endpoint takes no organization")
    url = endpoint.url(config.base_url, config.api_version)
    return Request(endpoint.method, url, headers, config.timeout)


def parse_retry_after(value: str | None, now: float, *, date: str | None = None) -> float | None:
    """Seconds until the time a ``Retry-After`` value names.

    Both forms are read: delta-seconds (``"120"``) and an HTTP-date. A date is
    read against the response's own ``Date`` when it has a valid one (a server
    whose clock is off says what it means relative to its clock), else against
    ``now`` (a Unix time). A date that is not in the future, an absent,
    unparseable or impossible value (a year past 9999, a negative or infinite
    number) gives ``None``: the header is no answer.
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
    moment = _http_date(value)
    if moment is None:
        return None
    reference = _http_date(date) if date is not None else None
    seconds = moment - (now if reference is None else reference)
    return seconds if seconds > 0 else None


def _http_date(value: str) -> float | None:
    try:
        moment = parsedate_to_datetime(value.strip())
        if moment.tzinfo is None:  # HTTP-dates are GMT; parsedate gives naive for "-0000"
            return None
        return moment.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def retry_after_of(headers: Mapping[str, str], *, now: float) -> float | None:
    """The seconds a response's ``Retry-After`` names (read against its ``Date``), if any."""
    value = header(headers, "Retry-After")
    if value is None:
        return None
    return parse_retry_after(value, now, date=header(headers, "Date"))


def _secrets(response: Response, config: ClientConfig) -> tuple[str | None, ...]:
    # The key actually sent and the session's (a middleware may have changed it), and
    # the proxy's credentials, which a proxy in the middle may echo as well.
    return (config.api_key, *response.secrets_sent())


def _load_json(body: bytes) -> Any:
    # JSON is UTF-8 (RFC 8259): decoding it directly skips json's encoding sniffing.
    # RecursionError: a body nested a hundred thousand levels deep.
    return json.loads(body.decode())


def error_for_response(response: Response, config: ClientConfig, *, now: float) -> APIError:
    """The typed error for a response whose status is not a success.

    Every string taken from the response (the error body's fields after JSON
    decoding, ``Location``, ``x-request-id``) is redacted of the key before it
    reaches the error.

    Args:
        response: the response, any status but 2xx.
        config: the session's configuration (its key is redacted; its version hints).
        now: the current Unix time, for an HTTP-date ``Retry-After``.
    """
    status = response.status
    secrets = _secrets(response, config)
    try:
        data = _load_json(response.body)
    except (ValueError, RecursionError):
        data = None
    error = structure_error_body(data, lambda text: redact(text, secrets))
    request_id = request_id_of(response.headers, secrets)
    detail = None
    if 300 <= status < 400:
        location = display_text(header(response.headers, "Location") or "?", secrets)
        detail = f"redirect to {location} not followed: redirects could forward the API key"
    elif status == 404 and config.api_version == "v1alpha":
        detail = (
            "the v1alpha endpoints were retired in favour of v1: "
            "pass api_version='v1' or set STABILITY_API_VERSION=v1"
        )
    cls = _STATUS_ERRORS.get(status) or (ServerError if status >= 500 else APIError)
    common: dict[str, Any] = {
        "headers": response.headers,
        "attempts": response.attempt,
        "detail": detail,
        "request_id": request_id,
    }
    if cls is RateLimitError or cls is ServerError:
        retry_after = retry_after_of(response.headers, now=now)
        return cls(status, error, retry_after=retry_after, **common)
    return cls(status, error, **common)


def decode(
    response: Response,
    endpoint: Endpoint[T],
    config: ClientConfig,
    *,
    now: float | Callable[[], float],
) -> T:
    """The model ``endpoint`` promises, from ``response``, or the typed error it stands for.

    Args:
        response: the whole response.
        endpoint: the row of the endpoint table the request was built from.
        config: the session's configuration.
        now: the current Unix time, for an HTTP-date ``Retry-After``; or a clock
            giving it, read only when the response is an error.

    Raises:
        APIError: for a status that is not a success (the subclass by status).
        ResponseValidationError: for a 2xx body that is not JSON, or not the model.
    """
    status = response.status
    if not 200 <= status < 300:
        raise error_for_response(response, config, now=now if isinstance(now, float) else now())
    try:
        data = _load_json(response.body)
    except (ValueError, RecursionError) as exc:
        kind = "nested too deeply" if isinstance(exc, RecursionError) else "not JSON"
        raise ResponseValidationError(
            f"{status} response body is {kind} ({len(response.body)} bytes)", status=status
        ) from exc
    # The secrets are looked up only if a message is made: this is every call's path.
    return structure(
        data,
        endpoint.model,
        status=status,
        clean=lambda text: display_text(text, _secrets(response, config)),
    )
