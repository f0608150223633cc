"""Open files: staging in the local cache directory and uploads on flush.

Every open path has one :class:`OpenFile`, shared by all its file handles, so a reader
sees what another handle wrote before it is uploaded. Reads of an unmodified file are
ranged GETs with a growing read-ahead window; the first write stages the whole object
in a local file, and flush/fsync/close upload it. ``close`` returns only once the
object is in S3; if the upload fails the writer gets EIO and the data stays on disk.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import stat
import threading
from dataclasses import dataclass

from fuse import FuseOSError

from . import metadata
from .attrs import Entry, encode_entry, now_ns
from .cache import CacheDir
from .s3client import Backend, errno_for

log = logging.getLogger("pys3fs.handles")

READAHEAD_MIN = 1024 * 1024
READAHEAD_MAX = 16 * 1024 * 1024


@dataclass
class Owner:
    """Who files belong to when their metadata does not say (the mounting user)."""

    uid: int
    gid: int


class OpenFile:
    """One open path: its attributes, its staged data and its read-ahead buffer."""

    def __init__(self, path: str, key: str, entry: Entry, exists_remote: bool) -> None:
        self.path = path
        self.key = key
        self.entry = entry
        self.exists_remote = exists_remote
        self.refs = 0
        self.lock = threading.RLock()
        self.staged: str | None = None
        self.fd: int | None = None
        self.dirty = False
        self.unlinked = False
        self._buf_start = 0
        self._buf = b""
        self._window = READAHEAD_MIN
        self._next = -1
        self.on_upload = lambda path, entry: None

    # -- staging -------------------------------------------------------------------------
    def stage(self, backend: Backend, cache: CacheDir, keep_data: bool = True) -> int:
        """Make a local read-write copy (downloaded unless ``keep_data`` is False)."""
        if self.fd is not None:
            return self.fd
        name = cache.new_file()
        try:
            if keep_data and self.exists_remote and self.entry.size > 0:
                backend.download(self.key, name)
        except Exception as exc:
            cache.remove(name)
            log.error("download of %s failed: %s", self.key, exc)
            raise FuseOSError(errno_for(exc)) from exc
        self.staged = name
        self.fd = os.open(name, os.O_RDWR)
        self._buf = b""
        return self.fd

    def size(self) -> int:
        if self.fd is not None:
            return os.fstat(self.fd).st_size
        return self.entry.size

    # -- data ----------------------------------------------------------------------------
    def read(self, backend: Backend, offset: int, size: int) -> bytes:
        with self.lock:
            if self.fd is not None:
                return os.pread(self.fd, size, offset)
            if offset >= self.entry.size or size <= 0:
                return b""
            return self._read_remote(backend, offset, min(size, self.entry.size - offset))

    def _read_remote(self, backend: Backend, offset: int, size: int) -> bytes:
        """Serve from the read-ahead buffer, refilling it with one ranged GET."""
        end = offset + size
        buf_end = self._buf_start + len(self._buf)
        if not (self._buf_start <= offset and end <= buf_end):
            sequential = offset == self._next
            self._window = min(self._window * 2, READAHEAD_MAX) if sequential else READAHEAD_MIN
            length = max(size, self._window if sequential or offset == 0 else size)
            length = min(length, self.entry.size - offset)
            try:
                self._buf = backend.get_range(self.key, offset, length)
            except Exception as exc:
                log.error("read of %s at %d failed: %s", self.key, offset, exc)
                raise FuseOSError(errno_for(exc)) from exc
            self._buf_start = offset
        self._next = end
        start = offset - self._buf_start
        return self._buf[start : start + size]

    def write(
        self, backend: Backend, cache: CacheDir, data: bytes, offset: int, append: bool
    ) -> int:
        with self.lock:
            fd = self.stage(backend, cache)
            if append:
                offset = os.fstat(fd).st_size
            written = os.pwrite(fd, data, offset)
            self._touch()
            return written

    def truncate(self, backend: Backend, cache: CacheDir, length: int) -> None:
        with self.lock:
            fd = self.stage(backend, cache, keep_data=length > 0)
            os.ftruncate(fd, length)
            self._touch()

    def _touch(self) -> None:
        self.dirty = True
        t = now_ns()
        self.entry = self.entry.copy(mtime_ns=t, ctime_ns=t, size=self.size())

    # -- upload --------------------------------------------------------------------------
    def flush(self, backend: Backend, cache: CacheDir, owner: Owner) -> None:
        """Upload if dirty; EIO (data kept) when S3 does not take it."""
        with self.lock:
            if not self.dirty or self.unlinked:
                return
            if self.fd is None:
                self.stage(backend, cache, keep_data=False)
            os.fsync(self.fd)
            entry = self.entry.copy(size=self.size())
            meta = encode_entry(entry, owner.uid, owner.gid)
            ctype = entry.content_type or metadata.content_type_for(self.path, entry.mode)
            try:
                backend.upload(self.staged, self.key, meta, ctype)
            except Exception as exc:
                log.error("upload of %s failed, data kept in %s: %s", self.key, self.staged, exc)
                raise FuseOSError(errno.EIO) from exc
            self.dirty = False
            self.exists_remote = True
            self.entry = entry.copy(etag=None, content_type=ctype)
            self.on_upload(self.path, self.entry)

    def close_local(self, cache: CacheDir) -> str | None:
        """Drop the staged copy; returns where unsaved data was kept, if any."""
        kept = None
        if self.fd is not None:
            if self.dirty and not self.unlinked and self.staged:
                kept = cache.keep(self.staged, self.key)
            os.close(self.fd)
            self.fd = None
        if self.staged:
            cache.remove(self.staged)
            self.staged = None
        return kept


class FileTable:
    """File handles and the open files behind them."""

    def __init__(self, backend: Backend, cache: CacheDir, owner: Owner, on_upload=None) -> None:
        self.on_upload = on_upload or (lambda path, entry: None)
        self.backend = backend
        self.cache = cache
        self.owner = owner
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
                of = OpenFile(path, key, entry, exists_remote)
                of.on_upload = self.on_upload
                self._by_path[path] = of
            of.refs += 1
            fh = next(self._ids)
            self._handles[fh] = (of, flags)
        try:
            if flags & os.O_TRUNC and flags & (os.O_WRONLY | os.O_RDWR):
                of.truncate(self.backend, self.cache, 0)
            elif not exists_remote:
                with of.lock:
                    of.stage(self.backend, self.cache, keep_data=False)
                    of.dirty = True
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

    def flush(self, fh: int) -> None:
        of, flags = self.get(fh)
        if flags & (os.O_WRONLY | os.O_RDWR) or of.dirty:
            of.flush(self.backend, self.cache, self.owner)

    def release(self, fh: int) -> None:
        with self._lock:
            found = self._handles.pop(fh, None)
            if found is None:
                return
            of = found[0]
            of.refs -= 1
            last = of.refs == 0
            if last and self._by_path.get(of.path) is of:
                del self._by_path[of.path]
        if last:
            with of.lock:
                if of.dirty and not of.unlinked:
                    with contextlib.suppress(FuseOSError):
                        of.flush(self.backend, self.cache, self.owner)
                kept = of.close_local(self.cache)
            if kept:
                log.error("upload of %s never succeeded; its data is kept in %s", of.key, kept)

    def flush_all(self) -> None:
        """Upload every dirty open file (unmount, SIGTERM)."""
        with self._lock:
            files = list(self._by_path.values())
        for of in files:
            try:
                of.flush(self.backend, self.cache, self.owner)
            except FuseOSError:
                log.error("could not upload %s at unmount; data kept in %s", of.key, of.staged)
                if of.staged:
                    self.cache.keep(of.staged, of.key)

    def open_below(self, prefix_path: str) -> list[OpenFile]:
        from .paths import is_below

        with self._lock:
            return [of for p, of in self._by_path.items() if is_below(p, prefix_path)]

    def renamed(self, old: str, new: str, new_key: str) -> None:
        """Follow a rename: open handles keep working under the new name."""
        with self._lock:
            of = self._by_path.pop(old, None)
            if of is not None:
                self._by_path.pop(new, None)
                of.path, of.key = new, new_key
                self._by_path[new] = of

    def unlinked(self, path: str) -> None:
        """An open file was deleted: keep serving its handles, never upload it again."""
        with self._lock:
            of = self._by_path.pop(path, None)
        if of is not None:
            with of.lock:
                of.unlinked = True

    def local_names(self, dir_path: str) -> dict[str, Entry]:
        """Files open in ``dir_path`` that may not be in S3 yet (created, not closed)."""
        from .paths import parent

        with self._lock:
            return {
                p.rsplit("/", 1)[1]: of.entry.copy(size=of.size())
                for p, of in self._by_path.items()
                if parent(p) == dir_path and not of.exists_remote
            }


def is_writable(flags: int) -> bool:
    return bool(flags & (os.O_WRONLY | os.O_RDWR))


def regular(mode: int) -> int:
    return stat.S_IFREG | stat.S_IMODE(mode)
