"""API keys in what the command line prints: any token that looks like one is masked."""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Final

from .._secrets import REDACTED, mask_secret

__all__ = ["KEY_HINT", "mask_keys"]

# What a Stability API key looks like. Wherever one turns up in what the command
# line prints (a key pasted as an argument, a file named after one), it is masked.
_KEY_LIKE: Final = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9]{20,}")
KEY_HINT: Final = (
    "an API key goes in STABILITY_API_KEY or --key-file FILE, never on the command line"
)


def mask_keys(text: str, redacted: Container[str] = ()) -> str:
    """``text`` with every key-looking token masked (``sk-…abcd``), or redacted if known.

    A token in ``redacted`` (keys the program holds) is replaced whole (``[redacted]``).
    """

    def hide(match: re.Match[str]) -> str:
        key = match.group(0)
        return REDACTED if key in redacted else mask_secret(key)

    return _KEY_LIKE.sub(hide, text)
