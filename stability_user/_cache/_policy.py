"""What a session's read cache is asked to do: :class:`CachePolicy`, a frozen value."""

from __future__ import annotations

import attrs

from .._checks import check_count, check_seconds

__all__ = ["CachePolicy"]


def _seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds(f"cache {attribute.name}", value, zero=True)


def _entries(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    check_count(f"cache {attribute.name}", value)


@attrs.frozen
class CachePolicy:
    """How long a reading may answer later calls, and what to do when it is old.

    ::

        session = StabilitySession(cache=CachePolicy(max_age=1.0))

    With a policy, identical reads share one request: while a read of an entry is
    in flight, an identical call joins it instead of sending its own (an entry is
    one API key, endpoint, organization, API version and base URL). It does only
    what it is asked to: with the defaults below, a reading answers calls for
    ``max_age`` seconds, and nothing stale is ever handed out.

    Attributes:
        max_age: seconds a reading answers calls; ``balance(max_age=...)`` and
            ``account(max_age=...)`` override it per call (``0``: never from the
            cache, though still joining a read in flight).
        stale_while_revalidate: seconds past ``max_age`` during which a call gets
            the old reading at once, while one refresh per entry runs in the
            background (RFC 5861).
        stale_if_error: seconds past ``max_age`` during which a call whose fresh read
            fails with a server error, a connection error, a timeout or a rate-limit
            error gets the old reading instead (never after 400, 401, 403 or 404).
        max_entries: readings kept at most, the least recently used dropped first.
    """

    max_age: float = attrs.field(validator=_seconds)
    stale_while_revalidate: float = attrs.field(default=0.0, validator=_seconds)
    stale_if_error: float = attrs.field(default=0.0, validator=_seconds)
    max_entries: int = attrs.field(default=10_000, validator=_entries)
