"""Where the emulator may listen: loopback unless its user says otherwise."""

from __future__ import annotations

import ipaddress
import warnings

__all__ = ["RemoteAccessWarning", "check_host", "is_loopback"]


class RemoteAccessWarning(UserWarning):
    """The emulator listens beyond loopback, where others can reach its demo keys."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP (127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name other than localhost, or nothing: it may be any address
        return False


def check_host(host: str, *, allow_remote: bool, tls: bool) -> None:
    """Refuse a host beyond loopback unless ``allow_remote``, and then warn.

    Raises:
        ValueError: ``host`` is not a loopback address and ``allow_remote`` is false.
    """
    if is_loopback(host):
        return
    what = "its demo keys" if tls else "its demo keys and its clear-text HTTP"
    if not allow_remote:
        raise ValueError(
            f"refusing to listen on {host!r}: not a loopback address, so {what} would be "
            "exposed to the network (allow_remote=True, or --allow-remote on the command line, "
            "does it anyway)"
        )
    warnings.warn(
        f"the emulator listens on {host!r}, beyond loopback: {what} are exposed to "
        "anyone who can reach it",
        RemoteAccessWarning,
        stacklevel=3,
    )
