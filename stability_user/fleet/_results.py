"""A target's result as a run keeps it: one field of the run's Redis hash, keyed by label."""

from __future__ import annotations

import json
from typing import Any, Final

import attrs

from stability_user import BalanceResult

__all__ = ["UNKNOWN", "UNKNOWN_LABEL", "StoredResult", "stored"]

_MAX_MESSAGE: Final = 300  # characters of an error's message kept with its result

UNKNOWN_LABEL: Final = "UnknownLabel"
"""The error of a label that a lookup returned no target for."""


@attrs.frozen
class StoredResult:
    """The result of one target of a run, as stored: a balance, or why there is none.

    Attributes:
        label: the target's label.
        credits: the balance read, or ``None`` when the check failed.
        error: the failure's type (``AuthenticationError``, ``APIConnectionError``...,
            ``UnknownLabel`` for a label a lookup did not find), or ``None``.
        message: the failure's message (never holding a key), or ``None``.
        status: the HTTP status of a failure the service answered, or ``None``.
    """

    label: str
    credits: float | None = None
    error: str | None = None
    message: str | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the balance was read."""
        return self.error is None

    @classmethod
    def parse(cls, label: str, value: str | bytes) -> StoredResult:
        """The result stored for ``label``: the hash field's value."""
        fields = json.loads(value)
        return cls(
            label,
            credits=fields.get("credits"),
            error=fields.get("error"),
            message=fields.get("message"),
            status=fields.get("status"),
        )


def stored(result: BalanceResult) -> str:
    """The hash field's value for ``result``: its balance, or its failure."""
    error = result.error
    if error is None:
        assert result.balance is not None  # noqa: S101 - a result without an error has one
        fields: dict[str, Any] = {"credits": result.balance.credits}
    else:
        # str() of the library's errors never holds a key; capped, since it comes
        # from the server.
        fields = {"error": type(error).__name__, "message": str(error)[:_MAX_MESSAGE]}
        status = getattr(error, "status", None)
        if isinstance(status, int):
            fields["status"] = status
    return json.dumps(fields, separators=(",", ":"))


UNKNOWN: Final = json.dumps(
    {"error": UNKNOWN_LABEL, "message": "the lookup returned no target for this label"},
    separators=(",", ":"),
)
"""The hash field's value for a label that a lookup returned no target for."""
