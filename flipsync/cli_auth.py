"""`flipsync auth login` and `flipsync auth status`: parse, ask `flipsync.login`, print."""

from __future__ import annotations

import click

from flipsync import login as logins
from flipsync.cli_common import Context, handle_errors, pass_ctx
from flipsync.ctct.types import DevicePrompt
from flipsync.safe_text import json_for_terminal
from flipsync.state import utcnow


@click.group()
def auth() -> None:
    """Log in to Constant Contact and inspect the token file."""


@auth.command()
@click.option(
    "--code", help="Authorization code (the authorization-code flow, needs the client secret)."
)
@click.option(
    "--redirect-uri",
    default="https://localhost",
    show_default=True,
    help="Redirect URI registered for the application (with --code).",
)
@click.option("--print-url", is_flag=True, help="Print the authorization URL for --code and exit.")
@pass_ctx
@handle_errors
def login(ctx: Context, code: str | None, redirect_uri: str, print_url: bool) -> None:
    """Authorize flipsync (device flow by default) and write the token file."""
    if print_url:
        click.echo(logins.authorization_link(ctx.settings, redirect_uri))
        return
    token_file = logins.login(
        ctx.settings, code=code, redirect_uri=redirect_uri, on_prompt=_prompt, clock=ctx.clock
    )
    click.echo(f"logged in; token set written to {token_file} (mode 0600)")


def _prompt(p: DevicePrompt) -> None:
    click.echo(f"Open {p.verification_uri} and enter the code {p.user_code}")
    if p.verification_uri_complete:
        click.echo(f"(or open {p.verification_uri_complete})")
    click.echo(f"Waiting for approval (the code expires in {p.expires_in // 60} min)...")


@auth.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
@handle_errors
def auth_status(ctx: Context, as_json: bool) -> None:
    """Show when the access token expires and how long the refresh token has left."""
    info = logins.auth_status(ctx.settings, utcnow())
    if as_json:
        click.echo(json_for_terminal(info))
        return
    for key, value in info.items():
        click.echo(f"{key}: {value}")
