"""`scripts/demo.sh` on a taken port, started early so its real-time waits overlap the suite.

The demo is a real `make demo`: a sandbox process with the production rate limit and
several `flipsync` processes, about ten seconds mostly spent waiting for the sandbox's
4 requests/s. ``conftest.py`` starts it in the background when the session's tests include
``DEMO_TEST``; the test then collects the result and asserts on it exactly as if it had run
the demo itself (which it does when started alone).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
DEMO_TEST = "tests/test_state_integrity.py::test_demo_picks_a_free_port_when_the_default_is_taken"


@dataclass
class DemoRun:
    """One demo run holding ``port`` taken until it ends; ``finish`` waits for its result."""

    proc: subprocess.Popen[bytes]
    taken: socket.socket
    port: int
    out: IO[bytes]
    err: IO[bytes]

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Exit status, stdout and stderr of the demo (waits for it; releases the port)."""
        try:
            returncode = self.proc.wait(timeout=timeout)
            self.out.seek(0)
            self.err.seek(0)
            return returncode, self.out.read().decode(), self.err.read().decode()
        finally:
            self.stop()

    def stop(self) -> None:
        """End the demo if it still runs, free the port and the output files (idempotent)."""
        if self.proc.poll() is None:
            # the demo's own process group: bash, its sandbox and any flipsync command
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.taken.close()
        self.out.close()
        self.err.close()


def start_demo() -> DemoRun:
    """Take a free port, then start scripts/demo.sh asking for that port."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = int(taken.getsockname()[1])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = tempfile.TemporaryFile()  # noqa: SIM115 - DemoRun.stop closes it
    err = tempfile.TemporaryFile()  # noqa: SIM115 - DemoRun.stop closes it
    proc = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "demo.sh"), str(port)],
        cwd=REPO,
        stdout=out,
        stderr=err,
        env=env,
        start_new_session=True,
    )
    return DemoRun(proc, taken, port, out, err)
