"""The name of one taken slot or lease in a shared store."""

from __future__ import annotations

import os
import time

__all__ = ["new_ordered_token", "new_token"]


def new_token() -> str:
    """128 random bits as 32 hex digits: unique across processes, machines and forks.

    The form of ``uuid.uuid4().hex``, which stored state may already hold, at a
    fifth of its cost: it is made for every request through a shared store.
    """
    return os.urandom(16).hex()


def new_ordered_token() -> str:
    """A token whose first 16 hex digits are the time it was made, then 64 random bits.

    Unique as :func:`new_token` is, and ordered by the time it was made (to the
    clock's resolution): rows keyed by it are written where the last ones were, so a
    transaction dirties fewer pages.
    """
    return f"{time.time_ns():016x}{os.urandom(8).hex()}"
