"""The application layer called directly, without click: check, explain, the sandbox seed.

The CLI tests cover the same commands end to end; these pin what each function does on
its own, with in-memory stand-ins and no sockets.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flipsync import checks, tasks
from flipsync.ctct.types import ContactList, CustomField
from flipsync.errors import AccountMismatch, InputError
from flipsync.sandbox_run import load_seed
from flipsync.settings import Settings
from flipsync.state import utcnow
from tests.helpers import config_dict, settings_from


class Account:
    """The few reads `check` makes, counted like the real client counts them."""

    def __init__(self, lists: list[str], fields: tuple[str, ...] = ()) -> None:
        self.request_counts: Counter[str] = Counter()
        self.lists = [ContactList(f"id-{n}", n) for n in lists]
        self.fields = [CustomField(f"cf-{n}", n, n, "string") for n in fields]
        self.token_checked = False

    def check_token(self) -> None:
        self.request_counts["lists"] += 1
        self.token_checked = True

    def list_lists(self) -> list[ContactList]:
        self.request_counts["lists"] += 1
        return self.lists

    def list_custom_fields(self) -> list[CustomField]:
        self.request_counts["custom_fields"] += 1
        return self.fields

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"check asked for {name}: it must only read lists and fields")


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return settings_from(config_dict(**overrides), tmp_path)


def test_check_offline_never_builds_a_client(tmp_path: Path) -> None:
    """Offline, check proves the config and the stored payloads; no client, no state file."""

    def no_client(_: Settings) -> Any:
        raise AssertionError("offline check built a client")

    lines = list(checks.check(settings(tmp_path), no_client, offline=True))
    assert lines[0].endswith(": ok (setup all_contacts_uniform)")
    assert lines[-1].startswith("stored payloads: none yet")
    assert not (tmp_path / "state.db").exists()


def test_check_resolves_lists_and_fields_without_a_run(tmp_path: Path) -> None:
    """Online, check proves the token, then the lists and fields, and counts its requests."""
    account = Account(["Donors", "Other"], ("question",))
    org = settings(tmp_path, flipcause={"custom_fields": {"CF_q": "question"}})
    lines = list(checks.check(org, lambda _: account, offline=False))
    assert account.token_checked
    assert lines[-4:] == [
        "token: ok",
        "lists: ok (Donors)",
        "custom fields: ok (question)",
        "requests used: 3",
    ]
    assert (tmp_path / "state.db").exists()  # created on a first setup, like run and ingest


def test_check_names_a_missing_list_after_proving_the_token(tmp_path: Path) -> None:
    """The lines already proven come out before the mismatch is raised."""
    shown: list[str] = []
    with pytest.raises(AccountMismatch, match="'Donors'"):
        for line in checks.check(settings(tmp_path), lambda _: Account(["Other"]), offline=False):
            shown.append(line)
    assert shown[-1] == "token: ok"


def test_consent_warning_only_for_explicit_without_sign_up(tmp_path: Path) -> None:
    """Explicit for every new contact warns; the default implicit does not."""
    assert checks.consent_warnings(settings(tmp_path)) == []
    explicit = settings(
        tmp_path,
        policy={
            "setup": "all_contacts_uniform",
            "new_contact_status": "explicit",
            "lists": {"new": ["Donors"], "existing": ["Donors"]},
        },
    )
    [warning] = checks.consent_warnings(explicit)
    assert "own basis for that consent" in warning


def test_explain_an_unknown_email_reads_an_empty_history(tmp_path: Path) -> None:
    """explain opens the state read-only and finds nothing for a stranger."""
    org = settings(tmp_path)
    assert tasks.initialize(org, start_over=False, now=utcnow())
    found = tasks.explain(org, "Nobody@Example.org")
    assert found.outcomes == [] and found.mirror is None
    assert found.as_dict() == {
        "email": "Nobody@Example.org",
        "outcomes": [],
        "constant_contact": None,
    }


def test_sandbox_seed_rejects_what_is_not_a_mapping(tmp_path: Path) -> None:
    """A seed that is not YAML, or not a mapping, is refused naming the file."""
    good = tmp_path / "good.yaml"
    good.write_text("lists: [Donors]\n", encoding="utf-8")
    assert load_seed(good) == {"lists": ["Donors"]}
    for name, text in (("broken.yaml", "lists: [Donors\n"), ("list.yaml", "- Donors\n")):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        with pytest.raises(InputError, match=name):
            load_seed(path)
