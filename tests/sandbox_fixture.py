"""Pytest fixtures that give each test a fresh Constant Contact sandbox, in process or over HTTP.

Use from a conftest or a test module, either as a plugin::

    pytest_plugins = ["tests.sandbox_fixture"]      # in the top-level conftest.py

or by importing the fixtures::

    from tests.sandbox_fixture import sandbox_config, sandbox_server  # noqa: F401

``sandbox_server`` yields a ``RunningSandbox`` served over real HTTP on a free port of
127.0.0.1 (``.api_base_url``, ``.oauth_base_url``, ``.sandbox``) and stops it afterwards.
``sandbox_inprocess`` yields its in-process twin, an ``InProcessSandbox`` with the same
attributes: every session ``flipsync.clients`` builds answers its base URL from the sandbox
in this process (``flipsync.sandbox.inprocess``), with no socket and no server thread.
``sandbox_service`` is the one the ``org`` fixture uses: in process by default, over real
HTTP for a test marked ``real_http`` or running on ``SYSTEM_CLOCK`` (another process, such
as a ``flipsync run`` subprocess, can only reach a real port). Its config is the production-like default except
``requests_per_second=0`` and ``activity_seconds=0``, so tests are fast and unthrottled.
The account's time is the ``clock`` fixture: a ``VirtualClock`` that moves only when the
code under test sleeps on it (or the test advances it), shared with the ``org`` fixture's
client, so token expiry, import activities and rate windows cost no real time. Parametrize
``clock`` with ``SYSTEM_CLOCK`` for a test that must run on real time (another process).
To change it, override the ``sandbox_config`` fixture (in a module, class or conftest;
``params=`` to parametrize). If only ``sandbox_server`` was imported, it still works and
uses the fast default.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flipsync.clock import SYSTEM_CLOCK, Clock, VirtualClock
from flipsync.sandbox import RunningSandbox, Sandbox, SandboxConfig, start_in_thread
from flipsync.sandbox.inprocess import InProcessSandbox, start_in_process

FAST_CONFIG = SandboxConfig(requests_per_second=0, activity_seconds=0)


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    """The sandbox settings for one test: unthrottled, activities complete at once."""
    return FAST_CONFIG


@pytest.fixture
def clock() -> Clock:
    """The test's time: virtual, starting now."""
    return VirtualClock()


def _config(request: pytest.FixtureRequest) -> SandboxConfig:
    try:
        config = request.getfixturevalue("sandbox_config")
    except pytest.FixtureLookupError:
        config = FAST_CONFIG
    if not isinstance(config, SandboxConfig):
        raise TypeError("the sandbox_config fixture must return a SandboxConfig")
    return config


def wants_real_http(request: pytest.FixtureRequest, clock: Clock) -> bool:
    """True when the test is marked ``real_http`` or runs on real time (another process)."""
    return clock is SYSTEM_CLOCK or request.node.get_closest_marker("real_http") is not None


@pytest.fixture
def sandbox_server(request: pytest.FixtureRequest, clock: Clock) -> Iterator[RunningSandbox]:
    """A running sandbox on a free port of 127.0.0.1, on the test's clock, stopped afterwards."""
    running = start_in_thread(Sandbox(_config(request), clock=clock.time))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def sandbox_inprocess(request: pytest.FixtureRequest, clock: Clock) -> Iterator[InProcessSandbox]:
    """A sandbox answered in this process on the test's clock: no socket, no thread."""
    with start_in_process(Sandbox(_config(request), clock=clock.time)) as inprocess:
        yield inprocess


@pytest.fixture
def sandbox_service(
    request: pytest.FixtureRequest, clock: Clock
) -> Iterator[RunningSandbox | InProcessSandbox]:
    """``sandbox_inprocess``, or ``sandbox_server`` when the test needs real HTTP."""
    name = "sandbox_server" if wants_real_http(request, clock) else "sandbox_inprocess"
    yield request.getfixturevalue(name)
