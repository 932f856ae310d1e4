"""stability-user: an asyncio-first client for Stability AI's user API.

::

    async with StabilitySession() as session:        # the key from STABILITY_API_KEY
        account = await session.account()
        balance = await session.balance(organization="org-123")
"""

from ._bulk import BalanceReading, BalanceResult, BalanceTarget
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
from ._http import Request, Response
from ._models import Account, Balance, ErrorBody, OrganizationMembership
from ._retry import RetryPolicy
from ._session import StabilitySession
from ._version import __version__

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
    "NotFoundError",
    "OrganizationMembership",
    "PermissionDeniedError",
    "RateLimitError",
    "Request",
    "Response",
    "ResponseValidationError",
    "RetryPolicy",
    "ServerError",
    "StabilityError",
    "StabilitySession",
    "__version__",
]
