"""`flipsync sandbox`: serve the local Constant Contact stand-in, seeded and with a token file.

Kept out of the CLI so the command only parses options and prints the addresses, and
out of `flipsync.sandbox` so the stand-in itself never reads files or YAML.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flipsync.errors import InputError
from flipsync.state import utcnow

if TYPE_CHECKING:
    from flipsync.sandbox import RunningSandbox, SandboxConfig


def load_seed(path: Path) -> dict[str, Any]:
    """A seed file (JSON or YAML: lists, custom_fields, contacts); InputError if unusable."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not a usable sandbox seed ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a usable sandbox seed (expected a mapping)")
    return data


def serve_sandbox(
    config: SandboxConfig,
    host: str,
    port: int,
    *,
    seed: Path | None = None,
    token_file: Path | None = None,
    on_ready: Callable[[RunningSandbox], None],
) -> None:
    """Serve until SIGTERM or SIGINT; once bound, write ``token_file`` and call ``on_ready``."""
    from flipsync.ctct.auth import token_set_from_response, write_token_file
    from flipsync.sandbox import Sandbox, serve_forever

    box = Sandbox(config)
    if seed is not None:
        try:
            box.seed(load_seed(seed))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{seed}: not a usable sandbox seed ({exc})") from None

    def ready(running: RunningSandbox) -> None:
        if token_file is not None:
            write_token_file(token_file, token_set_from_response(box.issue_tokens(), utcnow()))
        on_ready(running)

    serve_forever(box, host, port, on_ready=ready)
