"""Runs the Python code blocks of README.rst and docs/*.rst as tests (Sybil).

They run against a bundled emulator in a background thread: ``STABILITY_API_KEY``
and ``STABILITY_API_HOST`` point at it while the documents' examples run, so the
examples are exactly what users read and cannot drift from the library.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

from sybil import Sybil
from sybil.parsers.rest import PythonCodeBlockParser, SkipParser

from stability_user.testing import EmulatedOrganization, StabilityEmulator


class _EmulatorThread:
    """An emulator serving from its own event loop, for code that calls asyncio.run()."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.emulator = StabilityEmulator()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.emulator.start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.emulator.close())
        self.loop.close()

    def __enter__(self) -> StabilityEmulator:
        self.thread.start()
        self.ready.wait(timeout=30)
        return self.emulator

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


_saved: dict[str, str | None] = {}
_server: list[_EmulatorThread] = []


def _setup(namespace: dict[str, Any]) -> None:
    server = _EmulatorThread()
    emulator = server.__enter__()
    _server.append(server)
    key = emulator.add_account(
        email="docs@example.com",
        organizations=[
            EmulatedOrganization("org-000", "Docs", "OWNER", is_default=True, credits=250.0),
            EmulatedOrganization("org-123", "Team", "MEMBER", credits=42.5),
        ],
    )
    for name, value in (("STABILITY_API_KEY", key), ("STABILITY_API_HOST", emulator.base_url)):
        _saved[name] = os.environ.get(name)
        os.environ[name] = value
    namespace["emulator"] = emulator
    namespace["__name__"] = "documentation"  # as a module has one (aiohttp's AppKey reads it)


def _teardown(namespace: dict[str, Any]) -> None:
    for name, value in _saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    while _server:
        _server.pop().__exit__(None, None, None)


def _documents() -> Iterator[str]:
    yield "README.rst"
    yield "docs/*.rst"


pytest_collect_file = Sybil(
    # `.. skip: next` before a block that needs what a test cannot give (a Redis, a proxy).
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=list(_documents()),
    setup=_setup,
    teardown=_teardown,
).pytest()
