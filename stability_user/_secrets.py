r"""Keeping secrets out of text: masking keys for display, redacting what a server echoes.

Everything a server sends is hostile input. A server (a compromised proxy, a
buggy gateway) may echo the API key it was sent in an error message, a header
or a malformed status line, and not always as it was sent: JSON-escaped
(``\u0073k-...``), percent-encoded (``sk%2D...``), as an HTML entity, or inside
the ``repr`` of some bytes. :func:`redact` looks for the secret in the text and
in the text with those escapes decoded, and :func:`display_text` also escapes
control characters and caps the length, so what reaches an exception message,
a log record or a terminal is one safe line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, quote_plus, unquote

__all__ = [
    "REDACTED",
    "bare_key",
    "display_text",
    "escape_controls",
    "mask_secret",
    "mask_url",
    "redact",
    "secret_forms",
    "url_secrets",
]

REDACTED: Final = "[redacted]"

_MAX_DISPLAY: Final = 500  # characters of server text quoted in one message

# The patterns are compiled at their first use, not at import (about a millisecond
# in all), and then come from the ``re`` module's cache.

# \uXXXX, \UXXXXXXXX and \xNN: JSON strings and Python reprs of str and bytes.
_BACKSLASH_ESCAPE: Final = r"\\(?:u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|x([0-9a-fA-F]{2}))"

# C0 and C1 controls, DEL, zero-width and bidirectional marks, line and paragraph
# separators, the byte-order mark: what can move a terminal's cursor, set its
# title, split a log line or make text read differently from what it is.
_CONTROLS: Final = "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"


def mask_secret(secret: str) -> str:
    """Show enough of a secret to tell keys apart, never enough to use it.

    Keys of 20 characters or more keep their last four (``sk-…abcd``); shorter
    ones show nothing (``…``). A ``Bearer`` prefix is dropped first.
    """
    secret = bare_key(secret)
    if len(secret) >= 20:
        prefix = "sk-" if secret.startswith("sk-") else ""
        return f"{prefix}…{secret[-4:]}"
    return "…"


def bare_key(secret: str) -> str:
    """The key without a ``Bearer`` prefix: both forms are the same key."""
    return secret[7:] if secret.startswith("Bearer ") else secret


def _codepoint(match: re.Match[str]) -> str:
    digits = match.group(1) or match.group(2) or match.group(3)
    value = int(digits, 16)
    return chr(value) if value <= 0x10FFFF else match.group(0)


def _unescape(text: str) -> str:
    # Undo the escapes a server (or aiohttp quoting its bytes) can wrap a secret
    # in, repeatedly: a secret may be escaped twice, or two ways at once.
    import html  # noqa: PLC0415 - only when there is text to redact

    for _ in range(4):
        decoded = html.unescape(unquote(re.sub(_BACKSLASH_ESCAPE, _codepoint, text)))
        if decoded == text:
            break
        text = decoded
    return text


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by ``[redacted]``, in any form it was echoed.

    A secret given as ``Bearer <key>`` is looked for without the prefix too. When
    a secret is found only after decoding percent-, HTML- or backslash-escapes,
    the decoded text is returned, redacted: the escapes were hiding it.
    """
    bare = [bare_key(secret) for secret in secrets if secret]
    if not bare:
        return text
    for secret in bare:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "%" in text or "\\" in text or "&" in text:
        decoded = _unescape(text)
        if any(secret in decoded for secret in bare):
            for secret in bare:
                decoded = decoded.replace(secret, REDACTED)
            return decoded
    return text


def _encodings(secret: str) -> Iterable[str]:
    # A lone surrogate (an environment variable that is not UTF-8) is no error here.
    yield quote(secret, safe="", errors="surrogatepass")
    yield quote(secret, errors="surrogatepass")  # "/" kept, as in a path
    yield quote_plus(secret, safe="", errors="surrogatepass")  # a form's: " " is "+"
    import html  # noqa: PLC0415 - only when there is text to redact

    yield html.escape(secret)
    yield html.escape(secret, quote=False)
    yield json.dumps(secret)[1:-1]  # a JSON string inside a string, \u-escaped
    yield json.dumps(secret, ensure_ascii=False)[1:-1]
    yield secret.encode("unicode_escape").decode("ascii")
    yield repr(secret)[1:-1]
    utf8 = secret.encode(errors="surrogatepass")
    yield repr(utf8)[2:-1]  # inside the repr of its bytes
    yield utf8.decode("latin-1")  # its UTF-8 bytes read as latin-1
    if secret.isascii():
        return
    try:
        latin = secret.encode("latin-1")  # how HTTP Basic credentials are sent
    except UnicodeEncodeError:
        return
    yield repr(latin)[2:-1]
    yield latin.decode(errors="surrogateescape")  # a header echoing them, as aiohttp reads it


def secret_forms(secret: str) -> tuple[str, ...]:
    """``secret`` and the encodings of it a server may echo, longest first: what to redact.

    :func:`redact` finds a secret behind escapes by decoding the text, which is
    enough for a key; a password may hold any character, ``%41``, ``&amp;`` or a
    backslash among them, which decoding would change too, and characters that a
    JSON string or a repr escapes in ways decoding does not undo. Each of its
    encodings is looked for as it is instead.
    """
    forms = {secret: None}
    if secret:
        for form in _encodings(secret):
            forms.setdefault(form)
    return tuple(sorted(forms, key=len, reverse=True))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    r"""``text`` with control characters written as escapes (``\x1b``, ``\u202e``).

    What is left cannot move a terminal's cursor, change its title, start a new
    log line, or reorder what a reader sees.
    """
    return re.sub(_CONTROLS, _escape, text)


def display_text(
    text: str, secrets: Iterable[str | None] = (), *, limit: int = _MAX_DISPLAY
) -> str:
    """Server text made safe to show: redacted, control characters escaped, at most ``limit``."""
    text = escape_controls(redact(text, secrets))
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit} more characters)"
    return text


_QUERY_PASSWORD: Final = r"[?&]password=([^&#]*)"  # noqa: S105 - a pattern, not a password
_AUTHORITY: Final = r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?//"


def _password_spans(url: str) -> list[tuple[int, int]]:
    """Where the passwords of ``url`` are, found without parsing it.

    A URL that does not parse may still hold one, and a password may hold any
    character, "/", "@", ":", "?" and "#" included (``openssl rand -base64`` makes
    such passwords; they are not always percent-encoded): the user information is
    everything from the authority's start up to the *last* "@", and its password
    what follows the first ":" there. Without a "//" (a mistyped URL), the
    authority starts the text, and its scheme is masked too: better too much than
    a password. A ``?password=`` in the query counts too.
    """
    spans = [match.span(1) for match in re.finditer(_QUERY_PASSWORD, url) if match.group(1)]
    at = url.rfind("@")
    if at >= 0:
        authority = re.match(_AUTHORITY, url)  # "scheme://" or "//": never a "//" of the password
        start = authority.end() if authority is not None and authority.end() <= at else 0
        colon = url.find(":", start, at)
        if colon >= 0:
            spans = [(b, e) for b, e in spans if e <= colon or b >= at]  # inside it already
            spans.append((colon + 1, at))
    return sorted(spans)


def mask_url(url: str) -> str:
    """``url`` with its passwords shown as ``***``: safe to print, even if it does not parse."""
    spans = _password_spans(url)
    if not spans:
        return url
    parts = []
    end = 0
    for start, stop in spans:
        parts.append(url[end:start])
        parts.append("***")
        end = stop
    parts.append(url[end:])
    return "".join(parts)


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The passwords in ``url``, if it has any: what must never be printed."""
    if not url:
        return ()
    found = [url[start:stop] for start, stop in _password_spans(url)]
    # As written, and decoded (%40 is @) as it is sent: either form may be echoed,
    # and each in any of its encodings.
    return tuple(
        dict.fromkeys(
            form for p in found if p for sent in (p, unquote(p)) for form in secret_forms(sent)
        )
    )
