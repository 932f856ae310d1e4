"""A hostile server: raw bytes on a loopback socket, whatever a test scripts."""

from __future__ import annotations

import asyncio
import collections
import gzip
import json
import traceback
import zlib
from collections.abc import AsyncIterator
from urllib.parse import quote

import attrs

from stability_user import APIError

GOOD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
    b'{"credits": 1}\n'
)


def http(
    status_line: bytes | str,
    body: bytes | str = b"",
    headers: dict[str, str] | None = None,
    *,
    length: bool = True,
) -> bytes:
    """A response as bytes; ``status_line`` like ``"200 OK"`` (or any bytes at all)."""
    if isinstance(status_line, str):
        status_line = status_line.encode()
    if isinstance(body, str):
        body = body.encode()
    lines = [b"HTTP/1.1 " + status_line]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}".encode())
    if length:
        lines.append(f"Content-Length: {len(body)}".encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def json_response(status: str, body: object, headers: dict[str, str] | None = None) -> bytes:
    """A JSON response (``body`` already text is sent as it is)."""
    text = body if isinstance(body, str) else json.dumps(body)
    return http(status, text, {"Content-Type": "application/json", **(headers or {})})


def gzip_bomb(size: int) -> bytes:
    """A 200 whose body inflates from about ``size / 1000`` bytes to ``size`` bytes."""
    compressed = gzip.compress(b"\0" * size, compresslevel=9)
    return http(
        "200 OK", compressed, {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )


def deflate_bomb_chunked(size: int) -> bytes:
    """The same as a chunked ``deflate`` body, without a Content-Length."""
    compressed = zlib.compress(b"\0" * size, 9)
    chunks = b"".join(
        f"{len(part):x}\r\n".encode() + part + b"\r\n"
        for part in (compressed[i : i + 8192] for i in range(0, len(compressed), 8192))
    )
    head = http(
        "200 OK",
        b"",
        {"Content-Encoding": "deflate", "Transfer-Encoding": "chunked"},
        length=False,
    )
    return head + chunks + b"0\r\n\r\n"


@attrs.define
class HostileServer:
    """Answers each request with the next scripted bytes (a good 200 when none is left)."""

    server: asyncio.Server
    port: int
    script: collections.deque[bytes] = attrs.Factory(collections.deque)
    requests: list[bytes] = attrs.Factory(list)
    hold: asyncio.Event | None = None  # when set, answers wait for it
    arrived: asyncio.Event = attrs.Factory(asyncio.Event)  # set at the first request

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                self.arrived.set()
                if self.hold is not None:
                    await self.hold.wait()
                answer = self.script.popleft() if self.script else GOOD
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer.split(b"\r\n\r\n", 1)[0]:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def start_hostile() -> AsyncIterator[HostileServer]:
    """Serve on a free port of 127.0.0.1 until the test ends."""
    holder: list[HostileServer] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await holder[0].handle(reader, writer)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hostile = HostileServer(server, port)
    holder.append(hostile)
    try:
        yield hostile
    finally:
        if hostile.hold is not None:
            hostile.hold.set()
        server.close()
        await server.wait_closed()


def everything_said(error: BaseException) -> str:
    """Every text an error puts in front of a person: message, repr, whole traceback."""
    parts = [str(error), repr(error), *traceback.format_exception(error)]
    if isinstance(error, APIError):
        parts += [repr(error.error), str(error.request_id)]
    return "\n".join(parts)


def json_escaped(text: str, every: bool) -> str:
    """``text`` as a server could write it inside a JSON string: \\u-escaped."""
    if every:
        return "".join(f"\\u{ord(c):04x}" for c in text)
    return f"\\u{ord(text[0]):04x}{text[1:]}"


def echoed_forms(key: str) -> dict[str, str]:
    """``key`` (an ``sk-`` key) in every form a server has been seen to echo it, by name."""
    return {
        "plain": key,
        "json, one character": json_escaped(key, every=False),
        "json, every character": json_escaped(key, every=True),
        "percent, one character": "sk%2D" + key[3:],
        "percent, every character": "".join(f"%{ord(c):02X}" for c in key),
        "percent, lower case": quote(key, safe="").replace("-", "%2d"),
        "bytes repr": "".join(f"\\x{ord(c):02x}" for c in key),
        "html entities": "".join(f"&#{ord(c)};" for c in key),
        "html hex entities": "".join(f"&#x{ord(c):x};" for c in key),
        "escaped twice": quote(json_escaped(key, every=True), safe=""),
    }
