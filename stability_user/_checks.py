"""Argument checks shared by the public constructors and methods."""

from __future__ import annotations

__all__ = ["check_count"]


def check_count(name: str, value: object) -> int:
    """Return ``value`` when it is an integer >= 1 (``bool`` excluded).

    Raises:
        ValueError: naming the argument.
    """
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value
