"""The emulated service's state: accounts, organizations, balances and the per-key rate limit.

Plain bookkeeping with no I/O: the HTTP layer asks it questions and renders the answers.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Sequence
from typing import Any, Final

import attrs

__all__ = [
    "API_VERSIONS",
    "ENDPOINTS",
    "Accounts",
    "EmulatedAccount",
    "EmulatedOrganization",
    "RateLimit",
    "RateLimiter",
]

API_VERSIONS: Final = ("v1", "v1alpha")
"""The API versions the emulator serves, the current one first."""

ENDPOINTS: Final = ("account", "balance")
"""The resources under ``/{version}/user/``."""


@attrs.define
class EmulatedOrganization:
    """One organization membership of an emulated account, with its balance.

    Attributes:
        id: the organization's ID.
        name: its display name.
        role: the account's role in it.
        is_default: whether a balance call without ``Organization`` reads it.
        credits: its balance; change it with :meth:`StabilityEmulator.set_balance`.
    """

    id: str
    name: str
    role: str = "MEMBER"
    is_default: bool = False
    credits: float = 0.0


@attrs.define
class EmulatedAccount:
    """An emulated user account, reached with its API key.

    Attributes:
        id: the user's ID.
        email: the user's e-mail address.
        organizations: the account's memberships, the default one first.
        profile_picture: a picture URL, or ``None`` to leave the field out.
    """

    id: str
    email: str
    organizations: list[EmulatedOrganization]
    profile_picture: str | None = None

    def body(self) -> dict[str, Any]:
        """The account as ``GET /user/account`` returns it."""
        body: dict[str, Any] = {
            "id": self.id,
            "email": self.email,
            "organizations": [
                {"id": o.id, "name": o.name, "role": o.role, "is_default": o.is_default}
                for o in self.organizations
            ],
        }
        if self.profile_picture is not None:
            body["profile_picture"] = self.profile_picture
        return body

    def organization(self, organization: str | None) -> EmulatedOrganization:
        """The membership a balance call reads: ``organization``'s, or the default one.

        Raises:
            KeyError: the account is not a member of ``organization``.
        """
        for membership in self.organizations:
            if membership.id == organization or (organization is None and membership.is_default):
                return membership
        if organization is None and self.organizations:
            return self.organizations[0]
        raise KeyError(organization)


class Accounts:
    """The emulated accounts, by API key, in the order they were added."""

    def __init__(self) -> None:
        """Start with no account."""
        self._by_key: dict[str, EmulatedAccount] = {}
        self._counter = 0

    def add(
        self,
        *,
        email: str | None,
        credits: float,
        organizations: Sequence[EmulatedOrganization] | None,
        api_key: str | None,
        account_id: str | None,
        profile_picture: str | None,
    ) -> str:
        """Create an account and return its key (see :meth:`StabilityEmulator.add_account`)."""
        self._counter += 1
        number = self._counter
        if organizations is None:
            organizations = [
                EmulatedOrganization(
                    id=f"org-{number:06d}",
                    name=f"Organization {number}",
                    role="OWNER",
                    is_default=True,
                    credits=credits,
                )
            ]
        key = api_key or f"sk-{secrets.token_hex(24)}"
        if key in self._by_key:
            raise ValueError("that API key belongs to another emulated account already")
        self._by_key[key] = EmulatedAccount(
            id=account_id or f"user-{number}",
            email=email or f"user-{number}@example.com",
            organizations=list(organizations),
            profile_picture=profile_picture,
        )
        return key

    def get(self, key: str | None) -> EmulatedAccount | None:
        """The account of ``key``, or ``None`` for a missing or unknown key."""
        return self._by_key.get(key) if key is not None else None

    def __getitem__(self, key: str) -> EmulatedAccount:
        """The account of ``key``; ``KeyError`` for an unknown one."""
        return self._by_key[key]

    def keys(self) -> list[str]:
        """Every accepted key, in the order they were added."""
        return list(self._by_key)


@attrs.frozen
class RateLimit:
    """The service's per-key rate limit: ``requests`` per ``window`` seconds.

    Past it the key gets 429 with ``Retry-After`` for ``lockout`` seconds.
    The defaults are the service's documented numbers.
    """

    requests: int = 150
    window: float = 10.0
    lockout: float = 60.0


class RateLimiter:
    """Counts each key's requests in a sliding window, across every connection and client.

    Attributes:
        limit: the limit in force, or ``None`` for none; it may be changed at any time.
    """

    def __init__(self, limit: RateLimit | None) -> None:
        """Start with no request counted."""
        self.limit = limit
        self._calls: dict[str, collections.deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def check(self, key: str, now: float) -> float | None:
        """Count a request of ``key`` at ``now``.

        Returns:
            ``None`` when it is allowed, else the seconds until the key may try again.
        """
        limit = self.limit
        if limit is None:
            return None
        locked_until = self._locked_until.get(key)
        if locked_until is not None:
            if now < locked_until:
                return locked_until - now
            del self._locked_until[key]
        calls = self._calls.setdefault(key, collections.deque())
        while calls and now - calls[0] >= limit.window:
            calls.popleft()
        if len(calls) >= limit.requests:
            self._locked_until[key] = now + limit.lockout
            calls.clear()
            return limit.lockout
        calls.append(now)
        return None
