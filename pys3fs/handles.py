"""Open files: one :class:`OpenFile` per open path, shared by all its file handles.

Reads and writes go through the path's cache file (see datacache), so a reader sees
what another handle wrote before it is uploaded, and cached bytes serve later opens
while the object's ETag is unchanged. Uploads stream while a big file is written;
flush, fsync and close return only once the object is in S3, and an upload failure
reaches the caller as EIO while the data stays in the cache.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fuse import FuseOSError

from . import metadata
from .attrs import Entry, encode_entry, now_ns
from .datacache import CacheFile, DataCache
from .paths import is_below, parent
from .s3client import Backend, ConflictError, Precondition
from .transfers import Reader, Writer

log = logging.getLogger("pys3fs.handles")


@dataclass
class Owner:
    """Who files belong to when their metadata does not say (the mounting user)."""

    uid: int
    gid: int


@dataclass
class TransferSettings:
    part_size: int = 16 * 1024 * 1024
    threads: int = 8
    max_readahead: int = 64 * 1024 * 1024
    conditional_writes: bool = True


class OpenFile:
    """One open path: its attributes, its cache file and its transfers."""

    def __init__(self, table: FileTable, path: str, key: str, entry: Entry, exists: bool):
        self.table = table
        self.path = path
        self.key = key
        self.entry = entry
        self.exists_remote = exists
        self.refs = 0
        self.closed = False
        self.lock = threading.RLock()
        self.dirty = not exists  # metadata or data not yet in S3
        self.unlinked = False
        self.conflict = False
        self.cf: CacheFile = table.data.acquire(key, entry.etag, entry.size, exists)
        settings = table.settings
        self.reader = Reader(table.backend, table.fetch_pool, self.cf, settings.max_readahead)
        self.writer = Writer(
            table.backend,
            table.upload_pool,
            self.cf,
            self.reader,
            settings.part_size,
            settings.threads,
        )

    def size(self) -> int:
        return self.cf.size

    # -- data ----------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        return self.reader.read(offset, size)

    def write(self, data: bytes, offset: int, append: bool) -> int:
        with self.lock:
            with self.cf.lock:
                if append:
                    offset = self.cf.size
                written = self.cf.store(offset, data, dirty=True)
            self._touch()
        self.writer.wrote(offset, offset + written, self._meta)
        return written

    def truncate(self, length: int) -> None:
        with self.lock, self.cf.lock:
            self.cf.truncate(length)
            self._touch()
        self.writer.truncated(length)

    def _touch(self) -> None:
        self.dirty = True
        t = now_ns()
        self.entry = self.entry.copy(mtime_ns=t, ctime_ns=t)

    def _meta(self) -> tuple[dict[str, str], str]:
        owner = self.table.owner
        ctype = self.entry.content_type or metadata.content_type_for(self.path, self.entry.mode)
        return encode_entry(self.entry, owner.uid, owner.gid), ctype

    # -- upload --------------------------------------------------------------------------
    @property
    def needs_upload(self) -> bool:
        return (self.dirty or self.cf.is_dirty) and not self.unlinked

    def flush(self) -> None:
        """Upload if anything changed; EIO (data kept) when S3 does not take it."""
        with self.lock:
            if not self.needs_upload:
                return
            if self.conflict:
                raise FuseOSError(errno.EIO)
            meta, ctype = self._meta()
            try:
                etag = self.writer.flush(meta, ctype, self._precondition())
            except ConflictError:
                self._conflicted()
                raise FuseOSError(errno.EIO) from None
            with self.cf.lock:
                self.cf.mark_clean(etag)
            self.dirty = False
            self.exists_remote = True
            self.entry = self.entry.copy(etag=etag, content_type=ctype, size=self.cf.size)
            self.table.on_upload(self.path, self.entry)
        if self.refs == 0:  # kept after a failed upload (FileTable.settle): done now
            self.table.settle(self)

    def _precondition(self) -> Precondition | None:
        """Never overwrite what another host wrote since this one opened the file."""
        if not self.table.settings.conditional_writes:
            return None
        if not self.exists_remote:
            return Precondition(absent=True)
        return Precondition(etag=self.cf.etag) if self.cf.etag else None

    def _conflicted(self) -> None:
        """Keep this writer's data, stop trying to upload it, and say where it is."""
        self.conflict = True
        try:
            kept = self.table.data.keep_failed(self.cf)
        except OSError as exc:
            kept = f"(not kept: {exc})"
        log.error(
            "conflict: s3://%s/%s changed on S3 since it was opened here; "
            "this writer's data was not uploaded and is kept in %s",
            self.table.backend.bucket,
            self.key,
            kept,
        )

    def close(self) -> str | None:
        """Last handle gone: stop transfers, keep unsaved data where the user finds it."""
        self.reader.close()
        kept = None
        if self.conflict:
            self.writer.abort()
            self.table.data.detach(self.key)
            self.table.data.release(self.cf)
            return None
        with self.lock:
            if self.needs_upload:
                try:
                    kept = self.table.data.keep_failed(self.cf)
                except OSError as exc:
                    log.error("could not keep data of %s: %s", self.key, exc)
            self.writer.abort()
        self.table.data.release(self.cf)
        return kept


class FileTable:
    """File handles and the open files behind them."""

    def __init__(
        self,
        backend: Backend,
        data: DataCache,
        owner: Owner,
        settings: TransferSettings | None = None,
        on_upload=None,
    ) -> None:
        self.backend = backend
        self.data = data
        self.owner = owner
        self.settings = settings or TransferSettings()
        self.on_upload = on_upload or (lambda path, entry: None)
        threads = self.settings.threads
        self.fetch_pool = ThreadPoolExecutor(threads, thread_name_prefix="pys3fs-get")
        self.upload_pool = ThreadPoolExecutor(threads, thread_name_prefix="pys3fs-put")
        self._lock = threading.Lock()
        self._by_path: dict[str, OpenFile] = {}
        self._handles: dict[int, tuple[OpenFile, int]] = {}
        self._ids = itertools.count(1)

    def lookup(self, path: str) -> OpenFile | None:
        with self._lock:
            return self._by_path.get(path)

    def open(self, path: str, key: str, entry: Entry, flags: int, exists_remote: bool) -> int:
        """A new handle on ``path`` (sharing the open file with other handles)."""
        with self._lock:
            of = self._by_path.get(path)
            if of is None:
                of = OpenFile(self, path, key, entry, exists_remote)
                self._by_path[path] = of
            of.refs += 1
            fh = next(self._ids)
            self._handles[fh] = (of, flags)
        try:
            if flags & os.O_TRUNC and flags & (os.O_WRONLY | os.O_RDWR):
                of.truncate(0)
        except BaseException:
            self.release(fh)
            raise
        return fh

    def get(self, fh: int) -> tuple[OpenFile, int]:
        with self._lock:
            found = self._handles.get(fh)
        if found is None:
            raise FuseOSError(errno.EBADF)
        return found

    def flush(self, fh: int, sync: bool = False) -> None:
        """Upload what changed: at fsync, and at close of a handle that may write (a
        reader's close does not fail because another handle's upload failed)."""
        of, flags = self.get(fh)
        if sync or is_writable(flags):
            of.flush()

    def release(self, fh: int) -> None:
        with self._lock:
            found = self._handles.pop(fh, None)
            if found is None:
                return
            of = found[0]
            of.refs -= 1
            if of.refs:
                return
        if of.needs_upload:
            with contextlib.suppress(FuseOSError):
                of.flush()
        self.settle(of)

    def settle(self, of: OpenFile) -> None:
        """No handle left on ``of``: close it, unless its data is not in S3 yet.

        Such a file stays in the table, so the path keeps showing what was written,
        and the next open and fsync/close of the path (or the unmount) uploads it
        again; a copy goes to the cache's failed/ directory meanwhile."""
        with self._lock:
            if of.refs or of.closed:
                return
            registered = self._by_path.get(of.path) is of
            if registered and of.needs_upload and not of.conflict:
                keep = True
            else:
                keep = False
                of.closed = True
                if registered:
                    del self._by_path[of.path]
        if keep:
            try:
                kept = self.data.keep_failed(of.cf)
            except OSError as exc:
                kept = f"(no copy: {exc})"
            log.error(
                "upload of %s failed; its data is kept in %s and uploaded again by the next "
                "fsync or close of %s",
                of.key,
                kept,
                of.path,
            )
            return
        kept = of.close()
        if kept:
            log.error("upload of %s never succeeded; its data is kept in %s", of.key, kept)

    def flush_all(self) -> None:
        """Upload every dirty open file (unmount, SIGTERM)."""
        with self._lock:
            files = list(self._by_path.values())
        for of in files:
            try:
                of.flush()
            except FuseOSError:
                kept = self.data.keep_failed(of.cf)
                log.error("could not upload %s at unmount; data kept in %s", of.key, kept)

    def shutdown(self) -> None:
        self.fetch_pool.shutdown(wait=True, cancel_futures=True)
        self.upload_pool.shutdown(wait=True, cancel_futures=True)

    def open_below(self, directory: str) -> list[OpenFile]:
        with self._lock:
            return [of for p, of in self._by_path.items() if is_below(p, directory)]

    def renamed(self, old: str, new: str, old_key: str, new_key: str) -> None:
        """Follow a rename: open handles and cached bytes move to the new name."""
        with self._lock:
            of = self._by_path.pop(old, None)
            if of is not None:
                self._by_path[new] = of
                of.path, of.key = new, new_key
        self.data.rekey(old_key, new_key)

    def unlinked(self, path: str, key: str | None = None) -> None:
        """A file was deleted: keep serving open handles, never upload it again."""
        with self._lock:
            of = self._by_path.pop(path, None)
        if of is not None:
            with of.lock:
                of.unlinked = True
            self.data.detach(of.key)
            self.settle(of)  # closes it if it was only kept for a failed upload
        elif key is not None:
            self.data.forget(key)

    def local_names(self, dir_path: str) -> dict[str, Entry]:
        """Files open in ``dir_path`` that may not be in S3 yet (created, not closed)."""
        with self._lock:
            return {
                p.rsplit("/", 1)[1]: of.entry.copy(size=of.size())
                for p, of in self._by_path.items()
                if parent(p) == dir_path and not of.exists_remote
            }


def is_writable(flags: int) -> bool:
    return bool(flags & (os.O_WRONLY | os.O_RDWR))
