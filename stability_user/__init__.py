"""stability-user: an asyncio-first client for Stability AI's user API.

::

    async with StabilitySession() as session:        # the key from STABILITY_API_KEY
        account = await session.account()
        balance = await session.balance(organization="org-123")
"""

import typing as _typing  # private: a public `Any` or `TYPE_CHECKING` would leak

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

if _typing.TYPE_CHECKING:
    from ._bulk import BalanceReading, BalanceResult, BalanceTarget

# The bulk-check names are loaded on first access (PEP 562): most programs never
# use them, and their module is a noticeable share of `import stability_user`.
_LAZY = frozenset({"BalanceReading", "BalanceResult", "BalanceTarget"})


def __getattr__(name: str) -> _typing.Any:
    """Load the bulk-check classes when first asked for."""
    if name in _LAZY:
        from . import _bulk  # noqa: PLC0415 - the point is to defer it

        value = getattr(_bulk, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stability_user' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazily loaded ones included."""
    return sorted({*globals(), *_LAZY})


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
