"""read_targets: the one target-file format of the CLI, the examples and programs."""

from __future__ import annotations

import io
import pathlib
import pickle

import pytest

from stability_user import BalanceTarget, TargetFileError, read_targets

KEY = "sk-target0123456789abcdefghijklmnopqrstuvwxyz0123"
OTHER = "sk-other00123456789abcdefghijklmnopqrstuvwxyz0123"


def test_every_line_form_with_comments_and_blank_lines() -> None:
    lines = [
        "# customers\n",
        "\n",
        f"{KEY}\n",
        f"  {OTHER} , org-1 \n",
        f"{KEY},org-2,acme\r\n",
        f"{KEY},,labelled only\n",
        f'"{OTHER}","org,with,commas",quoted\n',
    ]
    assert list(read_targets(lines)) == [
        BalanceTarget(api_key=KEY),
        BalanceTarget(api_key=OTHER, organization="org-1"),
        BalanceTarget(api_key=KEY, organization="org-2", label="acme"),
        BalanceTarget(api_key=KEY, label="labelled only"),
        BalanceTarget(api_key=OTHER, organization="org,with,commas", label="quoted"),
    ]


@pytest.mark.parametrize(
    "header",
    ["api_key,organization,label", "Label,Org,Key", "name,key,org,notes", "KEY"],
)
def test_a_csv_header_names_the_columns_in_any_order(header: str) -> None:
    columns = [c.strip().lower() for c in header.split(",")]
    values = {"api_key": KEY, "key": KEY, "organization": "org-9", "org": "org-9"}
    values |= {"label": "acme", "name": "acme", "notes": "x"}
    row = ",".join(values[c] for c in columns)
    (target,) = read_targets([header, row])
    assert target.api_key == KEY
    assert target.organization == ("org-9" if {"org", "organization"} & set(columns) else None)
    assert target.label == ("acme" if {"label", "name"} & set(columns) else None)


def test_a_byte_order_mark_is_skipped_in_text_and_bytes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "keys.csv"
    path.write_bytes(b"\xef\xbb\xbfapi_key,label\r\n" + KEY.encode() + b",acme\r\n")
    expected = [BalanceTarget(api_key=KEY, label="acme")]
    assert list(read_targets(path)) == expected
    assert list(read_targets(str(path))) == expected
    assert list(read_targets(["\ufeffapi_key,label", f"{KEY},acme"])) == expected
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"\xef\xbb\xbf" + KEY.encode() + b"\n")
    assert list(read_targets(plain)) == [BalanceTarget(api_key=KEY)]


def test_an_open_binary_stream_is_named_by_its_name(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_bytes(KEY.encode() + b"\n\xff\xfe\n")
    with path.open("rb") as stream:
        targets = read_targets(stream)
        assert next(targets) == BalanceTarget(api_key=KEY)
        with pytest.raises(TargetFileError) as caught:
            next(targets)
    assert str(caught.value) == (
        f"{path}:2: not UTF-8 text (byte 0xff at column 1): is it a binary file?"
    )
    assert (caught.value.source, caught.value.line) == (str(path), 2)


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([f"{KEY},a,b,c"], "1: expected key[,organization[,label]], got 4 fields"),
        (["# header-less", ",org-1"], "2: no API key"),
        (["api_key,label", ",acme"], "2: no API key"),
        ([f"{KEY}\0"], "1: holds a NUL byte: is it a binary file?"),
        ([f"{KEY}\rorg"], "1: not a CSV line (new-line character seen in unquoted field"),
        (["sk-" + "x" * 200_000], "1: a field is longer than 131,072 characters: not a target"),
        (["organization,label", f"{KEY},acme"], "1: a header row needs an api_key (or key) column"),
        (["# org first", "Org,Name,notes"], "2: a header row needs an api_key (or key) column"),
        ([f'"{KEY},org-1'], '1: a quoted field has no closing "'),
        ([f'{KEY},"org-1,acme'], '1: a quoted field has no closing "'),
        ([f'{KEY},"org"-1'], "1: not a CSV line (',' expected after '\"')"),
    ],
)
def test_a_bad_line_is_named_and_never_quoted(lines: list[str], problem: str) -> None:
    with pytest.raises(TargetFileError) as caught:
        list(read_targets(lines, name="keys.txt"))
    message = str(caught.value)
    assert message.startswith(f"keys.txt:{problem}")
    assert KEY not in message
    assert isinstance(caught.value, ValueError)


def test_a_key_the_library_refuses_is_a_line_error() -> None:
    with pytest.raises(TargetFileError) as caught:
        list(read_targets([f'{KEY},"org\rx"']))
    assert str(caught.value) == (
        "<targets>:1: BalanceTarget.organization must not contain CR, LF or NUL characters"
    )


def test_errors_pickle_with_their_fields() -> None:
    error = TargetFileError("keys.txt", 7, "no API key")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.source, copy.line, copy.problem, str(copy)) == (
        "keys.txt",
        7,
        "no API key",
        "keys.txt:7: no API key",
    )


def test_lines_are_read_lazily() -> None:
    stream = io.StringIO(f"{KEY}\nnot,a,valid,line,at,all\n")
    targets = read_targets(stream)
    assert next(targets).api_key == KEY  # the bad second line is not read yet
    with pytest.raises(TargetFileError):
        next(targets)


def test_a_missing_file_raises_os_error_when_iterated(tmp_path: pathlib.Path) -> None:
    targets = read_targets(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError):
        next(targets)


def test_a_column_name_after_the_first_target_is_a_label() -> None:
    # Only the first line can be a header: later, "name" is just a label.
    assert list(read_targets([KEY, f"{KEY},,name"])) == [
        BalanceTarget(api_key=KEY),
        BalanceTarget(api_key=KEY, label="name"),
    ]
