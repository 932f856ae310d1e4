"""stability-user: an asyncio-first client for Stability AI's user API.

::

    async with StabilitySession() as session:        # the key from STABILITY_API_KEY
        account = await session.account()
        balance = await session.balance(organization="org-123")
"""

import logging as _logging

from ._bulk import BalanceResult, BalanceTarget
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
from ._models import Account, Balance, ErrorBody, OrganizationMembership
from ._ratelimit import RateLimit, RateLimitStore, RateLimitWait
from ._ratelimit_local import LocalRateLimitStore
from ._ratelimit_memory import MemoryRateLimitStore
from ._ratelimit_redis import RedisRateLimitStore
from ._retry import RetryPolicy
from ._session import StabilitySession
from ._targets import TargetFileError, read_targets
from ._version import __version__
from ._watch import BalanceReading

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
    "ErrorBody",
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
