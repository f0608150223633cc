"""Directories whose marker object is not in S3 yet.

``tar x`` makes a directory, fills it, then sets its mode and times: done at once,
that is a marker PUT and then a COPY per directory, each a round trip that tar waits
for. Instead mkdir returns once a journal record is written (without fsync: POSIX
makes a new directory durable only at fsync of it or its parent); the marker is
uploaded once the directory and everything below it have been left alone (no
attribute change, no child made or closed) for a short delay, with the attributes it
has by then: one PUT, off the caller's path. Until then the directory answers for its
path from here, and a crash leaves its record to the next mount (see recovery).

The delay is ``writeback_delay`` with ``-o writeback``. In the default mode, where
files reach S3 at close, it is DEFAULT_DELAY: long enough for tar's chmod and utime,
which follow the directory's last child within milliseconds, and short enough that
other hosts see the directory about as soon as its files. A directory kept busy
waits at most MAX_WAIT (its later attribute changes are then COPYs, as without the
queue).

fsync of a directory, or of a file below one, uploads the pending markers on its path
at once (EIO if S3 does not take them); rmdir and rename, whose S3 side needs the
markers, upload them first; unmount uploads them all.
"""

from __future__ import annotations

import io
import logging
import stat
import threading
import time
import uuid
from dataclasses import asdict
from typing import TYPE_CHECKING

from .attrs import Entry, encode_entry
from .handles import Uploader
from .journal import Journal, Record
from .paths import is_below, parent
from .s3client import ConflictError, Precondition

if TYPE_CHECKING:
    from .handles import FileTable

log = logging.getLogger("pys3fs.dirqueue")

DIR_CONTENT_TYPE = "application/x-directory"
RECORD_PREFIX = "dir-"  # journal records of directories (files' are cache file names)
DEFAULT_DELAY = 0.1  # seconds a directory is left alone before its marker goes up
MAX_WAIT = 2.0  # a busy directory's marker goes up at the latest this long after mkdir


class PendingDir:
    """One directory whose marker waits for its upload."""

    def __init__(self, path: str, key: str, entry: Entry) -> None:
        self.path = path
        self.key = key  # the marker's key, "a/b/"
        self.entry = entry
        self.name = RECORD_PREFIX + uuid.uuid4().hex
        self.changes = 0
        self.made = self.touched = time.monotonic()  # touched: last change below it
        self.failures = 0
        self.done = False
        self.upload_lock = threading.Lock()  # one upload at a time (background or caller)
        self.record_lock = threading.Lock()  # a record is never rewritten once removed


class PendingDirs:
    """The pending directories of a mount with a journal; thread-safe."""

    def __init__(self, files: FileTable) -> None:
        self.files = files
        self.backend = files.backend
        self.owner = files.owner
        assert files.journal is not None, "a pending directory needs its journal record"
        self.journal: Journal = files.journal
        self.settings = files.settings
        self.writeback = files.writeback
        self.delay = files.settings.writeback_delay if files.writeback else DEFAULT_DELAY
        self.max_wait = max(self.delay, MAX_WAIT)
        self.on_upload = files.on_upload
        self._lock = threading.Lock()
        self._by_path: dict[str, PendingDir] = {}
        self.uploader = Uploader(self._upload_pending, files.settings.threads)

    # -- the namespace's questions -------------------------------------------------------
    def get(self, path: str) -> Entry | None:
        with self._lock:
            pd = self._by_path.get(path)
            return pd.entry.copy() if pd is not None else None

    def names_in(self, dir_path: str) -> dict[str, Entry]:
        """Pending directories directly in ``dir_path`` (S3 may not list them yet)."""
        with self._lock:
            return {
                p.rsplit("/", 1)[1]: pd.entry.copy()
                for p, pd in self._by_path.items()
                if parent(p) == dir_path
            }

    # -- changes -------------------------------------------------------------------------
    def add(self, path: str, key: str, entry: Entry) -> None:
        """mkdir: journal the directory (without fsync, as write-back close) and queue it."""
        pd = PendingDir(path, key, entry)
        self._write_record(pd, sync=False)
        with self._lock:
            self._by_path[path] = pd
        self.uploader.schedule(pd, self.delay)

    def set_attrs(self, path: str, changes: dict) -> bool:
        """chmod/chown/utimens of a pending directory: merged into its upload. False
        when ``path`` is not pending (the caller rewrites the marker on S3)."""
        with self._lock:
            pd = self._by_path.get(path)
            if pd is None:
                return False
            pd.entry = pd.entry.copy(**changes)
            pd.changes += 1
            pd.touched = time.monotonic()
        self._save(pd, sync=False)
        return True

    def touch(self, path: str) -> None:
        """A child was made or a file closed in ``path``. tar sets a directory's
        attributes once everything below it is extracted, so the pending directories
        on the way up all wait until their subtree is left alone."""
        now = time.monotonic()
        with self._lock:
            while self._by_path:
                pd = self._by_path.get(path)
                if pd is not None:
                    pd.touched = now
                if path == "/":
                    return
                path = parent(path)

    def flush_below(self, path: str) -> None:
        """Upload the pending markers at and below ``path`` now (rmdir, rename)."""
        with self._lock:
            todo = [pd for p, pd in self._by_path.items() if p == path or is_below(p, path)]
        self._upload_all(todo)

    def sync(self, path: str, subtree: bool) -> None:
        """fsync: upload now the pending markers of the directories above ``path``, and
        with ``subtree`` (``path`` is a directory) of ``path`` and those below it.
        Raises what the upload raised."""
        with self._lock:
            todo = [
                pd
                for p, pd in self._by_path.items()
                if is_below(path, p) or (subtree and (p == path or is_below(p, path)))
            ]
        self._upload_all(todo)

    def _upload_all(self, todo: list[PendingDir]) -> None:
        for pd in sorted(todo, key=lambda d: d.path):
            self._upload(pd)

    # -- uploads -------------------------------------------------------------------------
    def _upload_pending(self, pd: PendingDir) -> None:
        """One background attempt; a directory still in use waits a little longer."""
        if pd.done:
            return  # uploaded meanwhile (fsync, rmdir, rename)
        wait = self._wait(pd)
        if wait > 0 and not pd.failures:
            self.uploader.schedule(pd, wait)
            return
        try:
            self._upload(pd)
        except Exception as exc:
            pd.failures += 1
            log.warning("marker of %s failed (%d times); will retry: %s", pd.key, pd.failures, exc)
            if pd.failures == 1 and not self.writeback:
                self._save(pd, sync=True)  # as a failed upload of a file in default mode
            self.uploader.schedule(pd, min(60.0, 2.0**pd.failures))

    def _wait(self, pd: PendingDir) -> float:
        """How much longer ``pd`` waits: until it and its subtree have been left alone
        for the delay with no file open below it (a big file's upload at close can take
        longer than the delay), but never past ``max_wait`` after mkdir."""
        now = time.monotonic()
        idle = pd.touched + self.delay - now
        if idle <= 0 and self.files.in_use_below(pd.path):
            idle = self.delay  # its close touches the directory again
        return min(idle, pd.made + self.max_wait - now)

    def _upload(self, pd: PendingDir) -> None:
        """PUT the marker with the directory's current attributes, until no change came
        in during the PUT; then the directory is no longer pending."""
        with pd.upload_lock:
            while not pd.done:
                with self._lock:
                    entry, changes = pd.entry.copy(), pd.changes
                self._put(pd.key, entry)
                with self._lock:
                    if pd.changes != changes:
                        continue
                    pd.done = True
                    # the attribute cache answers for the path before the queue stops:
                    # a lookup in between would find neither (ENOENT)
                    self.on_upload(pd.path, entry.copy(marker=True, content_type=DIR_CONTENT_TYPE))
                    if self._by_path.get(pd.path) is pd:
                        del self._by_path[pd.path]
                with pd.record_lock:
                    self.journal.remove(pd.name, sync=False)

    def _put(self, key: str, entry: Entry) -> None:
        """The marker, created only if absent; a marker that appeared meanwhile (another
        host's mkdir, or our own PUT whose answer was lost) gets these attributes."""
        meta = encode_entry(entry, self.owner.uid, self.owner.gid)
        cond = Precondition(absent=True) if self.settings.conditional_writes else None
        try:
            self.backend.put_stream(key, io.BytesIO(b""), meta, DIR_CONTENT_TYPE, cond)
        except ConflictError:
            self.backend.put_stream(key, io.BytesIO(b""), meta, DIR_CONTENT_TYPE)

    def _save(self, pd: PendingDir, sync: bool) -> None:
        """Rewrite the record of a directory still pending (an attribute change, a
        failed upload): never one whose upload has removed it."""
        with pd.record_lock:
            if not pd.done:
                self._write_record(pd, sync)

    def _write_record(self, pd: PendingDir, sync: bool) -> None:
        attrs = asdict(pd.entry)
        for volatile in ("etag", "size", "marker", "symlink_target"):
            attrs.pop(volatile, None)
        record = Record(name=pd.name, key=pd.key, closed=True, attrs=attrs)
        self.journal.write(record, sync=sync)

    # -- unmount -------------------------------------------------------------------------
    def flush_all(self) -> None:
        """Unmount: upload every pending marker; what fails is left, fsynced, to the
        journal of the next mount."""
        self.uploader.stop()
        with self._lock:
            todo = sorted(self._by_path.values(), key=lambda d: d.path)
        for pd in todo:
            try:
                self._upload(pd)
            except Exception as exc:
                self._save(pd, sync=True)
                log.error(
                    "could not upload marker %s at unmount (%s); the next mount will", pd.key, exc
                )

    def pending(self) -> list[dict]:
        """Directories waiting for their marker (``pys3fs pending``)."""
        with self._lock:
            return [
                {
                    "key": pd.key,
                    "size": 0,
                    "state": f"retrying ({pd.failures} failed attempts, directory)"
                    if pd.failures
                    else "queued (directory)",
                    "parts_done": 0,
                    "parts_total": 0,
                }
                for pd in self._by_path.values()
            ]


def is_dir_record(record: Record) -> bool:
    return record.name.startswith(RECORD_PREFIX)


def remake_dir(files: FileTable, record: Record) -> None:
    """At mount, after a crash: PUT the marker of a directory an earlier mount made."""
    attrs = dict(record.attrs)
    attrs.setdefault("mode", stat.S_IFDIR | 0o755)
    entry = Entry(**attrs)
    meta = encode_entry(entry, files.owner.uid, files.owner.gid)
    files.backend.put_stream(record.key, io.BytesIO(b""), meta, DIR_CONTENT_TYPE)
    files.journal.remove(record.name)
    log.info("made directory marker %s, left pending by an earlier mount", record.key)
