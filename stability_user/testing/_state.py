"""The emulated service's state: accounts, organizations, balances and the per-key rate limit.

Plain bookkeeping with no I/O: the HTTP layer asks it questions and renders the answers.
Generated accounts are computed from their key when a request names one, never stored,
and the rate limit forgets a key once its window has passed: a run over a million keys
keeps only the keys of the last window in memory.
"""

from __future__ import annotations

import bisect
import collections
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
    "RateLimit",
    "RateLimiter",
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

    A key's state lasts only as long as it matters: its requests until they leave the
    window, its lockout until it ends. Keys are kept in the order they were last seen,
    so forgetting the ones that no longer matter looks at the oldest few on each request,
    and memory holds the keys of the last window, however many keys a run goes through.

    Attributes:
        limit: the limit in force, or ``None`` for none; it may be changed at any time.
    """

    def __init__(self, limit: RateLimit | None) -> None:
        """Start with no request counted."""
        self.limit = limit
        # Oldest seen first: each key's arrivals in the window (a list, in order: a
        # deque would cost ten times the memory of the one arrival most keys have), and
        # the lockouts, by when they were set.
        self._calls: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._locked_until: collections.OrderedDict[str, float] = collections.OrderedDict()

    @property
    def tracked_keys(self) -> int:
        """How many keys the limiter holds state for: requests in the window, or a lockout."""
        return len(self._calls.keys() | self._locked_until.keys())

    def check(self, key: str, now: float) -> float | None:
        """Count a request of ``key`` at ``now``.

        Returns:
            ``None`` when it is allowed, else the seconds until the key may try again.
        """
        limit = self.limit
        if limit is None:
            return None
        self._forget(now, limit.window)
        locked_until = self._locked_until.get(key)
        if locked_until is not None:
            if now < locked_until:
                return locked_until - now
            del self._locked_until[key]
        calls = self._calls.get(key)
        if calls is None:
            calls = self._calls[key] = []
        else:
            self._calls.move_to_end(key)
            # The arrivals a window ago or more, all at the front: times only grow.
            window = limit.window
            del calls[: bisect.bisect_left(calls, True, key=lambda t: now - t < window)]
        if len(calls) >= limit.requests:
            self._locked_until[key] = now + limit.lockout
            del self._calls[key]  # the lockout starts a fresh window
            return limit.lockout
        calls.append(now)
        return None

    def _forget(self, now: float, window: float) -> None:
        """Drop the keys whose last request has left the window, and the lockouts that ended."""
        calls = self._calls
        while calls:
            times = calls[next(iter(calls))]
            if times and now - times[-1] < window:
                break
            calls.popitem(last=False)
        locks = self._locked_until
        # By when they were set: a lockout set later with a shorter limit waits its turn
        # here, and is dropped at its key's next request in any case.
        while locks and now >= locks[next(iter(locks))]:
            locks.popitem(last=False)
