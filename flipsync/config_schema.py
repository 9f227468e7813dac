"""The config file's schema as pydantic models: its keys, what each holds, the rules tying them.

pydantic walks the whole document, collects every problem with its location, and
refuses unknown keys (`extra="forbid"`). The leaf checks are flipsync's own (no
coercion of "true" or "4": YAML already typed them), and each names its fix.
`flipsync.config` turns the collected errors into ConfigError lines; `to_settings`
turns a valid document into the frozen settings the core reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, cast

from pydantic import BeforeValidator, create_model, model_validator

from flipsync.config_fields import (
    DEFAULT_EXISTING_FIELDS,
    LISTS,
    NEEDS_A_CONDITION,
    NO_STRS,
    CustomFields,
    EnvName,
    FilePath,
    Flag,
    ListRefs,
    Name,
    Requests,
    Seconds,
    Section,
    SecureUrl,
    StatusChoice,
    activity_kinds,
    amount,
    as_date,
    as_text,
    bounded_int,
    checked,
    choice,
    email_globs,
    existing_fields,
    given_raw,
    or_default,
    positive_float,
    problem,
    rule_list,
    rule_lists,
    str_tuple,
)
from flipsync.settings import (
    DEFAULT_ACTIVITY_TYPES,
    DEFAULT_CSV_COLUMNS,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_TRIGGER_TYPES,
    LOOKUP_STRATEGIES,
    SETUPS,
    Condition,
    ConstantContactSettings,
    FieldMap,
    FlipcauseSettings,
    IntakeSettings,
    ListRule,
    ListSettings,
    PolicySettings,
    RunSettings,
    Settings,
    Setup,
    SkipRule,
    Status,
    TestRecordSettings,
    spelling_key,
)


def _keyed(name: str, keys: tuple[str, ...], value_type: Any) -> type[Section]:
    """A section whose keys are `keys`, each optional and of `value_type`."""
    spec: dict[str, Any] = dict.fromkeys(keys, (value_type | None, None))
    return cast(type[Section], create_model(name, __base__=Section, **spec))


FIELD_NAMES = tuple(f.name for f in fields(FieldMap))
if TYPE_CHECKING:  # built from the settings' own key lists at run time
    FieldNames = Section
    ActivityTypes = Section
    TriggerTypes = Section
    CsvColumns = Section
else:
    FieldNames = _keyed("FieldNames", FIELD_NAMES, Annotated[str, checked(as_text, "a field name")])
    ActivityTypes = _keyed(
        "ActivityTypes",
        tuple(DEFAULT_ACTIVITY_TYPES),
        Annotated[tuple[str, ...], checked(str_tuple, "a list of activity_type spellings")],
    )
    TriggerTypes = _keyed(
        "TriggerTypes",
        tuple(DEFAULT_TRIGGER_TYPES),
        Annotated[tuple[str, ...], checked(str_tuple, "a list of trigger type spellings")],
    )
    CsvColumns = _keyed(
        "CsvColumns",
        FIELD_NAMES,
        Annotated[tuple[str, ...], checked(str_tuple, "a column name or a list of them")],
    )


def _given(section: Section) -> dict[str, Any]:
    return {key: value for key, value in section.model_dump().items() if value is not None}


def _merged(
    section: Section, defaults: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """Defaults with the given keys replaced ([] recognises none of them)."""
    return {**defaults, **_given(section)}


def _resolve(base_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path)


class ConstantContactSection(Section):
    missing: ClassVar[dict[str, str]] = {
        "client_id": "missing; copy the API key (client id) of your application"
    }

    api_base_url: SecureUrl = ConstantContactSettings.api_base_url
    oauth_base_url: SecureUrl = ConstantContactSettings.oauth_base_url
    client_id: Annotated[str, checked(as_text, "the application's client id (not a secret)")]
    client_secret_env: EnvName | None = None
    token_file: FilePath = "tokens.json"  # noqa: S105 - a file name, not a secret
    requests_per_second: Annotated[
        float, checked(positive_float, "a positive number (at most 4)")
    ] = 4.0
    timeout_seconds: Seconds = 30.0
    confirmed_opt_in: Flag = False
    activity_wait_seconds: Seconds = 120.0
    max_contacts_per_import: Annotated[
        int, checked(bounded_int(1, 40_000), "a whole number from 1 to 40000")
    ] = 40_000
    daily_request_budget: Requests = 10_000
    organization_daily_request_budget: Requests | None = None
    budget_file: FilePath | None = None

    def to_settings(self, base_dir: Path) -> ConstantContactSettings:
        return ConstantContactSettings(
            **self.model_dump(exclude={"token_file", "budget_file"}),
            token_file=_resolve(base_dir, self.token_file),
            budget_file=_resolve(base_dir, self.budget_file) if self.budget_file else None,
        )


class FlipcauseSection(Section):
    fields: FieldNames = FieldNames()
    activity_types: ActivityTypes = ActivityTypes()
    trigger_types: TriggerTypes = TriggerTypes()
    custom_fields: CustomFields = {}
    csv_columns: CsvColumns = CsvColumns()

    @classmethod
    def cross_check(cls, data: dict[str, Any]) -> list[tuple[str, str]]:
        """A trigger spelling names one kind; a CSV column feeds one field."""
        found: list[tuple[str, str]] = []
        owner: dict[str, str] = {}
        for kind, spellings in given_raw(data.get("trigger_types"), DEFAULT_TRIGGER_TYPES).items():
            for spelling in spellings:
                key = spelling_key(spelling)
                if owner.setdefault(key, kind) != kind:
                    found.append(
                        (
                            f"trigger_types.{kind}",
                            f"{spelling!r} is already a spelling of `{owner[key]}`; "
                            "a trigger type names one kind (remove it from one of them)",
                        )
                    )
        owner = {}
        for name, names in given_raw(data.get("csv_columns"), DEFAULT_CSV_COLUMNS).items():
            for column in names:
                key = " ".join(column.split()).casefold()
                if key in owner and owner[key] != name:
                    found.append(
                        (
                            f"csv_columns.{name}",
                            f"column {column!r} is already mapped to `{owner[key]}`; "
                            "a column feeds one field",
                        )
                    )
                owner.setdefault(key, name)
        return found

    def to_settings(self) -> FlipcauseSettings:
        columns = _merged(self.csv_columns, DEFAULT_CSV_COLUMNS)
        return FlipcauseSettings(
            fields=FieldMap(**_given(self.fields)),
            activity_types=_merged(self.activity_types, DEFAULT_ACTIVITY_TYPES),
            trigger_types=_merged(self.trigger_types, DEFAULT_TRIGGER_TYPES),
            custom_fields=dict(self.custom_fields),
            csv_columns={name: names for name, names in columns.items() if names},
        )


class ConditionSection(Section):
    activity_type: Annotated[
        tuple[str, ...], checked(activity_kinds, "a list of activity kinds")
    ] = NO_STRS
    campaign_id: Annotated[tuple[str, ...], checked(str_tuple, "a list of campaign ids")] = NO_STRS
    campaign_title: Annotated[tuple[str, ...], checked(str_tuple, "a list of titles")] = NO_STRS
    amount_at_least: (
        Annotated[Decimal, checked(amount, "an amount >= 0 like 500 or 1.10")] | None
    ) = None
    recurring: Flag | None = None
    email_matches: Annotated[
        tuple[str, ...], checked(str_tuple, "a list of glob patterns like *@test.org")
    ] = NO_STRS
    trigger_type: Annotated[tuple[str, ...], checked(str_tuple, "a list of trigger types")] = (
        NO_STRS
    )

    @classmethod
    def check_raw(cls, data: dict[Any, Any]) -> None:
        if not data:
            raise problem(NEEDS_A_CONDITION)

    def to_settings(self) -> Condition:
        return Condition(
            activity_types=self.activity_type,
            campaign_ids=self.campaign_id,
            campaign_titles=self.campaign_title,
            amount_at_least=self.amount_at_least,
            recurring=self.recurring,
            email_patterns=self.email_matches,
            trigger_types=self.trigger_type,
        )


class RuleSection(Section):
    missing: ClassVar[dict[str, str]] = {
        "when": NEEDS_A_CONDITION,
        "add_lists": "missing; name the list(s) this rule adds",
    }

    name: Name | None = None
    when: ConditionSection
    add_lists: Annotated[tuple[str, ...], checked(rule_lists, LISTS)]


class SkipSection(Section):
    missing: ClassVar[dict[str, str]] = {"when": NEEDS_A_CONDITION}

    name: Name | None = None
    when: ConditionSection


LIST_KEYS = ("new", "existing", "new_subscribers", "new_non_subscribers")


class ListsSection(Section):
    new: ListRefs = NO_STRS
    existing: ListRefs = NO_STRS
    new_subscribers: ListRefs = NO_STRS
    new_non_subscribers: ListRefs = NO_STRS


class PolicySection(Section):
    missing: ClassVar[dict[str, str]] = {"setup": f"missing; choose one of {', '.join(SETUPS)}"}

    setup: Annotated[str, checked(choice(SETUPS), f"one of {', '.join(SETUPS)}")]
    new_contact_status: StatusChoice = "implicit"
    new_non_subscriber_status: StatusChoice = "implicit"
    lists: ListsSection = ListsSection()
    existing_contact_fields: Annotated[tuple[str, ...], checked(existing_fields, "a list")] = (
        DEFAULT_EXISTING_FIELDS
    )
    rules: Annotated[tuple[RuleSection, ...], BeforeValidator(rule_list)] = ()
    skip: Annotated[tuple[SkipSection, ...], BeforeValidator(rule_list)] = ()

    @classmethod
    def cross_check(cls, data: dict[str, Any]) -> list[tuple[str, str]]:
        """Each setup uses its own list keys and status key; name the ones that do not apply."""
        found: list[tuple[str, str]] = []
        given = set(data)
        setup = or_default(choice(SETUPS), data.get("setup"), "all_contacts_uniform")
        lists = ListSettings(**given_raw(data.get("lists"), dict.fromkeys(LIST_KEYS, NO_STRS)))
        if setup == "all_contacts_by_subscription":
            needed = {
                "new_subscribers": lists.new_subscribers,
                "new_non_subscribers": lists.new_non_subscribers,
                "existing": lists.existing,
            }
            unused = {"new": lists.new}
            if "new_contact_status" in given:
                found.append(
                    (
                        "new_contact_status",
                        "applies to all_contacts_uniform only; "
                        "this setup uses `new_non_subscriber_status`",
                    )
                )
        else:
            needed = {"new": lists.new, "existing": lists.existing}
            unused = {
                "new_subscribers": lists.new_subscribers,
                "new_non_subscribers": lists.new_non_subscribers,
            }
            if "new_non_subscriber_status" in given:
                found.append(
                    (
                        "new_non_subscriber_status",
                        "applies to all_contacts_by_subscription only",
                    )
                )
            if setup == "mailing_list_contacts" and "new_contact_status" in given:
                found.append(
                    (
                        "new_contact_status",
                        "mailing_list_contacts always makes people explicit; remove this key",
                    )
                )
        for key, value in needed.items():
            if not value:
                found.append(
                    (
                        f"lists.{key}",
                        f"missing; setup {setup} needs at least one list here "
                        "(the same list may appear under several keys)",
                    )
                )
        for key, value in unused.items():
            if value:
                found.append(
                    (
                        f"lists.{key}",
                        f"not used by setup {setup}; use {', '.join(sorted(needed))}",
                    )
                )
        return found

    def to_settings(self) -> PolicySettings:
        return PolicySettings(
            setup=cast(Setup, self.setup),
            new_contact_status=cast(Status, self.new_contact_status),
            new_non_subscriber_status=cast(Status, self.new_non_subscriber_status),
            lists=ListSettings(**self.lists.model_dump()),
            existing_contact_fields=self.existing_contact_fields,
            rules=tuple(
                ListRule(
                    name=rule.name or f"rule {i + 1}",
                    when=rule.when.to_settings(),
                    add_lists=rule.add_lists,
                )
                for i, rule in enumerate(self.rules)
            ),
            skip=tuple(
                SkipRule(name=rule.name or f"skip rule {i + 1}", when=rule.when.to_settings())
                for i, rule in enumerate(self.skip)
            ),
        )


class RunSection(Section):
    batch_size: Annotated[int, checked(bounded_int(1, 100_000), "a whole number 1-100000")] = 25_000
    lookup_strategy: Annotated[
        str, checked(choice(LOOKUP_STRATEGIES), f"one of {', '.join(LOOKUP_STRATEGIES)}")
    ] = "auto"
    retention_days: Annotated[
        int,
        checked(
            bounded_int(1, 36_500),
            "a whole number of days from 1 to 36500 (to keep everything, do not run prune)",
        ),
    ] = DEFAULT_RETENTION_DAYS

    def to_settings(self) -> RunSettings:
        return RunSettings(
            batch_size=self.batch_size,
            lookup_strategy=cast(Literal["auto", "lookup", "mirror"], self.lookup_strategy),
            retention_days=self.retention_days,
        )


class IntakeSection(Section):
    webhook_secret_env: EnvName | None = None
    host: Annotated[str, checked(as_text, "a host name or address")] = "127.0.0.1"
    port: Annotated[int, checked(bounded_int(1, 65535), "a port number")] = 8787
    max_body_bytes: Annotated[
        int, checked(bounded_int(1024, 64 * 1024 * 1024), "a size in bytes (1024 or more)")
    ] = 256 * 1024

    def to_settings(self) -> IntakeSettings:
        return IntakeSettings(**self.model_dump())


class TestRecordsSection(Section):
    __test__ = False  # a config section, not a pytest test class despite its name

    email_matches: Annotated[
        tuple[str, ...],
        checked(email_globs, "a list of glob patterns like *@test.example.org"),
    ] = NO_STRS
    record_ids: Annotated[
        tuple[str, ...], checked(str_tuple, "a list of Flipcause webhook record ids")
    ] = NO_STRS
    transaction_ids: Annotated[
        tuple[str, ...], checked(str_tuple, "a list of Flipcause transaction ids")
    ] = NO_STRS
    campaign_ids: Annotated[
        tuple[str, ...], checked(str_tuple, "a list of Flipcause campaign ids")
    ] = NO_STRS
    go_live_date: (
        Annotated[
            date,
            checked(
                as_date,
                "a date like 2026-03-01 (records that reached the inbox before it are tests)",
            ),
        ]
        | None
    ) = None

    def to_settings(self) -> TestRecordSettings:
        return TestRecordSettings(
            email_patterns=self.email_matches,
            record_ids=self.record_ids,
            transaction_ids=self.transaction_ids,
            campaign_ids=self.campaign_ids,
            go_live_date=self.go_live_date,
        )

    @model_validator(mode="after")
    def _not_empty(self) -> TestRecordsSection:
        if not self.to_settings().configured:
            keys = ", ".join(type(self).model_fields)
            raise problem(f"empty; set at least one of {keys}, or remove it")
        return self


class ConfigFile(Section):
    """The whole config file of one organization."""

    missing: ClassVar[dict[str, str]] = {
        "constant_contact": "missing; at least `client_id` is required",
        "policy": "missing; choose a `setup` and its `lists`",
    }

    organization: Annotated[str, checked(as_text, "a name")] | None = None
    state_file: FilePath | None = None
    constant_contact: ConstantContactSection
    flipcause: FlipcauseSection = FlipcauseSection()
    policy: PolicySection
    run: RunSection = RunSection()
    intake: IntakeSection = IntakeSection()
    test_records: TestRecordsSection | None = None

    def to_settings(self, config_path: Path) -> Settings:
        """The frozen settings the core reads; relative paths are against the config's folder."""
        base_dir = config_path.parent
        return Settings(
            config_path=config_path,
            organization=self.organization or config_path.stem,
            state_file=_resolve(base_dir, self.state_file or f"{config_path.stem}.db"),
            constant_contact=self.constant_contact.to_settings(base_dir),
            flipcause=self.flipcause.to_settings(),
            policy=self.policy.to_settings(),
            run=self.run.to_settings(),
            intake=self.intake.to_settings(),
            test_records=(
                self.test_records.to_settings() if self.test_records else TestRecordSettings()
            ),
        )
