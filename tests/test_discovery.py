"""Field discovery for go-live: `flipsync fields` and the email warning of `flipsync check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from flipsync.cli import cli
from flipsync.discovery import discover, email_warning, render_text
from tests.conftest import Org
from tests.helpers import config_dict, payload, settings_from, write_config

SECRET_VALUES = ("ada@example.org", "Lovelace", "555-555-0100", "1 Main St", "yes please")


def payloads() -> list[dict[str, Any]]:
    """Three payloads: one with the email under another key, one merchant record."""
    renamed = payload("ada@example.org", CF_newsletter="yes please")
    renamed["PD_email_address"] = renamed.pop("PD_email")
    return [
        payload("ada@example.org", CF_newsletter="yes please"),
        renamed,
        {"webhook_record_id": "m1", "webhook_trigger_type": "new_merchant_payment"},
    ]


def test_counts_configured_and_unmapped_keys_never_values() -> None:
    """Each configured field with its counts; each unmapped key with counts; no value anywhere."""
    settings = settings_from(
        config_dict(flipcause={"custom_fields": {"CF_newsletter": "newsletter"}})
    )
    report = discover(payloads(), settings.flipcause)
    assert report.payloads == 3
    by_setting = {c.setting: c for c in report.configured}
    email = by_setting["flipcause.fields.email"]
    assert (email.key, email.with_value, email.with_key) == ("PD_email", 1, 1)
    assert by_setting["flipcause.custom_fields.CF_newsletter"].with_value == 2
    business = by_setting["flipcause.fields.business_name"]
    assert business.missing and business.with_key == 0
    unmapped = {k.key: (k.with_value, k.with_key) for k in report.unmapped}
    assert unmapped == {"PD_individual_or_bussiness": (2, 2), "PD_email_address": (1, 1)}
    assert report.kinds == {"activity": 2, "merchant_payment": 1}
    assert [c.setting for c in report.missing()] == [
        "flipcause.fields.transaction_date",  # the test payloads carry no date
        "flipcause.fields.business_name",
    ]

    text = render_text(report)
    as_json = json.dumps(report.as_dict())
    for value in SECRET_VALUES:
        assert value not in text and value not in as_json
    assert "missing  flipcause.fields.business_name" in text
    assert "change `flipcause.fields.business_name`" in text
    assert "PD_email_address: 1/1" in text


def test_missing_email_field_names_the_setting_and_similar_keys() -> None:
    """When every payload names the email differently, the warning says which key to change."""
    data = payloads()[1:2] * 3
    report = discover(data, settings_from(config_dict()).flipcause)
    email = report.email
    assert email.missing and email.similar == (("PD_email_address", 3),)
    warning = email_warning(report)
    assert warning is not None
    assert "`PD_email` is absent from all 3 stored payload(s)" in warning
    assert "`flipcause.fields.email`" in warning and "PD_email_address in 3" in warning
    assert "ada@example.org" not in warning
    # present but blank everywhere is just as useless
    blank = discover([payload("   ")], settings_from(config_dict()).flipcause)
    assert "is empty in all 1 stored payload(s)" in (email_warning(blank) or "")
    # found once: no warning; nothing stored yet: no warning either
    assert email_warning(discover(payloads(), settings_from(config_dict()).flipcause)) is None
    assert email_warning(discover([], settings_from(config_dict()).flipcause)) is None


def test_unrecognised_trigger_types_are_counted_with_the_key_to_change() -> None:
    """Kinds are counted per payload; unknown trigger spellings point at flipcause.trigger_types."""
    data = [payload("a@example.org", webhook_trigger_type="new_something")]
    text = render_text(discover(data, settings_from(config_dict()).flipcause))
    assert "record kinds: unrecognised 1" in text
    assert "flipcause.trigger_types" in text and "new_something" not in text


def test_fields_command_text_and_json(org: Org) -> None:
    """`flipsync fields` over the inbox: text and --json agree, and values never appear."""
    org.ingest(payloads())
    text = org.cli("fields")
    assert text.exit_code == 0, text.output
    assert "stored payloads: 3" in text.output
    assert "PD_email_address: 1/1" in text.output
    as_json = org.cli("fields", "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["payloads"] == 3
    (email,) = [c for c in data["configured"] if c["setting"] == "flipcause.fields.email"]
    assert (email["with_value"], email["missing"]) == (1, False)
    for value in SECRET_VALUES:
        assert value not in text.output and value not in as_json.output


def test_check_offline_warns_when_no_payload_has_the_email_field(tmp_path: Path) -> None:
    """check --offline (no network) warns, naming the setting, when the email key is never seen."""
    path = write_config(tmp_path, config_dict())
    runner = CliRunner()
    fresh = runner.invoke(cli, ["-c", str(path), "check", "--offline"])
    assert fresh.exit_code == 0 and "stored payloads: none yet" in fresh.output
    assert not (tmp_path / "state.db").exists()  # check never creates the state file
    ndjson = tmp_path / "in.ndjson"
    ndjson.write_text("\n".join(json.dumps(p) for p in payloads()[1:]) + "\n", encoding="utf-8")
    assert runner.invoke(cli, ["-c", str(path), "ingest", str(ndjson)]).exit_code == 0
    warned = runner.invoke(cli, ["-c", str(path), "check", "--offline"])
    assert warned.exit_code == 0, warned.output
    assert "warning: the email field `PD_email` is absent from all 2 stored payload(s)" in (
        warned.output
    )
    assert "flipcause.fields.email" in warned.output
    fixed = config_dict(flipcause={"fields": {"email": "PD_email_address"}})
    write_config(tmp_path, fixed)
    ok = runner.invoke(cli, ["-c", str(path), "check", "--offline"])
    assert ok.exit_code == 0 and "warning: the email field" not in ok.output
