"""Sets of byte ranges: which parts of a cached object are present, and which are dirty."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator


class RangeSet:
    """Disjoint, sorted half-open ranges ``[start, end)`` with merge on insert."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    def total(self) -> int:
        """Number of bytes covered."""
        return sum(e - s for s, e in self)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_left(self._ends, start)  # first range that ends at/after start
        j = bisect.bisect_right(self._starts, end)  # ranges starting after end are kept
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def remove(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_right(self._ends, start)
        j = bisect.bisect_left(self._starts, end)
        keep_starts: list[int] = []
        keep_ends: list[int] = []
        for s, e in zip(self._starts[i:j], self._ends[i:j], strict=True):
            if s < start:
                keep_starts.append(s)
                keep_ends.append(start)
            if e > end:
                keep_starts.append(end)
                keep_ends.append(e)
        self._starts[i:j] = keep_starts
        self._ends[i:j] = keep_ends

    def contains(self, start: int, end: int) -> bool:
        """Whether all of ``[start, end)`` is covered (an empty range always is)."""
        if end <= start:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._ends, start)
        return i < len(self._starts) and self._starts[i] < end

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` not covered."""
        missing: list[tuple[int, int]] = []
        pos = start
        i = bisect.bisect_right(self._ends, start)
        while pos < end and i < len(self._starts):
            s, e = self._starts[i], self._ends[i]
            if s >= end:
                break
            if s > pos:
                missing.append((pos, s))
            pos = max(pos, e)
            i += 1
        if pos < end:
            missing.append((pos, end))
        return missing

    def clip(self, end: int) -> None:
        """Forget everything at or beyond ``end`` (a truncate)."""
        self.remove(end, max(end, self._ends[-1]) if self._ends else end)

    def to_list(self) -> list[list[int]]:
        return [[s, e] for s, e in self]
