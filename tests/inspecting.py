"""A TLS-inspecting proxy on loopback: what a corporate "middlebox" does to a tunnel.

A client asks it for a tunnel with ``CONNECT``, sending its credentials in
``Proxy-Authorization``. The proxy says yes, then opens the TLS itself, with a
certificate for the host asked that its own CA signed (the client trusts that CA
through ``ssl=``, as it must behind such a proxy), and answers inside the tunnel
by itself. This one answers with the scripted statuses, and echoes the
credentials it was given in every form a broken or hostile proxy might: the
header as sent, decoded, the password alone, percent-encoded, JSON-escaped and as
HTML entities, in the body and in ``x-request-id``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import json
import ssl
from collections.abc import AsyncIterator
from urllib.parse import quote

import attrs
import trustme
from aiohttp import web

HOST = "api.test"


def echoes(authorization: str) -> list[str]:
    """The forms a proxy may echo the credentials of ``Proxy-Authorization: <authorization>`` in."""
    token = authorization.partition(" ")[2]
    # aiohttp encodes Basic credentials as latin-1: that is what the proxy decodes.
    credentials = base64.b64decode(token).decode("latin-1")
    password = credentials.partition(":")[2]
    return [
        authorization,
        token,
        credentials,
        password,
        quote(password, safe=""),
        quote(credentials, safe=""),
        json.dumps(credentials)[1:-1],  # \u-escaped, as a JSON string inside a string
        html.escape(credentials),
        credentials.encode("unicode_escape").decode("ascii"),  # inside the repr of bytes
    ]


def password_forms(authorization: str) -> list[str]:
    """The password of ``Proxy-Authorization: <authorization>`` and the Basic token, as echoed.

    Each form of the credentials :func:`echoes` makes holds one of these: every
    encoding there is made a character at a time.
    """
    token = authorization.partition(" ")[2]
    password = base64.b64decode(token).decode("latin-1").partition(":")[2]
    return [
        token,
        password,
        quote(password, safe=""),
        json.dumps(password)[1:-1],
        html.escape(password),
        password.encode("unicode_escape").decode("ascii"),
    ]


def header_echo(authorization: str) -> str:
    """What goes into ``x-request-id``: the ASCII forms (a header carries no controls)."""
    forms = echoes(authorization)
    return " ".join((forms[0], forms[4], forms[6]))


@attrs.define
class InspectingProxy:
    """A CONNECT proxy on 127.0.0.1 that opens every tunnel's TLS and answers by itself.

    Attributes:
        statuses: the statuses of its answers, in turn (the last one repeats).
        authorizations: the ``Proxy-Authorization`` of each tunnel asked for.
        answered: how many requests it answered inside its tunnels.
    """

    ca: trustme.CA
    statuses: list[int] = attrs.Factory(lambda: [401])
    authorizations: list[str] = attrs.Factory(list)
    answered: int = 0
    port: int = 0
    _inside_port: int = 0
    _server: asyncio.Server | None = None
    _runner: web.AppRunner | None = None
    _tunnels: set[asyncio.Task[None]] = attrs.Factory(set)

    @property
    def url(self) -> str:
        """The proxy's URL, without credentials."""
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        """The proxy's URL with credentials, percent-encoded as a URL needs them."""
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    async def start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(HOST).configure_cert(context)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self._inside_port = self._runner.addresses[0][1]
        self._server = await asyncio.start_server(self._tunnel, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        assert self._runner is not None
        self._server.close()
        await self._runner.cleanup()  # the tunnels' far ends close: each tunnel ends
        if self._tunnels:
            await asyncio.wait(self._tunnels)
        await self._server.wait_closed()

    async def _answer(self, request: web.Request) -> web.Response:
        # Tunnels are asked for one at a time in these tests: the last one is this one's.
        authorization = self.authorizations[-1] if self.authorizations else ""
        status = self.statuses[min(self.answered, len(self.statuses) - 1)]
        self.answered += 1
        forms = echoes(authorization) if authorization else ["no credentials"]
        if status == 200:  # an account, every field of it an echo
            return web.json_response(
                {
                    "id": forms[0],
                    "email": " ".join(forms[2:5]),
                    "profile_picture": forms[4],
                    "organizations": [
                        {"id": f, "name": f, "role": f, "is_default": n == 0}
                        for n, f in enumerate(forms)
                    ],
                }
            )
        body = {
            "id": " | ".join(forms),
            "name": "unauthorized" if status == 401 else "proxy_error",
            "message": f"the proxy saw {' and '.join(forms)}",
            "errors": [f"the proxy saw {form}" for form in forms],
        }
        echo = header_echo(authorization) if authorization else "none"
        return web.json_response(body, status=status, headers={"x-request-id": echo})

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tunnels.add(task)
        task.add_done_callback(self._tunnels.discard)
        head = await reader.readuntil(b"\r\n\r\n")
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "proxy-authorization":
                self.authorizations.append(value.strip())
        inside_reader, inside_writer = await asyncio.open_connection("127.0.0.1", self._inside_port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, inside_writer), pipe(inside_reader, writer))


@contextlib.asynccontextmanager
async def inspecting_proxy(ca: trustme.CA, statuses: list[int]) -> AsyncIterator[InspectingProxy]:
    """A started :class:`InspectingProxy`, closed at the end."""
    proxy = InspectingProxy(ca, statuses)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
