"""Test helpers: :class:`StabilityEmulator`, a local Stability user API over loopback HTTP.

It imports nothing of the client: tests through it use real sockets, headers and bodies.
The pytest fixtures ``stability_emulator`` and ``stability_session`` come from the
plugin :mod:`stability_user.testing.pytest_plugin`, registered automatically.
"""

from ._emulator import StabilityEmulator
from ._faults import RANDOM_FAULT_KINDS, Fault
from ._listen import RemoteAccessWarning
from ._rate_limit import RateLimit
from ._recording import RecordedRequest
from ._state import EmulatedAccount, EmulatedOrganization

__all__ = [
    "RANDOM_FAULT_KINDS",
    "EmulatedAccount",
    "EmulatedOrganization",
    "Fault",
    "RateLimit",
    "RecordedRequest",
    "RemoteAccessWarning",
    "StabilityEmulator",
]
