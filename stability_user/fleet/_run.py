"""A run of a sweep: its name, where it lives in Redis, its arq queue and job, and its error."""

from __future__ import annotations

import re
from typing import Final

import attrs

__all__ = ["CHECK_CHUNK", "PREFIX", "QUEUE_NAME", "RunKeys", "SweepError", "check_run"]

QUEUE_NAME: Final = "arq:queue:stability-user-fleet"
"""The arq queue of a sweep's jobs: its own, so other jobs and their workers never mix in."""

CHECK_CHUNK: Final = "stability_user_check_chunk"
"""The name of the arq function that checks one chunk."""

PREFIX: Final = "stability-user:fleet"
"""What the Redis keys of every run, and the arq job ids of their chunks, start with."""

_RUN_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")


class SweepError(Exception):
    """A sweep cannot go on as asked; the message says why and what to do."""


def check_run(run: object) -> str:
    """``run``, if it is a run's name: it becomes part of Redis keys and job ids.

    Raises:
        ValueError: not a name of 1 to 100 letters, digits and ``. _ : -``.
    """
    if not isinstance(run, str) or not _RUN_ID.fullmatch(run):
        raise ValueError(
            "a run is named by 1 to 100 letters, digits and . _ : - (starting with a "
            f"letter or digit), not {run!r}"
        )
    return run


@attrs.frozen
class RunKeys:
    """The Redis keys of one run."""

    meta: str
    results: str
    chunks: str

    @classmethod
    def of(cls, run: str) -> RunKeys:
        """The keys of ``run``."""
        base = f"{PREFIX}:{run}"
        return cls(f"{base}:meta", f"{base}:results", f"{base}:chunks")
