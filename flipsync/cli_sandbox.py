"""`flipsync sandbox`: parse the stand-in's options, serve it (`flipsync.sandbox_run`), print."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from flipsync.cli_common import handle_errors

if TYPE_CHECKING:
    from flipsync.sandbox import RunningSandbox


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--seed",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON or YAML with lists, custom_fields and contacts to start with.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a valid token set for the sandbox here (the documented token-file format).",
)
@click.option(
    "--requests-per-second",
    default=4.0,
    show_default=True,
    type=float,
    help="Throttle like Constant Contact (0 disables).",
)
@click.option("--daily-quota", default=10000, show_default=True, type=int)
@click.option(
    "--activity-seconds",
    default=0.5,
    show_default=True,
    type=float,
    help="How long an import stays processing.",
)
@click.option("--confirmed-opt-in", is_flag=True, help="Sign-ups become pending_confirmation.")
@click.option(
    "--fault-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of API requests that fail (500, 503, dropped connections).",
)
@click.option("--fault-seed", default=0, show_default=True, type=int)
@click.option(
    "--token-lifetime",
    default=86400,
    show_default=True,
    type=int,
    help="Access token lifetime in seconds.",
)
@handle_errors
def sandbox(
    host: str,
    port: int,
    seed: Path | None,
    token_file: Path | None,
    requests_per_second: float,
    daily_quota: int,
    activity_seconds: float,
    confirmed_opt_in: bool,
    fault_rate: float,
    fault_seed: int,
    token_lifetime: int,
) -> None:
    """Run a local stand-in for the Constant Contact V3 API (no account needed)."""
    from flipsync.sandbox import SandboxConfig
    from flipsync.sandbox_run import serve_sandbox

    config = SandboxConfig(
        requests_per_second=requests_per_second,
        daily_quota=daily_quota,
        activity_seconds=activity_seconds,
        confirmed_opt_in=confirmed_opt_in,
        fault_rate=fault_rate,
        fault_seed=fault_seed,
        token_lifetime_seconds=token_lifetime,
    )

    def announce(running: RunningSandbox) -> None:
        _announce(running, seed=seed, token_file=token_file)

    serve_sandbox(config, host, port, seed=seed, token_file=token_file, on_ready=announce)


def _announce(running: RunningSandbox, *, seed: Path | None, token_file: Path | None) -> None:
    """Everything a config needs to point at this sandbox, and what it starts with."""
    from flipsync.sandbox.oauth import DEFAULT_CLIENT_ID

    click.echo(f"sandbox listening on {running.base_url}")
    click.echo(f"  api_base_url: {running.api_base_url}")
    click.echo(f"  oauth_base_url: {running.oauth_base_url}")
    click.echo(f"  client_id: {DEFAULT_CLIENT_ID}   (the only application the sandbox knows)")
    if token_file is not None:
        click.echo(f"  token_file: {token_file}   (a valid token set: no login needed)")
    else:
        click.echo("  no token file: `flipsync auth login` against it, or start with --token-file")
    if seed is not None:
        click.echo(f"  seeded from {seed}")
    else:
        click.echo(
            "  the account is empty (no lists): start with --seed FILE, "
            "as flipsync/samples/sandbox-seed.yaml"
        )
    sys.stdout.flush()
