"""No API key reaches the emulator's logs, whatever a client sends."""

from __future__ import annotations

import logging
import secrets

import pytest

from stability_user.testing import StabilityEmulator
from stability_user.testing._logs import SERVER_LOGGER

from .wire import malformed_requests, send_raw


async def test_malformed_requests_are_logged_without_their_bytes(
    emulator: StabilityEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"sk-{secrets.token_hex(24)}"
    echoed = 0
    with caplog.at_level(logging.DEBUG):
        for name, data in malformed_requests(key).items():
            answer = await send_raw(emulator.port, data)
            assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\n"), name
            echoed += key.encode() in answer  # aiohttp quotes the bytes back to their sender
    assert echoed >= 3  # so the parser's messages did hold the key
    records = [r for r in caplog.records if r.name == SERVER_LOGGER.name]
    assert len(records) == 5
    for record in records:
        assert record.levelno == logging.ERROR
        assert record.exc_info is None
        assert record.exc_text is None
        assert record.getMessage().startswith("Error handling request from 127.0.0.1: answered 400")
        assert "its bytes are not shown" in record.getMessage()
    assert key not in caplog.text
    assert key[3:20] not in caplog.text  # not even a part of it
    assert emulator.request_count == 0  # none reached the handler


def test_other_errors_keep_their_traceback_with_authorization_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = f"sk-{secrets.token_hex(24)}"
    try:
        raise RuntimeError(
            f"headers were {{'Authorization': 'Bearer {key}'}}, Authorization: {key}"
        )
    except RuntimeError:
        with caplog.at_level(logging.ERROR, logger=SERVER_LOGGER.name):
            SERVER_LOGGER.exception("Error handling request from %s", f"Authorization={key}")
    (record,) = caplog.records
    assert record.getMessage() == "Error handling request from Authorization=[redacted]"
    assert record.exc_text is not None
    assert "Traceback (most recent call last)" in record.exc_text
    assert "'Authorization': '[redacted]'" in record.exc_text
    assert "Authorization: [redacted]" in record.exc_text
    assert key not in caplog.text
