"""A local stand-in for the Constant Contact V3 API and its OAuth server.

Used by the demo, the tests and the benchmarks; the product never special-cases it.
Behaviour follows shared/reference/constant-contact-v3.md and the official spec.

Typical use::

    from flipsync.sandbox import Sandbox, SandboxConfig, start_in_thread

    sandbox = Sandbox(SandboxConfig(activity_seconds=0))
    sandbox.add_list("Donors")
    with start_in_thread(sandbox) as running:
        tokens = sandbox.issue_tokens()
        ...  # point a client at running.api_base_url / running.oauth_base_url
"""

from __future__ import annotations

from flipsync.sandbox.app import Sandbox
from flipsync.sandbox.config import FAULT_KINDS, SCRIPTED_FAULT_KINDS, SandboxConfig
from flipsync.sandbox.oauth import DEFAULT_CLIENT_ID, DEFAULT_SCOPE
from flipsync.sandbox.requestlog import RequestLogEntry
from flipsync.sandbox.server import RunningSandbox, serve_forever, start_in_thread
from flipsync.sandbox.wire import SandboxRequest, SandboxResponse

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_SCOPE",
    "FAULT_KINDS",
    "SCRIPTED_FAULT_KINDS",
    "RequestLogEntry",
    "RunningSandbox",
    "Sandbox",
    "SandboxConfig",
    "SandboxRequest",
    "SandboxResponse",
    "serve_forever",
    "start_in_thread",
]
