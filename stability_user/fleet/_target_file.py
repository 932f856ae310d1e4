"""Targets in a file: a chunk is a byte range of it, which each worker reads from its own copy."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator, Generator, Iterable, Mapping
from typing import Any, Final

import attrs

from stability_user import BalanceTarget, TargetFileError, read_targets

from ._run import SweepError
from ._source import digest

__all__ = ["TargetFile"]

# The header a chunk of a file without one is read under: the chunk's first line is a
# target, as it was in the whole file, never taken for a header.
_HEADER: Final = b"api_key,organization,label\n"


def _path(path: str | os.PathLike[str]) -> str:
    return os.fspath(path)


class _Lines:
    """The lines of a binary file, noting where the line handed out last starts and ends."""

    def __init__(self, file: io.BufferedReader) -> None:
        self._file = file
        self.start = self.end = 0
        self.number = 0
        self.first_content: tuple[int, int, int] | None = None  # start, end, line number

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> bytes:
        line = self._file.readline()
        if not line:
            raise StopIteration
        self.start, self.end = self.end, self.end + len(line)
        self.number += 1
        if self.first_content is None:
            # Blank and comment lines as read_targets sees them: the first other line
            # is a header or the first target.
            text = line.decode("utf-8", "replace").lstrip("\ufeff").strip()
            if text and not text.startswith("#"):
                self.first_content = (self.start, self.end, self.number)
        return line


@attrs.frozen
class TargetFile:
    """Targets in a file of the format ``stability-user balances`` reads, every one labelled.

    A chunk is a byte range of the file (and its header line, if it has one): each
    worker reads the range from its own copy at ``path`` and checks it against the
    digest the producer took, so jobs never carry a key and a changed file is found
    out instead of checked. See :func:`~stability_user.read_targets` for the format.

    Attributes:
        path: the file; the same path on every machine running workers.
    """

    path: str = attrs.field(converter=_path)

    def describe(self) -> str:
        """The file's path."""
        return self.path

    async def chunks(self, size: int) -> AsyncIterator[tuple[dict[str, Any], int]]:
        """Each chunk's byte range, digest and number of targets, from one pass over the file.

        Raises:
            TargetFileError: a line that is not a target, or a target without a label.
            OSError: the file cannot be read.
        """
        scan = self._scan(size)
        try:
            while True:
                # In a thread: a million lines take seconds to read and parse.
                chunk = await asyncio.to_thread(next, scan, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            scan.close()

    def _scan(self, size: int) -> Generator[tuple[dict[str, Any], int], None, None]:
        with open(self.path, "rb") as file:
            lines = _Lines(file)
            header: tuple[int, int] | None = None
            start = count = 0
            first = True
            for target in read_targets(lines, name=self.path):
                if target.label is None:
                    raise TargetFileError(
                        self.path, lines.number, "no label: a sweep keys its results by label"
                    )
                if first:
                    first = False
                    content = lines.first_content
                    if content is not None and content[0] != lines.start:
                        header = content[:2]  # a header line came before the first target
                    start = lines.start  # no BOM, no comment: the targets only
                count += 1
                if count == size:
                    yield self._chunk(file, header, start, lines.end, count), count
                    start, count = lines.end, 0
            if count:
                yield self._chunk(file, header, start, lines.end, count), count

    def _chunk(
        self,
        file: io.BufferedReader,
        header: tuple[int, int] | None,
        start: int,
        end: int,
        count: int,
    ) -> dict[str, Any]:
        position = file.tell()
        head = _read(file, header) if header else _HEADER
        body = _read(file, (start, end))
        file.seek(position)
        return {
            "header": list(header) if header else None,
            "start": start,
            "end": end,
            "count": count,
            "digest": digest(head, body),
        }

    async def load(self, ref: Mapping[str, Any]) -> tuple[list[BalanceTarget], list[str]]:
        """The chunk's targets, read from this machine's copy of the file.

        Raises:
            SweepError: the bytes differ from what the producer read (the file changed).
        """
        return await asyncio.to_thread(self._load, ref), []

    def _load(self, ref: Mapping[str, Any]) -> list[BalanceTarget]:
        header = ref["header"]
        with open(self.path, "rb") as file:
            head = _read(file, header) if header else _HEADER
            body = _read(file, (ref["start"], ref["end"]))
        if digest(head, body) != ref["digest"]:
            raise SweepError(
                f"{self.path} is not the file this run was enqueued from (bytes "
                f"{ref['start']} to {ref['end']} differ): enqueue a new run"
            )
        targets = list(read_targets([head, *io.BytesIO(body)], name=self.path))
        if len(targets) != ref["count"]:  # pragma: no cover - the digest matched
            raise SweepError(f"{self.path}: bytes {ref['start']} to {ref['end']} changed meaning")
        return targets


def _read(file: io.BufferedReader, span: Iterable[int]) -> bytes:
    start, end = span
    file.seek(start)
    return file.read(end - start)
