"""Reading the targets of a bulk check from a file: one format for every program.

The command line, the examples and any program of yours read the same format::

    # blank lines and comments are skipped
    sk-...                            a key: its default organization
    sk-...,org-123                    a key and an organization
    sk-...,org-123,acme               ... and a label for reports

or CSV whose first line is a header naming the columns: ``api_key`` (or
``key``), ``organization`` (or ``org``) and ``label`` (or ``name``), in any
order, other columns ignored. A first line naming any of these columns is a
header, and must have the key column. A UTF-8 byte-order mark at the start is
skipped. Fields may be quoted (``"org,with,commas"``); a quote must be closed.

A line that cannot be a target is a :class:`TargetFileError` naming the file and
line, and never quoting the line: it holds a key.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from typing import Final, Union

from ._bulk import BalanceTarget

__all__ = ["TargetFileError", "TargetSource", "read_targets"]

_BOM: Final = "\ufeff"
_KEY_COLUMNS: Final = ("api_key", "key")
_ORGANIZATION_COLUMNS: Final = ("organization", "org")
_LABEL_COLUMNS: Final = ("label", "name")

TargetSource = Union[str, "os.PathLike[str]", Iterable[str], Iterable[bytes]]
"""A file's path, or its lines (text, or bytes decoded as UTF-8), e.g. an open file."""


class TargetFileError(ValueError):
    """A line of a target file that cannot be read; the message is ``FILE:LINE: problem``.

    Attributes:
        source: the file's name (``-`` for standard input).
        line: the line's number, from 1.
        problem: what is wrong with it, without quoting it.
    """

    def __init__(self, source: str, line: int, problem: str) -> None:
        """Name the file and line; ``problem`` says what is wrong."""
        self.source = source
        self.line = line
        self.problem = problem
        super().__init__(f"{source}:{line}: {problem}")

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle with the three fields (the message is derived from them)."""
        return (type(self), (self.source, self.line, self.problem))


def read_targets(source: TargetSource, *, name: str | None = None) -> Iterator[BalanceTarget]:
    """The targets of a file, read lazily, one line at a time.

    Args:
        source: a path (a ``str`` is always a path), or the lines themselves: an
            open file, ``sys.stdin.buffer``, a list of strings. Bytes are decoded
            as UTF-8, line by line, so a binary file fails at its first bad line.
        name: the file's name in error messages; the path, or the stream's
            ``name``, or ``<targets>`` by default.

    Raises:
        TargetFileError: a line that is not a target (while iterating).
        OSError: the path cannot be opened (while iterating).
    """
    if isinstance(source, (str, os.PathLike)):
        return _read_path(os.fspath(source), name)
    label = name if name is not None else str(getattr(source, "name", "<targets>"))
    return _parse(source, label)


def _read_path(path: str, name: str | None) -> Iterator[BalanceTarget]:
    # Binary, so that undecodable bytes are reported with the line they are on.
    with open(path, "rb") as lines:
        yield from _parse(lines, name if name is not None else path)


def _text(raw: str | bytes, source: str, number: int) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        raise TargetFileError(
            source,
            number,
            f"not UTF-8 text (byte 0x{byte:02x} at column {exc.start + 1}): is it a binary file?",
        ) from None


class _Columns:
    """Where a CSV header put the key, organization and label."""

    def __init__(self, header: list[str]) -> None:
        names = [field.lower() for field in header]
        self.key = _find(names, _KEY_COLUMNS)
        self.organization = _find(names, _ORGANIZATION_COLUMNS)
        self.label = _find(names, _LABEL_COLUMNS)

    def pick(self, fields: list[str]) -> tuple[str, str, str]:
        return tuple(  # type: ignore[return-value]
            fields[index] if index is not None and index < len(fields) else ""
            for index in (self.key, self.organization, self.label)
        )


def _find(names: list[str], wanted: tuple[str, ...]) -> int | None:
    for column in wanted:
        if column in names:
            return names.index(column)
    return None


def _fields(line: str, source: str, number: int) -> list[str]:
    if "\0" in line:
        raise TargetFileError(source, number, "holds a NUL byte: is it a binary file?")
    try:
        # Strict: a quote left open is an error, not a field running to the end of
        # the line (a key with a comma and the rest of the line in it).
        return [field.strip() for field in next(csv.reader([line], strict=True))]
    except csv.Error as exc:
        if "field limit" in str(exc):
            limit = csv.field_size_limit()
            problem = f"a field is longer than {limit:,} characters: not a target"
        elif "unexpected end of data" in str(exc):
            problem = 'a quoted field has no closing "'
        else:
            problem = f"not a CSV line ({exc})"
        raise TargetFileError(source, number, problem) from None


def _parse(lines: Iterable[str] | Iterable[bytes], source: str) -> Iterator[BalanceTarget]:
    columns: _Columns | None = None
    first = True
    numbered: Iterable[tuple[int, str | bytes]] = enumerate(lines, 1)
    for number, raw in numbered:
        line = _text(raw, source, number).rstrip("\r\n")
        if number == 1 and line.startswith(_BOM):
            line = line[1:]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = _fields(line, source, number)
        if first:
            first = False
            names = {field.lower() for field in fields}
            if names & set(_KEY_COLUMNS):
                columns = _Columns(fields)
                continue
            if names & set(_ORGANIZATION_COLUMNS + _LABEL_COLUMNS):
                # A header without a key column: its first name would be sent as a key.
                raise TargetFileError(
                    source, number, "a header row needs an api_key (or key) column"
                )
        if columns is not None:
            key, organization, label = columns.pick(fields)
        elif len(fields) > 3:
            raise TargetFileError(
                source, number, f"expected key[,organization[,label]], got {len(fields)} fields"
            )
        else:
            key, organization, label = [*fields, "", ""][:3]
        if not key:
            raise TargetFileError(source, number, "no API key")
        try:
            target = BalanceTarget(
                api_key=key, organization=organization or None, label=label or None
            )
        except (TypeError, ValueError) as exc:  # names the field, never quotes the key
            raise TargetFileError(source, number, str(exc)) from None
        yield target
