"""One line for a failure: what failed, after how many attempts, and what to do about it."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final

from .._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
)
from .._secrets import escape_controls
from ._masking import mask_keys

__all__ = ["Hints", "describe", "in_option_terms"]


def _attempts(error: APIError | APIConnectionError) -> str:
    return f" after {error.attempts} attempts" if error.attempts > 1 else ""


# What to do about each kind of failure, the most specific first.
_HINTS: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (AuthenticationError, "check STABILITY_API_KEY or --key-file"),
    (PermissionDeniedError, "'stability-user account' lists the organizations of the key"),
    (NotFoundError, "check --base-url"),
    (RateLimitError, "the key is rate limited: try again later"),
    (ServerError, "the service failed: try again later"),
    (APITimeoutError, "the service did not answer in time: try again, or raise --timeout"),
    (APIConnectionError, "is the service or emulator running? check --base-url"),
    (ResponseValidationError, "is --base-url the Stability API?"),
)


_CA_HINT: Final = (
    "a TLS-inspecting proxy or a private CA needs its CA certificate: pass --ca-bundle FILE"
)

# The library's advice to programs in a connection error's message ("pass ssl=..."):
# the command line gives its own, naming its option.
_PROGRAM_ADVICE: Final = re.compile(r" \([^()]*\bssl=[^()]*\)")

# The library's parameters that are options here, as its errors name them: at the start
# of a configuration error ("timeout must be..."), or as advice ("rate_limit_store='memory'").
_PARAMETERS: Final = "base_url|timeout|proxy|rate_limit_store|max_attempts|api_version"
_PARAMETER: Final = re.compile(rf"^({_PARAMETERS})\b")
_PARAMETER_VALUE: Final = re.compile(rf"\b({_PARAMETERS})=(?:'([^']*)'|([^\s,;)']+))")


def _option(parameter: str) -> str:
    return "--" + parameter.replace("_", "-")


def in_option_terms(message: str) -> str:
    """A message of the library naming options instead of its parameters.

    ``rate_limit_store='memory'`` becomes ``--rate-limit-store memory`` wherever it is,
    and a leading parameter (``timeout must be...``) its option.
    """
    message = _PARAMETER_VALUE.sub(
        lambda match: f"{_option(match.group(1))} {match.group(2) or match.group(3) or ''}",
        message,
    )
    return _PARAMETER.sub(lambda match: _option(match.group(1)), message)


Hints = Sequence[tuple[type[BaseException], str]]
"""Advice of a command's own, by kind of error, tried before the general advice."""


def _hint(error: BaseException, api_version: str | None, hints: Hints = ()) -> str | None:
    """What to do about ``error``, or ``None`` when its message says it all."""
    own = next((hint for kind, hint in hints if isinstance(error, kind)), None)
    if own is not None:
        return own
    if isinstance(error, NotFoundError) and api_version == "v1alpha":
        return "the service may have retired v1alpha: try --api-version v1"
    if isinstance(error, RateLimitError) and error.retry_after is not None:
        return f"the key is rate limited: try again in {math.ceil(error.retry_after)} s"
    if isinstance(error, APIConnectionError) and not error.retryable:
        return _CA_HINT  # a certificate that failed verification: never retried
    return next((hint for kind, hint in _HINTS if isinstance(error, kind)), None)


def describe(error: BaseException, *, api_version: str | None = None, hints: Hints = ()) -> str:
    """One line for ``error``: what failed, after how many attempts, and what to do.

    ``hints`` are a command's own advice: the exporter's keys come from its targets
    file, not from ``STABILITY_API_KEY``, so a 401 there points to the file.
    """
    if isinstance(error, APIConnectionError):
        message = str(error.args[0]) if error.args else type(error).__name__
        text = f"{_PROGRAM_ADVICE.sub('', message)}{_attempts(error)}"
    elif isinstance(error, NotFoundError) and api_version == "v1alpha":
        # The library's detail tells programs to pass api_version='v1'; the hint names
        # the option instead. The same error without that detail:
        bare = NotFoundError(error.status, error.error, request_id=error.request_id)
        text = f"{bare}{_attempts(error)}"
    elif isinstance(error, APIError):
        text = f"{error}{_attempts(error)}"
    elif isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        text = f"{where}{error.strerror.lower()}"
    else:
        text = str(error) or type(error).__name__
    if not isinstance(error, (APIError, APIConnectionError, OSError)):
        # The library's own errors (a store that cannot be used, a bad setting) may name
        # its parameters; the service's text is left as it was sent.
        text = in_option_terms(text)
    hint = _hint(error, api_version, hints)
    return mask_keys(escape_controls(f"{text}: {hint}" if hint else text))
