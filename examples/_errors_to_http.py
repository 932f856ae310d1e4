"""How the web examples turn the library's errors into answers of their own.

Shared by ``aiohttp_app.py`` and ``fastapi_app.py``: a 401 from the Stability API
means *this service's* key is wrong, which is not the caller's fault and not a
crash either; a 429 becomes a 503 with ``Retry-After``, so the caller backs off.
"""

from __future__ import annotations

import math

from stability_user import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    PermissionDeniedError,
    RateLimitError,
    StabilityError,
)


def http_answer(error: Exception) -> tuple[int, str, dict[str, str]]:
    """The status, message and headers to answer a failed call with."""
    if isinstance(error, ValueError):
        return 400, str(error), {}
    if isinstance(error, PermissionDeniedError):
        return 403, "this service's key has no access to that organization", {}
    if isinstance(error, RateLimitError):
        retry_after = error.retry_after if error.retry_after is not None else 60.0
        return (
            503,
            "credit checks are rate limited; try again later",
            {"Retry-After": str(max(1, math.ceil(retry_after)))},
        )
    if isinstance(error, AuthenticationError):
        return 502, "the Stability API rejected this service's key", {}
    if isinstance(error, APITimeoutError):
        return 504, "the Stability API did not answer in time", {}
    if isinstance(error, (APIConnectionError, StabilityError)):
        return 502, "the Stability API failed; try again later", {}
    raise error
