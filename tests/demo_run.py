"""`scripts/demo.sh` on a taken port, started early so its real-time waits overlap the suite.

The demo is a real `make demo`: a sandbox process with the production rate limit and
several `flipsync` processes, about ten seconds mostly spent waiting for the sandbox's
4 requests/s. ``conftest.py`` starts it in the background when the session's tests include
``DEMO_TEST`` (under pytest-xdist, once, in the controller, whose workers attach to it by
``DEMO_ENV``); the test then collects the result and asserts on it exactly as if it had run
the demo itself (which it does when started alone).

The demo's stdout, stderr and exit status go to files in its folder, so that any process
can collect them, not only the one that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_TEST = "tests/test_state_integrity.py::test_demo_picks_a_free_port_when_the_default_is_taken"
DEMO_ENV = "FLIPSYNC_TEST_DEMO"  # the running demo's description, for xdist workers

# bash runs the demo, then writes its exit status (atomically: rc.tmp, then rc)
_WRAPPER = 'bash "$0" "$1" >"$2/out" 2>"$2/err"; echo $? >"$2/rc.tmp"; mv "$2/rc.tmp" "$2/rc"'


@dataclass
class DemoRun:
    """One demo run; its owner holds ``port`` taken until it ends. ``finish`` waits for it."""

    folder: Path
    port: int
    pid: int
    taken: socket.socket | None = None  # these two only in the process that started it
    proc: subprocess.Popen[bytes] | None = None

    def describe(self) -> str:
        """What another process needs to attach to this run."""
        return json.dumps({"folder": str(self.folder), "port": self.port, "pid": self.pid})

    @classmethod
    def attach(cls, description: str) -> DemoRun:
        data = json.loads(description)
        return cls(Path(data["folder"]), int(data["port"]), int(data["pid"]))

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Exit status, stdout and stderr of the demo (waits for it to end)."""
        rc = self.folder / "rc"
        deadline = time.monotonic() + timeout
        while not rc.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"the demo did not end within {timeout} s")
            time.sleep(0.05)
        out = (self.folder / "out").read_text(errors="replace")
        return int(rc.read_text()), out, (self.folder / "err").read_text(errors="replace")

    def stop(self) -> None:
        """The starter ends the demo if it still runs, frees the port and the folder.

        An attached run (an xdist worker's) leaves all that to the controller that started it:
        a worker with no test to run ends early, while another still waits for the demo.
        """
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # the demo's own process group: bash, its sandbox and any flipsync command
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.taken is not None:
            self.taken.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_demo() -> DemoRun:
    """Take a free port, then start scripts/demo.sh asking for that port."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = int(taken.getsockname()[1])
    folder = Path(tempfile.mkdtemp(prefix="flipsync-demo-"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        ["bash", "-c", _WRAPPER, str(REPO / "scripts" / "demo.sh"), str(port), str(folder)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    return DemoRun(folder, port, proc.pid, taken, proc)
