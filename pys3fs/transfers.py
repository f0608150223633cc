"""Moving bytes between S3 and the data cache: parallel ranged reads, streamed uploads.

Reads: a sequential reader gets a read-ahead window that doubles up to ``max_window``,
fetched as parallel ranged GETs of ``chunk`` bytes straight into the cache file; a
random reader fetches the small aligned blocks it touches at once, and once random reads
go on, the whole object (when the cache limits allow) is fetched in the background with
parallel ranged GETs, so later reads are served locally.

Writes: every complete part of new data is uploaded (UploadPart) in the background as
soon as it is written, so closing a big file waits only for the last parts. At flush,
parts that hold no changes are copied server-side from the old object (UploadPartCopy)
instead of being downloaded and uploaded again.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from fuse import FuseOSError

from .datacache import CacheFile
from .s3client import Backend, ConflictError, Precondition, errno_for, error_code, read_into

log = logging.getLogger("pys3fs.transfers")

BLOCK = 64 * 1024
CHUNK = 8 * 1024 * 1024
NEAR = 2 * 1024 * 1024  # the kernel's read-ahead may hand in reads a little out of order
STREAM_READ = 1024 * 1024
PIECE_DIV = 4  # read-ahead GETs in flight once the window is full
PIECE_MAX = 32 * 1024 * 1024
RANDOM_TRIGGER = 4  # random reads of one open file before all of it is fetched: the
# three seeks that pull one member out of a zip archive (its end, its directory, the
# member) do not download the whole object; each random read before costs a GET wait
WHOLE_MAX = 1024 * 1024 * 1024  # ... if it is no bigger than this (and the cache allows)


_local = threading.local()


def _stream_buffer() -> memoryview:
    """This thread's buffer for fetched bytes: one per fetch thread, reused by every
    GET, so streaming a big object allocates no fresh memory for every megabyte."""
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(STREAM_READ))
    return buf


class FileSlice(io.RawIOBase):
    """A read-only, seekable view of ``[start, start+length)`` of a file descriptor.

    botocore streams request bodies from it, so uploading a part never holds the
    part in memory.
    """

    def __init__(self, fd: int, start: int, length: int) -> None:
        super().__init__()
        self.fd, self.start, self.length, self.pos = fd, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self.length

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, min(self.length, base + offset))
        return self.pos

    def read(self, size: int = -1) -> bytes:
        left = self.length - self.pos
        size = left if size is None or size < 0 else min(size, left)
        data = os.pread(self.fd, size, self.start + self.pos) if size > 0 else b""
        if len(data) < size:
            # The file shrank under an upload already under way (a truncate): the request
            # announced ``length`` bytes and must send them all, or the server waits
            # forever. Such a part is stale and uploaded again before completion.
            data += b"\0" * (size - len(data))
        self.pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class Reader:
    """Fills one cache file from S3 on demand, with read-ahead for sequential access."""

    def __init__(
        self,
        backend: Backend,
        pool: ThreadPoolExecutor,
        cf: CacheFile,
        max_window: int,
        background: ThreadPoolExecutor | None = None,
    ) -> None:
        self.backend, self.pool, self.cf = backend, pool, cf
        self.background = background  # whole-object fetches: never queued before reads
        self.max_window = max(max_window, CHUNK)
        self.window = 0
        self.next_offset = 0
        self.random_reads = 0
        self.whole_tried = False  # fetch_whole runs once per open file
        self._lock = threading.Lock()
        self._inflight: list[tuple[int, int, Future]] = []
        self._whole: list[Future] = []
        self._stop = threading.Event()

    def locate(self, offset: int, size: int) -> tuple[int, int]:
        """The cache file's descriptor and how many bytes from ``offset`` it holds for a
        read of ``size``: libfuse copies them to the kernel itself (see fusebridge)."""
        self.make_present(offset, size)
        cf = self.cf
        with cf.lock:
            self._check_arrived(offset, offset + size)
            cf.last_used = time.monotonic()
            return cf.fd, max(0, min(size, cf.size - offset))

    def _check_arrived(self, offset: int, end: int) -> None:
        """Never hand out (nor upload) the sparse file's zeros for bytes that did not
        arrive: EIO instead. Called with the cache file's lock held."""
        if self.cf.missing(offset, end):
            log.error("bytes %d-%d of %s did not arrive: EIO", offset, end, self.cf.key)
            raise FuseOSError(errno.EIO)

    def make_present(self, offset: int, size: int) -> None:
        """Fetch what a read of ``[offset, offset + size)`` lacks, and read ahead."""
        cf = self.cf
        end = offset + size
        sequential = abs(offset - self.next_offset) <= NEAR or (offset == 0 and self.window == 0)
        self.next_offset = max(self.next_offset, end) if sequential else end
        with cf.lock:
            need = cf.missing(offset, end)
        if sequential:
            self.window = min(max(self.window * 2, CHUNK), self.max_window)
        else:
            self.window = 0
            self.random_reads += 1
            if self.random_reads >= RANDOM_TRIGGER and not self.whole_tried:
                self.fetch_whole()
        if need:
            futures = self._schedule(need, self._piece() if sequential else BLOCK)
            self._wait_present(offset, end, futures)
        if sequential:
            self.prefetch(end, self.window)

    def _wait_present(
        self, start: int, end: int, futures: list[Future], retry: bool = True
    ) -> None:
        """Return as soon as ``[start, end)`` is in the cache file, which is usually
        long before the ranged GETs that bring it have read their whole range."""
        cf = self.cf
        with cf.arrived:
            while cf.missing(start, end):
                # bytes another fetch has claimed land when it has written them
                if all(f.done() for f in futures) and not cf.filling.overlaps(start, end):
                    break
                cf.arrived.wait(0.05)
        self.wait([f for f in futures if f.done()])
        with cf.lock:
            if cf.missing(start, end):
                self.wait(futures)
        with cf.lock:
            left = cf.missing(start, end)
        if left and retry:
            # Our fetches left these bytes to a background fetch, which failed: once more.
            self._wait_present(start, end, self._schedule(left, BLOCK), retry=False)
            return
        with cf.lock:
            self._check_arrived(start, end)

    def ensure(self, start: int, end: int) -> None:
        """Make ``[start, end)`` present (used before uploading a partly written part)."""
        with self.cf.lock:
            need = self.cf.missing(start, end)
        if need:  # waits for claimed bytes too: a part must never upload holes
            self._wait_present(start, end, self._schedule(need, CHUNK))

    def prefetch(self, start: int, length: int) -> None:
        with self.cf.lock:
            need = self.cf.missing(start, start + length)
        if need:
            self._schedule(need, self._piece())

    def _piece(self) -> int:
        """Size of one read-ahead GET: a quarter of the window (at least CHUNK). Bigger
        GETs cost the client and the server less CPU per byte (a GetObject call is ~2 ms
        of botocore), and the window still keeps four of them in flight."""
        return max(CHUNK, min(PIECE_MAX, self.window // PIECE_DIV) // CHUNK * CHUNK)

    def fetch_whole(self) -> None:
        """Fetch all of the object in the background, as parallel ranged GETs of CHUNK
        bytes, when the cache limits allow it: random reads are then served from the
        cache file. Reads do not wait for it: a block not there yet is fetched at once
        on its own (see ``make_present``)."""
        with self._lock:  # concurrent reads may all see the trigger: only one starts it
            if self.whole_tried or self.background is None:
                return
            self.whole_tried = True
        with self.cf.lock:
            need = self.cf.missing(0, self.cf.remote_limit)
        if not need or not self._whole_fits(sum(e - s for s, e in need)):
            return
        log.debug("random reads of %s: fetching all of it in the background", self.cf.key)
        with self._lock:
            for start, end in need:
                for pos in range(start - start % CHUNK, end, CHUNK):
                    piece = (max(start, pos), min(end, pos + CHUNK))
                    self._whole.append(self.background.submit(self._fetch_quietly, *piece))

    def _whole_fits(self, missing: int) -> bool:
        """Whether fetching ``missing`` more bytes of this object stays well inside the
        cache limits (half of max_cache_size; ensure_diskfree kept twice over), so it
        never pushes out much else."""
        limits = self.cf.cache.limits
        if self.cf.remote_limit > WHOLE_MAX:
            return False
        if limits.max_cache_size and self.cf.remote_limit > limits.max_cache_size // 2:
            return False
        if limits.ensure_diskfree:
            try:
                st = os.statvfs(self.cf.cache.data_dir)
            except OSError:
                return False
            if st.f_bavail * st.f_frsize - missing < 2 * limits.ensure_diskfree:
                return False
        return True

    def _fetch_quietly(self, start: int, end: int) -> None:
        """A background fetch: a failure only means reads fetch their blocks themselves."""
        if self._stop.is_set():
            return
        try:
            self._fetch(start, end, self._stop)
        except Exception as exc:
            log.debug("background fetch of %s %d-%d: %s", self.cf.key, start, end, exc)

    def _schedule(self, ranges: list[tuple[int, int]], align: int) -> list[Future]:
        """Futures that together cover ``ranges``, reusing fetches already under way."""
        futures: list[Future] = []
        limit = self.cf.remote_limit
        with self._lock:
            self._inflight = [t for t in self._inflight if not t[2].done()]
            for start, end in ranges:
                pos = start - start % BLOCK  # (never back over bytes that are here)
                end = min(limit, -(-end // align) * align)
                while pos < end:
                    running = [(e, f) for s, e, f in self._inflight if s <= pos < e]
                    if running:  # a fetch under way brings ``pos`` and what follows
                        futures.append(running[0][1])
                        pos = running[0][0]
                        continue
                    piece_end = min(end, (pos // align + 1) * align if align >= CHUNK else end)
                    # ... up to where a fetch under way takes over
                    piece_end = min([s for s, _, _ in self._inflight if pos < s] + [piece_end])
                    futures.append(self._submit(pos, piece_end))
                    pos = piece_end
        return futures

    def _submit(self, start: int, end: int) -> Future:
        """Start one ranged GET (the caller holds ``_lock``)."""
        future = self.pool.submit(self._fetch, start, end)
        self._inflight.append((start, end, future))
        return future

    def _fetch(self, start: int, end: int, stop: threading.Event | None = None) -> None:
        """One ranged GET streamed into the cache file, a megabyte at a time.

        Only bytes of the version the cache file holds are fetched: if the object was
        replaced since (another host, or a rename over a file still open here), the read
        fails with EIO rather than mixing two versions."""
        try:
            body = self.backend.get_stream(self.cf.key, start, end - start, self.cf.etag)
        except ConflictError:
            log.warning(
                "s3://%s/%s changed on S3 while open here: reads of bytes not cached yet "
                "fail with EIO (reopen the file to read the new version)",
                self.backend.bucket,
                self.cf.key,
            )
            raise FuseOSError(errno.EIO) from None
        buf = _stream_buffer()
        pos = start
        try:
            while pos < end:
                n = read_into(body, buf[: min(STREAM_READ, end - pos)])
                if not n:
                    break
                if self.cf.fd < 0 or (stop is not None and stop.is_set()):
                    return
                self.cf.fill(pos, buf[:n])
                pos += n
        finally:
            body.close()
        if pos < end:
            raise FuseOSError(errno.EIO)

    @staticmethod
    def wait(futures: list[Future]) -> None:
        for future in futures:
            exc = future.exception()
            if exc is not None:
                if isinstance(exc, FuseOSError):
                    raise exc
                log.error("fetch failed: %s", exc)
                raise FuseOSError(errno_for(exc)) from exc

    def close(self) -> None:
        """Cancel read-ahead that has not started; wait for what is running."""
        self._stop.set()  # background fetches end after the piece they are writing
        with self._lock:
            running = [f for _, _, f in self._inflight if not f.cancel()]
            running += [f for f in self._whole if not f.cancel()]
            self._inflight, self._whole = [], []
        wait(running)


@dataclass
class PartState:
    start: int
    end: int
    generation: int
    future: Future | None = None
    etag: str | None = None


@dataclass
class Upload:
    """A multipart upload in progress for one open file."""

    upload_id: str
    parts: dict[int, PartState] = field(default_factory=dict)


class Writer:
    """Uploads one cache file: streamed parts while writing, the rest at flush."""

    def __init__(
        self,
        backend: Backend,
        pool: ThreadPoolExecutor,
        cf: CacheFile,
        reader: Reader,
        part_size: int,
        max_inflight: int,
        copy_parts: bool = True,
    ) -> None:
        self.backend, self.pool, self.cf, self.reader = backend, pool, cf, reader
        self.part_size = part_size
        # unchanged parts of the old object are copied server-side (UploadPartCopy);
        # nomixupload, for servers without it, fetches and uploads them instead
        self.copy_parts = copy_parts
        self.max_inflight = max_inflight
        self.upload: Upload | None = None
        self.generations: dict[int, int] = {}
        self.pending: set[int] = set()
        self.meta = lambda: ({}, "application/octet-stream")
        self.on_start = lambda upload_id: None  # the journal records every upload id
        self._lock = threading.Lock()

    # -- while writing -------------------------------------------------------------------
    def wrote(self, start: int, end: int, meta) -> None:
        """Note a write; start uploading every complete part of fresh data.

        ``meta`` returns (metadata, content type); it is called only when an upload
        starts, not on every write."""
        self.meta = meta
        ps = self.part_size
        first, last = start // ps, (end - 1) // ps
        with self._lock:
            for k in range(first, last + 1):
                self.generations[k] = self.generations.get(k, 0) + 1
            candidates = sorted(self.pending | set(range(first, last + 1)))
            self.pending.clear()
        for k in candidates:
            try:
                self._maybe_stream(k)
            except Exception as exc:  # the bytes are in the cache: flush uploads them
                log.warning("streaming part %d of %s failed: %s", k + 1, self.cf.key, exc)

    def truncated(self, length: int) -> None:
        """Parts at or after a truncation no longer hold what may have been streamed."""
        with self._lock:
            for k in list(self.generations):
                if (k + 1) * self.part_size > length:
                    self.generations[k] += 1
            if self.upload is not None:
                for number, part in self.upload.parts.items():
                    if part.end > length:
                        k = number - 1
                        self.generations[k] = self.generations.get(k, 0) + 1

    def _maybe_stream(self, k: int) -> None:
        ps, cf = self.part_size, self.cf
        start, end = k * ps, (k + 1) * ps
        with cf.lock:
            if end > cf.size or not cf.dirty.contains(start, end):
                return
        with self._lock:
            if self.upload is not None:
                part = self.upload.parts.get(k + 1)
                if part is not None and part.generation == self.generations[k]:
                    return
                inflight = sum(
                    1 for p in self.upload.parts.values() if p.future and not p.future.done()
                )
                if inflight >= self.max_inflight:
                    self.pending.add(k)  # tried again at the next write
                    return
        self._submit_part(k, start, end)

    def _ensure_upload(self) -> Upload:
        with self._lock:
            if self.upload is None:
                meta, ctype = self.meta()
                upload_id = self.backend.create_multipart(self.cf.key, meta, ctype)
                self.upload = Upload(upload_id)
                self.on_start(upload_id)
            return self.upload

    def resume(self, upload_id: str, parts: dict[int, tuple[int, int, str]]) -> None:
        """Continue a multipart upload begun before a restart: ``parts`` (number ->
        start, end, ETag) are on S3 already and hold what the cache file holds."""
        upload = Upload(upload_id)
        for number, (start, end, etag) in parts.items():
            done: Future = Future()
            done.set_result(etag)
            upload.parts[number] = PartState(start, end, 0, done, etag)
        with self._lock:
            self.upload = upload
            self.generations.clear()

    @property
    def upload_id(self) -> str | None:
        upload = self.upload
        return upload.upload_id if upload else None

    def progress(self) -> tuple[int, int]:
        """(parts on S3, parts in all) of the multipart upload in progress."""
        upload = self.upload
        if upload is None:
            return (0, 0)
        total = max(1, -(-self.cf.size // self.part_size))
        done = sum(
            1
            for p in list(upload.parts.values())
            if p.future is not None and p.future.done() and p.future.exception() is None
        )
        return (min(done, total), total)

    def _submit_part(self, k: int, start: int, end: int) -> None:
        upload = self._ensure_upload()
        with self._lock:
            generation = self.generations.get(k, 0)
            future = self.pool.submit(self._put_part, upload.upload_id, k + 1, start, end)
            upload.parts[k + 1] = PartState(start, end, generation, future)

    def _put_part(self, upload_id: str, number: int, start: int, end: int) -> str:
        body = FileSlice(self.cf.fd, start, end - start)
        return self.backend.upload_part(self.cf.key, upload_id, number, body)

    # -- flush ---------------------------------------------------------------------------
    def flush(
        self, meta: dict[str, str], content_type: str, cond: Precondition | None = None
    ) -> str | None:
        """Upload everything; returns the new ETag. Raises EIO (data kept) on failure
        and ConflictError when the object changed on S3 since it was opened."""
        self.meta = lambda: (meta, content_type)
        cf = self.cf
        try:
            if cf.size < self.part_size and self.upload is None:
                self.reader.ensure(0, cf.size)
                body = FileSlice(cf.fd, 0, cf.size)
                return self.backend.put_stream(cf.key, body, meta, content_type, cond)
            return self._complete_multipart(meta, content_type, cond)
        except ConflictError:
            self.abort()
            raise
        except Exception as exc:
            # The multipart upload stays open: a retry reuses the parts that made it.
            if error_code(exc) == "NoSuchUpload":
                with self._lock:
                    self.upload = None
            if isinstance(exc, FuseOSError):
                raise
            log.error("upload of %s failed: %s", cf.key, exc)
            raise FuseOSError(errno.EIO) from exc

    def _complete_multipart(
        self, meta: dict[str, str], content_type: str, cond: Precondition | None
    ) -> str | None:
        cf, ps = self.cf, self.part_size
        upload = self._ensure_upload()
        with self._lock:
            running = [p.future for p in upload.parts.values() if p.future]
        # A part streamed earlier may have failed, or gone stale under a truncate (the
        # server then refuses it): such parts are simply uploaded again below.
        wait(running)
        count = max(1, -(-cf.size // ps))
        for number in [n for n in upload.parts if n > count]:
            del upload.parts[number]
        jobs: dict[int, Future] = {}
        for k in range(count):
            start, end = k * ps, min((k + 1) * ps, cf.size)
            part = upload.parts.get(k + 1)
            fresh = (
                part is not None
                and part.generation == self.generations.get(k, 0)
                and part.future is not None
                and part.future.exception() is None
            )
            if fresh and part.start == start and part.end == end:
                jobs[k + 1] = part.future
                continue
            with cf.lock:
                clean = not cf.dirty.overlaps(start, end) and end <= cf.remote_limit
            if clean and cf.etag is not None and self.copy_parts:
                jobs[k + 1] = self.pool.submit(
                    self.backend.upload_part_copy, cf.key, upload.upload_id, k + 1, start, end
                )
            else:
                self.reader.ensure(start, end)
                jobs[k + 1] = self.pool.submit(self._put_part, upload.upload_id, k + 1, start, end)
                generation = self.generations.get(k, 0)
                upload.parts[k + 1] = PartState(start, end, generation, jobs[k + 1])
        self.reader.wait(list(jobs.values()))
        etags = {n: f.result() for n, f in jobs.items()}
        self.backend.check_precondition(cf.key, cond)
        etag = self.backend.complete_multipart(cf.key, upload.upload_id, etags)
        self.upload = None
        self.generations.clear()
        self.pending.clear()
        return etag

    def abort(self) -> None:
        """Drop a multipart upload that cannot complete (its data stays in the cache)."""
        with self._lock:
            upload, self.upload = self.upload, None
            self.generations.clear()
            self.pending.clear()
        if upload is None:
            return
        wait([p.future for p in upload.parts.values() if p.future])
        try:
            self.backend.abort_multipart(self.cf.key, upload.upload_id)
        except Exception as exc:  # the server may be down; the upload expires there
            log.warning("could not abort upload %s of %s: %s", upload.upload_id, self.cf.key, exc)
