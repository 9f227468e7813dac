"""Pytest fixtures that serve a fresh Constant Contact sandbox over real HTTP on 127.0.0.1.

Use from a conftest or a test module, either as a plugin::

    pytest_plugins = ["tests.sandbox_fixture"]      # in the top-level conftest.py

or by importing the fixtures::

    from tests.sandbox_fixture import sandbox_config, sandbox_server  # noqa: F401

``sandbox_server`` yields a ``RunningSandbox`` (``.api_base_url``, ``.oauth_base_url``,
``.sandbox``) and stops it afterwards. Its config is the production-like default except
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

from flipsync.clock import Clock, VirtualClock
from flipsync.sandbox import RunningSandbox, Sandbox, SandboxConfig, start_in_thread

FAST_CONFIG = SandboxConfig(requests_per_second=0, activity_seconds=0)


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    """The sandbox settings for one test: unthrottled, activities complete at once."""
    return FAST_CONFIG


@pytest.fixture
def clock() -> Clock:
    """The test's time: virtual, starting now."""
    return VirtualClock()


@pytest.fixture
def sandbox_server(request: pytest.FixtureRequest, clock: Clock) -> Iterator[RunningSandbox]:
    """A running sandbox on a free port of 127.0.0.1, on the test's clock, stopped afterwards."""
    try:
        config = request.getfixturevalue("sandbox_config")
    except pytest.FixtureLookupError:
        config = FAST_CONFIG
    if not isinstance(config, SandboxConfig):
        raise TypeError("the sandbox_config fixture must return a SandboxConfig")
    running = start_in_thread(Sandbox(config, clock=clock.time))
    try:
        yield running
    finally:
        running.stop()
