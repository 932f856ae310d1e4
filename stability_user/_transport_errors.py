"""aiohttp's and the operating system's failures, as the library's own errors: one table.

Every text aiohttp quotes from the server or the network is redacted of the
secrets sent (the key, a proxy's credentials) and made safe to print before it
reaches an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.parse import urlsplit

import aiohttp

from ._errors import APIConnectionError, APITimeoutError, ResponseValidationError
from ._http import Request
from ._secrets import display_text, mask_url, redact

__all__ = ["connection_error", "quotes_a_secret", "timed_out", "too_large"]


def quotes_a_secret(exc: BaseException, secrets: Iterable[str | None]) -> bool:
    """Whether aiohttp's message quotes a secret (then no traceback may show it)."""
    text = f"{exc!s} {exc!r} {getattr(exc, 'message', '')}"
    return redact(text, secrets) != text


def connection_error(
    request: Request,
    exc: aiohttp.ClientError,
    secrets: tuple[str | None, ...],
    *,
    proxy: str | None,
) -> APIConnectionError:
    """The library's error for aiohttp's ``exc``: what failed, and what to do."""
    origin = _origin(request.url)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = display_text(str(exc.certificate_error), secrets)
        return APIConnectionError(
            f"certificate verification failed for {origin}: {reason} "
            "(a TLS-inspecting proxy needs its CA: pass ssl= with it)",
            attempts=request.attempt,
            retryable=False,  # the same certificate will fail again
        )
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        # An errno here is OpenSSL's, not the OS's: name the TLS reason instead.
        tls = exc.os_error
        reason = getattr(tls, "reason", None) or type(tls).__name__
        return APIConnectionError(
            f"TLS handshake with {origin} failed ({display_text(str(reason), secrets)}): "
            "is it an http:// server, or something in between that is not TLS?",
            attempts=request.attempt,
            retryable=False,  # the same server answers the same way
        )
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        where = mask_url(proxy) if proxy else "the proxy"
        return APIConnectionError(
            f"cannot connect to the proxy {where} ({_os_reason(exc.os_error).lower()})",
            attempts=request.attempt,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = _os_reason(exc.os_error)
        return APIConnectionError(
            f"cannot connect to {origin} ({display_text(reason.lower(), secrets)})",
            attempts=request.attempt,
        )
    text = display_text(str(exc), secrets)
    name = type(exc).__name__
    return APIConnectionError(
        f"{request.method} {request.url} failed: {name}: {text}" if text else name,
        attempts=request.attempt,
    )


def _os_reason(error: OSError) -> str:
    # "connection refused", not "connect call failed ('127.0.0.1', 1)".
    return os.strerror(error.errno) if error.errno else str(error) or type(error).__name__


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def too_large(status: int, what: str) -> ResponseValidationError:
    """The error of a body over ``max_body_size``: ``what`` says how it was found."""
    return ResponseValidationError(
        f"{status} response refused: its body {what}, over max_body_size", status=status
    )


def timed_out(request: Request) -> APITimeoutError:
    """The error of an attempt that took longer than its timeout."""
    return APITimeoutError(
        f"{request.method} {request.url} took longer than {request.timeout:g} s",
        attempts=request.attempt,
    )
