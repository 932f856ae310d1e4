"""The emulated service's state: what it serves, and its accounts, organizations and balances.

Plain bookkeeping with no I/O: the HTTP layer asks it questions and renders the answers.
Generated accounts are computed from their key when a request names one, never stored,
and the rate limit (:mod:`._rate_limit`) forgets a key once its window has passed: a run
over a million keys keeps only the keys of the last window in memory.
"""

from __future__ import annotations

import operator
import secrets
from collections.abc import Sequence
from typing import Any, Final

import attrs

__all__ = [
    "API_VERSIONS",
    "ENDPOINTS",
    "GENERATED_KEY_PREFIX",
    "MAX_GENERATED",
    "Accounts",
    "EmulatedAccount",
    "EmulatedOrganization",
    "check_generated_count",
    "generated_account",
    "generated_credits",
    "generated_key",
    "generated_number",
]

API_VERSIONS: Final = ("v1", "v1alpha")
"""The API versions the emulator serves, the current one first."""

ENDPOINTS: Final = ("account", "balance")
"""The resources under ``/{version}/user/``."""

GENERATED_KEY_PREFIX: Final = "sk-generated-"
"""How a generated account's key starts; its account number follows, in 35 digits."""

_GENERATED_DIGITS: Final = 48 - len(GENERATED_KEY_PREFIX)  # as long as a real key

MAX_GENERATED: Final = 10**_GENERATED_DIGITS - 1
"""The most generated accounts an emulator serves: every number fits the key."""


def check_generated_count(count: object) -> None:
    """Refuse a number of generated accounts that is not an int from 0 to :data:`MAX_GENERATED`.

    Raises:
        ValueError: it is not.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_GENERATED:
        raise ValueError(f"generated_accounts must be an int from 0 to 10**35 - 1, not {count!r}")


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


def generated_key(number: int) -> str:
    """The key of generated account ``number`` (from 1): ``sk-generated-`` and 35 digits.

    Raises:
        TypeError: not an int.
        ValueError: a number below 1, or too large for 35 digits.
    """
    if isinstance(number, bool):
        raise TypeError("a generated account's number is an int, not a bool")
    number = operator.index(number)  # a float is refused, not written as "3.0"
    if number < 1:
        raise ValueError(f"a generated account's number is at least 1, not {number}")
    if number > MAX_GENERATED:
        raise ValueError(f"a generated account's number has at most {_GENERATED_DIGITS} digits")
    return GENERATED_KEY_PREFIX + str(number).zfill(_GENERATED_DIGITS)


def generated_number(key: str) -> int | None:
    """The account number in a generated key, or ``None`` for any other key.

    Only the exact form :func:`generated_key` makes counts: one key per account.
    """
    digits = key[len(GENERATED_KEY_PREFIX) :]
    if (
        not key.startswith(GENERATED_KEY_PREFIX)
        or len(digits) != _GENERATED_DIGITS
        or not digits.isascii()
        or not digits.isdigit()
    ):
        return None
    number = int(digits)
    return number if number >= 1 else None


def generated_credits(number: int) -> float:
    """The balance of generated account ``number``: 0.00 to 999.99, spread over the numbers.

    7919 is prime to 100,000, so any 100,000 consecutive accounts hold every value
    once; one account in a hundred holds less than 10 credits.
    """
    return number * 7919 % 100_000 / 100


def generated_account(number: int) -> EmulatedAccount:
    """Generated account ``number``, built afresh from the number: one default organization."""
    return EmulatedAccount(
        id=f"generated-{number}",
        email=f"generated-{number}@example.com",
        organizations=[
            EmulatedOrganization(
                id=f"org-generated-{number}",
                name=f"Generated organization {number}",
                role="OWNER",
                is_default=True,
                credits=generated_credits(number),
            )
        ],
    )


class Accounts:
    """The emulated accounts, by API key: the added ones, in order, and the generated ones.

    Attributes:
        generated: how many generated accounts there are: the keys
            ``generated_key(1)`` to ``generated_key(generated)``. They are built from
            the key on each request and stored only when changed through :meth:`__getitem__`.
    """

    def __init__(self, generated: int = 0) -> None:
        """Start with no added account and ``generated`` generated ones."""
        self._by_key: dict[str, EmulatedAccount] = {}
        self._counter = 0
        self.generated = generated

    def _generated_number(self, key: str) -> int | None:
        number = generated_number(key)
        return number if number is not None and number <= self.generated else None

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
        if key in self._by_key or self._generated_number(key) is not None:
            raise ValueError("that API key belongs to another emulated account already")
        self._by_key[key] = EmulatedAccount(
            id=account_id or f"user-{number}",
            email=email or f"user-{number}@example.com",
            organizations=list(organizations),
            profile_picture=profile_picture,
        )
        return key

    def get(self, key: str | None) -> EmulatedAccount | None:
        """The account of ``key``, or ``None`` for a missing or unknown key.

        A generated account not stored is built afresh: changing it changes nothing.
        """
        if key is None:
            return None
        account = self._by_key.get(key)
        if account is None and self.generated:
            number = self._generated_number(key)
            if number is not None:
                return generated_account(number)
        return account

    def __getitem__(self, key: str) -> EmulatedAccount:
        """The account of ``key``, to read or change in place; ``KeyError`` for an unknown one.

        A generated account is stored from here on, so that changes to it last.
        """
        account = self._by_key.get(key)
        if account is None:
            number = self._generated_number(key)
            if number is None:
                raise KeyError(key)
            account = self._by_key[key] = generated_account(number)
        return account

    def keys(self) -> list[str]:
        """Every stored key: the added ones in order, and generated ones that were changed."""
        return list(self._by_key)
