"""A local, stateful emulator of the Stability user API over real HTTP on loopback.

It speaks HTTP only and imports nothing of the client it is used to test, so a
test through it exercises the same sockets, headers and bodies as production.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import json
import math
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final

import attrs
from aiohttp import web

__all__ = [
    "EmulatedAccount",
    "EmulatedOrganization",
    "Fault",
    "RateLimit",
    "RecordedRequest",
    "StabilityEmulator",
]

_REDACTED: Final = "[redacted]"
_VERSIONS: Final = ("v1alpha", "v1")


@attrs.define
class EmulatedOrganization:
    """One organization membership of an emulated account, with its balance.

    Attributes:
        id: the organization's ID.
        name: its display name.
        role: the account's role in it.
        is_default: whether a balance call without ``Organization`` reads it.
        credits: its balance; change it with :meth:`StabilityEmulator.set_balance`.
    """

    id: str
    name: str
    role: str = "MEMBER"
    is_default: bool = False
    credits: float = 0.0


@attrs.define
class EmulatedAccount:
    """An emulated user account, reached with its API key.

    Attributes:
        id: the user's ID.
        email: the user's e-mail address.
        organizations: the account's memberships, the default one first.
        profile_picture: a picture URL, or ``None`` to leave the field out.
    """

    id: str
    email: str
    organizations: list[EmulatedOrganization]
    profile_picture: str | None = None

    def body(self) -> dict[str, Any]:
        """The account as ``GET /user/account`` returns it."""
        body: dict[str, Any] = {
            "id": self.id,
            "email": self.email,
            "organizations": [
                {"id": o.id, "name": o.name, "role": o.role, "is_default": o.is_default}
                for o in self.organizations
            ],
        }
        if self.profile_picture is not None:
            body["profile_picture"] = self.profile_picture
        return body


@attrs.frozen
class RateLimit:
    """The service's per-key rate limit: ``requests`` per ``window`` seconds.

    Past it the key gets 429 with ``Retry-After`` for ``lockout`` seconds.
    The defaults are the service's documented numbers.
    """

    requests: int = 150
    window: float = 10.0
    lockout: float = 60.0


@attrs.frozen
class Fault:
    """One scripted failure. Build them with the class methods.

    Attributes:
        kind: what happens, e.g. ``"status"``, ``"drop"``, ``"reset"``, ``"stall"``.
        status: the status to answer with, where the kind has one.
        retry_after: seconds, or an HTTP-date string, sent as ``Retry-After``.
        seconds: how long a stall lasts.
        size: the size of an oversized body, in bytes.
    """

    kind: str
    status: int = 200
    retry_after: float | str | None = None
    seconds: float = 0.0
    size: int = 0

    @classmethod
    def respond(cls, status: int, *, retry_after: float | str | None = None) -> Fault:
        """Answer ``status`` with the service's JSON error body (200: answer normally)."""
        return cls("status", status=status, retry_after=retry_after)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection before any response byte is sent."""
        return cls("drop")

    @classmethod
    def reset(cls) -> Fault:
        """Send the headers and part of the body, then reset the connection."""
        return cls("reset")

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Wait ``seconds`` before answering normally (ended early when the emulator closes)."""
        return cls("stall", seconds=seconds)

    @classmethod
    def malformed_json(cls) -> Fault:
        """Answer 200 with ``application/json`` that does not parse."""
        return cls("malformed_json")

    @classmethod
    def html(cls, status: int = 502) -> Fault:
        """Answer with an HTML error page, as a proxy in front of the service would."""
        return cls("html", status=status)

    @classmethod
    def oversized(cls, size: int = 2 * 1024 * 1024) -> Fault:
        """Answer 200 with a JSON body of ``size`` bytes."""
        return cls("oversized", size=size)

    @classmethod
    def wrong_types(cls) -> Fault:
        """Answer 200 with every field of the right name and the wrong JSON type."""
        return cls("wrong_types")

    @classmethod
    def missing_fields(cls) -> Fault:
        """Answer 200 without the required fields."""
        return cls("missing_fields")

    @classmethod
    def extra_fields(cls) -> Fault:
        """Answer normally, with unknown fields added (a valid answer for a client)."""
        return cls("extra_fields")


FaultLike = Fault | int

RANDOM_FAULT_KINDS: Final[Mapping[str, Fault]] = {
    "503": Fault.respond(503),
    "500": Fault.respond(500),
    "429": Fault.respond(429, retry_after=1),
    "drop": Fault.drop(),
    "reset": Fault.reset(),
    "stall": Fault.stall(30.0),
    "html": Fault.html(502),
    "malformed_json": Fault.malformed_json(),
}


@attrs.define
class RecordedRequest:
    """A request the emulator received, with the API key redacted.

    Attributes:
        method: the HTTP method.
        path: the path, without the query.
        headers: the headers; ``Authorization`` shows ``[redacted]``.
        time: the emulator's clock when it arrived.
        account_id: the ID of the account the key belongs to, or ``None``.
        status: the status answered; ``None`` while in flight, or when the connection
            was dropped or reset.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    time: float
    account_id: str | None
    status: int | None


def _http_date(value: float | str) -> str:
    return value if isinstance(value, str) else email.utils.formatdate(value, usegmt=True)


class StabilityEmulator:
    """A local Stability user API on ``127.0.0.1``, for tests and offline runs.

    ::

        async with StabilityEmulator() as emu:
            key = emu.add_account(email="a@example.com", credits=12.5)
            async with StabilitySession(key, base_url=emu.base_url) as session:
                ...

    Args:
        host: the loopback address to listen on.
        port: the port; 0 picks a free one.
        rate_limit: the per-key limit, or ``None`` to turn it off.
        clock: monotonic seconds, for the rate limit and the request log; tests pass a
            fake one so the 60-second lockout never makes them wait.
        retire_v1alpha: answer the v1alpha paths with 404, as the service may.
        record: keep every request in :attr:`requests`; a soak run of millions of
            requests turns it off to keep its memory flat.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = RateLimit(),
        clock: Callable[[], float] = time.monotonic,
        retire_v1alpha: bool = False,
        record: bool = True,
    ) -> None:
        """Configure the emulator; :meth:`start` (or ``async with``) serves it."""
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.clock = clock
        self.retire_v1alpha = retire_v1alpha
        self.record = record
        self.requests: list[RecordedRequest] = []
        self._accounts: dict[str, EmulatedAccount] = {}
        self._faults: dict[str | None, collections.deque[Fault]] = {}
        self._random: tuple[float, tuple[Fault, ...], random.Random] | None = None
        self._calls: dict[str, collections.deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._arrived: asyncio.Condition | None = None
        self._counter = 0

    # -- state ---------------------------------------------------------------

    def add_account(
        self,
        *,
        email: str | None = None,
        credits: float = 100.0,
        organizations: Sequence[EmulatedOrganization] | None = None,
        api_key: str | None = None,
        account_id: str | None = None,
        profile_picture: str | None = None,
    ) -> str:
        """Create an account and return a new API key for it.

        Args:
            email: the account's e-mail; a numbered ``user-N@example.com`` by default.
            credits: the balance of the default organization (when ``organizations``
                is not given).
            organizations: the memberships; by default one default organization.
            api_key: the key to accept; a random ``sk-...`` one by default.
            account_id: the user's ID; ``user-N`` by default.
            profile_picture: a picture URL, or ``None`` to leave the field out.
        """
        self._counter += 1
        number = self._counter
        if organizations is None:
            organizations = [
                EmulatedOrganization(
                    id=f"org-{number:06d}",
                    name=f"Organization {number}",
                    role="OWNER",
                    is_default=True,
                    credits=credits,
                )
            ]
        key = api_key or f"sk-{secrets.token_hex(24)}"
        if key in self._accounts:
            raise ValueError("that API key belongs to another emulated account already")
        self._accounts[key] = EmulatedAccount(
            id=account_id or f"user-{number}",
            email=email or f"user-{number}@example.com",
            organizations=list(organizations),
            profile_picture=profile_picture,
        )
        return key

    def account(self, api_key: str) -> EmulatedAccount:
        """The emulated account of ``api_key`` (its state may be changed in place)."""
        return self._accounts[api_key]

    @property
    def api_keys(self) -> list[str]:
        """Every API key the emulator accepts, in the order they were added."""
        return list(self._accounts)

    def set_balance(self, api_key: str, credits: float, *, organization: str | None = None) -> None:
        """Set the balance of the key's default organization, or of ``organization``."""
        self._organization(self._accounts[api_key], organization).credits = credits

    def balance(self, api_key: str, *, organization: str | None = None) -> float:
        """The balance the emulator would report for the key (and organization)."""
        return self._organization(self._accounts[api_key], organization).credits

    @staticmethod
    def _organization(account: EmulatedAccount, organization: str | None) -> EmulatedOrganization:
        for membership in account.organizations:
            if membership.id == organization or (organization is None and membership.is_default):
                return membership
        if organization is None and account.organizations:
            return account.organizations[0]
        raise KeyError(organization)

    # -- faults --------------------------------------------------------------

    def script(self, *faults: FaultLike, api_key: str | None = None) -> None:
        """Queue faults, consumed one per request in order; an int is a status.

        With ``api_key`` they apply to that key's requests only (and are taken
        before the global ones); without it, to any request. ``200`` in a
        script means "answer this one normally".
        """
        queue = self._faults.setdefault(api_key, collections.deque())
        for fault in faults:
            queue.append(fault if isinstance(fault, Fault) else Fault.respond(fault))

    def random_faults(
        self,
        probability: float,
        *,
        kinds: Iterable[str | Fault] = ("503", "429", "drop", "stall"),
        seed: int = 0,
    ) -> None:
        """Fail each request with ``probability``, the kind drawn from ``kinds``.

        ``kinds`` names entries of :data:`RANDOM_FAULT_KINDS` or gives faults;
        the draw is seeded, so a soak run is repeatable. ``probability=0`` stops it.
        """
        mix = tuple(k if isinstance(k, Fault) else RANDOM_FAULT_KINDS[k] for k in kinds)
        self._random = (probability, mix, random.Random(seed)) if probability > 0 else None  # noqa: S311 - not for security

    def clear_faults(self) -> None:
        """Forget every scripted fault and stop random ones."""
        self._faults.clear()
        self._random = None

    def _next_fault(self, api_key: str | None) -> Fault | None:
        for owner in (api_key, None):
            queue = self._faults.get(owner)
            if queue:
                return queue.popleft()
        if self._random is not None:
            probability, mix, rng = self._random
            if rng.random() < probability:
                return rng.choice(mix)
        return None

    # -- serving -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give the client as ``base_url``."""
        if self._runner is None:
            raise RuntimeError("the emulator is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen on the host and port (port 0 picks a free one)."""
        app = web.Application()
        for version in _VERSIONS:
            app.router.add_get(f"/{version}/user/account", self._handle)
            app.router.add_get(f"/{version}/user/balance", self._handle)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        sockets: Sequence[socket.socket] = getattr(server, "sockets", ())
        self.port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop serving; ends stalls at once."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> StabilityEmulator:
        """Start and return the emulator."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the emulator."""
        await self.close()

    async def wait_for_requests(self, count: int) -> None:
        """Wait until at least ``count`` requests have arrived (answered or not)."""
        if self._arrived is None:
            self._arrived = asyncio.Condition()
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    async def _record(
        self, request: web.Request, account: EmulatedAccount | None
    ) -> RecordedRequest:
        headers = {
            name: _REDACTED if name.lower() == "authorization" else value
            for name, value in request.headers.items()
        }
        record = RecordedRequest(
            request.method,
            request.path,
            headers,
            self.clock(),
            account.id if account else None,
            None,
        )
        if not self.record:
            return record
        self.requests.append(record)
        if self._arrived is not None:
            async with self._arrived:
                self._arrived.notify_all()
        return record

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = _key_of(request.headers.get("Authorization"))
        account = self._accounts.get(key) if key is not None else None
        fault = self._next_fault(key if account is not None else None)
        version, _, endpoint = request.path.lstrip("/").partition("/user/")
        record = await self._record(request, account)
        if fault is not None and not (fault.kind == "status" and fault.status == 200):
            response = await self._fault(request, account, fault, version, endpoint)
        else:
            response = self._answer(request, key, account, version, endpoint)
        record.status = response.status
        return response

    def _answer(
        self,
        request: web.Request,
        key: str | None,
        account: EmulatedAccount | None,
        version: str,
        endpoint: str,
    ) -> web.Response:
        if (
            request.method != "GET"
            or version not in _VERSIONS
            or endpoint not in ("account", "balance")
            or (version == "v1alpha" and self.retire_v1alpha)
        ):
            return _error(
                404, "not_found", f"no route for {request.method} {request.path}", version
            )
        if key is None or account is None:
            return _error(401, "unauthorized", "missing or invalid API key", version)
        limited = self._rate_limited(key)
        if limited is not None:
            return limited
        if endpoint == "account":
            return web.json_response(account.body())
        organization = request.headers.get("Organization") or None
        try:
            membership = self._organization(account, organization)
        except KeyError:
            return _error(
                403,
                "permission_denied",
                f"you do not have access to organization {organization}",
                version,
            )
        return web.json_response({"credits": membership.credits})

    def _rate_limited(self, key: str) -> web.Response | None:
        limit = self.rate_limit
        if limit is None:
            return None
        now = self.clock()
        locked_until = self._locked_until.get(key)
        if locked_until is not None:
            if now < locked_until:
                return _too_many(locked_until - now)
            del self._locked_until[key]
        calls = self._calls.setdefault(key, collections.deque())
        while calls and now - calls[0] >= limit.window:
            calls.popleft()
        if len(calls) >= limit.requests:
            self._locked_until[key] = now + limit.lockout
            calls.clear()
            return _too_many(limit.lockout)
        calls.append(now)
        return None

    async def _fault(  # noqa: PLR0912 - one branch per fault kind reads best
        self,
        request: web.Request,
        account: EmulatedAccount | None,
        fault: Fault,
        version: str,
        endpoint: str,
    ) -> web.StreamResponse:
        kind = fault.kind
        if kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = (
                    _http_date(fault.retry_after)
                    if isinstance(fault.retry_after, str)
                    else f"{fault.retry_after:g}"
                )
            response = _error(fault.status, _name_of(fault.status), "injected fault", version)
            response.headers.update(headers)
            return response
        if kind in ("drop", "reset"):
            if kind == "reset":
                stream = web.StreamResponse(headers={"Content-Type": "application/json"})
                stream.content_length = 1000
                await stream.prepare(request)
                await stream.write(b'{"credits": ')
            transport = request.transport
            if transport is not None:
                _abort(transport)
            # Raising after the transport is gone makes aiohttp drop the handler quietly.
            raise asyncio.CancelledError
        if kind == "stall":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.seconds)
            key = _key_of(request.headers.get("Authorization"))
            return self._answer(request, key, account, version, endpoint)
        if kind == "html":
            html = (
                "<html><head><title>502 Bad Gateway</title></head><body>bad gateway</body></html>"
            )
            return web.Response(status=fault.status, text=html, content_type="text/html")
        if kind == "malformed_json":
            return web.Response(body=b'{"credits": 12.5', content_type="application/json")
        if kind == "oversized":
            padding = "x" * max(fault.size - 20, 0)
            return web.json_response({"credits": 1.0, "padding": padding})
        body: dict[str, Any] = (
            account.body() if account is not None and endpoint == "account" else {"credits": 1.0}
        )
        if kind == "extra_fields":
            body["unexpected"] = {"nested": [1, 2, 3]}
            if "organizations" in body:
                for membership in body["organizations"]:
                    membership["added_later"] = True
        elif kind == "missing_fields":
            for name in ("credits", "id", "organizations"):
                body.pop(name, None)
        else:  # wrong_types
            body = _wrong_types(body)
        return web.Response(text=json.dumps(body), content_type="application/json")


def _wrong_types(body: dict[str, Any]) -> dict[str, Any]:
    if "credits" in body:
        return {"credits": str(body["credits"])}
    body = dict(body, id=1234)
    body["organizations"] = [dict(o, is_default=1) for o in body["organizations"]] or "none"
    return body


def _abort(transport: asyncio.BaseTransport) -> None:
    # SO_LINGER 0 turns the close into a TCP reset, as a crashed proxy sends.
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    transport.close()


def _key_of(header: str | None) -> str | None:
    if not header:
        return None
    return header[7:] if header.startswith("Bearer ") else header


_NAMES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "permission_denied",
    404: "not_found",
    408: "timeout",
    429: "rate_limit_exceeded",
    500: "server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def _name_of(status: int) -> str:
    return _NAMES.get(status, "server_error" if status >= 500 else "error")


def _error(status: int, name: str, message: str, version: str) -> web.Response:
    body: dict[str, Any] = {"id": secrets.token_hex(8), "name": name, "message": message}
    if version != "v1":  # v1alpha's Error schema carries three more flags
        body.update(temporary=status in (429, 503), timeout=status == 504, fault=status >= 500)
    return web.json_response(body, status=status)


def _too_many(retry_after: float) -> web.Response:
    response = _error(429, "rate_limit_exceeded", "too many requests: slow down", "v1alpha")
    response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response
