"""The errors themselves: messages, defaults, and pickling across processes."""

from __future__ import annotations

import pickle

import pytest

from stability_user import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ErrorBody,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    StabilityError,
)


def round_trip(error: Exception) -> Exception:
    clone: Exception = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    return clone


class TestAPIError:
    def test_defaults(self) -> None:
        error = APIError(500)
        assert (error.status, error.error, dict(error.headers), error.attempts) == (
            500,
            None,
            {},
            1,
        )
        assert error.request_id is None
        assert str(error) == "500 Internal Server Error"

    def test_an_unknown_status_has_a_reason_too(self) -> None:
        assert str(APIError(599)) == "599 Unknown Status"

    def test_every_part_of_the_message(self) -> None:
        error = RateLimitError(
            429,
            ErrorBody(name="rate_limit_exceeded", message="slow down"),
            detail="a detail",
            retry_after=7.0,
            request_id="3f2c",
        )
        assert str(error) == (
            "429 rate_limit_exceeded: slow down (a detail; retry after 7 s; request id 3f2c)"
        )

    def test_server_text_is_shown_safely(self) -> None:
        error = APIError(400, ErrorBody(name="n" * 300, message="m\x1b[2J" + "x" * 1000))
        name, _, rest = str(error).partition(": ")
        assert name == "400 " + "n" * 100 + "… (200 more characters)"
        assert rest.startswith("m\\x1b[2J")
        assert "\x1b" not in str(error)
        assert rest.endswith("… (508 more characters)")  # counted after escaping

    def test_retry_after_errors_keep_every_field(self) -> None:
        for cls in (RateLimitError, ServerError):
            error = cls(503, headers={"a": "b"}, attempts=3, retry_after=1.5)
            assert (dict(error.headers), error.attempts, error.retry_after) == ({"a": "b"}, 3, 1.5)
            assert cls(503).attempts == 1

    @pytest.mark.parametrize(
        "error",
        [
            APIError(400, ErrorBody(id="1"), headers={"x": "y"}, attempts=2, request_id="r"),
            RateLimitError(429, retry_after=3.0, detail="d"),
            ServerError(502, attempts=3),
            APIConnectionError("refused", attempts=3, retryable=False),
            APITimeoutError("slow", attempts=2),
            ResponseValidationError("bad body", status=200),
            StabilityError("misuse"),
        ],
    )
    def test_every_error_pickles_with_its_state(self, error: Exception) -> None:
        clone = round_trip(error)
        assert type(clone) is type(error)
        assert str(clone) == str(error)
        assert vars(clone) == vars(error)


class TestConnectionError:
    def test_attempts_shown_after_retries_only(self) -> None:
        assert str(APIConnectionError("refused")) == "refused"
        assert str(APIConnectionError("refused", attempts=1)) == "refused"
        assert str(APIConnectionError("refused", attempts=2)) == "refused (after 2 attempts)"

    def test_retryable_by_default(self) -> None:
        assert APIConnectionError("x").retryable is True
        assert APITimeoutError("x").retryable is True
