"""Is this organization ready, and how does it stand: `flipsync check`, `fields` and `status`.

`check` goes from the cheapest proof to the costliest: the config (placeholders left,
consent setups that need the organization's own basis), the stored payloads' fields,
then the token, and the lists and custom fields the config names, resolved exactly as a
run resolves them (`flipsync.catalog`). Its lines come one by one, so what was proven
is on screen before a later step fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from flipsync import discovery
from flipsync.catalog import resolve_catalog
from flipsync.config import placeholder_problems
from flipsync.errors import ConfigError
from flipsync.ports import ConstantContactAPI
from flipsync.safe_text import for_terminal
from flipsync.settings import Settings
from flipsync.tasks import open_state


class AccountClient(ConstantContactAPI, Protocol):
    """A Constant Contact client that can also prove its token."""

    def check_token(self) -> None:
        """Prove the token works with the cheapest authenticated call."""
        ...


def consent_warnings(settings: Settings) -> list[str]:
    """Setups that would make people explicit without a Flipcause sign-up as evidence."""
    policy = settings.policy
    warnings = []
    if policy.setup == "all_contacts_uniform" and policy.new_contact_status == "explicit":
        warnings.append(
            "policy.new_contact_status is explicit: every NEW contact, donors included, is "
            "recorded as having given explicit permission. Only do this if the organization "
            "has its own basis for that consent (for example an opt-in checkbox on every form)."
        )
    if (
        policy.setup == "all_contacts_by_subscription"
        and policy.new_non_subscriber_status == "explicit"
    ):
        warnings.append(
            "policy.new_non_subscriber_status is explicit: new people who did NOT sign up for "
            "the mailing list are recorded as explicit. The organization must have its own "
            "basis for that consent."
        )
    return warnings


def stored_field_report(settings: Settings) -> discovery.FieldReport | None:
    """Field counts over the stored payloads; None when there is no state file yet."""
    if not settings.state_file.exists():
        return None
    with open_state(settings, create=False, readonly=True) as state:
        return discovery.discover(discovery.stored_payloads(state), settings.flipcause)


def field_report(settings: Settings) -> discovery.FieldReport:
    """`flipsync fields`: which configured Flipcause fields the stored payloads carry."""
    return stored_field_report(settings) or discovery.discover((), settings.flipcause)


def check(
    settings: Settings, client_factory: Callable[[Settings], AccountClient], *, offline: bool
) -> Iterator[str]:
    """The lines of `flipsync check`, each once its step passed; a failing step raises.

    Offline stops after the config and the stored payloads: no request is sent.
    """
    placeholders = placeholder_problems(settings)
    if placeholders:
        raise ConfigError(str(settings.config_path), placeholders)
    yield f"config {settings.config_path}: ok (setup {settings.policy.setup})"
    for warning in consent_warnings(settings):
        yield f"warning: {warning}"
    found = stored_field_report(settings)
    if found is None or not found.payloads:
        yield "stored payloads: none yet (run `flipsync fields` after the first webhooks)"
    else:
        yield f"stored payloads: {found.payloads}"
        email = discovery.email_warning(found)
        if email:
            yield f"warning: {email}"
    if offline:
        return
    client = client_factory(settings)
    client.check_token()
    yield "token: ok"
    # check creates the state DB on a first setup, like ingest and run, and proves it opens.
    with open_state(settings, readonly=settings.state_file.exists()):
        pass
    catalog = resolve_catalog(settings, client)
    names = ", ".join(sorted(set(catalog.list_names.values()))) or "none"
    yield for_terminal(f"lists: ok ({names})")  # names come from the account
    if catalog.field_ids:
        yield for_terminal(f"custom fields: ok ({', '.join(sorted(catalog.field_ids))})")
    yield f"requests used: {sum(client.request_counts.values())}"


def status(settings: Settings) -> dict[str, Any]:
    """`flipsync status`: checkpoint, inbox, open batches, requests today, runs and problems."""
    from flipsync import status_report
    from flipsync.clients import key_usage

    with open_state(settings, create=False, readonly=True) as state:
        return status_report.gather(settings, state, lambda: key_usage(settings))
