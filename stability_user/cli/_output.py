"""How results are written: table, JSON lines or CSV rows, and the summary.

Text meant for a terminal (the table, plain lines) has its control characters
escaped, whoever wrote it: the service, a label in a file, an e-mail address.
JSON relies on its encoder, and is strict: never ``NaN`` nor ``Infinity``, which
RFC 8259 has no room for and many parsers refuse. Every number the service sends
is finite (the library refuses others: that target's row fails); the one number
computed here, the summary's ``total_credits``, is ``null`` with
``total_credits_overflow: true`` when the balances add up to more than a float holds.
CSV cells are escaped too and, against formula injection in spreadsheets (OWASP's
"CSV injection"), a text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return gets a leading ``'``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import attrs

from .._bulk import BalanceResult
from .._models import Account, Balance
from .._secrets import escape_controls, mask_secret, redact
from ._masking import mask_keys

__all__ = [
    "CSV_FIELDS",
    "FORMATS",
    "Tally",
    "account_lines",
    "balance_line",
    "csv_cell",
    "formatter",
    "header",
    "json_text",
]

FORMATS: Final = ("table", "json", "csv")
CSV_FIELDS: Final = (
    "index",
    "label",
    "key",
    "organization",
    "credits",
    "ok",
    "low",
    "error_type",
    "error",
    "line",  # last: a column added to the CSV of 0.1.0 shifts no other
)
_MAX_FIELD: Final = 200  # characters of one text field of the service's shown

_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def json_text(value: object, *, indent: int | None = None) -> str:
    """``value`` as strict JSON: a non-finite number raises ``ValueError``, never ``NaN``."""
    return json.dumps(value, allow_nan=False, indent=indent)


def _is_low(result: BalanceResult, below: float | None) -> bool:
    return below is not None and result.balance is not None and result.balance.credits < below


def _row(result: BalanceResult, line: int | None, below: float | None) -> dict[str, Any]:
    target = result.target
    error = result.error
    return {
        "index": result.index,
        "label": target.label,
        "key": mask_secret(target.api_key) if target.api_key else None,
        "organization": target.organization,
        "credits": result.balance.credits if result.balance else None,
        "ok": result.ok,
        "low": _is_low(result, below),
        "error_type": type(error).__name__ if error else None,
        "error": str(error) if error else None,
        "line": line,
    }


def csv_cell(value: object) -> str:
    """One CSV cell: ``true``/``false`` as in JSON, nothing for ``None``, text made inert."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = escape_controls(str(value))
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text


def _as_csv(fields: Any) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def header(fmt: str, *, lines: bool = True) -> str | None:
    """The line printed before the rows, if the format has one.

    The table has a ``LINE`` column when the targets come from lines (a file, stdin).
    """
    if fmt == "csv":
        return _as_csv(CSV_FIELDS)
    if fmt == "table":
        head = f"{'TARGET':<24} {'ORGANIZATION':<16} {'CREDITS':>14}  STATUS"
        return f"{'LINE':>5}  {head}" if lines else head
    return None


Render = Callable[[BalanceResult, "int | None"], str]
"""Turns a result, and its target's line in the input (if any), into its output line."""


def formatter(fmt: str, below: float | None, *, lines: bool = True) -> Render:
    """The function turning a result and its target's line number into its line in ``fmt``.

    Every format names the line, so that a failed row can be traced back to the
    input whatever its label (an invalid key is masked to ``…``): JSON's and CSV's
    ``line`` (``null`` or empty for targets of no file, the demo accounts), and the
    table's first column, there when the targets come from ``lines``. A key-looking
    label or organization (a file's columns in the wrong order) is masked like the
    key column.
    """
    render = _render(fmt, below, lines=lines)
    return lambda result, line: mask_keys(render(result, line))


def _render(fmt: str, below: float | None, *, lines: bool) -> Render:
    if fmt == "json":
        return lambda result, line: json_text(_row(result, line, below))
    if fmt == "csv":
        return lambda result, line: _as_csv(csv_cell(v) for v in _row(result, line, below).values())

    def as_table(result: BalanceResult, line: int | None) -> str:
        target = result.target
        name = escape_controls(target.display_name)
        organization = escape_controls(target.organization or "(default)")
        lead = f"{name:<24} {organization:<16}"
        if lines:
            lead = f"{'-' if line is None else line:>5}  {lead}"
        if result.balance is None:
            error = escape_controls(f"{type(result.error).__name__}: {result.error}")
            return f"{lead} {'-':>14}  {error}"
        status = "LOW" if _is_low(result, below) else "ok"
        return f"{lead} {result.balance.credits:>14,.2f}  {status}"

    return as_table


def _from_server(text: str, secrets: Iterable[str | None]) -> str:
    """A text field the service sent: no secret in it, in any form, and at most a line long."""
    text = mask_keys(redact(text, secrets))
    if len(text) > _MAX_FIELD:
        text = f"{text[:_MAX_FIELD]}… ({len(text) - _MAX_FIELD} more characters)"
    return text


def account_lines(account: Account, *, as_json: bool, secrets: Sequence[str | None]) -> list[str]:
    """The account and its organizations, as text lines or one JSON document.

    Every text the service sent is hostile input: ``secrets`` (the key the account
    was read with, the proxy's credentials, in any form) and any other key-looking
    token are hidden, each field is capped, and control characters are escaped (by
    the JSON encoder in JSON).
    """

    def field(_: object, __: object, value: object) -> object:
        return _from_server(value, secrets) if isinstance(value, str) else value

    if as_json:
        document = attrs.asdict(
            account,
            value_serializer=field,
            filter=lambda attribute, _: attribute.name != "freshness",  # the service's fields
        )
        return [json_text(document, indent=2)]
    email, account_id = (_from_server(text, secrets) for text in (account.email, account.id))
    lines = [escape_controls(f"{email} ({account_id})")]
    for org in account.organizations:
        default = "  (default)" if org.is_default else ""
        name, org_id, role = (_from_server(t, secrets) for t in (org.name, org.id, org.role))
        lines.append(escape_controls(f"  {org_id}  {name}  [{role}]{default}"))
    return lines


def balance_line(balance: Balance, organization: str | None, *, as_json: bool) -> str:
    """A balance as text or JSON."""
    if as_json:
        return json_text({"organization": organization, "credits": balance.credits})
    return f"{balance.credits:,.2f} credits"


@attrs.define
class Tally:
    """What a bulk run has seen so far; the summary is made from it, even after Ctrl-C."""

    total: int | None
    below: float | None
    checked: int = 0
    failed: int = 0
    low: int = 0
    credits: float = 0.0

    def add(self, result: BalanceResult) -> None:
        """Count one result."""
        self.checked += 1
        if result.balance is None:
            self.failed += 1
        else:
            self.credits += result.balance.credits
            self.low += _is_low(result, self.below)

    @property
    def overflow(self) -> bool:
        """The balances add up to more than a float holds (each is finite)."""
        return not math.isfinite(self.credits)

    def text(self, *, interrupted: bool = False) -> str:
        """The summary line."""
        if self.overflow:
            total = f"too large to add up (over {sys.float_info.max:.1e})"
        else:
            total = f"{self.credits:,.2f}"
        counts = f"failed {self.failed}, total credits {total}"
        if self.below is not None:
            counts += f", {self.low} below {self.below:g}"
        if not interrupted:
            return f"checked {self.checked}, {counts}"
        of = f" of {self.total}" if self.total is not None else ""
        return f"interrupted after {self.checked}{of}: {counts}"

    def json(self, *, interrupted: bool = False) -> str:
        """The summary as one JSON object."""
        return json_text(
            {
                "targets": self.total,
                "checked": self.checked,
                "failed": self.failed,
                "low": self.low,
                "below": self.below,
                "total_credits": None if self.overflow else self.credits,
                "total_credits_overflow": self.overflow,
                "interrupted": interrupted,
            }
        )
