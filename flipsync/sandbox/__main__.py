"""``python -m flipsync.sandbox``: run the Constant Contact sandbox in the foreground.

For the demo and for manual poking: binds 127.0.0.1 by default, optionally seeds data from
a JSON file (the ``Sandbox.seed`` format), writes one line saying where it listens, and
stops cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from flipsync.sandbox.app import Sandbox
from flipsync.sandbox.config import FAULT_KINDS, SandboxConfig
from flipsync.sandbox.server import RunningSandbox, serve_forever


def _parser() -> argparse.ArgumentParser:
    defaults = SandboxConfig()
    parser = argparse.ArgumentParser(
        prog="python -m flipsync.sandbox",
        description="Serve a local Constant Contact V3 sandbox (API under /v3, OAuth under "
        "/oauth2/default/v1, admin under /__sandbox).",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="port, 0 for any (default %(default)s)"
    )
    parser.add_argument("--seed", type=Path, help="JSON file with lists, custom_fields, contacts")
    parser.add_argument("--requests-per-second", type=float, default=defaults.requests_per_second)
    parser.add_argument("--daily-quota", type=int, default=defaults.daily_quota)
    parser.add_argument(
        "--token-lifetime-seconds", type=int, default=defaults.token_lifetime_seconds
    )
    parser.add_argument(
        "--long-lived-refresh-tokens",
        action="store_true",
        help="return the same refresh token on refresh instead of rotating it",
    )
    parser.add_argument("--confirmed-opt-in", action="store_true")
    parser.add_argument("--activity-seconds", type=float, default=defaults.activity_seconds)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--fault-seed", type=int, default=0)
    parser.add_argument(
        "--fault-kinds",
        default=",".join(sorted(FAULT_KINDS)),
        help="comma-separated subset of " + ",".join(sorted(FAULT_KINDS)),
    )
    parser.add_argument(
        "--token-endpoint-per-second", type=float, default=defaults.token_endpoint_per_second
    )
    parser.add_argument("--device-interval", type=int, default=defaults.device_interval)
    parser.add_argument("--device-expires-in", type=int, default=defaults.device_expires_in)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options, build and seed the sandbox, serve until stopped."""
    args = _parser().parse_args(argv)
    try:
        config = SandboxConfig(
            requests_per_second=args.requests_per_second,
            daily_quota=args.daily_quota,
            token_lifetime_seconds=args.token_lifetime_seconds,
            rotating_refresh_tokens=not args.long_lived_refresh_tokens,
            confirmed_opt_in=args.confirmed_opt_in,
            activity_seconds=args.activity_seconds,
            fault_rate=args.fault_rate,
            fault_seed=args.fault_seed,
            fault_kinds=frozenset(k.strip() for k in args.fault_kinds.split(",") if k.strip()),
            token_endpoint_per_second=args.token_endpoint_per_second,
            device_interval=args.device_interval,
            device_expires_in=args.device_expires_in,
        )
        sandbox = Sandbox(config)
        if args.seed is not None:
            sandbox.seed(json.loads(args.seed.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as error:
        sys.stderr.write(f"flipsync sandbox: {error}\n")
        return 2

    def announce(running: RunningSandbox) -> None:
        sys.stdout.write(
            f"flipsync sandbox listening on {running.base_url} "
            f"(api {running.api_base_url}, oauth {running.oauth_base_url})\n"
        )
        sys.stdout.flush()

    serve_forever(sandbox, args.host, args.port, on_ready=announce)
    return 0


if __name__ == "__main__":
    sys.exit(main())
