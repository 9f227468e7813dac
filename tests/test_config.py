"""Config validation: every problem at once, with its key path and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from flipsync.config import load_settings
from flipsync.errors import ConfigError
from tests.helpers import config_dict, settings_from, write_config

REPO = Path(__file__).resolve().parent.parent


def problems_of(data: object, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        settings_from(data, tmp_path)  # type: ignore[arg-type]
    return info.value.problems


def test_example_config_is_valid() -> None:
    """config.example.yaml is the reference: it must load as is."""
    settings = load_settings(REPO / "config.example.yaml", environ={})
    assert settings.policy.setup == "all_contacts_uniform"
    assert settings.constant_contact.api_base_url == "https://api.cc.email/v3"
    assert settings.state_file == REPO / "state" / "example-food-bank.db"


def test_defaults_point_at_constant_contact(tmp_path: Path) -> None:
    """Both base URLs default to the real service and are overridable."""
    settings = settings_from(config_dict(), tmp_path)
    assert settings.constant_contact.oauth_base_url == (
        "https://authz.constantcontact.com/oauth2/default/v1"
    )
    other = settings_from(
        config_dict(
            constant_contact={
                "api_base_url": "http://127.0.0.1:9/v3/",
                "oauth_base_url": "http://127.0.0.1:9/oauth",
            }
        ),
        tmp_path,
    )
    assert other.constant_contact.api_base_url == "http://127.0.0.1:9/v3"
    assert other.constant_contact.oauth_base_url == "http://127.0.0.1:9/oauth"


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    """Unknown keys, bad types and bad choices all come back in one error."""
    data = config_dict(
        constant_contact={"requests_per_second": -1, "token_fil": "x"},
        policy={"setup": "everyone", "lists": {"new": ["A"]}, "existing_contact_fields": ["phone"]},
        run={"batch_size": "big"},
    )
    data["extra"] = 1
    problems = problems_of(data, tmp_path)
    text = "\n".join(problems)
    assert "`extra`: unknown key" in text
    assert "`constant_contact.token_fil`: unknown key (did you mean `token_file`?)" in text
    assert "`constant_contact.requests_per_second`: must be a positive number" in text
    assert "`policy.setup`: must be one of" in text
    assert "`policy.existing_contact_fields`: 'phone' cannot be written" in text
    assert "`run.batch_size`" in text
    assert len(problems) >= 6


def test_setup_specific_list_keys(tmp_path: Path) -> None:
    """Each setup names the list keys it needs and rejects the ones it does not use."""
    problems = problems_of(
        config_dict(policy={"setup": "all_contacts_by_subscription", "lists": {"new": ["A"]}}),
        tmp_path,
    )
    text = "\n".join(problems)
    assert "`policy.lists.new_subscribers`: missing" in text
    assert "`policy.lists.new_non_subscribers`: missing" in text
    assert "`policy.lists.new`: not used by setup all_contacts_by_subscription" in text


def test_rule_problems_name_the_rule(tmp_path: Path) -> None:
    """A rule with an unknown activity kind or no lists is reported by its index."""
    data = config_dict(
        policy={
            "setup": "all_contacts_uniform",
            "lists": {"new": ["A"], "existing": ["A"]},
            "rules": [{"name": "x", "when": {"activity_type": ["donations"]}}],
            "skip": [{"when": {}}],
        }
    )
    text = "\n".join(problems_of(data, tmp_path))
    assert "`policy.rules[0].when.activity_type`: unknown activity kind 'donations'" in text
    assert "`policy.rules[0].add_lists`: missing" in text
    assert "`policy.skip[0].when`: needs at least one condition" in text


def test_secrets_are_env_var_names_not_values(tmp_path: Path) -> None:
    """A secret pasted where an env var name belongs is refused."""
    data = config_dict(constant_contact={"client_secret_env": "s3cr3t-value!"})
    text = "\n".join(problems_of(data, tmp_path))
    assert "client_secret_env" in text
    assert "NAME of an environment variable" in text
    assert "s3cr3t-value!" in text  # it is shown back so the user sees what to move


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    """state_file and token_file are relative to the config's folder."""
    path = write_config(tmp_path, config_dict())
    settings = load_settings(path, environ={})
    assert settings.state_file == tmp_path / "state.db"
    assert settings.constant_contact.token_file == tmp_path / "tokens.json"


def test_config_from_environment_variable(tmp_path: Path) -> None:
    """FLIPSYNC_CONFIG is used when -c is not given."""
    path = write_config(tmp_path, config_dict())
    settings = load_settings(None, environ={"FLIPSYNC_CONFIG": str(path)})
    assert settings.organization == "test-org"
    with pytest.raises(ConfigError, match="FLIPSYNC_CONFIG"):
        load_settings(None, environ={})


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    """Broken YAML is a config error with its position, not a traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text("policy:\n  setup: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line"):
        load_settings(path, environ={})
    path.write_text("organization: x\npolicy:\n  setup: a\n\tlists: b\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    (problem,) = caught.value.problems
    assert problem.startswith("not valid YAML at line 4, column 1: found character '\\t'")
    assert "<unicode string>" not in problem and "\n" not in problem  # one line, the file's terms


def test_missing_file_says_copy_example(tmp_path: Path) -> None:
    """A missing config points to the example."""
    with pytest.raises(ConfigError, match=r"config\.example\.yaml"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_yaml_types_are_not_coerced(tmp_path: Path) -> None:
    """A quoted "4" or "true" is refused, not quietly converted (pydantic's lax mode is off)."""
    data = config_dict(
        constant_contact={"requests_per_second": "4", "confirmed_opt_in": "true"},
        run={"batch_size": 10.0},
    )
    problems = problems_of(data, tmp_path)
    assert problems == [
        "`constant_contact.requests_per_second`: must be a positive number (at most 4), got '4'",
        "`constant_contact.confirmed_opt_in`: must be true or false, got 'true'",
        "`run.batch_size`: must be a whole number 1-100000, got 10.0",
    ]


def test_an_unknown_key_is_refused_even_when_null(tmp_path: Path) -> None:
    """`key: null` means the default for a known key; an unknown one is still a typo to fix."""
    data = config_dict(run={"batch_sise": None, "batch_size": None})
    assert problems_of(data, tmp_path) == [
        "`run.batch_sise`: unknown key (did you mean `batch_size`?)"
    ]


def test_a_rule_across_keys_is_reported_beside_another_keys_error(tmp_path: Path) -> None:
    """The setup's list rules still run when a status is wrong: every problem at once."""
    data = config_dict(
        policy={
            "setup": "all_contacts_uniform",
            "new_contact_status": "opted_in",
            "lists": {"new": ["A"]},
        }
    )
    problems = problems_of(data, tmp_path)
    assert problems[0].startswith("`policy.new_contact_status`: must be one of explicit")
    assert problems[1].startswith("`policy.lists.existing`: missing; setup all_contacts_uniform")
    assert len(problems) == 2


@pytest.mark.parametrize("section", ["constant_contact", "run", "intake"])
def test_the_schema_has_a_key_for_every_setting(section: str) -> None:
    """A setting added to flipsync.settings without a config key would be unreachable."""
    from dataclasses import fields

    from flipsync import config_schema, settings

    model = config_schema.ConfigFile.model_fields[section].annotation
    dataclass_type = {
        "constant_contact": settings.ConstantContactSettings,
        "run": settings.RunSettings,
        "intake": settings.IntakeSettings,
    }[section]
    assert isinstance(model, type)
    assert set(model.model_fields) == {f.name for f in fields(dataclass_type)}
