"""Keeping the key out of text: masking, redaction in every echoed form, safe display."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from stability_user._secrets import (
    REDACTED,
    display_text,
    escape_controls,
    mask_secret,
    mask_url,
    redact,
    secret_forms,
    url_secrets,
)

from .conftest import KEY
from .hostile import echoed_forms

ECHOES = echoed_forms(KEY)


class TestMask:
    def test_long_keys_keep_their_last_four(self) -> None:
        assert mask_secret(KEY) == f"sk-…{KEY[-4:]}"
        assert mask_secret("x" * 19 + "wxyz") == "…wxyz"

    def test_bearer_prefix_is_dropped_first(self) -> None:
        assert mask_secret("Bearer " + KEY) == mask_secret(KEY)

    @pytest.mark.parametrize("short", ["", "k", "sk-short", "x" * 19, "Bearer " + "x" * 19])
    def test_short_keys_show_nothing(self, short: str) -> None:
        assert mask_secret(short) == "…"


class TestRedact:
    @pytest.mark.parametrize("form", ECHOES)
    def test_every_echoed_form_is_redacted(self, form: str) -> None:
        text = redact(f"bad key {ECHOES[form]} here", [KEY])
        assert KEY not in text
        assert REDACTED in text
        assert text.startswith("bad key ")

    @pytest.mark.parametrize("form", ECHOES)
    def test_a_bearer_secret_is_found_bare(self, form: str) -> None:
        assert KEY not in redact(f"x {ECHOES[form]} y", ["Bearer " + KEY])

    def test_text_without_the_secret_is_untouched(self) -> None:
        for text in ("nothing here", "100% sure", "a \\u0041 b", "a &amp; b", ""):
            assert redact(text, [KEY]) == text

    def test_no_secret_no_change(self) -> None:
        assert redact(f"x {KEY}", []) == f"x {KEY}"
        assert redact(f"x {KEY}", [None, ""]) == f"x {KEY}"

    def test_several_secrets(self) -> None:
        other = "proxy-password-1234"
        assert redact(f"{KEY} and {other}", [KEY, other]) == f"{REDACTED} and {REDACTED}"

    @given(
        before=st.text(max_size=30),
        after=st.text(max_size=30),
        form=st.sampled_from(sorted(ECHOES)),
    )
    def test_never_returns_the_key_whatever_surrounds_it(
        self, before: str, after: str, form: str
    ) -> None:
        assert KEY not in redact(before + ECHOES[form] + after, [KEY])


PASSWORD_ENCODINGS: dict[str, Callable[[str], str]] = {
    "percent": lambda p: quote(p, safe="", errors="surrogatepass"),
    "percent, slashes kept": lambda p: quote(p, errors="surrogatepass"),
    "form": lambda p: quote_plus(p, safe="", errors="surrogatepass"),
    "json inside a string": lambda p: json.dumps(p)[1:-1],
    "json, unicode kept": lambda p: json.dumps(p, ensure_ascii=False)[1:-1],
    "html": html.escape,
    "repr": lambda p: repr(p)[1:-1],
    "repr of its bytes": lambda p: repr(p.encode(errors="surrogatepass"))[2:-1],
}


class TestSecretForms:
    """A password may hold any character: each encoding of it is found as it is."""

    @given(
        password=st.text(min_size=1).map(lambda p: f"Q7j{p}Z9k"),  # framed: never a word
        encoding=st.sampled_from(sorted(PASSWORD_ENCODINGS)),
        before=st.text(max_size=10),
        after=st.text(max_size=10),
    )
    def test_any_password_in_any_encoding_is_redacted(
        self, password: str, encoding: str, before: str, after: str
    ) -> None:
        echoed = PASSWORD_ENCODINGS[encoding](password)
        text = redact(f"{before}{echoed}{after}", secret_forms(password))
        assert echoed not in text
        assert password not in text

    @pytest.mark.parametrize(
        "password",
        ["a%41b", "a&amp;b", 'q"uote\\', "caf\\u00e9", "pé", "\udce9-from-a-bad-environment"],
    )
    def test_passwords_that_look_encoded_already(self, password: str) -> None:
        for encode in PASSWORD_ENCODINGS.values():
            assert REDACTED in redact(f"x {encode(password)} y", secret_forms(password))

    def test_the_forms_of_a_url_password(self) -> None:
        forms = url_secrets("redis://:p%40ss%26word@host:6379")
        assert {"p%40ss%26word", "p@ss&word", "p@ss&amp;word", "p%2540ss%2526word"} <= set(forms)


class TestDisplay:
    @pytest.mark.parametrize(
        ("raw", "shown"),
        [
            ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
            ("\x1b[2J", "\\x1b[2J"),
            ("line\nbreak\r", "line\\x0abreak\\x0d"),
            ("\x9b31m", "\\x9b31m"),
            ("abc\u202etxt.exe", "abc\\u202etxt.exe"),
            ("zero\u200bwidth", "zero\\u200bwidth"),
            ("plain é ü 漢字 🙂", "plain é ü 漢字 🙂"),
        ],
    )
    def test_control_characters_are_escaped(self, raw: str, shown: str) -> None:
        assert escape_controls(raw) == shown

    def test_long_text_is_capped(self) -> None:
        shown = display_text("x" * 10_000, limit=50)
        assert shown == "x" * 50 + "… (9950 more characters)"

    def test_redacts_then_escapes(self) -> None:
        body = json.loads(json.dumps({"m": f"\x1b[2J{KEY}"}))["m"]
        assert display_text(body, [KEY]) == f"\\x1b[2J{REDACTED}"


# Passwords as people make them: `openssl rand -base64` gives "/", "+" and "=";
# others hold "@", ":", "?", "#" or "%", not always percent-encoded.
PASSWORDS = st.text(
    alphabet=st.sampled_from("bfghXYZ0189/+=@:?#%&!$*-_. "), min_size=1, max_size=40
).filter(lambda p: p.strip(":") == p)


class TestMaskUrl:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://:pa/ss@host:6379/0", "redis://:***@host:6379/0"),
            ("redis://user:p@ss/w:rd@h/0", "redis://user:***@h/0"),
            ("http://u:secret@proxy:3128", "http://u:***@proxy:3128"),
            ("user:pass@host", "user:***@host"),
            ("redis:/u:pw@h", "redis:***@h"),  # mistyped: too much masked, never too little
            ("redis://h:6379?password=abc&db=1", "redis://h:6379?password=***&db=1"),
            ("redis://h:6379/0", "redis://h:6379/0"),
            ("http://proxy:3128", "http://proxy:3128"),
        ],
    )
    def test_examples(self, url: str, shown: str) -> None:
        assert mask_url(url) == shown

    @given(
        password=PASSWORDS,
        scheme=st.sampled_from(["redis://", "rediss://", "http://", "https://", ""]),
        user=st.sampled_from(["", "default", "proxy-user"]),
        rest=st.sampled_from(["host", "host:6379/0", "127.0.0.1:3128", "h/0?db=1"]),
    )
    def test_no_password_is_ever_shown(
        self, password: str, scheme: str, user: str, rest: str
    ) -> None:
        # Without a scheme, "user://..." is itself a URL whose scheme is "user": no
        # password in it to mask.
        assume(scheme or not password.startswith("//"))
        url = f"{scheme}{user}:{password}@{rest}"
        masked = mask_url(url)
        assert masked == f"{scheme}{user}:***@{rest}"
        assert password in url_secrets(url)
        assert password not in redact(f"echoed: {url}", url_secrets(url))

    # A raw "@" there reads as the end of a password before the host: masked, more than asked.
    @given(password=PASSWORDS.filter(lambda p: not {"&", "#", "@"} & set(p)))
    def test_a_password_in_the_query(self, password: str) -> None:
        url = f"redis://host:6379/0?password={password}"
        assert mask_url(url) == "redis://host:6379/0?password=***"
        assert password in url_secrets(url)
