"""Options more than one command takes, defined once so their checks cannot drift apart."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = [
    "below_option",
    "concurrency_option",
    "finite",
    "interval_option",
    "organization_option",
    "seconds",
]

F = TypeVar("F", bound=Callable[..., Any])


def finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """An option's callback refusing ``nan`` and ``inf``, which click's float accepts."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value:g}", ctx, param)
    return value


def seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """An option's callback for a duration: finite and above 0 (click's FloatRange lets nan in)."""
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a number of seconds > 0, got {value:g}", ctx, param)
    return value


def _seconds_at_most(limit: float) -> Callable[[click.Context, click.Parameter, float], float]:
    def check(ctx: click.Context, param: click.Parameter, value: float) -> float:
        value = seconds(ctx, param, value)
        if value > limit:
            message = f"must be at most {limit:g} seconds, got {value:g}"
            raise click.BadParameter(message, ctx, param)
        return value

    return check


def interval_option(help_text: str, *, at_most: float) -> Callable[[F], F]:
    """``--interval SECONDS``: above 0, finite, at most ``at_most``; 60 by default."""
    return click.option(
        "--interval",
        type=float,
        metavar="SECONDS",
        callback=_seconds_at_most(at_most),
        default=60.0,
        show_default=True,
        help=help_text,
    )


def concurrency_option(help_text: str) -> Callable[[F], F]:
    """``--concurrency/-c N``: checks in flight at once, 1 to 10,000; 32 by default."""
    return click.option(
        "--concurrency",
        "-c",
        type=click.IntRange(min=1, max=10_000),
        default=32,
        show_default=True,
        help=help_text,
    )


def organization_option(help_text: str) -> Callable[[F], F]:
    """``--organization/-o ID``: an organization other than the key's default one."""
    return click.option("--organization", "-o", metavar="ID", help=help_text)


def below_option(help_text: str) -> Callable[[F], F]:
    """``--below CREDITS``: a finite threshold."""
    return click.option("--below", type=float, metavar="CREDITS", callback=finite, help=help_text)
