"""Every emulator answer, both versions, checked against the official schema of its version.

``tests/data/README.md`` says where the two OpenAPI files come from.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jsonschema
import pytest

from stability_user.testing import EmulatedOrganization, Fault, RateLimit, StabilityEmulator

from .fakes import FakeClock
from .wire import call, get

DATA = pathlib.Path(__file__).parent / "data"
SPECS: dict[str, dict[str, Any]] = {
    "v1": json.loads((DATA / "openapi-v1.json").read_text()),
    "v1alpha": json.loads((DATA / "openapi.json").read_text()),
}
ERROR_FIELDS = {
    "v1": {"id", "name", "message"},
    "v1alpha": {"id", "name", "message", "temporary", "timeout", "fault"},
}
VERSIONS = pytest.mark.parametrize("version", ["v1", "v1alpha"])
INJECTED = [400, 401, 403, 404, 408, 418, 429, 500, 502, 503, 504]


def resolved(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with the spec's components beside it, so its ``#/components/...`` refs resolve."""
    return {**schema, "components": spec["components"]}


def schema_for(version: str, path: str, status: int) -> dict[str, Any]:
    """The schema the spec gives the answer ``status`` to ``GET path``; errors use ``Error``."""
    spec = SPECS[version]
    responses = spec["paths"].get(path, {}).get("get", {}).get("responses", {})
    response = responses.get(str(status))
    if response is None:
        assert status >= 400, f"the spec has no {status} for {path}"
        return resolved(spec, spec["components"]["schemas"]["Error"])
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return resolved(spec, response["content"]["application/json"]["schema"])


def conforms(version: str, path: str, answer: tuple[int, Any, Any]) -> None:
    """Validate an answer with the schema of its version; an error has exactly its fields."""
    status, headers, body = answer
    assert headers["Content-Type"].startswith("application/json")
    jsonschema.validate(body, schema_for(version, path, status))
    if status >= 400:
        assert set(body) == ERROR_FIELDS[version]
        assert body["id"] == headers["x-request-id"]


@pytest.fixture(name="key")
def _key(emulator: StabilityEmulator) -> str:
    return emulator.add_account(
        email="spec@example.com",
        profile_picture="https://example.com/p.png",
        organizations=[
            EmulatedOrganization("org-a", "A", "OWNER", is_default=True, credits=3),
            EmulatedOrganization("org-b", "B", credits=0.125),
        ],
    )


@VERSIONS
async def test_normal_answers(emulator: StabilityEmulator, key: str, version: str) -> None:
    account, balance = f"/{version}/user/account", f"/{version}/user/balance"
    answer = await get(emulator.base_url, account, key)
    assert answer[0] == 200
    conforms(version, account, answer)
    assert answer[2]["organizations"][1] == {
        "id": "org-b",
        "name": "B",
        "role": "MEMBER",
        "is_default": False,
    }
    for organization, credits in ((None, 3), ("org-a", 3), ("org-b", 0.125)):
        headers = {"Organization": organization} if organization else {}
        answer = await get(emulator.base_url, balance, key, **headers)
        assert (answer[0], answer[2]) == (200, {"credits": credits})
        conforms(version, balance, answer)


@VERSIONS
async def test_error_answers(
    emulator: StabilityEmulator, key: str, clock: FakeClock, version: str
) -> None:
    url, balance = emulator.base_url, f"/{version}/user/balance"
    account = f"/{version}/user/account"
    cases = [
        (balance, await get(url, balance)),
        (balance, await get(url, balance, "sk-unknown")),
        (balance, await get(url, balance, key, Organization="org-other")),
        (f"/{version}/user/nothing", await get(url, f"/{version}/user/nothing", key)),
        (balance, await call("POST", url, balance, key)),
        (account, await call("DELETE", url, account, key)),
    ]
    emulator.rate_limit = RateLimit(requests=1, window=10, lockout=60)
    fresh = emulator.add_account()
    assert (await get(url, balance, fresh))[0] == 200
    cases.append((balance, await get(url, balance, fresh)))  # over the limit
    clock.advance(1)
    cases.append((account, await get(url, account, fresh)))  # locked out
    statuses = [answer[0] for _, answer in cases]
    assert statuses == [401, 401, 403, 404, 405, 405, 429, 429]
    names = [answer[2]["name"] for _, answer in cases[:4]]
    assert names == ["unauthorized", "unauthorized", "permission_denied", "not_found"]
    if version == "v1":
        assert set(cases[0][1][2]) == {"id", "name", "message"}  # v1's shorter error shape
    assert [answer[1]["Retry-After"] for _, answer in cases[-2:]] == ["60", "59"]
    for path, answer in cases:
        conforms(version, path, answer)


@VERSIONS
@pytest.mark.parametrize("status", INJECTED)
async def test_injected_statuses(
    emulator: StabilityEmulator, key: str, version: str, status: int
) -> None:
    emulator.script(Fault.respond(status, retry_after=5))
    path = f"/{version}/user/account"
    answer = await get(emulator.base_url, path, key)
    assert (answer[0], answer[1]["Retry-After"]) == (status, "5")
    conforms(version, path, answer)


async def test_a_retired_v1alpha_answers_in_its_own_shape(
    emulator: StabilityEmulator, key: str
) -> None:
    emulator.retire_v1alpha = True
    path = "/v1alpha/user/balance"
    answer = await get(emulator.base_url, path, key)
    assert answer[0] == 404
    conforms("v1alpha", path, answer)


@VERSIONS
@pytest.mark.parametrize("endpoint", ["account", "balance"])
async def test_faults_with_a_json_body(
    emulator: StabilityEmulator, key: str, version: str, endpoint: str
) -> None:
    path = f"/{version}/user/{endpoint}"
    emulator.script(Fault.extra_fields(), Fault.oversized(4096))
    for _ in range(2):  # deliberately odd, still valid
        answer = await get(emulator.base_url, path, key)
        conforms(version, path, answer)
    assert int(answer[1]["Content-Length"]) >= 4096
    emulator.script(Fault.wrong_types(), Fault.missing_fields())
    for _ in range(2):  # deliberately off the spec
        status, _, body = await get(emulator.base_url, path, key)
        assert status == 200
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schema_for(version, path, status))


@VERSIONS
def test_the_specs_own_error_examples_fit_the_error_schema(version: str) -> None:
    spec = SPECS[version]
    error = resolved(spec, spec["components"]["schemas"]["Error"])
    examples = [spec["components"]["schemas"]["Error"].get("example")]
    examples += [
        response["content"]["application/json"]["example"]
        for response in spec["components"].get("responses", {}).values()
    ]
    examples = [example for example in examples if example is not None]
    assert examples
    for example in examples:
        jsonschema.validate(example, error)
        assert set(example) == ERROR_FIELDS[version]
