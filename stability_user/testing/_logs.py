"""The emulator's server log: what aiohttp reports, without anything that may hold a key.

aiohttp logs a malformed request with its parser's message, which quotes the
offending bytes: an ``Authorization: sk-...`` header, or a request line the key was
pasted into. The emulator gives aiohttp its own logger, and this module's filter on
it turns such a record into one line that names the error but not the bytes.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from aiohttp.http import HttpProcessingError

__all__ = ["SERVER_LOGGER"]

SERVER_LOGGER: Final = logging.getLogger("stability_user.testing.server")
"""The logger aiohttp's request handlers of the emulator write to."""

# An Authorization header or field as text, bare or Bearer, in any quoting.
_AUTHORIZATION: Final = re.compile(
    r"""(?i)(authorization['"]?\s*[:=,]\s*['"]?)(?:bearer\s+)?[^\s'",}\\]+"""
)


def _scrub(text: str) -> str:
    return _AUTHORIZATION.sub(r"\1[redacted]", text)


class _WithholdRequestBytes(logging.Filter):
    """Rewrites records so that no request bytes, and no Authorization value, get out."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if isinstance(error, HttpProcessingError):
            # The parser's message quotes the raw line: name the error class only.
            message = (
                f"{message}: answered {error.code} to a malformed request "
                f"({type(error).__name__}); its bytes are not shown as they may hold an API key"
            )
            record.exc_text = None
        elif record.exc_info:
            record.exc_text = _scrub(logging.Formatter().formatException(record.exc_info))
        record.msg, record.args, record.exc_info = _scrub(message), (), None
        return True


SERVER_LOGGER.addFilter(_WithholdRequestBytes())
