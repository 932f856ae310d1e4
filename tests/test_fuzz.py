"""Property-based fuzzing of decoding: whatever a server sends, only the library's errors.

Arbitrary bytes and arbitrary JSON as 2xx bodies and as error bodies, arbitrary
header values, the key hidden anywhere in any echoed form: decoding returns a
model or raises a :class:`StabilityError`, never anything else, and no text it
produces contains the key.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stability_user import APIError, Response, StabilityError
from stability_user._config import make_config
from stability_user._endpoints import ENDPOINTS
from stability_user._http import Request
from stability_user._sansio import decode

from .conftest import KEY
from .hostile import echoed_forms, everything_said

CONFIG = make_config(KEY, environ={})
ECHOES = echoed_forms(KEY)
REQUEST = Request("GET", "https://api.stability.ai/v1/user/balance", {"Authorization": KEY}, 5.0)

echo = st.sampled_from(sorted(ECHOES.values()))
text_with_key = st.builds(
    lambda a, key, b: a + key + b, st.text(max_size=20), echo, st.text(max_size=20)
)
texts = st.one_of(st.text(max_size=40), text_with_key)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["id", "name", "message", "errors", "credits", "email"])
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda fields: json.dumps(fields).encode(),
        st.fixed_dictionaries(
            {},
            optional={
                "id": texts,
                "name": texts,
                "message": texts,
                "errors": st.lists(texts, max_size=3),
                "credits": json_values,
            },
        ),
    ),
    texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
)
header_values = st.one_of(
    texts,
    st.sampled_from(
        [
            "0",
            "7",
            "-1",
            "nan",
            "Mon, 01 Jan 9999999999999999999 00:00:00 GMT",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ]
    ),
)
headers = st.dictionaries(
    st.sampled_from(["Retry-After", "Location", "x-request-id", "Content-Type", "X-Echo"]),
    header_values,
    max_size=5,
)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    status=st.one_of(
        st.sampled_from([200, 201, 204, 301, 302, 400, 401, 403, 404, 429, 500, 503]),
        st.integers(100, 599),
    ),
    body=bodies,
    response_headers=headers,
    endpoint=st.sampled_from(ENDPOINTS),
)
def test_decoding_anything_gives_a_model_or_a_library_error(
    status: int, body: bytes, response_headers: dict[str, str], endpoint: Any
) -> None:
    response = Response(status, response_headers, body, 1, REQUEST)
    error: StabilityError | None = None
    try:
        result = decode(response, endpoint, CONFIG, now=1_700_000_000.0)
    except StabilityError as exc:  # anything else fails the test
        error = exc
    if error is None:
        assert 200 <= status < 300
        assert isinstance(result, endpoint.model)
    else:
        assert KEY not in everything_said(error)
        assert not isinstance(error, APIError) or error.status == status
    assert KEY not in repr(response)
