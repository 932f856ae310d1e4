"""The strict converter: every valid body structures exactly; wrong types never coerce."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import cattrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from stability_user import (
    Account,
    Balance,
    ErrorBody,
    OrganizationMembership,
    ResponseValidationError,
)
from stability_user._converter import (
    _array_types,
    _format_exception,
    _make_converter,
    _models,
    _structure_bool,
    _structure_float,
    _structure_str,
    structure,
    structure_error_body,
)
from stability_user._endpoints import ENDPOINTS

SPEC = json.loads((pathlib.Path(__file__).parent / "data" / "openapi.json").read_text())


def schema(name: str) -> dict[str, Any]:
    """A component schema with its $refs inlined, as hypothesis-jsonschema wants it."""

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(SPEC["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items() if k not in ("example", "format")}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    result: dict[str, Any] = inline(SPEC["components"]["schemas"][name])
    return result


finite_numbers = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=100)
@given(from_schema(schema("AccountResponseBody")))
def test_every_valid_account_body_structures_to_its_values(body: dict[str, Any]) -> None:
    account = structure(body, Account, status=200)
    assert account.id == body["id"]
    assert account.email == body["email"]
    assert account.profile_picture == body.get("profile_picture")
    assert account.organizations == tuple(
        OrganizationMembership(o["id"], o["name"], o["role"], o["is_default"])
        for o in body["organizations"]
    )


@settings(max_examples=100)
@given(from_schema(schema("BalanceResponseBody")))
def test_every_valid_balance_body_structures_to_its_value(body: dict[str, Any]) -> None:
    assert structure(body, Balance, status=200).credits == float(body["credits"])


@given(finite_numbers)
def test_credits_accept_any_json_number_as_float(value: float) -> None:
    credits = structure({"credits": value}, Balance, status=200).credits
    assert type(credits) is float
    assert credits == float(value)


NOT_NUMBERS = st.one_of(
    st.booleans(),
    st.text(),
    st.none(),
    st.lists(st.integers()),
    st.dictionaries(st.text(), st.integers()),
)


@given(NOT_NUMBERS)
def test_credits_never_coerce_from_other_types(value: Any) -> None:
    with pytest.raises(ResponseValidationError, match=r"\$\.credits") as info:
        structure({"credits": value}, Balance, status=200)
    assert info.value.status == 200


@pytest.mark.parametrize("value", ["12.5", True, False, "false", None, [1]])
def test_the_coercions_cattrs_does_by_default_are_refused(value: Any) -> None:
    with pytest.raises(ResponseValidationError, match=r"expected a number, got .* @ \$\.credits"):
        structure({"credits": value}, Balance, status=200)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_credits_are_refused(value: float) -> None:
    with pytest.raises(ResponseValidationError, match="finite"):
        structure({"credits": value}, Balance, status=200)


def membership(**overrides: Any) -> dict[str, Any]:
    return {"id": "org-1", "name": "One", "role": "MEMBER", "is_default": True, **overrides}


def account(**overrides: Any) -> dict[str, Any]:
    return {"id": "user-1", "email": "a@example.com", "organizations": [membership()], **overrides}


@pytest.mark.parametrize("value", [0, 1, "true", "false", None])
def test_is_default_accepts_only_json_booleans(value: Any) -> None:
    body = account(organizations=[membership(), membership(is_default=value)])
    with pytest.raises(ResponseValidationError, match=r"\$\.organizations\[1\]\.is_default"):
        structure(body, Account, status=200)


def test_missing_required_field_is_named_with_its_path() -> None:
    body = account(organizations=[membership(), {"id": "o", "name": "n", "role": "r"}])
    with pytest.raises(
        ResponseValidationError,
        match=r"required field missing @ \$\.organizations\[1\]\.is_default",
    ):
        structure(body, Account, status=200)


def test_every_problem_is_reported_at_once() -> None:
    body = {"email": 5, "organizations": [membership(role=1)]}
    with pytest.raises(ResponseValidationError) as info:
        structure(body, Account, status=200)
    message = str(info.value)
    assert "@ $.id" in message
    assert "@ $.email" in message
    assert "@ $.organizations[0].role" in message


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ([], r"an object, got an array @ \$"),
        ("text", r"an object, got a string @ \$"),
        (account(organizations="org-1"), r"an array, got a string @ \$\.organizations"),
        (account(organizations={"id": "x"}), r"an array, got an object @ \$\.organizations"),
        (account(organizations=[["org-1"]]), r"an object, got an array @ \$\.organizations\[0\]"),
    ],
)
def test_containers_of_the_wrong_json_type_are_refused(body: Any, path: str) -> None:
    with pytest.raises(ResponseValidationError, match=path):
        structure(body, Account, status=200)


@pytest.mark.parametrize("value", [None])
def test_profile_picture_null_or_absent_is_none(value: Any) -> None:
    assert structure(account(profile_picture=value), Account, status=200).profile_picture is None
    assert structure(account(), Account, status=200).profile_picture is None


@pytest.mark.parametrize("value", [1, True, ["x"], {"url": "x"}])
def test_profile_picture_of_another_type_is_refused(value: Any) -> None:
    with pytest.raises(ResponseValidationError, match=r"\$\.profile_picture"):
        structure(account(profile_picture=value), Account, status=200)


def test_unknown_keys_are_ignored_at_every_level() -> None:
    body = account(new_field={"a": 1}, organizations=[membership(added_later=[1])])
    assert structure(body, Account, status=200) == Account(
        "user-1", "a@example.com", (OrganizationMembership("org-1", "One", "MEMBER", True),)
    )


def test_default_organization_is_the_one_marked_default() -> None:
    acct = structure(
        account(organizations=[membership(id="a", is_default=False), membership(id="b")]),
        Account,
        status=200,
    )
    assert acct.default_organization is not None
    assert acct.default_organization.id == "b"
    no_default = structure(
        account(organizations=[membership(is_default=False)]), Account, status=200
    )
    assert no_default.default_organization is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "id": "1",
                "name": "bad_request",
                "message": "m",
                "temporary": False,
                "timeout": False,
                "fault": False,
            },
            ErrorBody("1", "bad_request", "m", False, False, False, None),
        ),
        ({"id": "1", "name": "unauthorized", "message": "m"}, ErrorBody("1", "unauthorized", "m")),
        (
            {"id": "1", "name": "invalid", "errors": ["a", "b", 3]},
            ErrorBody("1", "invalid", errors=("a", "b")),
        ),
        ({"name": 5, "message": ["x"], "fault": "yes", "errors": "x"}, ErrorBody()),
        ([1, 2], None),
        ("text", None),
        (None, None),
    ],
)
def test_error_bodies_of_every_shape_are_read_tolerantly(
    body: Any, expected: ErrorBody | None
) -> None:
    assert structure_error_body(body) == expected


@given(from_schema(schema("Error")))
def test_every_spec_error_body_keeps_its_fields(body: dict[str, Any]) -> None:
    parsed = structure_error_body(body)
    assert parsed is not None
    assert (parsed.id, parsed.name, parsed.message) == (body["id"], body["name"], body["message"])
    assert (parsed.temporary, parsed.timeout, parsed.fault) == (
        body["temporary"],
        body["timeout"],
        body["fault"],
    )


def test_describe_prefers_message_then_errors() -> None:
    assert ErrorBody(message="m", errors=("e",)).describe() == "m"
    assert ErrorBody(errors=("a", "b")).describe() == "a; b"
    assert ErrorBody().describe() is None


class TestDetails:
    """What mutation testing showed no test pinned down."""

    def test_the_models_and_arrays_come_from_the_endpoint_table(self) -> None:
        models = list(_models(tuple(e.model for e in ENDPOINTS)))
        assert models == [OrganizationMembership, Account, Balance]  # innermost first
        assert _array_types(models) == {tuple[OrganizationMembership, ...]}

    @pytest.mark.parametrize("detailed", [False, True])
    def test_a_fresh_converter_is_as_strict(self, detailed: bool) -> None:
        # The converters are built once per process: build them again to see how.
        converter = _make_converter(detailed=detailed)
        member = {"id": "o", "name": "n", "role": "r", "is_default": True}
        good = {"id": "u", "email": "e", "organizations": [member], "later": 1}
        assert converter.structure(good, Account) == Account(
            "u", "e", (OrganizationMembership("o", "n", "r", True),)
        )
        assert converter.structure({"credits": 2}, Balance) == Balance(2.0)
        bad = [
            ({"credits": "2"}, Balance),
            ({"credits": True}, Balance),
            ({"credits": None}, Balance),
            ([{"credits": 2}], Balance),
            ({**good, "id": 1}, Account),
            ({**good, "organizations": "none"}, Account),
            ({**good, "organizations": ["o"]}, Account),
            ({**good, "organizations": [{**member, "is_default": 1}]}, Account),
        ]
        for data, cls in bad:
            with pytest.raises(Exception) as info:  # noqa: PT011 - cattrs' own error types
                converter.structure(data, cls)
            if type(data) is dict:  # inside an object, the detailed one collects every problem
                assert isinstance(info.value, cattrs.BaseValidationError) == detailed

    def test_a_fresh_detailed_converter_names_each_problem(self) -> None:
        converter = _make_converter(detailed=True)
        member = {"id": "o", "name": "n", "role": "r", "is_default": True}
        cases = [
            (
                {"id": "u", "email": "e", "organizations": "x"},
                Account,
                "expected an array, got a string @ $.organizations",
            ),
            (
                {"id": "u", "email": "e", "organizations": ["o"]},
                Account,
                "expected an object, got a string @ $.organizations[0]",
            ),
            (
                {"id": "u", "email": "e", "organizations": [{**member, "name": 1}]},
                Account,
                "expected a string, got a number @ $.organizations[0].name",
            ),
        ]
        for data, cls, message in cases:
            with pytest.raises(cattrs.BaseValidationError) as info:
                converter.structure(data, cls)
            problems = cattrs.transform_error(info.value, format_exception=_format_exception)
            assert problems == [message]

    @pytest.mark.parametrize(
        ("hook", "value", "message"),
        [
            (_structure_str, 1, "expected a string, got a number"),
            (_structure_str, b"x", "expected a string, got bytes"),
            (_structure_bool, 1, "expected true or false, got a number"),
            (_structure_float, "1", "expected a number, got a string"),
        ],
    )
    def test_type_errors_say_what_was_expected_and_found(
        self, hook: Any, value: object, message: str
    ) -> None:
        with pytest.raises(TypeError) as info:
            hook(value, None)
        assert str(info.value) == message

    def test_a_wrong_container_says_so(self) -> None:
        with pytest.raises(ResponseValidationError) as info:
            structure([], Balance, status=200)
        assert (
            str(info.value)
            == "200 response is not a valid Balance: expected an object, got an array @ $"
        )

    def test_problems_are_joined_and_capped_at_ten(self) -> None:
        member = {"id": "o", "name": "n", "role": "r", "is_default": True}

        def account_with(wrong: int) -> dict[str, object]:
            organizations = [{**member, "is_default": 0}] * wrong
            return {"id": "u", "email": "e", "organizations": organizations}

        with pytest.raises(ResponseValidationError) as info:
            structure(account_with(2), Account, status=200)
        assert str(info.value) == (
            "200 response is not a valid Account: "
            "expected true or false, got a number @ $.organizations[0].is_default; "
            "expected true or false, got a number @ $.organizations[1].is_default"
        )
        with pytest.raises(ResponseValidationError) as info:
            structure(account_with(10), Account, status=200)
        assert "more" not in str(info.value)
        with pytest.raises(ResponseValidationError) as info:
            structure(account_with(12), Account, status=200)
        assert str(info.value).endswith("@ $.organizations[9].is_default; and 2 more")
