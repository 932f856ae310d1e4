"""What the global options say, and the session they make."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .._bulk import BalanceTarget
from .._errors import StabilityError
from .._http import Middleware
from .._network import environment_proxy_secrets, proxy_secrets
from .._ratelimit import RateLimit, RateLimitStore, RateLimitWait
from .._retry import RetryPolicy
from .._secrets import redact, url_secrets
from .._session import StabilitySession
from ..testing import StabilityEmulator
from . import NEEDS_EXTRA
from ._describe import Hints, describe
from ._failures import PROG, Failure, UsageFailure, os_reason, run_async

if TYPE_CHECKING:
    from .. import LocalRateLimitStore

__all__ = [
    "Settings",
    "load_ca_bundle",
    "open_session",
    "optional_key",
    "read_key",
    "require_key",
]

T = TypeVar("T")

logger = logging.getLogger("stability_user.cli")


@attrs.frozen
class Settings:
    """The global options, checked; every command gets them."""

    key_file: str | None
    base_url: str | None
    api_version: str
    timeout: float
    max_attempts: int
    rate_limit: RateLimit
    rate_limit_store: str
    proxy: str | None
    ssl_context: ssl.SSLContext | None
    emulator: int | None
    debug: bool

    @property
    def secrets(self) -> tuple[str, ...]:
        """Passwords in the options' URLs and the proxies of the environment: never printed.

        With the forms a proxy may echo its credentials in (HTTP Basic, encoded).
        """
        return (
            proxy_secrets(self.proxy)
            + environment_proxy_secrets()  # every command trusts the environment
            + url_secrets(self.rate_limit_store)
        )

    def describe(self, error: BaseException, *secrets: str | None, hints: Hints = ()) -> str:
        """One line for ``error``, without the options' passwords or ``secrets``.

        ``hints`` are the command's own advice for some kinds of error.
        """
        text = describe(error, api_version=self.api_version, hints=hints)
        return redact(text, (*self.secrets, *secrets))

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a command's ``work``: a failure becomes one line naming what to do.

        Raises:
            Failure: a library error, a bad value or an OS error (unless ``--debug``).
            Interrupted: Ctrl-C.
        """
        return run_async(work, debug=self.debug, api_version=self.api_version, secrets=self.secrets)


def load_ca_bundle(path: str) -> ssl.SSLContext:
    """A verifying TLS context trusting the CAs of ``path`` (and the system's).

    Raises:
        UsageFailure: the file cannot be read or holds no certificate (exit 2).
    """
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as error:  # an OSError too: first
        # OpenSSL's words ("[X509: NO_CERTIFICATE_OR_CRL_FOUND] ... (_ssl.c:4154)") are
        # not for a command line.
        if error.reason == "NO_CERTIFICATE_OR_CRL_FOUND":
            problem = "no PEM certificate in it"
        else:
            problem = "a certificate in it is not valid PEM"
        raise UsageFailure(f"--ca-bundle {path}: {problem}") from None
    except OSError as error:
        raise UsageFailure(f"--ca-bundle {path}: {os_reason(error)}") from None


def read_key(path: str) -> str:
    """The API key on the first line of ``path`` (a byte-order mark is skipped).

    Raises:
        UsageFailure: the file cannot be read, is not text, or its first line is empty (exit 2).
    """
    try:
        with open(path, "rb") as file:
            first = file.readline()
    except OSError as error:
        raise UsageFailure(f"--key-file {path}: {os_reason(error)}") from None
    try:
        key = first.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise UsageFailure(f"--key-file {path}: its first line is not UTF-8 text") from None
    if not key:
        raise UsageFailure(f"--key-file {path} holds no API key on its first line")
    return key


def _session(
    settings: Settings,
    key: str | None,
    base_url: str | None,
    store: str | RateLimitStore,
    *,
    on_wait: Callable[[RateLimitWait], None] | None,
    middlewares: Sequence[Middleware] = (),
) -> StabilitySession:
    """The session, or a one-line usage failure naming the option that is wrong."""
    try:
        return StabilitySession(
            key,
            base_url=base_url,
            api_version=settings.api_version,
            timeout=settings.timeout,
            retry=RetryPolicy(max_attempts=settings.max_attempts),
            rate_limit=settings.rate_limit,
            rate_limit_store=store,
            on_rate_limit_wait=on_wait,
            middlewares=middlewares,
            proxy=settings.proxy,
            trust_env=True,  # HTTPS_PROXY and NO_PROXY, as every command-line tool honours
            ssl=settings.ssl_context,
        )
    # An unsafe --base-url, a bad proxy, a store that needs an extra not installed.
    except (StabilityError, ImportError, TypeError, ValueError) as error:
        raise UsageFailure(redact(describe(error), settings.secrets)) from None


@contextlib.asynccontextmanager
async def open_session(
    settings: Settings,
    key: str | None,
    *,
    on_wait: Callable[[RateLimitWait], None] | None = None,
    middlewares: Sequence[Middleware] = (),
) -> AsyncIterator[tuple[StabilitySession, list[BalanceTarget]]]:
    """A session per the options; with ``--emulator N``, on N in-process demo accounts."""
    if settings.emulator is None:
        async with contextlib.AsyncExitStack() as stack:
            store: str | RateLimitStore = settings.rate_limit_store
            if store == "local":
                local = await _machine_wide_store()
                if local is not None:
                    stack.push_async_callback(local.aclose)  # after the session's close
                store = local or "memory"
            session = _session(
                settings, key, settings.base_url, store, on_wait=on_wait, middlewares=middlewares
            )
            async with session:
                yield session, []
        return
    async with StabilityEmulator() as emulator:
        targets = []
        for number in range(1, settings.emulator + 1):
            # A spread of balances, a few of them low, so the summary has something to say.
            credits = round((number * 37.5) % 250 + (number % 7) * 0.25, 2)
            demo_key = emulator.add_account(email=f"demo-{number}@example.com", credits=credits)
            targets.append(BalanceTarget(api_key=demo_key, label=f"demo-{number}"))
        # Demo keys live as long as this process: nothing to share with other runs.
        session = _session(
            settings,
            targets[0].api_key,
            emulator.base_url,
            "memory",
            on_wait=on_wait,
            middlewares=middlewares,
        )
        async with session:
            yield session, targets


async def _machine_wide_store() -> LocalRateLimitStore | None:
    """The ``local`` store, opened; ``None`` with a warning when it cannot be used.

    A cache folder that cannot be written (``HOME=/nonexistent`` under a service
    account, a read-only home) or a damaged file must not stop a command: its calls
    are limited in this process instead, as when a Redis store is unreachable.
    """
    from .. import LocalRateLimitStore  # noqa: PLC0415 - the store is imported when named

    try:
        store = LocalRateLimitStore()
    except ImportError:  # platformdirs finds the cache folder: the cli extra is incomplete
        raise Failure(NEEDS_EXTRA.removeprefix(f"{PROG}: ").rstrip("\n")) from None
    try:
        await store.open()
    except StabilityError as error:
        await store.aclose()
        cause = error.__cause__
        if isinstance(cause, OSError):
            reason = os_reason(cause)
        elif isinstance(cause, sqlite3.Error):
            reason = str(cause)
        else:
            reason = describe(error)
        logger.warning(
            "the machine-wide rate-limit store cannot be used (%s: %s): this run keeps its "
            "rate limit to itself (--rate-limit-store memory or "
            "STABILITY_RATE_LIMIT_STORE=memory does so without this warning)",
            store.path,
            reason,
        )
        return None
    return store


def require_key(settings: Settings) -> str | None:
    """The key of ``--key-file`` or ``$STABILITY_API_KEY``; ``None`` with ``--emulator``.

    Raises:
        UsageFailure: there is none (exit 2).
    """
    key = optional_key(settings)
    if key is None and settings.emulator is None:
        raise UsageFailure(
            "no API key: set STABILITY_API_KEY or pass --key-file FILE "
            "(a file whose first line is the key)"
        )
    return key


def optional_key(settings: Settings) -> str | None:
    """The key when one is given (``balances`` targets may each bring their own)."""
    if settings.emulator is not None:
        return None
    if settings.key_file is not None:
        return read_key(settings.key_file)
    return os.environ.get("STABILITY_API_KEY", "").removeprefix("\ufeff").strip() or None
