"""The ``stability-user`` command line; it needs the extra: ``pip install stability-user[cli]``.

Keys come from ``STABILITY_API_KEY`` or a file, never from the command line
itself (arguments leak into shell history and ``ps``), and any key printed is
masked. Errors are one line on stderr; ``--debug`` shows the traceback.

Exit codes:

* 0: success, or a server (``exporter``, ``emulator``) stopped by its signal;
* 1: a call failed, or any target of ``balances`` failed, or ``watch --once``
  found the balance below ``--below``, or a server cannot listen on its address,
  or an extra is not installed (``cli``, or ``exporter`` for that command);
* 2: a usage error: a wrong option, no API key, an unreadable key, CA or
  target file, a target file without targets;
* 3: ``watch --once`` could not read the balance;
* 130: interrupted (Ctrl-C); ``balances`` prints a partial summary first.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

INTERRUPTED = 130  # the shell's 128 + SIGINT

# What the command line needs beyond the core library: the ``cli`` extra.
_EXTRA_NEEDS = frozenset({"click", "tqdm", "platformdirs"})
NEEDS_EXTRA = (
    "stability-user: the command line needs its extra: pip install 'stability-user[cli]'\n"
)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (the ``stability-user`` console script)."""
    try:
        # Imported here, not at the top, so that Ctrl-C while click, tqdm and the
        # commands load is caught below too, and a core-only install is told what to add.
        from ._app import run  # noqa: PLC0415

        code = run(argv)
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] not in _EXTRA_NEEDS:
            raise
        sys.stderr.write(NEEDS_EXTRA)
        code = 1
    except KeyboardInterrupt:
        sys.stderr.write("stability-user: interrupted\n")
        code = INTERRUPTED
    raise SystemExit(code)
