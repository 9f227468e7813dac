"""What every click command of flipsync shares: error handling, the context, report output.

Errors become one message and their exit code (no tracebacks), the context loads the
config on demand and carries the clock, and run reports print the same way for `run`
and `backfill`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click
import structlog

from flipsync import logs
from flipsync.cli_support import EXIT_CLOSED_STDOUT, describe_os_error, silence_stdout
from flipsync.clock import SYSTEM_CLOCK, Clock
from flipsync.config import load_settings
from flipsync.errors import ExitCode, FlipsyncError, with_config
from flipsync.outcomes import RunReport
from flipsync.report import (
    render_text,
    report_json,
    report_level,
    run_summary,
    table_lines,
    write_outcomes,
)
from flipsync.safe_text import for_terminal
from flipsync.settings import Settings

if TYPE_CHECKING:
    from flipsync.forecast import Forecast

P = ParamSpec("P")
R = TypeVar("R")
log = structlog.get_logger("flipsync.cli")


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn flipsync errors into one clear message and their exit code; no tracebacks."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except FlipsyncError as exc:
            click.echo(
                for_terminal(f"flipsync: {with_config(str(exc), _config_given())}"), err=True
            )
            sys.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo("flipsync: interrupted; nothing past the last commit was lost", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        except BrokenPipeError:
            silence_stdout()  # the reader left (`| head`): end quietly
            sys.exit(EXIT_CLOSED_STDOUT)
        except OSError as exc:
            click.echo(f"flipsync: {describe_os_error(exc)}", err=True)
            sys.exit(int(ExitCode.CONFIG))
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:
            log.exception("unexpected_error")
            click.echo(
                f"flipsync: unexpected error: {type(exc).__name__}: {exc} "
                "(the log has the traceback; please report it)",
                err=True,
            )
            sys.exit(int(ExitCode.UNEXPECTED))

    return wrapper


def _config_given() -> str | None:
    """The -c path of this command line, if one was given (FLIPSYNC_CONFIG needs no repeat)."""
    current = click.get_current_context(silent=True)
    found = current.find_object(Context) if current is not None else None
    return found.config_path if found is not None else None


class Context:
    """What the group passes to commands: where the config is (loaded on demand), and the clock.

    The clock is the machine's unless the caller handed one in as click's ``obj`` (tests
    pass a VirtualClock, so a run's polls and rate spacing cost them no real time).
    """

    def __init__(self, config_path: str | None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config_path = config_path
        self.clock = clock
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The validated config (every problem reported at once, before any network call)."""
        if self._settings is None:
            self._settings = load_settings(self.config_path)
            logs.bind(organization=self._settings.organization)
        return self._settings


pass_ctx = click.make_pass_decorator(Context)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
OUTPUT_OPTION = click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every decision to FILE (.csv for CSV, else JSON).",
)


def print_report(
    report: RunReport, *, as_json: bool, output: Path | None, forecast: Forecast | None = None
) -> None:
    """A run's report: JSON, a table of the plan (dry runs), one log event (cron) or text.

    A dry run's ``forecast`` (what the live run would cost) goes with it in every form.
    """
    if output is not None:
        write_outcomes(output, report.outcomes)
    if as_json:  # outcomes streamed from the run's spill, never held as one list
        after = {"forecast": forecast.as_dict()} if forecast is not None else {}
        for piece in report_json(report, with_outcomes=report.dry_run, extra=after):
            click.echo(piece, nl=False)
        click.echo()
        return
    if report.dry_run and report.outcomes:
        for line in table_lines(report.outcomes):
            click.echo(line)
        click.echo()
    if logs.reports_as_events():  # cron, JSON logs: one machine-readable line, no emails
        extra = {"forecast_requests": forecast.total} if forecast is not None else {}
        logs.emit("run_finished", level=report_level(report), **run_summary(report), **extra)
    else:
        click.echo(render_text(report))
        if forecast is not None:
            click.echo(for_terminal("\n".join(f"  {line}" for line in forecast.lines())))


def email_patterns(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    """Option callback: each value an email glob, or a usage error saying what one looks like."""
    from flipsync.config import email_glob

    try:
        return tuple(email_glob(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc) or "an email glob like *@test.example.org") from None


def exit_with(code: ExitCode) -> None:
    """End the command with this exit code (after its output was printed)."""
    sys.exit(int(code))
