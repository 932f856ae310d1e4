"""stability-user: an asyncio-first client for Stability AI's user API.

::

    async with StabilitySession() as session:        # the key from STABILITY_API_KEY
        account = await session.account()
        balance = await session.balance(organization="org-123")
"""

import logging as _logging
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    StabilityError,
)
from ._http import Request, Response, Transport
from ._models import Account, Balance, ErrorBody, Freshness, OrganizationMembership
from ._ratelimit import MemoryRateLimitStore, RateLimit, RateLimitStore, RateLimitWait
from ._retry import RetryPolicy
from ._session import StabilitySession
from ._version import __version__

if _TYPE_CHECKING:
    from ._bulk import BalanceResult, BalanceTarget
    from ._cache import CachePolicy
    from ._ratelimit._local import LocalRateLimitStore
    from ._ratelimit._redis import RedisRateLimitStore
    from ._targets import TargetFileError, read_targets
    from ._watch import BalanceReading

# Imported when first named, not with the package: the shared stores (SQLite,
# redis-py), and what only bulk checks, watches and target files need.
_LAZY = {
    "CachePolicy": "._cache",
    "BalanceReading": "._watch",
    "BalanceResult": "._bulk",
    "BalanceTarget": "._bulk",
    "LocalRateLimitStore": "._ratelimit._local",
    "RedisRateLimitStore": "._ratelimit._redis",
    "TargetFileError": "._targets",
    "read_targets": "._targets",
}


def __getattr__(name: str) -> _Any:
    """What is imported on first use (see ``_LAZY``)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415 - only when a shared store is named

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


# A library's logger stays quiet in a program that has not configured logging
# (the standard library's advice): no "last resort" output on stderr.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "Account",
    "AuthenticationError",
    "BadRequestError",
    "Balance",
    "BalanceReading",
    "BalanceResult",
    "BalanceTarget",
    "CachePolicy",
    "ErrorBody",
    "Freshness",
    "LocalRateLimitStore",
    "MemoryRateLimitStore",
    "NotFoundError",
    "OrganizationMembership",
    "PermissionDeniedError",
    "RateLimit",
    "RateLimitError",
    "RateLimitStore",
    "RateLimitWait",
    "RedisRateLimitStore",
    "Request",
    "Response",
    "ResponseValidationError",
    "RetryPolicy",
    "ServerError",
    "StabilityError",
    "StabilitySession",
    "TargetFileError",
    "Transport",
    "__version__",
    "read_targets",
]
