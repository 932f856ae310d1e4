"""Shared fixtures: fake clock and sleep, and the emulator from the package's plugin."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest
import trustme
from hypothesis import HealthCheck, settings

from stability_user import RetryPolicy, StabilitySession
from stability_user.testing import StabilityEmulator

from . import aioresponses_compat
from .fakes import FakeClock
from .hostile import HostileServer, start_hostile
from .servers import redis_server

aioresponses_compat.install()

# A test run started in the background of a script (``pytest &``, many job runners)
# inherits Ctrl+C (SIGINT) ignored, and so would every program the tests start: the
# Ctrl+C tests could then neither interrupt the command line nor stop an emulator.
# The suite runs with Ctrl+C working, as in a terminal, however it was started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Mutation testing runs every test twice in one process (README, "Mutation testing"):
# `--hypothesis-profile mutation` lets a test class run on two instances.
settings.register_profile("mutation", suppress_health_check=[HealthCheck.differing_executors])

pytest_plugins = ["pytester"]

KEY = "sk-test0123456789abcdefghijklmnopqrstuvwxyz0123456789"


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="emulator")
async def _emulator(clock: FakeClock) -> AsyncIterator[StabilityEmulator]:
    """An emulator with a fake clock: its rate limit never makes a test wait."""
    async with StabilityEmulator(clock=clock) as emulator:
        yield emulator


@pytest.fixture(name="live")
async def _live() -> AsyncIterator[StabilityEmulator]:
    """An emulator on the real clock: for programs in other processes, or real waits."""
    async with StabilityEmulator() as emulator:
        yield emulator


@pytest.fixture(name="key")
def _key(emulator: StabilityEmulator) -> str:
    return emulator.add_account(email="a@example.com", credits=12.5)


@pytest.fixture(name="session")
async def _session(
    emulator: StabilityEmulator, key: str, clock: FakeClock
) -> AsyncIterator[StabilitySession]:
    """A session on the emulator whose waits advance the fake clock instead of sleeping."""
    async with StabilitySession(
        key,
        base_url=emulator.base_url,
        retry=RetryPolicy(max_attempts=3),
        sleep=clock.sleep,
        clock=clock,
        timeout=5.0,
    ) as session:
        yield session


@pytest.fixture(name="hostile")
async def _hostile() -> AsyncIterator[HostileServer]:
    """A server on 127.0.0.1 that answers with whatever bytes the test scripts."""
    async for server in start_hostile():
        yield server


@pytest.fixture(name="redis_url", scope="session")
def _redis_url() -> Iterator[str]:
    """A real Redis on loopback: $REDIS_URL (as .ci/run provides), else one started here."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with redis_server() as url:
        yield url


@pytest.fixture(name="ca", scope="session")
def _ca() -> trustme.CA:
    """A test certificate authority: certificates for 127.0.0.1 and test host names."""
    return trustme.CA()
