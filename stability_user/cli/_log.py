"""What a command writes on stderr as it goes: the library's log, a line a record, and the time."""

from __future__ import annotations

import datetime
import logging
import sys
from collections.abc import Callable

from tqdm import tqdm

from .._secrets import escape_controls
from ._failures import PROG
from ._masking import mask_keys

__all__ = ["install_log_handler", "utc_now"]


def utc_now() -> str:
    """The time a line of a long-running command carries, in UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        return f"{PROG}: {level}: {mask_keys(escape_controls(record.getMessage()))}"


class _Quiet(logging.Filter):
    """Retry notices are for ``--debug``: a final error already counts the attempts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and record.msg.startswith("retrying "))


class _BarAwareHandler(logging.Handler):
    """Writes each record on stderr as one line, above a progress bar if one is drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def install_log_handler(*, debug: bool) -> Callable[[], None]:
    """Show the library's log on stderr, one line a record; returns the undo."""
    logger = logging.getLogger("stability_user")
    handler = _BarAwareHandler()
    handler.setFormatter(_OneLine())
    if not debug:
        handler.addFilter(_Quiet())
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    return undo
