"""The same backend with FastAPI: one StabilitySession for the app's lifespan.

pip install -e '.[examples]'
STABILITY_API_KEY=sk-... python examples/fastapi_app.py   # then GET :8000/credits
python examples/fastapi_app.py                           # on the bundled emulator
PORT=9000 python examples/fastapi_app.py                 # on another port

It listens on 127.0.0.1, port ``$PORT`` (default 8000).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

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


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, StabilitySession]]:
    """Open the session at start-up, close it at shutdown; requests share it."""
    if os.environ.get("STABILITY_API_KEY"):
        async with StabilitySession(retry=RETRY, cache=CACHE) as session:
            yield {"stability": session}
        return
    # No key: serve a demo on the bundled emulator, so the example runs anywhere.
    async with StabilityEmulator() as emulator:
        key = emulator.add_account(email="demo@example.com", credits=42.0)
        async with StabilitySession(
            key, base_url=emulator.base_url, retry=RETRY, cache=CACHE
        ) as session:
            yield {"stability": session}


app = FastAPI(lifespan=lifespan)


def get_session(request: Request) -> StabilitySession:
    """The application's one session (a dependency)."""
    session: StabilitySession = request.state.stability
    return session


Session = Annotated[StabilitySession, Depends(get_session)]


@app.exception_handler(StabilityError)
@app.exception_handler(ValueError)
async def library_error(_: Request, error: Exception) -> JSONResponse:
    """Map the library's errors to answers of this service's own."""
    status, message, headers = http_answer(error)
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@app.get("/credits")
async def credits(session: Session, organization: str | None = None) -> dict[str, float]:
    """The balance of the service's key, or of ``?organization=``."""
    return {"credits": (await session.balance(organization=organization)).credits}


@app.get("/account")
async def account(session: Session) -> dict[str, Any]:
    """The account the service's key belongs to."""
    found = await session.account()
    return {
        "id": found.id,
        "email": found.email,
        "organizations": [org.id for org in found.organizations],
    }


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
