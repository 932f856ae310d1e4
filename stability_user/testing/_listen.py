"""Where the emulator may listen, loopback unless its user says otherwise, and its serving there."""

from __future__ import annotations

import ipaddress
import ssl
import warnings

from aiohttp import web

from ._logs import SERVER_LOGGER

__all__ = ["RemoteAccessWarning", "check_host", "is_loopback", "serve_app"]


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


async def serve_app(
    app: web.Application, host: str, port: int, *, ssl_context: ssl.SSLContext | None
) -> tuple[web.AppRunner, int, str]:
    """Serve ``app`` on ``host`` and ``port`` (0 picks a free one).

    Returns:
        The runner (to clean up), the port and the base URL of the address served.
    """
    runner = web.AppRunner(
        app,
        access_log=None,
        logger=SERVER_LOGGER,  # filtered: a malformed request's bytes may hold a key
        shutdown_timeout=0.5,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    # The first socket's own address: with "localhost" and port 0, each address
    # family gets its own free port, and the URL must name one that answers.
    address, port = runner.addresses[0][:2]
    shown = f"[{address}]" if ":" in address else address
    scheme = "http" if ssl_context is None else "https"
    return runner, port, f"{scheme}://{shown}:{port}"
