"""Open files: one :class:`OpenFile` per open path, shared by all its file handles.

Reads and writes go through the path's cache file (see datacache), so a reader sees
what another handle wrote before it is uploaded, and cached bytes serve later opens
while the object's ETag is unchanged. Uploads stream while a big file is written.

By default flush, fsync and close return only once the object is in S3, and an upload
failure reaches the caller as EIO. With ``writeback``, close returns once the bytes and
a journal record are written locally (to the page cache: a killed daemon loses neither,
a power cut may; fsync makes them durable by uploading), and the upload runs in the
background. Either way a file whose upload has not succeeded stays "pending":
it keeps answering for its path from the cache, its journal record survives a crash,
and it is uploaded again (with backoff) until S3 takes it or the next mount does.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import heapq
import itertools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import asdict, dataclass

from fuse import FuseOSError

from . import metadata
from .attrs import Entry, encode_entry, now_ns
from .datacache import CacheFile, DataCache
from .journal import Journal, Record
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
    writeback: bool = False  # close returns once the data and its journal record are local
    writeback_delay: float = 0.2  # lets tar's utime after close join the upload
    copy_parts: bool = True  # nomixupload clears it: unchanged parts are uploaded too


class OpenFile:
    """One open path: its attributes, its cache file and its transfers."""

    def __init__(self, table: FileTable, path: str | None, key: str, entry: Entry, exists: bool):
        self.table = table
        self.path = path  # None: a recovered upload whose key is outside this mount
        self.key = key
        self.entry = entry.copy()  # owned: writes update its times in place
        self.exists_remote = exists
        self.refs = 0
        self.lock = threading.RLock()
        self.dirty = not exists  # metadata or data not yet in S3
        self.unlinked = False
        self.conflict = False
        self.journaled = False  # a journal record exists for this file
        self.recovered = False  # left pending by an earlier mount
        self.failures = 0  # background upload attempts that failed in a row
        self.changes = 0  # bumped by every write, truncate and attribute change
        self.parked_at = -1  # ``changes`` when the journal record was last written
        self.synced_at = -1  # ``changes`` when the bytes and the record were last fsynced
        self.cf: CacheFile = table.data.acquire(key, entry.etag, entry.size, exists)
        settings = table.settings
        self.reader = Reader(
            table.backend,
            table.fetch_pool,
            self.cf,
            settings.max_readahead,
            background=table.whole_pool,
        )
        self.writer = Writer(
            table.backend,
            table.upload_pool,
            self.cf,
            self.reader,
            settings.part_size,
            settings.threads,
            copy_parts=settings.copy_parts,
        )
        self.writer.on_start = self._upload_started

    def size(self) -> int:
        return self.cf.size

    # -- data ----------------------------------------------------------------------------
    def locate(self, offset: int, size: int) -> tuple[int, int]:
        return self.reader.locate(offset, size)

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
        """Every write: in place, as a copy per 128 KiB write costs more than the write."""
        self.dirty = True
        self.changes += 1
        self.entry.mtime_ns = self.entry.ctime_ns = now_ns()

    def _meta(self) -> tuple[dict[str, str], str]:
        owner = self.table.owner
        ctype = self.entry.content_type or metadata.content_type_for(
            self.path or self.key, self.entry.mode
        )
        return encode_entry(self.entry, owner.uid, owner.gid, new_data=True), ctype

    # -- journal -------------------------------------------------------------------------
    def record(self, closed: bool) -> Record:
        attrs = asdict(self.entry)
        for volatile in ("etag", "size", "marker", "symlink_target"):
            attrs.pop(volatile, None)
        return Record(
            name=self.cf.name,
            key=self.key,
            closed=closed,
            size=self.cf.size,
            attrs=attrs,
            exists_remote=self.exists_remote,
            base_etag=self.cf.etag,
            upload_id=self.writer.upload_id,
            part_size=self.writer.part_size,
        )

    def park(self, durable: bool = True) -> None:
        """Leave unsaved data to the next mount: its journal record says to upload it.

        ``durable``: fsync the cache file, then the record, so that even a power cut
        cannot lose it. Without, both are in the page cache, which a killed daemon does
        not lose: enough for write-back ``close``, which POSIX does not make durable."""
        journal = self.table.journal
        with self.lock:
            if journal is None or not self.needs_upload or self.conflict:
                return
            parked = self.journaled and self.parked_at == self.changes
            if parked and (not durable or self.synced_at == self.changes):
                return  # close(2) parked it already; release has nothing to add
            if durable:
                os.fsync(self.cf.fd)
            journal.write(self.record(closed=True), sync=durable)
            self.journaled = True
            self.parked_at = self.changes
            if durable:
                self.synced_at = self.changes

    def _upload_started(self, upload_id: str) -> None:
        """A multipart upload began: record its id, so that a crash leaves no orphan.
        Called with the writer's lock held: reads fields without taking ``self.lock``."""
        journal = self.table.journal
        if journal is None:
            return
        try:
            journal.write(self.record(closed=self.journaled))
        except OSError as exc:
            log.warning("cannot record upload %s of %s: %s", upload_id, self.key, exc)

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
                etag = self._already_uploaded()
                if etag is None:
                    self._conflicted()
                    raise FuseOSError(errno.EIO) from None
            with self.cf.lock:
                self.cf.mark_clean(etag)
            self.dirty = False
            self.exists_remote = True
            self.failures = 0
            self.entry = self.entry.copy(
                etag=etag,
                content_type=ctype,
                size=self.cf.size,
                extra=metadata.without_headers(self.entry.extra),  # a PUT sends none
            )
            if self.table.journal is not None:
                self._forget_record()
            if self.path is not None:
                self.table.on_upload(self.path, self.entry.copy())

    def _forget_record(self) -> None:
        """Unsynced: a record that a power cut brings back makes the next mount find
        the same bytes on S3 (see _already_uploaded), which counts as uploaded."""
        try:
            self.table.journal.remove(self.cf.name, sync=False)
        except OSError as exc:
            log.warning("cannot remove the journal record of %s: %s", self.key, exc)
        self.journaled = False

    def _precondition(self) -> Precondition | None:
        """Never overwrite what another host wrote since this one opened the file."""
        if not self.table.settings.conditional_writes:
            return None
        if not self.exists_remote:
            return Precondition(absent=True)
        return Precondition(etag=self.cf.etag) if self.cf.etag else None

    def _already_uploaded(self) -> str | None:
        """A refused conditional write may be our own: an upload that completed while
        its answer was lost (a reset, a timeout: botocore's retry then meets the new
        version), or one that completed just before a crash left its journal record
        behind. When S3 holds exactly these bytes, that is success, not a conflict."""
        info = self.table.backend.head(self.key)
        if info is None or info.size != self.cf.size or info.etag is None:
            return None
        with self.cf.lock:
            local = s3_etags(self.cf.fd, self.cf.size, self.writer.part_size)
        return info.etag if info.etag in local else None

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
        """Last handle gone and nothing left to upload (or nothing that can be): stop
        transfers, keep unsaved data where the user finds it."""
        self.reader.close()
        kept = None
        if self.table.journal is not None and (self.journaled or self.conflict or self.unlinked):
            self._forget_record()
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

    def report(self) -> dict:
        """What ``pys3fs pending`` shows for this file."""
        done, total = self.writer.progress()
        if self.refs:
            state = "open"
        elif self.failures:
            state = f"retrying ({self.failures} failed attempts)"
        else:
            state = "queued (left by an earlier mount)" if self.recovered else "queued"
        return {
            "key": self.key,
            "size": self.cf.size,
            "state": state,
            "parts_done": done,
            "parts_total": total,
        }


def md5_range(fd: int, start: int, end: int, also=None):
    """MD5 of bytes ``[start, end)`` of ``fd``, read a megabyte at a time; ``also`` (a
    hash) is fed the same bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(1 << 20, end - pos), pos)
        if not chunk:
            break
        digest.update(chunk)
        if also is not None:
            also.update(chunk)
        pos += len(chunk)
    return digest


def s3_etags(fd: int, size: int, part_size: int) -> set[str]:
    """The ETags S3 gives these bytes: one PUT (MD5), or a multipart upload of
    ``part_size`` parts (MD5 of the parts' MD5s, dash, count)."""
    whole = hashlib.md5(usedforsecurity=False)
    parts = [
        md5_range(fd, start, min(size, start + part_size), whole).digest()
        for start in range(0, max(size, 1), part_size)
    ]
    combined = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()
    return {f'"{whole.hexdigest()}"', f'"{combined}-{len(parts)}"'}


class Uploader:
    """Background uploads of pending files, each when its time comes.

    One dispatcher thread waits for the earliest due file and hands it to a pool; a
    file is queued at most once. A failed upload comes back later with backoff."""

    def __init__(self, run, threads: int) -> None:
        self._run = run
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="pys3fs-wb")
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, OpenFile]] = []
        self._queued: set[int] = set()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._dispatch, name="pys3fs-wb", daemon=True)
        self._thread.start()

    def schedule(self, of: OpenFile, delay: float) -> None:
        with self._cond:
            if self._stopped or id(of) in self._queued:
                return
            self._queued.add(id(of))
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), of))
            self._cond.notify()

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, of = heapq.heappop(self._heap)
                self._queued.discard(id(of))
            self._pool.submit(self._run, of)

    def stop(self) -> None:
        """No more dispatching; wait for the uploads that are running."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._queued.clear()
            self._cond.notify()
        self._thread.join()
        self._pool.shutdown(wait=True)


class FileTable:
    """File handles, the open files behind them, and files still waiting for S3."""

    def __init__(
        self,
        backend: Backend,
        data: DataCache,
        owner: Owner,
        settings: TransferSettings | None = None,
        on_upload=None,
        journal: Journal | None = None,
    ) -> None:
        self.backend = backend
        self.data = data
        self.owner = owner
        self.settings = settings or TransferSettings()
        self.on_upload = on_upload or (lambda path, entry: None)
        self.journal = journal
        self.writeback = self.settings.writeback and journal is not None
        threads = self.settings.threads
        self.fetch_pool = ThreadPoolExecutor(threads, thread_name_prefix="pys3fs-get")
        # whole-object fetches of randomly read files get their own threads: reads never
        # queue behind them
        self.whole_pool = ThreadPoolExecutor(threads, thread_name_prefix="pys3fs-whole")
        self.upload_pool = ThreadPoolExecutor(threads, thread_name_prefix="pys3fs-put")
        self.uploader = Uploader(self._upload_pending, threads)
        self._lock = threading.Lock()
        self._by_path: dict[str, OpenFile] = {}
        self._elsewhere: list[OpenFile] = []  # recovered uploads outside this mount
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

    def flush(self, fh: int) -> None:
        """close(2): upload now, or in writeback mode leave the data and its journal
        record on the local disk (not fsynced: POSIX close promises no durability).
        Closing a read-only handle never uploads (nor fails) for another writer."""
        of, flags = self.get(fh)
        if not is_writable(flags):
            return
        if self.writeback:
            of.park(durable=False)
        else:
            of.flush()

    def adopt(self, of: OpenFile) -> None:
        """A pending file recovered from the journal: it answers for its path at once."""
        with self._lock:
            if of.path is None:
                self._elsewhere.append(of)
            else:
                self._by_path[of.path] = of
        self.uploader.schedule(of, 0)

    def fsync(self, fh: int) -> None:
        """fsync(2) waits for S3 in every mode."""
        of, _ = self.get(fh)
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
        if of.needs_upload and not of.conflict and not self.writeback:
            with contextlib.suppress(FuseOSError):
                of.flush()  # the writer already saw any EIO at close; retried below
        if of.needs_upload and not of.conflict and self.journal is not None:
            of.park(durable=not self.writeback)
            if not self.writeback:
                log.error(
                    "upload of %s failed; its data is kept in %s and uploaded again in the "
                    "background, by the next fsync or close of %s, or by the next mount",
                    of.key,
                    of.cf.path,
                    of.path,
                )
            self.uploader.schedule(of, self.settings.writeback_delay if self.writeback else 1.0)
            return
        self._retire(of)

    def changed(self, of: OpenFile) -> None:
        """Attributes of a file that waits for its upload changed (chmod, utime)."""
        of.changes += 1
        if of.refs == 0 and self.journal is not None:
            of.park(durable=not self.writeback)
            self.uploader.schedule(of, self.settings.writeback_delay)

    def _upload_pending(self, of: OpenFile) -> None:
        """One background attempt; on failure the file comes back later (backoff)."""
        try:
            of.flush()
        except FuseOSError:
            if not of.conflict:
                of.failures += 1
                log.warning("upload of %s failed (%d times); will retry", of.key, of.failures)
                self.uploader.schedule(of, min(60.0, 2.0**of.failures))
                return
        except Exception:
            log.exception("upload of %s failed", of.key)
            of.failures += 1
            self.uploader.schedule(of, min(60.0, 2.0**of.failures))
            return
        self._retire(of)

    def _retire(self, of: OpenFile) -> None:
        """Close a file nobody has open any more, unless it still waits for S3."""
        with self._lock:
            if of.refs or (of.needs_upload and not of.conflict and self.journal is not None):
                return
            if of.path is not None and self._by_path.get(of.path) is of:
                del self._by_path[of.path]
            if of in self._elsewhere:
                self._elsewhere.remove(of)
        kept = of.close()
        if kept:
            log.error("upload of %s never succeeded; its data is kept in %s", of.key, kept)

    def flush_all(self) -> None:
        """Unmount, SIGTERM: upload everything that waits, in parallel. What S3 does not
        take stays journaled for the next mount (or, without a journal, in failed/)."""
        self.uploader.stop()
        with self._lock:
            files = [*self._by_path.values(), *self._elsewhere]
        files = [of for of in files if of.needs_upload and not of.conflict]
        with ThreadPoolExecutor(self.settings.threads, thread_name_prefix="pys3fs-end") as pool:
            futures = {pool.submit(of.flush): of for of in files}
            wait_all(futures)
        for future, of in futures.items():
            if future.exception() is None:
                continue
            if self.journal is not None:
                of.park()
                log.error("could not upload %s at unmount; the next mount will", of.key)
            else:
                kept = self.data.keep_failed(of.cf)
                log.error("could not upload %s at unmount; data kept in %s", of.key, kept)

    def shutdown(self) -> None:
        self.uploader.stop()
        self.fetch_pool.shutdown(wait=True, cancel_futures=True)
        self.whole_pool.shutdown(wait=True, cancel_futures=True)
        self.upload_pool.shutdown(wait=True, cancel_futures=True)

    def pending(self) -> list[dict]:
        """Files whose bytes S3 does not have yet (``pys3fs pending``)."""
        with self._lock:
            files = [*self._by_path.values(), *self._elsewhere]
        return [of.report() for of in files if of.needs_upload]

    def in_use_below(self, directory: str) -> bool:
        """Whether a file below ``directory`` is open: its close is still to come."""
        with self._lock:
            return any(of.refs and is_below(p, directory) for p, of in self._by_path.items())

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
            if of.refs == 0:
                self._retire(of)
        elif key is not None:
            self.data.forget(key)

    def local_names(self, dir_path: str) -> dict[str, Entry]:
        """Files in ``dir_path`` that S3 may not show yet: created and still open, or
        closed with an upload still pending (write-back, or a failed upload)."""
        with self._lock:
            return {
                p.rsplit("/", 1)[1]: of.entry.copy(size=of.size())
                for p, of in self._by_path.items()
                if parent(p) == dir_path and (not of.exists_remote or of.needs_upload)
            }


def is_writable(flags: int) -> bool:
    return bool(flags & (os.O_WRONLY | os.O_RDWR))
