"""The local data cache: object bytes in sparse files, with a record of what is present.

Each cached object is one sparse file with a small JSON record (key, ETag, size, present
ranges) in an extended attribute of it. Reads fetch only the ranges that are missing; the
record lets a later open, or a later mount, reuse what is there as long as the object's
ETag has not changed. Writes go to the same file and are tracked as dirty ranges until
uploaded.

Limits (``max_cache_size``, ``ensure_diskfree``) are enforced before every write into
the cache: clean files that are not open are evicted least-recently-used first; dirty
data is never evicted; when nothing can give way the write fails with ENOSPC.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

from fuse import FuseOSError

from .ranges import RangeSet

log = logging.getLogger("pys3fs.datacache")

# Bytes per pwrite into a cache file. A big write makes the kernel allocate big page
# cache folios, taken from high-order free memory, which a VM has often handed back to
# its host (free page reporting): every page of it then faults on the host at first
# touch. 64 KiB writes keep folios small (recycled pages): a cold 1 GiB read spent
# 2.6 s of system time in 1 MiB pwrites, 1.1 s in 64 KiB ones.
CACHE_WRITE = 64 * 1024
EVERYTHING = 1 << 63  # an end beyond any file
# The block record lives in the cache file itself: a second file per object costs an
# inode to create (and one to free at every rewrite), which on ext4 is the dearest thing
# a cache directory does when many files come and go (a file system without user
# extended attributes, or a record too big for one, gets NAME.json beside the file).
RECORD_XATTR = "user.pys3fs.blocks"


@dataclass
class CacheLimits:
    """0 means "no limit"."""

    max_cache_size: int = 0
    ensure_diskfree: int = 0


class CacheFile:
    """One object's cached bytes. Callers hold ``lock`` around every use."""

    def __init__(self, cache: DataCache, key: str, name: str) -> None:
        self.cache = cache
        self.key = key
        self.name = name
        self.path = os.path.join(cache.data_dir, name)
        self.etag: str | None = None
        self.remote_size = 0
        self.remote_limit = 0  # leading bytes of the remote version still in the file
        self.size = 0
        self.present = RangeSet()
        self.dirty = RangeSet()
        self.filling = RangeSet()  # claimed by fetches copying into the file unlocked
        self.lock = threading.RLock()
        self.arrived = threading.Condition(self.lock)  # notified when fetched bytes land
        self.refs = 0
        self.detached = False  # unlinked while open: deleted at the last release
        self.last_used = time.monotonic()
        self._saved: dict | None = None  # the record on disk, as this object wrote it
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    # -- state ---------------------------------------------------------------------------
    def reset(self, etag: str | None, size: int) -> None:
        """Forget all cached bytes: the object is ``size`` bytes at version ``etag``."""
        self.wait_fills()
        os.ftruncate(self.fd, 0)
        self.cache.account(self, -self.present.total())
        self.present = RangeSet()
        self.dirty = RangeSet()
        self.etag = etag
        self.remote_size = self.remote_limit = self.size = size
        os.ftruncate(self.fd, size)

    def matches(self, etag: str | None, size: int) -> bool:
        return etag is not None and self.etag == etag and self.remote_size == size

    @property
    def is_dirty(self) -> bool:
        return bool(self.dirty) or not (self.size == self.remote_size == self.remote_limit)

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """Ranges of ``[start, end)`` that must come from S3 (never beyond the object)."""
        end = min(end, self.size, self.remote_limit)
        return self.present.gaps(start, end) if start < end else []

    # -- bytes ---------------------------------------------------------------------------
    def store(self, offset: int, data: bytes | memoryview, dirty: bool) -> int:
        """Write bytes into the cache file (fetched from S3, or written by a user).

        Returns how many were stored: fewer than given when the disk filled up (like a
        short write(2)); ENOSPC only when not one byte fitted."""
        self.wait_fills(offset, offset + len(data))
        new = len(data) - self._covered(offset, offset + len(data))
        self.cache.reserve(new, self)
        written = self._pwrite_all(data, offset)
        self.present.add(offset, offset + written)
        self.cache.account(self, new)
        if dirty:
            self.dirty.add(offset, offset + written)
            self.size = max(self.size, offset + written)
        self.last_used = time.monotonic()
        if written == 0 and len(data):
            raise FuseOSError(errno.ENOSPC)
        return written

    def _pwrite_all(self, data: bytes | memoryview, offset: int) -> int:
        """Write everything the disk takes; when it is full, evict clean files and retry.
        Returns how much was written (less than asked only when the disk stays full)."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                done += os.pwrite(self.fd, view[done : done + CACHE_WRITE], offset + done)
            except OSError as exc:
                if exc.errno != errno.ENOSPC or not self.cache.evict_one(self):
                    if done == 0 and exc.errno != errno.ENOSPC:
                        raise
                    return done
        return done

    def _covered(self, start: int, end: int) -> int:
        return (end - start) - sum(e - s for s, e in self.present.gaps(start, end))

    def fill(self, offset: int, data: bytes | memoryview) -> None:
        """Store bytes fetched from S3, only where nothing newer is present.

        Called *without* ``lock``: the copy into the file runs unlocked, because it can
        take milliseconds when the kernel must find fresh pages, and readers and the other
        fetches must not queue behind it. The gaps are claimed first (``filling``): a
        user write or truncate of them waits, and another fetch leaves them alone."""
        view = memoryview(data)
        claims = self._claim(offset, offset + len(view))
        done: list[tuple[int, int]] = []
        try:
            for start, end in claims:
                written = self._pwrite_all(view[start - offset : end - offset], start)
                done.append((start, start + written))
                if written < end - start:
                    raise FuseOSError(errno.ENOSPC)
        finally:
            self._settle(claims, done)

    def _claim(self, start: int, end: int) -> list[tuple[int, int]]:
        """Reserve room for the gaps of ``[start, end)`` nobody fills yet, and claim them.
        Past ``remote_limit`` a truncate came first: those bytes are not wanted."""
        with self.lock:
            end = min(end, self.remote_limit)
            if self.fd < 0 or start >= end:
                return []
            claims = [
                piece for gap in self.present.gaps(start, end) for piece in self.filling.gaps(*gap)
            ]
            self.cache.reserve(sum(e - s for s, e in claims), self)
            for s, e in claims:
                self.filling.add(s, e)
            return claims

    def _settle(self, claims: list[tuple[int, int]], done: list[tuple[int, int]]) -> None:
        """Release claims; what was written is present from now on."""
        with self.lock:
            for s, e in claims:
                self.filling.remove(s, e)
            for s, e in done:
                self.present.add(s, e)
                self.cache.account(self, e - s)
            if done:
                self.last_used = time.monotonic()
            self.arrived.notify_all()

    def wait_fills(self, start: int = 0, end: int = EVERYTHING) -> None:
        """Wait (holding ``lock``) until no fetch copies into ``[start, end)``: the
        fetched bytes must not land over newer ones, nor in a file being closed."""
        while self.filling.overlaps(start, end):
            self.arrived.wait()

    def truncate(self, length: int) -> None:
        self.wait_fills(min(length, self.size))
        if length < self.size:
            before = self.present.total()
            self.present.clip(length)
            self.dirty.clip(length)
            self.cache.account(self, self.present.total() - before)
            self.remote_limit = min(self.remote_limit, length)
            os.ftruncate(self.fd, length)
        elif length > self.size:
            self.cache.reserve(length - self.size, self)
            os.ftruncate(self.fd, length)
            self.present.add(self.size, length)
            self.dirty.add(self.size, length)
            self.cache.account(self, length - self.size)
        self.size = length

    def mark_clean(self, etag: str | None) -> None:
        """After an upload: the cache file is exactly the object at ``etag``."""
        self.dirty = RangeSet()
        self.etag = etag
        self.remote_size = self.remote_limit = self.size
        self.save()

    # -- persistence ---------------------------------------------------------------------
    def save(self) -> None:
        """Record what is present, so a later open or mount can reuse it."""
        if self.is_dirty or self.etag is None:
            return
        record = {
            "key": self.key,
            "etag": self.etag,
            "size": self.size,
            "present": self.present.to_list(),
        }
        if record == self._saved:  # a small file's upload, then its release: once
            return
        try:
            write_record(self.path, self.fd, json.dumps(record).encode())
            self._saved = record
        except OSError as exc:  # only an optimisation: a full disk must not fail a close
            log.warning("cannot record cache state of %s: %s", self.key, exc)

    def drop_record(self) -> None:
        self._saved = None
        drop_record(self.path, self.fd)

    def close(self) -> None:
        self.wait_fills()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _suppress_missing:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, FileNotFoundError)


class DataCache:
    """All cached objects of one mount, with size accounting and eviction."""

    def __init__(self, root: str, bucket: str, limits: CacheLimits, reuse: bool = True) -> None:
        self.limits = limits
        # del_cache clears it: cached data is dropped at mount and unmount (never data
        # the journal still needs), rather than kept for the next mount
        self.reuse = reuse
        self.bucket_dir = os.path.join(root, bucket)
        self.failed_dir = os.path.join(self.bucket_dir, "failed")
        self._lock = threading.RLock()
        self._files: dict[str, CacheFile] = {}
        self._used = 0
        self._lockfile: int | None = None
        self.persistent = False
        self.data_dir = ""

    # -- setup ---------------------------------------------------------------------------
    def prepare(self, keep: frozenset[str] = frozenset()) -> None:
        """Create the directories; reuse the shared data dir unless another mount has it.
        ``keep``: cache files the journal still needs (not yet uploaded)."""
        os.makedirs(self.bucket_dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.bucket_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self.data_dir = tempfile.mkdtemp(dir=self.bucket_dir, prefix="private-")
            log.info("cache %s is used by another mount: not persisting", self.bucket_dir)
            return
        self._lockfile = fd
        self.persistent = True
        self.data_dir = os.path.join(self.bucket_dir, "data")
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        self._load(keep)

    def _load(self, keep: frozenset[str]) -> None:
        """Pick up what earlier mounts left: clean files with a record are reusable."""
        for name in os.listdir(self.data_dir):
            path = os.path.join(self.data_dir, name)
            if name.endswith((".json", ".tmp")) or name in keep:
                continue
            if not self.reuse:
                _remove_cache_file(path)
                continue
            try:
                record = json.loads(read_record(path))
                cf = CacheFile(self, record["key"], name)
                cf.etag = record["etag"]
                cf.size = cf.remote_size = cf.remote_limit = record["size"]
                cf.present = RangeSet(tuple(r) for r in record["present"])
            except (OSError, ValueError, KeyError, TypeError):
                _remove_cache_file(path)
                continue
            self._files[cf.key] = cf
            self._used += cf.present.total()
            cf.close()
            cf.fd = -1

    def close(self) -> None:
        with self._lock:
            for cf in self._files.values():
                with cf.lock:
                    if not cf.is_dirty and not self.reuse:
                        self._delete(cf)  # (closes it)
                        continue
                    if not cf.is_dirty:
                        cf.save()
                    cf.close()
            self._files.clear()
        if not self.persistent and self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self._lockfile is not None:
            os.close(self._lockfile)
            self._lockfile = None

    def lock_is_free(self) -> bool:
        """Whether no other mount uses this cache directory (checked before starting)."""
        os.makedirs(self.bucket_dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.bucket_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    # -- files ---------------------------------------------------------------------------
    def adopt(self, name: str, key: str, size: int, etag: str | None) -> CacheFile | None:
        """Take back a cache file an earlier mount left with data not yet in S3 (the
        journal knows it): all of it is present, and all of it must be uploaded."""
        path = os.path.join(self.data_dir, name)
        try:
            if os.path.getsize(path) < size:
                log.error("cache file %s of %s is shorter than journaled", path, key)
                return None
        except OSError:
            return None
        cf = CacheFile(self, key, name)
        cf.etag = etag
        cf.size = cf.remote_size = size
        cf.remote_limit = 0  # nothing can come from the old object any more
        if size:
            cf.present = RangeSet([(0, size)])
            cf.dirty = RangeSet([(0, size)])
        cf.close()
        cf.fd = -1
        with self._lock:
            self.detach(key)
            self._files[key] = cf
            self._used += size
        return cf

    def set_aside(self, name: str, key: str) -> str | None:
        """Move a cache file that can never be uploaded (written, never closed, when the
        daemon died) to failed/, where the user may still find it."""
        path = os.path.join(self.data_dir, name)
        if not os.path.exists(path):
            return None
        os.makedirs(self.failed_dir, mode=0o700, exist_ok=True)
        safe = key.replace("/", "%2F")[:200]
        target = os.path.join(self.failed_dir, f"{safe}.{int(time.time())}.partial")
        os.replace(path, target)
        return target

    def acquire(self, key: str, etag: str | None, size: int, exists: bool) -> CacheFile:
        """The cache file of ``key``, valid for version ``etag`` (reset if it is not)."""
        with self._lock:
            cf = self._files.get(key)
            if cf is None:
                cf = CacheFile(self, key, uuid.uuid4().hex)
                self._files[key] = cf
            elif cf.fd < 0:
                cf.fd = os.open(cf.path, os.O_RDWR | os.O_CREAT, 0o600)
            cf.refs += 1
        with cf.lock:
            if cf.refs == 1 and not cf.is_dirty and not (exists and cf.matches(etag, size)):
                cf.drop_record()
                cf.reset(etag if exists else None, size if exists else 0)
            cf.last_used = time.monotonic()
        return cf

    def release(self, cf: CacheFile) -> None:
        with self._lock:
            cf.refs -= 1
            if cf.refs > 0:
                return
        if cf.detached:
            self._delete(cf)
            return
        with cf.lock:
            if cf.is_dirty:
                return
            cf.save()

    def forget(self, key: str) -> None:
        """The object is gone or replaced: drop its cached bytes (unless open)."""
        with self._lock:
            cf = self._files.get(key)
            if cf is None or cf.refs > 0:
                return
            del self._files[key]
            self._used -= cf.present.total()
        self._delete(cf)

    def forget_prefix(self, prefix: str) -> None:
        """Drop the cached bytes of every closed, clean object below ``prefix``."""
        with self._lock:
            keys = [k for k, cf in self._files.items() if k.startswith(prefix) and cf.refs == 0]
        for key in keys:
            with self._lock:
                cf = self._files.get(key)
                if cf is None or cf.refs or cf.is_dirty:
                    continue
            self.forget(key)

    def retag(self, key: str, old_etag: str | None, new_etag: str | None) -> None:
        """A server-side copy gave the same bytes a new ETag: keep the cached bytes."""
        with self._lock:
            cf = self._files.get(key)
        if cf is None:
            return
        with cf.lock:
            if new_etag and old_etag and cf.etag == old_etag:
                cf.etag = new_etag
                cf.save()
            elif cf.refs == 0 and cf.etag != new_etag:
                cf.etag = None  # unknown version: the next open starts afresh

    def detach(self, key: str) -> None:
        """The path of an open file was deleted or replaced: a new file with the same key
        must not share these bytes; they go away at the last release."""
        with self._lock:
            cf = self._files.pop(key, None)
            if cf is None:
                return
            self._used -= cf.present.total()
            cf.detached = True
            if cf.refs > 0:
                return
        self._delete(cf)

    def rekey(self, old: str, new: str) -> None:
        """Follow a rename of an open or cached object."""
        if old == new:
            return
        self.detach(new)
        with self._lock:
            cf = self._files.pop(old, None)
            if cf is not None:
                cf.key = new
                self._files[new] = cf
        if cf is not None:
            with cf.lock:
                cf.drop_record()
                cf.save()

    def _delete(self, cf: CacheFile) -> None:
        with cf.lock:
            cf.close()
            _remove_cache_file(cf.path)

    def keep_failed(self, cf: CacheFile) -> str:
        """Copy data whose upload never succeeded where the user can find it."""
        os.makedirs(self.failed_dir, mode=0o700, exist_ok=True)
        safe = cf.key.replace("/", "%2F")[:200]
        target = os.path.join(self.failed_dir, f"{safe}.{int(time.time())}")
        shutil.copyfile(cf.path, target)
        with open(target + ".json", "w") as f:
            json.dump({"key": cf.key, "size": cf.size, "dirty": cf.dirty.to_list()}, f)
        return target

    # -- accounting and limits -----------------------------------------------------------
    def account(self, cf: CacheFile, delta: int) -> None:
        if cf.detached:
            return
        with self._lock:
            self._used += delta

    @property
    def used(self) -> int:
        return self._used

    def reserve(self, nbytes: int, asking: CacheFile) -> None:
        """Make room for ``nbytes`` more, evicting clean closed files; else ENOSPC."""
        if nbytes <= 0 or not (self.limits.max_cache_size or self.limits.ensure_diskfree):
            return
        while self._over(nbytes):
            if not self.evict_one(asking):
                raise FuseOSError(errno.ENOSPC)

    def _over(self, nbytes: int) -> bool:
        limits = self.limits
        if limits.max_cache_size and self._used + nbytes > limits.max_cache_size:
            return True
        if limits.ensure_diskfree:
            st = os.statvfs(self.data_dir)
            if st.f_bavail * st.f_frsize - nbytes < limits.ensure_diskfree:
                return True
        return False

    def evict_one(self, asking: CacheFile) -> bool:
        with self._lock:
            candidates = [
                cf
                for cf in self._files.values()
                if cf is not asking and cf.refs == 0 and not cf.is_dirty and cf.present
            ]
            if not candidates:
                return False
            victim = min(candidates, key=lambda cf: cf.last_used)
            del self._files[victim.key]
            self._used -= victim.present.total()
        log.debug("evicting %s from the cache", victim.key)
        self._delete(victim)
        return True


def write_record(path: str, fd: int, data: bytes) -> None:
    """Store a cache file's block record (see RECORD_XATTR); ``fd`` is -1 when closed."""
    try:
        os.setxattr(fd if fd >= 0 else path, RECORD_XATTR, data)
        return
    except OSError as exc:
        if exc.errno not in _NO_ROOM:
            raise
    with contextlib.suppress(OSError):  # an older, smaller one
        os.removexattr(fd if fd >= 0 else path, RECORD_XATTR)
    tmp = path + ".json.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path + ".json")
    except OSError:
        _remove_quietly(tmp)
        raise


def read_record(path: str) -> bytes:
    """A cache file's block record; OSError if it has none."""
    try:
        return os.getxattr(path, RECORD_XATTR)
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, *_NO_ROOM):
            raise
    with open(path + ".json", "rb") as f:
        return f.read()


def drop_record(path: str, fd: int) -> None:
    with contextlib.suppress(OSError):  # none there, or none possible
        os.removexattr(fd if fd >= 0 else path, RECORD_XATTR)
    _remove_quietly(path + ".json")


# setxattr's answers for "no extended attributes here" and "no room for this one"
_NO_ROOM = (errno.ENOTSUP, errno.E2BIG, errno.ENOSPC, errno.ERANGE)


def _remove_cache_file(path: str) -> None:
    """A cache file and the ``.json`` record a file system without xattrs gave it."""
    _remove_quietly(path)
    _remove_quietly(path + ".json")


def _remove_quietly(path: str) -> None:
    with _suppress_missing():
        os.unlink(path)
