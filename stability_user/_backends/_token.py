"""The name of one taken slot or lease in a shared store."""

from __future__ import annotations

import os

__all__ = ["new_token"]


def new_token() -> str:
    """128 random bits as 32 hex digits: unique across processes, machines and forks.

    The form of ``uuid.uuid4().hex``, which stored state may already hold, at a
    fifth of its cost: it is made for every request through a shared store.
    """
    return os.urandom(16).hex()
