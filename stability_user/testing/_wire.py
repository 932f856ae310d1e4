"""What one request and its answer look like on the wire: the request, its id, error bodies.

Every answer carries a fresh ``x-request-id``; a JSON error body's ``id`` is the same
id, so a test can tie a client's error to the emulator's record of the request.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Final

import attrs
from aiohttp import web

from ._state import API_VERSIONS, ENDPOINTS, Accounts, EmulatedAccount

__all__ = [
    "ALLOWED_METHODS",
    "REQUEST_ID_HEADER",
    "Exchange",
    "key_of",
    "retry_after_value",
    "status_name",
]

REQUEST_ID_HEADER: Final = "x-request-id"
ALLOWED_METHODS: Final = ("GET", "HEAD")
"""The methods the two resources answer; the others get 405."""

_NAMES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    429: "rate_limit_exceeded",
    500: "server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def status_name(status: int) -> str:
    """The error ``name`` the service gives ``status``."""
    return _NAMES.get(status, "server_error" if status >= 500 else "error")


def key_of(header: str | None) -> str | None:
    """The API key in an ``Authorization`` value, bare or after ``Bearer``."""
    if not header:
        return None
    return header[7:] if header.startswith("Bearer ") else header


def retry_after_value(value: float | str) -> str:
    """A ``Retry-After`` value: seconds as given, or an HTTP-date string passed through."""
    if isinstance(value, str):
        return value
    return f"{value:g}"


@attrs.frozen
class Exchange:
    """One request as the emulator sees it, and the helpers to answer it.

    Attributes:
        request: the aiohttp request.
        request_id: the id sent back as ``x-request-id`` (and as an error body's ``id``).
        version: the API version of the path; paths outside both versions get v1's shape.
        endpoint: ``"account"`` or ``"balance"`` for one of the resources, else ``None``.
        key: the API key sent, or ``None``.
        account: the account of that key, or ``None`` for a missing or unknown key.
    """

    request: web.Request
    request_id: str
    version: str
    endpoint: str | None
    key: str | None
    account: EmulatedAccount | None

    @classmethod
    def of(cls, request: web.Request, accounts: Accounts) -> Exchange:
        """Read ``request``: its version, resource, key and account, with a fresh id."""
        key = key_of(request.headers.get("Authorization"))
        parts = request.path.split("/")
        version = parts[1] if len(parts) > 1 and parts[1] in API_VERSIONS else API_VERSIONS[0]
        endpoint = None
        if len(parts) == 4 and parts[0] == "" and parts[1] in API_VERSIONS and parts[2] == "user":
            endpoint = parts[3] if parts[3] in ENDPOINTS else None
        return cls(
            request=request,
            request_id=secrets.token_hex(16),
            version=version,
            endpoint=endpoint,
            key=key,
            account=accounts.get(key),
        )

    def json(self, body: Any, *, status: int = 200) -> web.Response:
        """Answer ``body`` as JSON."""
        return web.json_response(body, status=status)

    def error(
        self,
        status: int,
        message: str,
        *,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        """Answer ``status`` with the error body of the path's API version.

        v1's error is ``{id, name, message}``; v1alpha's adds ``temporary``,
        ``timeout`` and ``fault``. The ``id`` is the request's id.
        """
        body: dict[str, Any] = {
            "id": self.request_id,
            "name": name or status_name(status),
            "message": message,
        }
        if self.version == "v1alpha":
            body.update(temporary=status in (429, 503), timeout=status == 504, fault=status >= 500)
        response = self.json(body, status=status)
        if headers:
            response.headers.update(headers)
        return response
