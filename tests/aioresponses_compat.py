"""Make aioresponses 0.7.9 work with aiohttp >= 3.14.

aiohttp 3.14 added a required keyword-only ``stream_writer`` argument to
``ClientResponse.__init__``; aioresponses 0.7.9 (the latest release) does not
pass it and every mocked request fails with ``TypeError: ClientResponse.__init__()
missing 1 required keyword-only argument: 'stream_writer'`` (upstream issue
pnuckowski/aioresponses#289, fixed by the unreleased PR #288).

Delete this module, and its import in conftest.py, once a release with the fix is out:
``test_aioresponses_compat.py`` fails on purpose when the shim is no longer needed.
"""

from __future__ import annotations

import inspect
from typing import Any

import aioresponses.core
from aiohttp import ClientResponse


class _FinishedUpload:
    """Stands in for the request's stream writer: the mocked upload is already done."""

    output_size = 0


def shim_needed() -> bool:
    """Whether this aiohttp's ClientResponse requires the argument aioresponses omits."""
    parameter = inspect.signature(ClientResponse.__init__).parameters.get("stream_writer")
    return parameter is not None and parameter.default is inspect.Parameter.empty


class CompatClientResponse(ClientResponse):
    """A ClientResponse that supplies ``stream_writer`` when aioresponses leaves it out."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _FinishedUpload())
        super().__init__(method, url, **kwargs)


def install() -> bool:
    """Patch aioresponses' default response class when needed; return whether it was."""
    if not shim_needed():
        return False
    aioresponses.core.ClientResponse = CompatClientResponse  # type: ignore[attr-defined]
    return True
