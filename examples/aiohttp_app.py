"""An aiohttp.web backend that holds one StabilitySession for its whole lifetime.

    STABILITY_API_KEY=sk-... python examples/aiohttp_app.py    # then GET :8080/credits
    python examples/aiohttp_app.py                            # on the bundled emulator
    PORT=9000 python examples/aiohttp_app.py                  # on another port

It listens on 127.0.0.1, port ``$PORT`` (default 8080).

``GET /credits[?organization=org-...]`` and ``GET /account`` answer JSON. The
session is opened once in a cleanup context and shared by every request: one
connection pool, closed when the application stops.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator

from aiohttp import web

from stability_user import (
    APITimeoutError,
    AuthenticationError,
    CachePolicy,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    StabilityError,
    StabilitySession,
)
from stability_user.testing import StabilityEmulator

SESSION = web.AppKey("stability_session", StabilitySession)

# A web request cannot wait out a 60-second lockout: bound every call.
RETRY = RetryPolicy(deadline=10.0, max_retry_after=2.0)
# Page views asking one key's balance share one reading per second (the service
# allows a key 150 requests per 10 s): a reading up to 6 s old is answered at once
# while one refresh runs, and one up to a minute old stands in for an outage.
CACHE = CachePolicy(max_age=1.0, stale_while_revalidate=5.0, stale_if_error=60.0)


def http_answer(error: Exception) -> tuple[int, str, dict[str, str]]:
    """The status, message and headers to answer a failed call with.

    A 401 from the Stability API means *this service's* key is wrong: not the
    caller's fault, and not a crash either (502). A 429 becomes a 503 with
    ``Retry-After``, so the caller backs off.
    """
    if isinstance(error, ValueError):
        return 400, str(error), {}
    if isinstance(error, PermissionDeniedError):
        return 403, "this service's key has no access to that organization", {}
    if isinstance(error, RateLimitError):
        retry_after = error.retry_after if error.retry_after is not None else 60.0
        return (
            503,
            "credit checks are rate limited; try again later",
            {"Retry-After": str(max(1, math.ceil(retry_after)))},
        )
    if isinstance(error, AuthenticationError):
        return 502, "the Stability API rejected this service's key", {}
    if isinstance(error, APITimeoutError):
        return 504, "the Stability API did not answer in time", {}
    if isinstance(error, StabilityError):
        return 502, "the Stability API failed; try again later", {}
    raise error


async def stability_session(app: web.Application) -> AsyncIterator[None]:
    """Open the session when the application starts; close it when it stops."""
    if os.environ.get("STABILITY_API_KEY"):
        async with StabilitySession(retry=RETRY, cache=CACHE) as session:
            app[SESSION] = session
            yield
        return
    # No key: serve a demo on the bundled emulator, so the example runs anywhere.
    async with StabilityEmulator() as emulator:
        key = emulator.add_account(email="demo@example.com", credits=42.0)
        async with StabilitySession(
            key, base_url=emulator.base_url, retry=RETRY, cache=CACHE
        ) as session:
            app[SESSION] = session
            yield


def error_response(error: Exception) -> web.Response:
    status, message, headers = http_answer(error)
    return web.json_response({"error": message}, status=status, headers=headers)


async def credits(request: web.Request) -> web.Response:
    """The balance of the service's key, or of ``?organization=``."""
    try:
        balance = await request.app[SESSION].balance(organization=request.query.get("organization"))
    except Exception as error:  # noqa: BLE001 - http_answer re-raises what it cannot map
        return error_response(error)
    return web.json_response({"credits": balance.credits})


async def account(request: web.Request) -> web.Response:
    """The account the service's key belongs to."""
    try:
        found = await request.app[SESSION].account()
    except Exception as error:  # noqa: BLE001 - http_answer re-raises what it cannot map
        return error_response(error)
    return web.json_response(
        {
            "id": found.id,
            "email": found.email,
            "organizations": [org.id for org in found.organizations],
        }
    )


def create_app() -> web.Application:
    """The application: two routes and the session's cleanup context."""
    app = web.Application()
    app.cleanup_ctx.append(stability_session)
    app.router.add_get("/credits", credits)
    app.router.add_get("/account", account)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
