"""Contract tests: what flipsync sends is what Constant Contact's official spec declares.

Request bodies are built through the product's own path (payload -> parse_record ->
group_people -> decide -> build_plan) over generated people, and validated with jsonschema
against the spec's definitions: ContactsJsonImport (with JsonImportContact rows),
ContactCreateOrUpdateInput (sign-up form) and ContactPostRequest (create contact). Query
parameters of every GET the client sends are checked against the parameters the spec declares
for that path.

The spec (tests/contract/ctct-swagger.yaml, see the README there) is Swagger 2.0. Its schemas
are draft-4 JSON Schema plus annotations (`example`, `readOnly`, `x-*`, ...), which are
stripped. Two deliberate changes make the check strict and honest:

- Objects are closed (`additionalProperties: false`): the spec never says so, but a key it
  does not declare is one Constant Contact ignores, so flipsync must not send it.
- Quirks listed in the reference (section 0): `cf:custom_field_name` in JsonImportContact is a
  placeholder for `cf:<custom field name>` keys, so it becomes a pattern; `home country` is a
  typo for `home_country`. Enumerations the spec states only in prose (permission, kinds,
  create_source) are added as enums.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flipsync.cli import build_client
from flipsync.config import Settings
from flipsync.people import group_people
from flipsync.plan import Plan, build_plan
from flipsync.policy import decide
from flipsync.records import FlipcauseRecord, parse_record
from flipsync.sandbox import RequestLogEntry
from tests.conftest import Org
from tests.helpers import CC_STATES, config_dict, known_for, payload, settings_from

SPEC_PATH = Path(__file__).parent / "contract" / "ctct-swagger.yaml"
SPEC_SHA256 = "ac313259cf746b48bc57c4ccdc7c45287e3af27fbbd7c42dbbe61130c21f16b1"
ANNOTATIONS = {"example", "readOnly", "discriminator", "xml", "externalDocs", "description"}
BODY_SCHEMA = {
    "json_import": "ContactsJsonImport",
    "sign_up_form": "ContactCreateOrUpdateInput",
    "create_contact": "ContactPostRequest",
}
PERMISSIONS = [
    "explicit",
    "implicit",
    "not_set",
    "pending_confirmation",
    "temp_hold",
    "unsubscribed",
]
LIST_IDS = {
    ref: f"{i:08x}-4a5b-4c6d-8e7f-0123456789ab"
    for i, ref in enumerate(["New", "Existing", "Subscribers", "NonSubscribers", "Major"], 1)
}
FIELD_IDS = {
    "tshirt_size": "1618ae62-4752-11e9-9c8a-fa163e6b01c1",
    "employer_name": "2618ae62-4752-11e9-9c8a-fa163e6b01c2",
}
CUSTOM_SOURCES = {"PD_tshirt": "tshirt_size", "PD_employer": "employer_name"}


# -- the spec as a validator --------------------------------------------------------------------


@cache
def spec() -> dict[str, Any]:
    # libyaml's safe loader when PyYAML has it: the same documents, a second faster to read.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open(encoding="utf-8") as handle:
        data: dict[str, Any] = yaml.load(handle, Loader=loader)
    return data


def strip_annotations(node: Any) -> Any:
    """The schema without Swagger-only keywords; property names are kept as they are."""
    if isinstance(node, list):
        return [strip_annotations(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "definitions"):
            out[key] = {name: strip_annotations(sub) for name, sub in value.items()}
        elif key not in ANNOTATIONS and not key.startswith("x-"):
            out[key] = strip_annotations(value)
    return out


def close_objects(node: Any) -> None:
    """Objects with declared properties accept no other keys (see the module docstring)."""
    if isinstance(node, list):
        for item in node:
            close_objects(item)
    elif isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for key, value in node.items():
            if key in ("properties", "definitions", "patternProperties"):
                for sub in value.values():
                    close_objects(sub)
            else:
                close_objects(value)


@cache
def definitions() -> dict[str, Any]:
    """The spec's definitions, stripped, closed, with the documented quirks resolved."""
    defs: dict[str, Any] = copy.deepcopy(strip_annotations(spec()["definitions"]))
    row = defs["JsonImportContact"]["properties"]
    row["home_country"] = row.pop("home country")
    custom = row.pop("cf:custom_field_name")
    defs["JsonImportContact"]["patternProperties"] = {r"^cf:\S+$": custom}
    defs["EmailAddressPost"]["properties"]["permission_to_send"]["enum"] = PERMISSIONS
    defs["ContactPostRequest"]["properties"]["create_source"]["enum"] = ["Contact", "Account"]
    defs["PhoneNumberPut"]["properties"]["kind"]["enum"] = ["home", "work", "mobile", "other"]
    defs["StreetAddressPut"]["properties"]["kind"]["enum"] = ["home", "work", "other"]
    sign_up = defs["ContactCreateOrUpdateInput"]["properties"]
    sign_up["street_address"]["properties"]["kind"]["enum"] = ["home", "work", "other"]
    close_objects(defs)
    return defs


@cache
def validator(name: str) -> jsonschema.Draft4Validator:
    schema = {"$ref": f"#/definitions/{name}", "definitions": definitions()}
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


def problems(name: str, body: Any) -> list[str]:
    """Every way `body` breaks definition `name`, as readable lines."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
        for e in validator(name).iter_errors(body)
    ]


def test_spec_copy_is_the_pinned_official_file() -> None:
    """The repo's spec is the pinned 3.0.172 file, so a changed copy cannot pass silently."""
    assert hashlib.sha256(SPEC_PATH.read_bytes()).hexdigest() == SPEC_SHA256
    assert spec()["info"]["version"] == "3.0.172"
    assert spec()["swagger"] == "2.0"
    assert (SPEC_PATH.parent / "README.md").read_text().count(SPEC_SHA256) == 1


def test_contract_schemas_refuse_what_constant_contact_would_not_take() -> None:
    """The strict schemas catch unknown keys, over-long values, bad list ids and bad enums."""
    good_row = {"email": "a@example.org", "first_name": "Ada", "cf:tshirt_size": "M"}
    good = {"import_data": [good_row], "list_ids": [LIST_IDS["New"]]}
    assert problems("ContactsJsonImport", good) == []
    assert problems("ContactsJsonImport", {**good, "list_ids": []})
    assert problems("ContactsJsonImport", {**good, "list_ids": ["Donors"]})
    for bad_row in (
        {**good_row, "postal_code": "02110"},  # JSON import calls it zip
        {**good_row, "home country": "US"},  # the spec's typo is not a key to send
        {**good_row, "first_name": "x" * 51},
        {**good_row, "cf:tshirt_size": "x" * 256},
        {**good_row, "phone": 5555555},
    ):
        assert problems("ContactsJsonImport", {**good, "import_data": [bad_row]}), bad_row
    sign_up = {"email_address": "a@example.org", "list_memberships": [LIST_IDS["New"]]}
    assert problems("ContactCreateOrUpdateInput", sign_up) == []
    assert problems("ContactCreateOrUpdateInput", {**sign_up, "phone_number": "1" * 26})
    assert problems("ContactCreateOrUpdateInput", {**sign_up, "street_address": {"city": "X"}})
    assert problems("ContactCreateOrUpdateInput", {"email_address": "a@example.org"})
    create = {
        "email_address": {"address": "a@example.org", "permission_to_send": "implicit"},
        "create_source": "Account",
    }
    assert problems("ContactPostRequest", create) == []
    assert problems("ContactPostRequest", {**create, "create_source": "Flipsync"})
    assert problems(
        "ContactPostRequest", {**create, "email_address": {"permission_to_send": "implicit"}}
    )
    assert problems(
        "ContactPostRequest", {**create, "phone_numbers": [{"phone_number": "1", "kind": "fax"}]}
    )


# -- bodies built by the product --------------------------------------------------------------

SETUPS = [
    ("mailing_list_contacts", "explicit"),
    *(("all_contacts_uniform", s) for s in ("implicit", "explicit", "not_set")),
    *(("all_contacts_by_subscription", s) for s in ("implicit", "explicit", "not_set")),
]
STATES = CC_STATES


def settings_for(setup: str, status: str, existing_fields: tuple[str, ...]) -> Settings:
    if setup == "mailing_list_contacts":
        policy: dict[str, Any] = {
            "setup": setup,
            "lists": {"new": ["New"], "existing": ["Existing"]},
        }
    elif setup == "all_contacts_uniform":
        policy = {
            "setup": setup,
            "new_contact_status": status,
            "lists": {"new": ["New", "Major"], "existing": ["Existing"]},
        }
    else:
        policy = {
            "setup": setup,
            "new_non_subscriber_status": status,
            "lists": {
                "new_subscribers": ["Subscribers"],
                "new_non_subscribers": ["NonSubscribers"],
                "existing": ["Existing"],
            },
        }
    policy["existing_contact_fields"] = list(existing_fields)
    return settings_from(
        config_dict(policy=policy, flipcause={"custom_fields": dict(CUSTOM_SOURCES)})
    )


# Unicode text of any kind (no surrogates), sometimes longer than any limit.
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=70)
long_text = st.one_of(text, st.text(st.characters(blacklist_categories=("Cs",)), max_size=300))
maybe = st.one_of(st.none(), text)
local_part = st.text("abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=36)


@st.composite
def emails(draw: st.DrawFn) -> str:
    local = draw(local_part).strip(".") or "x"
    domain = draw(st.sampled_from(["example.org", "mail.example.co.uk", "xn--bcher-kva.de"]))
    return f"{local}@{domain}"


@st.composite
def person_payloads(draw: st.DrawFn, index: int) -> list[dict[str, Any]]:
    """One person's Flipcause records: a donation, maybe a Mailing List activity of the same txn."""
    email = draw(st.one_of(emails(), st.just(f"{'m' * (50 - len('@example.org'))}@example.org")))
    if index:  # distinct people; one pushed past 50 characters is rejected at parsing
        email = f"p{index}.{email}"
    extra: dict[str, Any] = {
        "PD_first_name": draw(maybe),
        "PD_last_name": draw(maybe),
        "PD_phone": draw(st.one_of(st.none(), st.text("0123456789-+() .ext", max_size=60))),
        "PD_address": draw(st.one_of(st.none(), long_text)),
        "PD_city": draw(maybe),
        "PD_state": draw(maybe),
        "PD_zip": draw(maybe),
        "PD_country": draw(maybe),
    }
    if draw(st.booleans()):
        extra["PD_individual_or_bussiness"] = "Business"
        extra["PD_business_name"] = draw(text)
    for source in CUSTOM_SOURCES:
        if draw(st.booleans()):
            extra[source] = draw(long_text)
    txn = f"T{index}"
    records = [payload(email, txn=txn, **extra)]
    if draw(st.booleans()):
        records.append(payload(email, activity="Mailing List", txn=txn, amount="", **extra))
    return records


def plan_for(
    settings: Settings, payloads: list[dict[str, Any]], states: list[str], coi: bool
) -> Plan:
    """The product's path: parse, group, decide against a CC state, plan."""
    records = []
    for seq, data in enumerate(payloads, 1):
        parsed = parse_record(seq, f"wh:{seq}", data, settings.flipcause)
        if isinstance(parsed, FlipcauseRecord):
            records.append(parsed)
    people = group_people(records, {})
    decisions = [
        decide(p, known_for(states[i % len(states)]), settings.policy, confirmed_opt_in=coi)
        for i, p in enumerate(people)
    ]
    return build_plan(
        decisions,
        batch_id="contract",
        list_ids=LIST_IDS,
        field_ids=FIELD_IDS,
        max_contacts_per_import=5000,
    )


def assert_plan_matches_spec(plan: Plan) -> None:
    for op in plan.ops:
        found = problems(BODY_SCHEMA[op.kind], op.body)
        assert found == [], f"{op.kind} body breaks the spec: {found}\n{op.body}"
        event(op.kind)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    setup=st.sampled_from(SETUPS),
    existing_fields=st.sets(
        st.sampled_from(["first_name", "last_name", "company_name", "custom_fields"])
    ),
    people=st.integers(1, 4).flatmap(lambda n: st.tuples(*(person_payloads(i) for i in range(n)))),
    states=st.lists(st.sampled_from(STATES), min_size=1, max_size=4),
    coi=st.booleans(),
)
def test_every_body_the_plan_builds_matches_the_spec(
    setup: tuple[str, str],
    existing_fields: set[str],
    people: tuple[list[dict[str, Any]], ...],
    states: list[str],
    coi: bool,
) -> None:
    """Generated people (unicode, max lengths, optional fields), any setup and CC state: valid bodies."""
    settings_ = settings_for(*setup, tuple(sorted(existing_fields)))
    payloads = list(itertools.chain.from_iterable(people))
    assert_plan_matches_spec(plan_for(settings_, payloads, states, coi))


def full_person(email: str, *, signed: bool, size: int = 50) -> list[dict[str, Any]]:
    """A person with every field filled at (or past) its limit."""
    extra = {
        "PD_first_name": "É" * size,
        "PD_last_name": "ß" * (size + 5),
        "PD_phone": "5" * 25,
        "PD_address": "Straße " * 36,  # 252 characters
        "PD_city": "C" * 50,
        "PD_state": "S" * 50,
        "PD_zip": "Z" * 50,
        "PD_country": "N" * 50,
        "PD_individual_or_bussiness": "Business",
        "PD_business_name": "B" * 60,
        "PD_tshirt": "T" * 255,
        "PD_employer": "E" * 300,  # over the limit: left out, with a note in the reason
    }
    records = [payload(email, txn=email, **extra)]
    if signed:
        records.append(payload(email, activity="Mailing List", txn=email, amount="", **extra))
    return records


@pytest.mark.parametrize(
    ("setup", "status", "state", "signed", "kind"),
    [
        ("all_contacts_uniform", "implicit", "new", False, "json_import"),
        ("all_contacts_uniform", "implicit", "implicit", False, "json_import"),
        ("all_contacts_uniform", "explicit", "new", False, "sign_up_form"),
        ("mailing_list_contacts", "explicit", "not_set", True, "sign_up_form"),
        ("all_contacts_uniform", "not_set", "new", False, "create_contact"),
        ("all_contacts_by_subscription", "not_set", "new", False, "create_contact"),
    ],
)
def test_each_endpoint_body_at_the_limits_matches_the_spec(
    setup: str, status: str, state: str, signed: bool, kind: str
) -> None:
    """Every field at its limit, for new and existing people: the endpoint's body is valid."""
    settings_ = settings_for(
        setup, status, ("first_name", "last_name", "company_name", "custom_fields")
    )
    email = "m" * 38 + "@example.org"  # 50 characters, the import and sign-up cap
    plan = plan_for(settings_, full_person(email, signed=signed), [state], False)
    (op,) = plan.ops
    assert op.kind == kind
    assert problems(BODY_SCHEMA[kind], op.body) == []
    text_of = str(op.body)
    assert "T" * 255 in text_of and "É" * 50 in text_of and "E" * 256 not in text_of
    if state == "new":
        assert "5" * 25 in text_of and "Straße" in text_of
        if kind == "json_import":
            row = op.body["import_data"][0]
            assert row["cf:tshirt_size"] == "T" * 255 and row["zip"] == "Z" * 50


# -- query parameters ---------------------------------------------------------------------------


def spec_operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The spec's path template and operation for a request path under /v3."""
    relative = path.removeprefix(spec()["basePath"])
    for template, item in spec()["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, relative) and method.lower() in item:
            if template != relative and relative in spec()["paths"]:
                continue  # an exact path wins over a template (/contacts/counts)
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path} is not in the spec")


def check_query_value(param: dict[str, Any], value: str) -> None:
    name = param["name"]
    if param.get("type") == "integer":
        number = int(value)
        assert param.get("minimum", number) <= number <= param.get("maximum", number), name
    elif param.get("type") == "boolean":
        assert value in ("true", "false"), name
    elif param.get("format") == "date-time":
        assert value.endswith("Z"), name
        assert datetime.fromisoformat(value).tzinfo is not None, name
    if "enum" in param:
        parts = value.split(",") if param.get("format") == "csv" else [value]
        assert set(parts) <= set(param["enum"]), f"{name}={value}"


def check_request(entry: RequestLogEntry) -> str:
    """Every query parameter is declared for the path; values fit type, range and enum."""
    template, operation = spec_operation(entry.method, entry.path)
    declared = {p["name"]: p for p in operation.get("parameters", []) if p.get("in") == "query"}
    for name, value in entry.query.items():
        if name == "cursor" and "limit" in declared:
            continue  # from _links.next.href, built by Constant Contact itself (reference 3.5)
        assert name in declared, f"{entry.method} {template}: undeclared query parameter {name}"
        check_query_value(declared[name], value)
    return template


def test_query_parameters_the_client_sends_are_declared_by_the_spec(org: Org) -> None:
    """GET /contacts (lookup, count, pages, updated_after) and the other reads use spec params."""
    for i in range(520):
        org.sandbox.add_contact(f"c{i}@example.org", permission="implicit")
    settings_ = org.settings()
    client = build_client(settings_, clock=org.clock)
    client.check_token()
    client.list_lists()
    client.list_custom_fields()
    assert client.lookup_contact("c1@example.org") is not None
    assert client.count_contacts() == 520
    assert sum(len(page) for page in client.iter_contacts()) == 520
    since = datetime.now(UTC) - timedelta(hours=1)
    assert sum(len(page) for page in client.iter_contacts(since)) == 520
    client.recent_activities(state="processing", limit=50)
    org.ingest([payload("new@example.org")])
    assert org.run().status == "ok"

    gets = [e for e in org.sandbox.request_log() if e.method == "GET" and e.path.startswith("/v3")]
    contacts = [e for e in gets if e.path == "/v3/contacts"]
    assert {"email", "status", "include", "limit", "include_count", "updated_after"} <= {
        name for e in contacts for name in e.query
    }
    assert any(set(e.query) == {"cursor"} for e in contacts)  # a second page was read
    templates = {check_request(e) for e in gets}
    assert {"/contacts", "/contact_lists", "/activities", "/activities/{activity_id}"} <= templates
    for entry in org.sandbox.request_log():
        if entry.method == "POST" and entry.path.startswith("/v3"):
            template, operation = spec_operation(entry.method, entry.path)
            (body,) = [p for p in operation["parameters"] if p["in"] == "body"]
            name = body["schema"]["$ref"].rsplit("/", 1)[1]
            assert problems(name, entry.body) == [], template


def test_export_and_opt_out_requests_match_the_spec(org: Org) -> None:
    """The export POSTs (all, then removed) validate as ContactsExport; optout_after is declared."""
    client = build_client(org.settings(), clock=org.clock)
    for status in (None, "removed"):
        client.start_contact_export(status)
    list(client.iter_contacts(optout_after=datetime.now(UTC) - timedelta(hours=1)))
    posts = [
        e for e in org.sandbox.request_log() if e.method == "POST" and e.path.startswith("/v3")
    ]
    assert len(posts) == 2
    for entry in posts:
        assert spec_operation(entry.method, entry.path)[0] == "/activities/contact_exports"
        assert problems("ContactsExport", entry.body) == []
    gets = [e for e in org.sandbox.request_log() if e.method == "GET" and e.path == "/v3/contacts"]
    assert "optout_after" in gets[-1].query
    check_request(gets[-1])


def test_contact_delete_body_matches_the_spec(org: Org) -> None:
    """The bulk delete flipsync sends is the spec's ContactDelete, ids only, 500 at most."""
    from flipsync.ctct.client import MAX_DELETE_CONTACTS, contact_delete_body

    ids = [org.sandbox.add_contact(f"t{i}@example.org") for i in range(3)]
    client = build_client(org.settings(), clock=org.clock)
    activity_id = client.delete_contacts(ids)
    assert client.get_activity(activity_id).state == "completed"
    (post,) = [e for e in org.sandbox.request_log() if e.method == "POST"]
    template, operation = spec_operation(post.method, post.path)
    assert template == "/activities/contact_delete"
    (body,) = [p for p in operation["parameters"] if p["in"] == "body"]
    assert body["schema"]["$ref"] == "#/definitions/ContactDelete"
    assert problems("ContactDelete", post.body) == []
    assert post.body == {"contact_ids": ids}
    full = [str(uuid.UUID(int=i)) for i in range(MAX_DELETE_CONTACTS)]
    assert problems("ContactDelete", contact_delete_body(full)) == []
    assert problems("ContactDelete", contact_delete_body([*full, full[0]])) != []
    with pytest.raises(ValueError, match="1 to 500"):
        client.delete_contacts([*full, str(uuid.UUID(int=10**6))])
    with pytest.raises(ValueError, match="1 to 500"):
        client.delete_contacts([])
