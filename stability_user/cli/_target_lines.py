"""A targets file read lazily, each target with its line, so every result traces back to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator

from .._bulk import BalanceTarget
from .._targets import TargetFileError, read_targets
from ._failures import UsageFailure, os_reason

__all__ = ["LineBook", "numbered_targets", "read_target_file"]


class _CountedLines:
    """The lines of a file, counted as they are read."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = iter(lines)
        self.count = 0

    def __iter__(self) -> _CountedLines:
        return self

    def __next__(self) -> bytes:
        line = next(self._lines)
        self.count += 1
        return line


def numbered_targets(
    source: str | Iterable[bytes], *, name: str | None = None
) -> Iterator[tuple[int, BalanceTarget]]:
    """Each target of ``source`` (a path, or a binary file's lines) with its line number.

    A target's line number is how a row, a failed check or a metric's series is
    traced back to the file, whatever the label (an invalid key is masked to
    ``…``). :func:`read_targets` reads one line at a time and hands each target
    over as soon as its line is read, so when a target comes, the lines counted
    end with its own.

    Raises:
        TargetFileError: a line that is not a target (while iterating).
        OSError: the path cannot be opened (while iterating).
    """
    if isinstance(source, str):
        with open(source, "rb") as file:
            yield from numbered_targets(file, name=source)
        return
    counted = _CountedLines(source)
    for target in read_targets(counted, name=name or "<targets>"):
        yield counted.count, target


class LineBook:
    """The line of each target handed to ``balances()``, found by its result's index.

    ``balances()`` numbers the targets in the order it takes them: the book notes
    each one's line as it is taken and hands it back, once, with its result.
    """

    def __init__(self) -> None:
        self._lines: dict[int, int] = {}
        self._taken = 0

    def _note(self, line: int) -> None:
        self._lines[self._taken] = line
        self._taken += 1

    def follow(self, numbered: Iterable[tuple[int, BalanceTarget]]) -> Iterator[BalanceTarget]:
        """The targets of ``numbered``, their lines noted as they are taken."""
        for line, target in numbered:
            self._note(line)
            yield target

    async def follow_async(
        self, numbered: AsyncIterator[tuple[int, BalanceTarget]]
    ) -> AsyncIterator[BalanceTarget]:
        """The same for targets that come as they are read."""
        async for line, target in numbered:
            self._note(line)
            yield target

    def line(self, index: int) -> int | None:
        """The line of the target ``balances()`` numbered ``index`` (``None``: none noted)."""
        return self._lines.pop(index, None)


def read_target_file(path: str) -> Iterator[tuple[int, BalanceTarget]]:
    """The targets of ``path`` with their line numbers, read lazily.

    Raises:
        UsageFailure: a line that is not a target, a file that cannot be read, or a
            file with no targets at all (exit 2).
    """
    count = 0
    try:
        for numbered in numbered_targets(path):
            count += 1
            yield numbered
    except TargetFileError as error:
        raise UsageFailure(str(error)) from None
    except OSError as error:
        raise UsageFailure(f"cannot read {path}: {os_reason(error)}") from None
    if not count:
        raise UsageFailure(f"no targets in {path}: it holds only blank lines and comments")
