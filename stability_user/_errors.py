"""Errors raised by stability-user.

Every failure a call can meet is one of these; nothing from aiohttp or asyncio
leaks out except :class:`asyncio.CancelledError`::

    StabilityError                  misuse, configuration, anything the library refuses
    ├── APIError                    the service answered with a non-2xx status
    │   ├── BadRequestError         400
    │   ├── AuthenticationError     401: missing or unknown API key
    │   ├── PermissionDeniedError   403: e.g. not a member of the organization
    │   ├── NotFoundError           404
    │   ├── RateLimitError          429, or the client's own rate limit (``retry_after``)
    │   └── ServerError             5xx (``retry_after``)
    ├── APIConnectionError          no usable answer: refused, reset, dropped
    │   └── APITimeoutError         an attempt (or the deadline) ran out of time
    └── ResponseValidationError     a 2xx body that is not what the spec promises,
                                    or any body over ``max_body_size``

No message ever contains the API key: text quoted from a response is redacted
after it is decoded, and its control characters are escaped, before it is put
into an exception. Every error pickles with its attributes (jobs cross processes).
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from ._secrets import display_text

if TYPE_CHECKING:
    from ._models import ErrorBody

SESSION_CLOSED = "this StabilitySession is closed"
"""The message of the :class:`StabilityError` a call on a closed session raises."""

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseValidationError",
    "ServerError",
    "StabilityError",
]


class StabilityError(Exception):
    """Base class of every error stability-user raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the keyword-only state (exceptions default to positional args)."""
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[Exception], args: tuple[object, ...], state: dict[str, object]) -> Exception:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown Status"


class APIError(StabilityError):
    """The service answered with a status that is not a success.

    The message reads ``status name: message (detail; request id ...)``, e.g.
    ``401 unauthorized: missing or invalid API key (request id 3f2c9a...)``.

    Attributes:
        status: the HTTP status of the last response.
        error: the parsed error body, or ``None`` when the body was not a JSON object.
        headers: the headers of the last response.
        attempts: how many attempts the call made (counted from 1).
        request_id: the service's ``x-request-id`` for the last response, to quote
            to its support; ``None`` when it sent none.
    """

    status: int
    error: ErrorBody | None
    headers: Mapping[str, str]
    attempts: int
    request_id: str | None

    def __init__(
        self,
        status: int,
        error: ErrorBody | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        attempts: int = 1,
        detail: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Build the error; ``detail`` (already redacted) is added to the message."""
        self.status = status
        self.error = error
        self.headers = headers if headers is not None else {}
        self.attempts = attempts
        self.request_id = request_id
        name = error.name if error is not None and error.name else _reason(status)
        text = f"{status} {display_text(name, limit=100)}"
        message = error.describe() if error is not None else None
        if message:
            text = f"{text}: {display_text(message)}"
        notes = [note for note in (detail, self._hint()) if note]
        if request_id:
            notes.append(f"request id {request_id}")
        if notes:
            text = f"{text} ({'; '.join(notes)})"
        super().__init__(text)

    def _hint(self) -> str | None:
        return None


class BadRequestError(APIError):
    """400: the service refused the request as malformed."""


class AuthenticationError(APIError):
    """401: the API key is missing, malformed or unknown."""


class PermissionDeniedError(APIError):
    """403: the key may not do this, e.g. it is not a member of the organization."""


class NotFoundError(APIError):
    """404: no such resource (v1alpha paths answer this once v1alpha is retired)."""


class _RetryAfterError(APIError):
    retry_after: float | None

    def __init__(
        self,
        status: int,
        error: ErrorBody | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        attempts: int = 1,
        detail: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(
            status,
            error,
            headers=headers,
            attempts=attempts,
            detail=detail,
            request_id=request_id,
        )

    def _hint(self) -> str | None:
        return None if self.retry_after is None else f"retry after {self.retry_after:.3g} s"


class RateLimitError(_RetryAfterError):
    """429: too many requests for this key, from the service or from the client's own limiter.

    When the client's rate limiter refuses to wait (the wait is longer than the
    retry policy allows), nothing was sent: ``sent`` is ``False``, ``headers`` is
    empty, ``error`` is ``None``, and the message says so.

    Attributes:
        retry_after: seconds until the key may send again, when known.
        sent: whether the service answered this 429; ``False`` when the client's own
            rate limiter refused to send.
    """

    sent: bool = True


class ServerError(_RetryAfterError):
    """5xx: the service (or a proxy in front of it) failed.

    Attributes:
        retry_after: seconds until the time the service's ``Retry-After`` named,
            or ``None`` when it sent none.
    """


class APIConnectionError(StabilityError):
    """No usable answer came back: the connection was refused, reset or dropped.

    Attributes:
        attempts: how many attempts the call made (counted from 1).
        retryable: whether another attempt could succeed; ``False`` for a certificate
            that failed verification, which the retry policy never retries.
    """

    attempts: int
    retryable: bool

    def __init__(self, message: str, *, attempts: int = 1, retryable: bool = True) -> None:
        """Build the error from an already redacted message."""
        self.attempts = attempts
        self.retryable = retryable
        super().__init__(message)

    def __str__(self) -> str:
        """Say the message and, after retries, how many attempts were made."""
        text = str(self.args[0]) if self.args else ""
        if self.attempts > 1:
            return f"{text} (after {self.attempts} attempts)"
        return text


class APITimeoutError(APIConnectionError):
    """An attempt took longer than ``timeout``, or the call ran past its ``deadline``."""


class ResponseValidationError(StabilityError):
    """The response could not be trusted: a 2xx body off the spec, or a body too large.

    The message names the JSON path of each problem, e.g. ``$.organizations[1].is_default``.

    Attributes:
        status: the HTTP status of the response.
    """

    status: int

    def __init__(self, message: str, *, status: int) -> None:
        """Build the error from an already redacted message."""
        self.status = status
        super().__init__(message)
