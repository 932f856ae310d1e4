"""How requests reach the service: which proxy, if any, and which certificates to trust.

A :class:`Route` is checked once, when the session is made: a proxy must be an
``http(s)://`` URL; an ``ssl.SSLContext`` must verify certificates and host names
(there is no way to turn verification off: it is what keeps the key from a
machine in the middle). Proxy credentials are secrets like the key: masked in
every repr and message, redacted from anything a server or proxy echoes.
"""

from __future__ import annotations

import base64
import functools
import ssl as ssl_module
import urllib.request
from typing import Final
from urllib.parse import urlsplit

from yarl import URL

from ._checks import check_type, is_loopback
from ._errors import StabilityError
from ._secrets import mask_url, secret_forms, url_secrets

__all__ = ["Route", "environment_proxy_secrets", "proxy_secrets"]

_CHOICES_KEPT: Final = 4096  # proxy choices per URL kept; cleared when full


def _credentials(url: URL) -> bytes | None:
    """The ``user:password`` a proxy URL makes aiohttp send, as it sends them (Basic, latin-1).

    Raises:
        ValueError: credentials HTTP Basic cannot carry, never quoting them.
    """
    if url.raw_user is None and url.raw_password is None:
        return None
    user, password = url.user or "", url.password or ""
    if ":" in user:
        raise ValueError("its user name holds a ':', which HTTP Basic credentials cannot carry")
    try:
        return f"{user}:{password}".encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            "its user name or password holds a character HTTP Basic credentials cannot "
            "carry (latin-1 only)"
        ) from None


def proxy_secrets(proxy: str | None) -> tuple[str, ...]:
    """What a proxy URL's credentials may be echoed as: never to be shown.

    A URL that does not parse, or whose credentials HTTP Basic cannot carry (never
    sent, then), gives its password's forms.
    """
    if not proxy:
        return ()
    try:
        return _secrets_of(proxy)
    except ValueError:
        return url_secrets(proxy)


def environment_proxy_secrets() -> tuple[str, ...]:
    """:func:`proxy_secrets` of every proxy the environment names (``HTTPS_PROXY``...)."""
    found = (s for proxy in urllib.request.getproxies().values() for s in proxy_secrets(proxy))
    return tuple(dict.fromkeys(found))


def _secrets_of(proxy: str | None) -> tuple[str, ...]:
    if proxy is None:
        return ()
    url = URL(proxy)
    credentials = _credentials(url)
    if credentials is None:
        return url_secrets(proxy)
    # aiohttp sends the credentials as Basic auth: a proxy could echo them so, or
    # decoded, or the password as written in the URL or decoded, in any encoding.
    basic = base64.b64encode(credentials).decode()
    password = url.password or ""
    found = (basic, *secret_forms(password), *url_secrets(proxy))
    return tuple(dict.fromkeys(secret for secret in found if secret))


@functools.cache
def verifying_context() -> ssl_module.SSLContext:
    """The system's trust store, verifying certificates and host names: made once, when needed."""
    return ssl_module.create_default_context()


def _check_env_proxy(proxy: str, scheme: str) -> str:
    """A proxy from the environment, checked as ``proxy=`` is; its variable named if it is wrong.

    Raises:
        StabilityError: naming the variable, never the proxy's password.
    """
    variable = f"{scheme.upper()}_PROXY"
    try:
        url = URL(proxy)
        url.port  # noqa: B018 - a port that is not a number raises here, not at the send
    except ValueError as exc:
        raise StabilityError(
            f"{variable} is not a proxy URL ({mask_url(proxy)!r}: {_problem(exc)}): "
            "fix or unset it, or pass trust_env=False"
        ) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise StabilityError(
            f"{variable} must be an http:// proxy URL, got {mask_url(proxy)!r}: "
            "fix or unset it, or pass trust_env=False"
        )
    try:
        _credentials(url)
    except ValueError as exc:
        raise StabilityError(
            f"{variable} cannot be used ({mask_url(proxy)!r}: {exc}): "
            "fix or unset it, or pass trust_env=False"
        ) from None
    return proxy


def _problem(exc: ValueError) -> str:
    # The parser's message may quote the URL, password and all: only its kind is shown.
    return "its port is not a number" if "port" in str(exc).lower() else "it does not parse"


def _check_proxy(proxy: object) -> str | None:
    if proxy is None:
        return None
    check_type("proxy", proxy, str)
    assert isinstance(proxy, str)  # noqa: S101 - for the type checker
    try:
        url = URL(proxy)
        url.port  # noqa: B018 - a port that is not a number raises here, not at the send
    except ValueError as exc:
        # The parser's message may quote the URL: the masked URL and the kind of problem.
        raise ValueError(f"proxy is not a URL ({mask_url(proxy)!r}: {_problem(exc)})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"proxy must be an http:// URL, got {mask_url(proxy)!r}")
    try:
        _credentials(url)
    except ValueError as exc:
        raise ValueError(f"proxy {mask_url(proxy)!r} cannot be used: {exc}") from None
    return proxy


def _check_ssl(context: object) -> ssl_module.SSLContext | None:
    if context is None:
        return None
    check_type("ssl", context, ssl_module.SSLContext)
    assert isinstance(context, ssl_module.SSLContext)  # noqa: S101 - for the type checker
    if context.verify_mode != ssl_module.CERT_REQUIRED or not context.check_hostname:
        raise ValueError("ssl must verify certificates and host names (CERT_REQUIRED)")
    return context


class Route:
    """The proxy and TLS settings of a transport, checked once.

    Args:
        proxy: an ``http://`` proxy URL for every request (credentials allowed).
        trust_env: read ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY``, as aiohttp
            does (once per URL, at its first request).
        ssl: an ``ssl.SSLContext`` for a custom CA bundle or client certificates.

    Raises:
        TypeError: a proxy or ssl of the wrong type.
        ValueError: a proxy that is not an ``http(s)://`` URL, or an ``ssl`` that
            does not verify certificates.
    """

    __slots__ = ("_choices", "_proxy", "_ssl", "_trust_env", "secrets")

    def __init__(
        self,
        *,
        proxy: str | None = None,
        trust_env: bool = False,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        """Check the settings."""
        self._proxy = _check_proxy(proxy)
        self._trust_env = bool(trust_env)
        self._ssl = _check_ssl(ssl)
        self.secrets = _secrets_of(self._proxy)  # redacted from every message
        self._choices: dict[str, str | None] = {}

    @property
    def direct(self) -> bool:
        """Whether no request goes through a proxy (none given, none from the environment)."""
        return self._proxy is None and not self._trust_env

    @property
    def ssl(self) -> ssl_module.SSLContext:
        """The context every request carries: the one given, else the system's trust store.

        Always an explicit, verifying context: ``ssl=True`` would mean "whatever the
        connector says", and a connector of the caller's may not verify.
        """
        return self._ssl or verifying_context()

    @property
    def proxy(self) -> str | None:
        """The explicit proxy, its password masked."""
        return None if self._proxy is None else mask_url(self._proxy)

    def proxy_for(self, url: str) -> str | None:
        """The proxy a request to ``url`` goes through, or ``None`` to go directly.

        Loopback never goes through a proxy: a clear-text request (the key in it)
        must not travel to another machine, whatever the environment says.
        """
        if url in self._choices:
            return self._choices[url]
        parts = urlsplit(url)
        host = parts.hostname or ""
        proxy: str | None = None
        if not is_loopback(host):
            if self._proxy is not None:
                proxy = self._proxy
            elif self._trust_env and not urllib.request.proxy_bypass(host):
                proxy = urllib.request.getproxies().get(parts.scheme)
                if proxy is not None:
                    # Credentials in HTTPS_PROXY are secrets too, from now on.
                    self.secrets = (*self.secrets, *url_secrets(proxy))
                    proxy = _check_env_proxy(proxy, parts.scheme)
                    self.secrets = tuple(dict.fromkeys((*self.secrets, *_secrets_of(proxy))))
        if len(self._choices) >= _CHOICES_KEPT:
            self._choices.clear()
        self._choices[url] = proxy
        return proxy
