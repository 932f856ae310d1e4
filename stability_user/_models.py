"""What the user API returns, as frozen attrs classes.

The fields follow the service's OpenAPI description (``AccountResponseBody``,
``OrganizationMembership``, ``BalanceResponseBody`` and ``Error``). Structuring
from JSON happens in :mod:`stability_user._converter`, never here.
"""

from __future__ import annotations

import attrs

__all__ = ["Account", "Balance", "ErrorBody", "Freshness", "OrganizationMembership"]


@attrs.frozen
class Freshness:
    """How old a reading is, when a session's read cache handed it out (``cache=``).

    Attributes:
        age: seconds since the service answered, at the moment it was handed out.
        stale: whether it was older than the call's ``max_age``: handed out while a
            refresh runs (``stale_while_revalidate``) or because the fresh read
            failed (``stale_if_error``).
        fetched_at: the Unix time at which the service answered.
    """

    age: float
    stale: bool
    fetched_at: float


@attrs.frozen
class OrganizationMembership:
    """The account's membership of one organization.

    Attributes:
        id: the organization's ID, e.g. ``org-123456``; pass it as ``organization=``.
        name: the organization's display name.
        role: the account's role in it, e.g. ``MEMBER`` or ``OWNER``.
        is_default: whether a balance call without ``organization`` reads this one.
    """

    id: str
    name: str
    role: str
    is_default: bool


@attrs.frozen
class Account:
    """The account an API key belongs to.

    Attributes:
        id: the user's ID, e.g. ``user-1234``.
        email: the user's e-mail address.
        organizations: every organization the user is a member of, in the service's order.
        profile_picture: the URL of the user's picture, when one is set.
    """

    id: str
    email: str
    organizations: tuple[OrganizationMembership, ...]
    profile_picture: str | None = None
    freshness: Freshness | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)
    """How old this reading is, when a read cache served it; ``None`` without one."""

    @property
    def default_organization(self) -> OrganizationMembership | None:
        """The membership marked ``is_default``, or ``None`` when none is."""
        for membership in self.organizations:
            if membership.is_default:
                return membership
        return None


@attrs.frozen
class Balance:
    """A credit balance.

    Attributes:
        credits: the credits left, exactly as the service reported them.
    """

    credits: float
    freshness: Freshness | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)
    """How old this reading is, when a read cache served it; ``None`` without one."""


@attrs.frozen
class ErrorBody:
    """An error body as the service sent it; every field is optional.

    The service has used three shapes: v1alpha's ``{id, name, message, temporary,
    timeout, fault}``, v1's ``{id, name, message}`` and the v2beta style
    ``{id, name, errors: [...]}``. A field that is absent or of the wrong type is ``None``.
    """

    id: str | None = None
    name: str | None = None
    message: str | None = None
    temporary: bool | None = None
    timeout: bool | None = None
    fault: bool | None = None
    errors: tuple[str, ...] | None = None

    def describe(self) -> str | None:
        """The human-readable part: ``message``, else the ``errors`` joined, else ``None``."""
        if self.message:
            return self.message
        if self.errors:
            return "; ".join(self.errors)
        return None
