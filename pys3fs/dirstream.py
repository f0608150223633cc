"""Open directories: a listing handed to the kernel page by page.

``ls -l`` stats each name as soon as ``getdents`` returns it. When readdir answers with
the names of the first LIST page while the next page is still coming, those ``stat``
calls overlap the LIST instead of waiting for the whole directory. libfuse 2 supports
this through directory offsets: each name carries the offset of the one after it, and
the kernel asks again from there when its buffer is full.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator

# The producer of a directory's names: batches, each as soon as it may be looked up.
Producer = Callable[[], Iterator[list[str]]]
# More names than one kernel READDIR request holds (4 KiB of 32-byte entries at most).
PER_CALL = 1024


class DirStream:
    """The names of one open directory, numbered in the order they were produced."""

    def __init__(self, produce: Producer) -> None:
        self._produce = produce
        self._start()

    def _start(self) -> None:
        self._names = [".", ".."]
        self._batches: Iterator[list[str]] | None = self._produce()

    def entries_from(self, offset: int) -> list[tuple[str, int]]:
        """Names from ``offset`` on, each with the offset of the next; empty at the end.

        What is already known is returned at once; otherwise one more batch is waited
        for. Offset 0 (``rewinddir``) lists the directory again, as POSIX wants."""
        if offset == 0 and len(self._names) > 2:
            self.close()
            self._start()
        while offset >= len(self._names) and self._batches is not None:
            batch = next(self._batches, None)
            if batch is None:
                self._batches = None
            else:
                self._names.extend(batch)
        names = self._names[offset : offset + PER_CALL]
        return [(name, pos + 1) for pos, name in enumerate(names, offset)]

    def close(self) -> None:
        """Stop the listing where it is (a reader that closes the directory early)."""
        if self._batches is not None:
            close = getattr(self._batches, "close", None)
            self._batches = None
            if close is not None:
                close()


class OpenDirs:
    """Open directory handles, by the number the kernel keeps for each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[int, DirStream] = {}
        self._numbers = itertools.count(1)

    def open(self, produce: Producer) -> int:
        stream = DirStream(produce)
        with self._lock:
            fh = next(self._numbers)
            self._streams[fh] = stream
        return fh

    def get(self, fh: int) -> DirStream | None:
        with self._lock:
            return self._streams.get(fh)

    def release(self, fh: int) -> None:
        with self._lock:
            stream = self._streams.pop(fh, None)
        if stream is not None:
            stream.close()
