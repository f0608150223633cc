"""Directories made in write-back mode whose marker object is not in S3 yet.

``tar x`` makes a directory, fills it, then sets its mode and times: done at once,
that is a marker PUT and then a COPY per directory, each a round trip that tar waits
for. With ``-o writeback``, mkdir returns once a journal record is written; the marker
is uploaded once the directory has been left alone (no attribute change, no new
child) for ``writeback_delay``, with the attributes it has by then: one PUT, off the
caller's path. Until then the directory answers for its path from here.

Operations whose S3 side needs the marker (rmdir, rename) upload it first.
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


class PendingDir:
    """One directory whose marker waits for its upload."""

    def __init__(self, path: str, key: str, entry: Entry) -> None:
        self.path = path
        self.key = key  # the marker's key, "a/b/"
        self.entry = entry
        self.name = RECORD_PREFIX + uuid.uuid4().hex
        self.changes = 0
        self.touched = time.monotonic()  # last change, or last child made in it
        self.failures = 0
        self.done = False
        self.upload_lock = threading.Lock()  # one upload at a time (background or caller)


class PendingDirs:
    """The pending directories of a write-back mount; thread-safe."""

    def __init__(self, files: FileTable) -> None:
        self.backend = files.backend
        self.owner = files.owner
        self.journal: Journal = files.journal
        self.settings = files.settings
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
        self.uploader.schedule(pd, self.settings.writeback_delay)

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
        self._write_record(pd, sync=False)
        return True

    def touch(self, path: str) -> None:
        """A child was made in ``path``: tar sets the directory's attributes after its
        last child, so its upload waits until the directory is left alone."""
        with self._lock:
            pd = self._by_path.get(path)
            if pd is not None:
                pd.touched = time.monotonic()

    def flush_below(self, path: str) -> None:
        """Upload the pending markers at and below ``path`` now (rmdir, rename)."""
        with self._lock:
            todo = [pd for p, pd in self._by_path.items() if p == path or is_below(p, path)]
        for pd in sorted(todo, key=lambda d: d.path):
            self._upload(pd)

    # -- uploads -------------------------------------------------------------------------
    def _upload_pending(self, pd: PendingDir) -> None:
        """One background attempt; a directory still in use waits a little longer."""
        wait = pd.touched + self.settings.writeback_delay - time.monotonic()
        if wait > 0:
            self.uploader.schedule(pd, wait)
            return
        try:
            self._upload(pd)
        except Exception as exc:
            pd.failures += 1
            log.warning("marker of %s failed (%d times); will retry: %s", pd.key, pd.failures, exc)
            self.uploader.schedule(pd, min(60.0, 2.0**pd.failures))

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
                    if self._by_path.get(pd.path) is pd:
                        del self._by_path[pd.path]
                self.journal.remove(pd.name, sync=False)
                self.on_upload(pd.path, entry.copy(marker=True, content_type=DIR_CONTENT_TYPE))

    def _put(self, key: str, entry: Entry) -> None:
        """The marker, created only if absent; a marker that appeared meanwhile (another
        host's mkdir, or our own PUT whose answer was lost) gets these attributes."""
        meta = encode_entry(entry, self.owner.uid, self.owner.gid)
        cond = Precondition(absent=True) if self.settings.conditional_writes else None
        try:
            self.backend.put_stream(key, io.BytesIO(b""), meta, DIR_CONTENT_TYPE, cond)
        except ConflictError:
            self.backend.put_stream(key, io.BytesIO(b""), meta, DIR_CONTENT_TYPE)

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
                self._write_record(pd, sync=True)
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
                    "state": "queued (directory)",
                    "parts_done": 0,
                    "parts_total": 0,
                }
                for pd in self._by_path.values()
            ]


def is_dir_record(record: Record) -> bool:
    return record.name.startswith(RECORD_PREFIX)


def remake_dir(files: FileTable, record: Record) -> None:
    """At mount, after a crash: PUT the marker of a directory made in write-back mode."""
    attrs = dict(record.attrs)
    attrs.setdefault("mode", stat.S_IFDIR | 0o755)
    entry = Entry(**attrs)
    meta = encode_entry(entry, files.owner.uid, files.owner.gid)
    files.backend.put_stream(record.key, io.BytesIO(b""), meta, DIR_CONTENT_TYPE)
    files.journal.remove(record.name)
    log.info("made directory marker %s, left pending by an earlier mount", record.key)
