"""The pure layer: configuration, requests and decoding, without I/O."""

from __future__ import annotations

import json
import pickle
import platform
from email.utils import formatdate

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stability_user import (
    Account,
    APIError,
    AuthenticationError,
    BadRequestError,
    Balance,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    Request,
    Response,
    ResponseValidationError,
    ServerError,
    StabilityError,
    __version__,
)
from stability_user._config import ClientConfig, derive_config, key_id_of, make_config, origin_of
from stability_user._endpoints import ACCOUNT, API_VERSIONS, BALANCE
from stability_user._sansio import (
    build_request,
    decode,
    error_for_response,
    parse_retry_after,
    retry_after_of,
)

from .conftest import KEY

NOW = 1_700_000_000.0


def config(**kwargs: object) -> ClientConfig:
    return make_config(KEY, environ={}, **kwargs)  # type: ignore[arg-type]


def response(status: int, body: object = None, headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status, headers or {}, raw)


def decode_balance(resp: Response, cfg: ClientConfig) -> Balance:
    return decode(resp, BALANCE, cfg, now=NOW)


def decode_account(resp: Response, cfg: ClientConfig) -> Account:
    return decode(resp, ACCOUNT, cfg, now=NOW)


def error_of(resp: Response, cfg: ClientConfig | None = None) -> APIError:
    return error_for_response(resp, cfg or config(), now=NOW)


class TestConfig:
    def test_key_from_environment(self) -> None:
        cfg = make_config(environ={"STABILITY_API_KEY": KEY})
        assert cfg.api_key == KEY

    def test_no_key_names_the_variable(self) -> None:
        for environ in ({}, {"STABILITY_API_KEY": ""}):
            cfg = make_config(environ=environ)
            with pytest.raises(StabilityError, match="STABILITY_API_KEY"):
                build_request(cfg, BALANCE)

    def test_defaults(self) -> None:
        cfg = config()
        assert cfg.base_url == "https://api.stability.ai"
        assert cfg.api_version == "v1" == API_VERSIONS[0]
        assert build_request(cfg, ACCOUNT).url == "https://api.stability.ai/v1/user/account"
        assert build_request(cfg, BALANCE).url == "https://api.stability.ai/v1/user/balance"

    def test_no_key_is_allowed_until_a_request_needs_it(self) -> None:
        cfg = make_config(environ={})
        assert cfg.api_key is None
        assert cfg.key_id is None

    def test_host_and_version_from_environment(self) -> None:
        cfg = make_config(
            KEY,
            environ={"STABILITY_API_HOST": "https://proxy.example/", "STABILITY_API_VERSION": "v1"},
        )
        assert build_request(cfg, ACCOUNT).url == "https://proxy.example/v1/user/account"

    def test_arguments_beat_the_environment(self) -> None:
        cfg = make_config(
            KEY,
            base_url="https://a.example",
            api_version="v1alpha",
            environ={"STABILITY_API_HOST": "https://b.example", "STABILITY_API_VERSION": "v1"},
        )
        assert build_request(cfg, ACCOUNT).url == "https://a.example/v1alpha/user/account"

    @pytest.mark.parametrize("version", ["v2", "V1", "", "v1beta", " v1"])
    def test_unknown_api_version(self, version: str) -> None:
        # The empty string too: an explicit value is never replaced by the default.
        with pytest.raises(ValueError, match="api_version"):
            make_config(KEY, api_version=version, environ={"STABILITY_API_VERSION": "v1"})

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:8000",
            "http://127.1.2.3",
            "http://[::1]:80",
            "http://localhost:9",
            "http://LOCALHOST",
            "https://api.example.com",
        ],
    )
    def test_allowed_base_urls(self, url: str) -> None:
        assert config(base_url=url).base_url == url

    @pytest.mark.parametrize(
        "url", ["http://api.stability.ai", "http://10.0.0.1", "http://localhost.evil.example"]
    )
    def test_clear_text_to_remote_hosts_is_refused(self, url: str) -> None:
        with pytest.raises(StabilityError, match="clear-text"):
            config(base_url=url)

    @pytest.mark.parametrize(
        "url",
        [
            "ftp://x",
            "api.stability.ai",
            "https://",
            "https://u:p@h",
            "https://h/?q=1",
            "https://h/#f",
            # Parsed as aiohttp parses them: what is checked is what would be sent.
            "http://127.0.0.1:80.evil.com",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:0",
            "http://127.0.0.1/\r\nX-Injected: 1",
            "https://api.stability.ai\t",
            "http://evil.example\\@127.0.0.1",
            "http://127.0.0.1@evil.example",
        ],
    )
    def test_malformed_base_urls(self, url: str) -> None:
        with pytest.raises(StabilityError, match=r"base_url|clear-text"):
            config(base_url=url)

    @pytest.mark.parametrize("value", [123, b"https://x", None.__class__])
    def test_base_url_of_the_wrong_type(self, value: object) -> None:
        with pytest.raises(TypeError, match="base_url"):
            config(base_url=value)

    @pytest.mark.parametrize("field", ["organization", "client_id", "client_version"])
    @pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\0b"])
    def test_header_injection_refused(self, field: str, bad: str) -> None:
        with pytest.raises(ValueError, match=field):
            config(**{field: bad})

    @pytest.mark.parametrize("bad", ["sk-1\r\nX-Evil: 1", "sk\0", " sk-1", ""])
    def test_bad_keys_are_refused_without_echoing_them(self, bad: str) -> None:
        with pytest.raises(ValueError, match="api_key") as info:
            make_config(bad, environ={})
        assert not bad.strip() or bad.strip() not in str(info.value)

    @pytest.mark.parametrize("bad", [123, b"sk-bytes-key-0123456789"])
    def test_keys_of_the_wrong_type_are_refused_without_echoing_them(self, bad: object) -> None:
        with pytest.raises(TypeError, match="api_key") as info:
            make_config(bad, environ={})  # type: ignore[arg-type]
        assert "0123456789" not in str(info.value)

    def test_derive_checks_only_what_changes(self) -> None:
        cfg = config(organization="org-1")
        assert derive_config(cfg, organization=None).organization is None
        assert derive_config(cfg, timeout=2).timeout == 2.0
        with pytest.raises(ValueError, match="api_key"):
            derive_config(cfg, api_key="")
        with pytest.raises(ValueError, match="timeout"):
            derive_config(cfg, timeout=float("inf"))
        other = derive_config(cfg, api_key="Bearer " + KEY)
        # The same account at the same service: one name for its state.
        assert other.key_id == cfg.key_id == key_id_of(KEY, cfg.origin)
        assert KEY not in cfg.key_id

    @pytest.mark.parametrize(
        ("url", "origin"),
        [
            ("https://API.stability.ai", "https://api.stability.ai:443"),
            ("https://api.stability.ai:443/v1/user/balance", "https://api.stability.ai:443"),
            ("http://127.0.0.1:8700/x", "http://127.0.0.1:8700"),
            ("http://[::1]:8700", "http://[::1]:8700"),
            ("http://localhost", "http://localhost:80"),
        ],
    )
    def test_the_service_of_a_url(self, url: str, origin: str) -> None:
        assert origin_of(url) == origin

    def test_one_key_at_two_services_is_two_states(self) -> None:
        here, there = "http://127.0.0.1:8700", "http://127.0.0.1:8701"
        assert key_id_of(KEY, origin_of(here)) != key_id_of(KEY, origin_of(there))
        assert config(base_url=here).key_id != config(base_url=there).key_id

    @pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), True])
    def test_bad_timeouts(self, timeout: float) -> None:
        with pytest.raises(ValueError, match="timeout"):
            config(timeout=timeout)

    def test_repr_masks_the_key(self) -> None:
        assert KEY not in repr(config())
        assert KEY[-4:] in repr(config())


class TestRequests:
    def test_constant_headers(self) -> None:
        request = build_request(config(client_id="my-app", client_version="1.2"), ACCOUNT)
        assert request.method == "GET"
        assert request.attempt == 1
        assert request.headers["Authorization"] == KEY
        assert request.headers["Accept"] == "application/json"
        assert request.headers["Stability-Client-ID"] == "my-app"
        assert request.headers["Stability-Client-Version"] == "1.2"
        # The transport adds its own token (aiohttp/...): this layer knows no transport.
        assert request.headers["User-Agent"] == (
            f"stability-user/{__version__} Python/{platform.python_version()}"
        )
        assert "Organization" not in request.headers

    def test_client_headers_are_absent_unless_set(self) -> None:
        headers = build_request(config(), ACCOUNT).headers
        assert "Stability-Client-ID" not in headers
        assert "Stability-Client-Version" not in headers

    def test_bearer_key_is_sent_as_given(self) -> None:
        cfg = make_config("Bearer " + KEY, environ={})
        assert build_request(cfg, ACCOUNT).headers["Authorization"] == "Bearer " + KEY

    def test_account_never_sends_organization(self) -> None:
        cfg = config(organization="org-1")
        assert "Organization" not in build_request(cfg, ACCOUNT).headers
        with pytest.raises(ValueError, match="takes no organization"):
            build_request(cfg, ACCOUNT, organization="org-2")

    def test_balance_organization_default_and_override(self) -> None:
        cfg = config(organization="org-default")
        assert build_request(cfg, BALANCE).headers["Organization"] == "org-default"
        assert build_request(cfg, BALANCE, organization="org-2").headers["Organization"] == "org-2"
        assert "Organization" not in build_request(config(), BALANCE).headers

    @pytest.mark.parametrize("bad", ["org\r\nX: y", "org\0"])
    def test_per_call_organization_injection_refused(self, bad: str) -> None:
        with pytest.raises(ValueError, match="organization"):
            build_request(config(), BALANCE, organization=bad)

    def test_request_repr_masks_authorization(self) -> None:
        request = build_request(config(), ACCOUNT)
        assert KEY not in repr(request)
        assert "Authorization" in repr(request)


class TestDecoding:
    def test_balance(self) -> None:
        assert decode_balance(response(200, {"credits": 3}), config()) == Balance(3.0)

    def test_account(self) -> None:
        body = {"id": "u", "email": "e", "organizations": []}
        assert decode_account(response(200, body), config()) == Account("u", "e", ())

    @pytest.mark.parametrize("body", [b"", b"<html>", b'{"credits": 1', b"\xff\xfe"])
    def test_2xx_body_that_is_not_json(self, body: bytes) -> None:
        with pytest.raises(ResponseValidationError, match="not JSON") as info:
            decode_balance(Response(200, {}, body), config())
        assert info.value.status == 200

    @pytest.mark.parametrize(
        ("status", "cls"),
        [
            (400, BadRequestError),
            (401, AuthenticationError),
            (403, PermissionDeniedError),
            (404, NotFoundError),
            (429, RateLimitError),
            (500, ServerError),
            (502, ServerError),
            (503, ServerError),
            (504, ServerError),
            (409, APIError),
            (422, APIError),
            (302, APIError),
        ],
    )
    def test_status_maps_to_its_error(self, status: int, cls: type[APIError]) -> None:
        body = {"id": "x1", "name": "some_name", "message": "what happened"}
        with pytest.raises(cls) as info:
            decode_balance(response(status, body), config(api_version="v1"))
        error = info.value
        assert type(error) is cls
        assert error.status == status
        assert error.error is not None
        assert error.error.name == "some_name"
        assert str(error).startswith(f"{status} some_name: what happened")

    def test_error_without_json_body_uses_the_reason_phrase(self) -> None:
        error = error_of(Response(502, {}, b"<html>bad gateway</html>"))
        assert error.error is None
        assert str(error) == "502 Bad Gateway"

    def test_v2beta_errors_list_is_the_message(self) -> None:
        body = {"id": "1", "name": "invalid_request", "errors": ["a is wrong", "b is missing"]}
        error = error_of(response(400, body))
        assert str(error) == "400 invalid_request: a is wrong; b is missing"

    def test_v1alpha_404_points_to_v1(self) -> None:
        error = error_of(response(404, {"name": "not_found"}), config(api_version="v1alpha"))
        assert "api_version='v1'" in str(error)
        assert "retired" in str(error)
        v1_error = error_of(response(404, {"name": "not_found"}), config(api_version="v1"))
        assert "retired" not in str(v1_error)

    def test_redirect_is_an_error_naming_the_location(self) -> None:
        error = error_of(Response(301, {"Location": "https://elsewhere/x"}, b""))
        assert "redirect to https://elsewhere/x not followed" in str(error)

    @pytest.mark.parametrize("status", [300, 399])
    def test_every_3xx_is_a_redirect_error(self, status: int) -> None:
        error = error_of(Response(status, {"location": "/x"}, b""))
        assert type(error) is APIError
        assert "redirect to /x not followed" in str(error)
        assert "redirect" not in str(error_of(Response(400, {"Location": "/x"}, b"")))

    def test_key_quoted_by_the_server_is_redacted(self) -> None:
        body = {"name": "unauthorized", "message": f"key {KEY} is invalid", "errors": [KEY]}
        error = error_of(response(401, body))
        assert KEY not in str(error)
        assert error.error is not None
        assert KEY not in repr(error.error)
        assert "[redacted]" in str(error)

    def test_key_in_redirect_location_is_redacted(self) -> None:
        error = error_of(Response(302, {"Location": f"https://x/?k={KEY}"}, b""))
        assert KEY not in str(error)

    def test_retry_after_seconds_on_429(self) -> None:
        error = error_of(response(429, {}, {"Retry-After": "7"}))
        assert isinstance(error, RateLimitError)
        assert error.retry_after == 7.0
        assert "retry after 7 s" in str(error)

    def test_retry_after_date_on_503(self) -> None:
        error = error_for_response(
            response(503, {}, {"Retry-After": formatdate(1_000_030, usegmt=True)}),
            config(),
            now=1_000_000,
        )
        assert isinstance(error, ServerError)
        assert error.retry_after == 30.0

    def test_attempts_come_from_the_response(self) -> None:
        error = error_of(Response(500, {}, b"", attempt=3))
        assert error.attempts == 3

    def test_errors_pickle_with_their_state(self) -> None:
        error = error_of(
            response(429, {"name": "slow"}, {"Retry-After": "3", "x-request-id": "r-1"})
        )
        clone = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
        assert type(clone) is RateLimitError
        assert (clone.status, clone.retry_after, str(clone)) == (429, 3.0, str(error))
        assert (clone.request_id, clone.headers, clone.error) == (
            "r-1",
            error.headers,
            error.error,
        )


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("0", 0.0),
            ("120", 120.0),
            (" 5 ", 5.0),
            ("1.5", 1.5),
            ("-1", None),
            ("soon", None),
            ("", None),
            (None, None),
            ("nan", None),
            ("Wed, 21 Oct 2015 07:28:00", None),
        ],
    )
    def test_values(self, value: str | None, expected: float | None) -> None:
        assert parse_retry_after(value, now=0.0) == expected

    def test_a_date_not_in_the_future_is_no_answer(self) -> None:
        # Not zero: "retry now" after a 429 would burn every attempt inside the lockout.
        assert parse_retry_after(formatdate(100, usegmt=True), now=200.0) is None
        assert parse_retry_after(formatdate(200, usegmt=True), now=200.0) is None

    @given(st.integers(min_value=1, max_value=10**6))
    def test_date_round_trips(self, offset: int) -> None:
        now = 1_700_000_000.0
        assert parse_retry_after(formatdate(now + offset, usegmt=True), now=now) == offset

    @given(skew=st.integers(min_value=-(10**6), max_value=10**6), wait=st.integers(1, 3600))
    def test_a_date_is_read_against_the_servers_own_clock(self, skew: int, wait: int) -> None:
        # A server whose clock is off by `skew` means `wait` seconds, whatever ours says.
        now = 1_700_000_000.0
        server_now = now + skew
        value = formatdate(server_now + wait, usegmt=True)
        date = formatdate(server_now, usegmt=True)
        assert parse_retry_after(value, now=now, date=date) == wait

    def test_an_unreadable_date_header_falls_back_to_our_clock(self) -> None:
        value = formatdate(1_700_000_060, usegmt=True)
        assert parse_retry_after(value, now=1_700_000_000.0, date="yesterday") == 60.0

    def test_retry_after_of_a_response_reads_both_headers(self) -> None:
        headers = {
            "retry-after": formatdate(1_000_060, usegmt=True),
            "DATE": formatdate(1_000_000, usegmt=True),
        }
        # Our clock is two minutes ahead of the server's: still its 60 s.
        assert retry_after_of(headers, now=1_000_120.0) == 60.0
        assert retry_after_of({}, now=0.0) is None


def test_request_is_frozen() -> None:
    request = Request("GET", "https://x", {}, 1.0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.timeout = 2.0  # type: ignore[misc]


class TestDetails:
    """What mutation testing showed no test pinned down."""

    def test_a_bad_organization_is_named_as_such(self) -> None:
        with pytest.raises(ValueError, match=r"^organization must not contain"):
            build_request(config(), BALANCE, organization="a\nb")

    def test_the_key_actually_sent_is_redacted_too(self) -> None:
        # A middleware may send another key than the session's: both are secrets.
        other = "sk-other0123456789abcdefghijklmnop"
        request = Request("GET", "https://x/v1/user/balance", {"Authorization": other}, 5.0)
        body = {"name": "unauthorized", "message": f"bad keys {other} and {KEY}"}
        error = error_of(Response(401, {}, json.dumps(body).encode(), 1, request))
        assert other not in str(error)
        assert KEY not in str(error)
        assert str(error) == "401 unauthorized: bad keys [redacted] and [redacted]"

    def test_a_request_id_echoing_the_key_is_redacted(self) -> None:
        error = error_of(Response(500, {"x-request-id": f"id-{KEY}"}, b""))
        assert error.request_id == "id-[redacted]"

    def test_a_long_request_id_is_cut(self) -> None:
        error = error_of(Response(500, {"x-request-id": "r" * 150}, b""))
        assert error.request_id == "r" * 100 + "… (50 more characters)"

    def test_a_redirect_without_location(self) -> None:
        error = error_of(Response(302, {}, b""))
        assert str(error) == (
            "302 Found (redirect to ? not followed: redirects could forward the API key)"
        )

    def test_the_retired_version_hint_in_full(self) -> None:
        error = error_of(response(404, {"name": "not_found"}), config(api_version="v1alpha"))
        assert str(error) == (
            "404 not_found (the v1alpha endpoints were retired in favour of v1: "
            "pass api_version='v1' or set STABILITY_API_VERSION=v1)"
        )

    @pytest.mark.parametrize("status", [300, 301, 199, 100])
    def test_only_2xx_is_a_result(self, status: int) -> None:
        with pytest.raises(APIError) as info:
            decode_balance(response(status, {"credits": 1}), config())
        assert info.value.status == status

    def test_decoding_reads_an_http_date_against_now(self) -> None:
        date = formatdate(NOW + 42, usegmt=True)
        with pytest.raises(RateLimitError) as info:
            decode_balance(response(429, {}, {"Retry-After": date}), config())
        assert info.value.retry_after == 42.0

    def test_bodies_that_are_not_json_say_so_exactly(self) -> None:
        with pytest.raises(ResponseValidationError) as info:
            decode_balance(Response(200, {}, b"<html>"), config())
        assert str(info.value) == "200 response body is not JSON (6 bytes)"
        deep = b"[" * 100_000 + b"]" * 100_000
        with pytest.raises(ResponseValidationError) as info:
            decode_balance(Response(200, {}, deep), config())
        assert str(info.value) == "200 response body is nested too deeply (200000 bytes)"

    def test_a_2xx_off_the_spec_names_its_status(self) -> None:
        with pytest.raises(ResponseValidationError) as info:
            decode_balance(response(203, {"credits": "12"}), config())
        assert info.value.status == 203
        assert str(info.value) == (
            "203 response is not a valid Balance: expected a number, got a string @ $.credits"
        )
