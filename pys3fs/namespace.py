"""The directory tree: lookups, listings and operations on names.

Directories are key prefixes, with or without a ``dir/`` marker object. A lookup
asks S3 the cheapest question first (the parent's listing says whether a name is a
file or a directory), and only a 404 ever means "not found".
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from fuse import FuseOSError

from . import metadata
from .attrs import Entry, encode_entry, entry_from_object, implicit_dir, now_ns
from .cache import DeferredAttrs, Hint, MetaCache
from .dirqueue import PendingDirs
from .handles import FileTable, Owner
from .journal import move_record
from .metadata import NS_PER_SEC
from .metaindex import MetaIndex, settled
from .paths import KEY_MAX, KeyMap, is_below, join, parent, valid_name
from .s3client import Backend, ConflictError, ObjectInfo, Precondition, is_not_found

log = logging.getLogger("pys3fs.namespace")

DIR_CONTENT_TYPE = "application/x-directory"
# A listing's files are HEADed when a lookup first asks for one of them, DEFERRED_BATCH
# at a time from there in listing order (see DeferredAttrs).
DEFERRED_BATCH = 256
LEARN_BATCH = 256


class Namespace:
    """Name operations on one bucket prefix; thread-safe through its caches."""

    def __init__(
        self,
        backend: Backend,
        keys: KeyMap,
        cache: MetaCache,
        files: FileTable,
        owner: Owner,
        root_entry: Entry,
        workers: int = 16,
        index: MetaIndex | None = None,
    ) -> None:
        self.index = index or MetaIndex(None)
        self.backend = backend
        self.keys = keys
        self.cache = cache
        self.files = files
        self.owner = owner
        self.root_entry = root_entry
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pys3fs-ns")
        self.deferred = DeferredAttrs()
        self._learned: list[tuple[str, int, Entry]] = []  # for the index, from deferred HEADs
        self._learned_lock = threading.Lock()
        self._heads_running = 0  # HEADs started by _start_head and not finished
        # directories whose marker upload waits (see dirqueue); it needs the journal,
        # which a mount has unless another mount uses its cache directory
        self.dirs = PendingDirs(files) if files.journal is not None else None

    # -- lookups -------------------------------------------------------------------------
    def lookup(self, path: str) -> Entry:
        """Attributes of ``path`` or ENOENT; open files answer from their local state."""
        if path == "/":
            return self.root_entry
        of = self.files.lookup(path)
        if of is not None:
            return of.entry.copy(size=of.size())
        if (pending := self._pending_dir(path)) is not None:
            return pending
        entry = self.cache.get(path)
        self.backend.stats.hit("attr", entry is not None)
        if entry is not None:
            return entry
        self.keys.key(path)  # ENAMETOOLONG before any "not found"
        if self.cache.is_missing(path) or self.cache.listed_absent(path):
            raise FuseOSError(errno.ENOENT)
        # The cache is read again even if no HEAD was waited for: one that a listing
        # deferred may have finished since the read above (and left DeferredAttrs).
        self._fetch_deferred(path)
        entry = self.cache.get(path)
        if entry is not None:
            return entry
        entry = self._fetch(path)
        if entry is None:
            self.cache.put_missing(path)
            raise FuseOSError(errno.ENOENT)
        self.cache.put(path, entry)
        return entry

    def _fetch(self, path: str) -> Entry | None:
        """Ask S3: the object ``key``, then the marker ``key/``, then any key below.
        Without a listing hint, one LIST first says which of these exist: a name that
        does not exist (every create) costs that one request."""
        hint = self.cache.hint(path)
        if hint is None:
            probed = self._probe(path)
            if probed is not None:
                is_file, is_dir = probed
                if not (is_file or is_dir):
                    return None
                hint = Hint(is_dir=is_dir)
        found = None
        if hint is None or not hint.is_dir:
            info = self.backend.head(self.keys.key(path))
            if info is not None:
                found = entry_from_object(info)
                if found.is_dir or hint is not None:  # a listing hint rules out "a/"
                    return found
        try:
            prefix = self.keys.dir_prefix(path)
        except FuseOSError:
            self.keys.key(path)  # ENAMETOOLONG unless the key itself fits
            return found  # "key" fits in 1024 bytes but "key/" does not: not a directory
        has_keys = hint is not None and hint.is_dir
        if found is not None:
            # A file "a" and keys below "a/" both exist: the directory wins, as in listings.
            if not self.backend.first_keys(prefix, 1):
                return found
            has_keys = True
        marker = self.backend.head(prefix)
        if marker is not None:
            return entry_from_object(marker, as_dir=True)
        if has_keys or self.backend.first_keys(prefix, 1):
            return implicit_dir(self.root_entry.mtime_ns)
        return None

    def _probe(self, path: str) -> tuple[bool, bool] | None:
        try:
            key = self.keys.key(path)
            self.keys.dir_prefix(path)
        except FuseOSError:
            return None  # "key/" does not fit: the slow path sorts out ENAMETOOLONG
        return self.backend.probe(key)

    def revalidate(self, path: str) -> Entry:
        """Close-to-open consistency: one HEAD tells whether another host changed the
        file since it was cached; the new ETag then invalidates stale cached bytes."""
        if (
            path == "/"
            or self.files.lookup(path) is not None
            or self._pending_dir(path) is not None
        ):
            return self.lookup(path)
        cached = self.cache.get(path)
        if cached is not None and cached.is_dir:
            return cached
        info = self.backend.head(self.keys.key(path))
        if info is None:
            self.cache.forget(path)
            return self.lookup(path)  # gone, or a directory
        entry = entry_from_object(info)
        self.cache.put(path, entry)
        return entry

    def _pending_dir(self, path: str) -> Entry | None:
        """A directory made here whose marker is not uploaded yet."""
        return self.dirs.get(path) if self.dirs is not None else None

    def touch_parent(self, path: str | None) -> None:
        """A name was made, or a file closed, in a directory whose marker (or an
        ancestor's) may still wait for its upload."""
        if self.dirs is not None and path is not None:
            self.dirs.touch(parent(path))

    def sync(self, path: str, is_dir: bool) -> None:
        """fsync(2): the pending markers of the directories leading to ``path`` (and,
        for a directory, of it and those below it) are uploaded now; EIO if S3 does
        not take them (they stay pending and are retried)."""
        if self.dirs is None:
            return
        try:
            self.dirs.sync(path, subtree=is_dir)
        except Exception as exc:
            log.error("fsync of %s: a directory marker was not uploaded: %s", path, exc)
            raise FuseOSError(errno.EIO) from exc

    def invalidate(self, path: str) -> None:
        """Forget everything cached for a file or a whole subtree (on demand)."""
        self.cache.forget_tree(path)
        if path == "/":
            self.files.data.forget_prefix(self.keys.prefix)
            return
        self.files.data.forget(self.keys.key(path))
        self.files.data.forget_prefix(self.keys.dir_prefix(path))

    def exists(self, path: str) -> Entry | None:
        try:
            return self.lookup(path)
        except FuseOSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def require_dir(self, path: str) -> Entry:
        entry = self.lookup(path)
        if not entry.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return entry

    # -- listings ------------------------------------------------------------------------
    def list_names(self, path: str) -> list[str]:
        """Every valid name in a directory, reading every listing page."""
        return sorted(name for batch in self.scan(path) for name in batch)

    def scan(self, path: str) -> Iterator[list[str]]:
        """The names of a directory in batches, one per listing page, given as soon as
        the page is read. Its files' HEADs wait for the first lookup of one of them, which
        starts those of the names after it (:class:`DeferredAttrs`): ``ls -f`` and
        ``find -name`` cost the LIST pages only, and ``ls -l``'s stats overlap the LIST
        of the next page. Subdirectories, and files that a later page may show as a
        subdirectory too (which then wins, as in lookups), come in the last batch, after
        their markers' HEADs. Each name comes once."""
        self.require_dir(path)
        prefix = self.keys.dir_prefix(path)
        # Taken before the LIST: a file whose upload completes during the LIST is then in
        # one of the two (taken after, it could be in neither).
        local = self.files.local_names(path).keys()
        if self.dirs is not None:
            local |= self.dirs.names_in(path).keys()
        dirs: set[str] = set()
        files: dict[str, ObjectInfo] = {}
        given: set[str] = set()
        self.deferred.reset(path)
        for page in self.backend.list_pages(prefix):
            for sub in page.prefixes:
                name = sub[len(prefix) : -1]
                if valid_name(name) and fits(sub):
                    dirs.add(name)
            listed: dict[str, ObjectInfo] = {}
            for obj in page.objects:
                name = obj.key[len(prefix) :]
                if obj.key != prefix and valid_name(name) and fits(obj.key):
                    listed[name] = obj
            files.update(listed)
            self._fill_files(path, listed)  # the next page is on its way (list_pages)
            # "a" is settled once the listing is past "a/": keys come in byte order
            last = max([*page.prefixes, *(o.key for o in page.objects)], default=prefix)
            settled = [n for n in listed if n not in dirs and prefix + n + "/" < last]
            self.cache.put_hints([join(path, n) for n in settled], Hint(is_dir=False))
            given.update(settled)
            yield settled
        self.cache.put_hints([join(path, name) for name in dirs], Hint(is_dir=True))
        held = files.keys() - dirs - given
        self.cache.put_hints([join(path, n) for n in held], Hint(is_dir=False))
        self._fill_dirs(path, dirs)
        self.cache.put_listing(path, dirs | files.keys())
        yield sorted((dirs | files.keys() | local) - given)

    def _fill_files(self, path: str, listed: dict[str, ObjectInfo]) -> None:
        """Put the files of one listing page in the attribute cache, so ``ls -l`` and
        ``find`` that follow cost no request but one HEAD per entry: the metadata index
        answers (one query per page) for objects whose (ETag, Last-Modified) it has
        seen; the others are left to :class:`DeferredAttrs`."""
        children = {join(path, name): obj for name, obj in listed.items()}
        cached = self.cache.get_many(list(children))
        todo = {child: obj for child, obj in children.items() if child not in cached}
        known = self.index.get_many([(o.key, o.etag, modified(o), o.size) for o in todo.values()])
        found = {child: known[obj.key] for child, obj in todo.items() if obj.key in known}
        self.cache.put_many(found)
        self.backend.stats.hit("index", True, len(found))
        self.backend.stats.hit("index", False, len(todo) - len(found))
        unknown = [(child, obj) for child, obj in todo.items() if child not in found]
        self.deferred.add(path, unknown)

    def _fetch_deferred(self, path: str) -> None:
        """Wait for ``path``'s HEAD if a listing deferred it (:class:`DeferredAttrs`)."""
        future = self.deferred.start(path, DEFERRED_BATCH, self._start_head)
        if future is not None:
            future.result()

    def _start_head(self, child: str, listed: ObjectInfo) -> Future:
        """The HEAD of a listed file, made alongside many others (Backend.head_soon);
        the future is done once the attribute cache holds the answer."""
        done: Future = Future()

        def arrived(answer: Future) -> None:
            found = None
            try:
                found = self._took_head(child, listed, answer.result())
            except Exception as exc:  # a later lookup of this name retries and reports
                log.debug("HEAD %s failed during listing: %s", listed.key, exc)
            finally:
                learned = self._learned_batch(found)
                try:
                    if learned:
                        self.index.put_many(learned)
                finally:
                    done.set_result(None)

        with self._learned_lock:
            self._heads_running += 1
        self.backend.head_soon(listed.key, self.pool).add_done_callback(arrived)
        return done

    def _learned_batch(self, found: tuple[str, int, Entry] | None) -> list:
        """What the index should write now: the index is written in batches (one write
        per HEAD cost more than the HEAD), and by the last HEAD running at the latest."""
        with self._learned_lock:
            self._heads_running -= 1
            if found is not None:
                self._learned.append(found)
            if len(self._learned) < LEARN_BATCH and self._heads_running:
                return []
            learned, self._learned = self._learned, []
            return learned

    def _took_head(
        self, child: str, listed: ObjectInfo, info: ObjectInfo | None
    ) -> tuple[str, int, Entry] | None:
        """A listed file's HEAD into the attribute cache; what the index should learn."""
        if info is None:
            return None  # deleted since the listing: lookup decides
        entry = entry_from_object(info)
        self.cache.put(child, entry)
        if listed.etag != info.etag or info.mtime_ns // NS_PER_SEC != listed.mtime_ns // NS_PER_SEC:
            return None  # rewritten since the listing: its listed date is not this version's
        if not settled(info.last_modified, info.answered):
            return None  # written too recently: a rewrite may still share its date
        return info.key, modified(listed), entry

    def _fill_dirs(self, path: str, dirs: set[str]) -> None:
        """HEAD the subdirectories' markers. A name that is both a file and a directory
        shows as the directory, as in lookups."""
        jobs = []
        for name in dirs:
            child = join(path, name)
            cached = self.cache.get(child)
            if cached is None or not cached.is_dir:
                jobs.append((child, self.keys.dir_prefix(child)))
        for child, info, answered in self.pool.map(self._head_marker, jobs):
            if answered:  # a failed HEAD leaves the name to a later lookup
                entry = entry_from_object(info, as_dir=True) if info else None
                self.cache.put(child, entry or implicit_dir(self.root_entry.mtime_ns))

    def _head_marker(self, job: tuple[str, str]) -> tuple[str, ObjectInfo | None, bool]:
        child, key = job
        try:
            return child, self.backend.head(key), True
        except Exception as exc:  # a later lookup of this name retries and reports
            log.debug("HEAD %s failed during listing: %s", key, exc)
            return child, None, False

    def is_empty(self, path: str) -> bool:
        return self._emptiness(path)[0]

    def _emptiness(self, path: str) -> tuple[bool, ObjectInfo | None]:
        """Whether a directory may be removed, and its marker object (None if implicit).

        Keys the mount hides (``d//x``, over-long names) and a marker object that has
        content count as content: removing the directory would delete bytes that no
        listing shows."""
        if self.dirs is not None:
            self.dirs.flush_below(path)  # S3 then holds what the checks below look at
        prefix = self.keys.dir_prefix(path)
        found = self.backend.first_objects(prefix, 2)
        marker = next((o for o in found if o.key == prefix), None)
        if any(o.key != prefix for o in found) or (marker is not None and marker.size):
            return False, marker
        return not self.files.open_below(path), marker

    # -- creating names ------------------------------------------------------------------
    def new_entry(self, mode: int, uid: int, gid: int) -> Entry:
        t = now_ns()
        return Entry(mode=mode, uid=uid, gid=gid, mtime_ns=t, ctime_ns=t, atime_ns=t)

    def check_new(self, path: str, ask_s3: bool = False) -> None:
        """EEXIST if taken, ENOENT/ENOTDIR if the parent is not a directory.

        With ``ask_s3`` the answer comes from S3, not from negative caches: a directory
        marker is not protected by a conditional write the way a new file's upload is."""
        self.require_dir(parent(path))
        if ask_s3 and self.files.lookup(path) is None and self.cache.get(path) is None:
            if self._fetch(path) is not None:
                raise FuseOSError(errno.EEXIST)
            return
        if self.exists(path) is not None:
            raise FuseOSError(errno.EEXIST)

    def mkdir(self, path: str, mode: int, uid: int, gid: int) -> None:
        """Inside a directory this mount has just created (``tar x``, ``mkdir -p``) no
        request is needed first; elsewhere S3 is asked whether the name is free (a
        directory may exist with no marker, made by another host since a listing).

        With a journal the marker is queued (see dirqueue). Without one (another mount
        uses the cache directory) it is written now, with If-None-Match, so a racing
        mkdir elsewhere is EEXIST; a queued marker that meets one takes its place."""
        if self.cache.absent_from_made(path) and self.files.lookup(path) is None:
            self.require_dir(parent(path))
        else:
            self.check_new(path, ask_s3=True)
        entry = self.new_entry(stat.S_IFDIR | stat.S_IMODE(mode), uid, gid)
        self.touch_parent(path)
        if self.dirs is not None:
            self.dirs.add(path, self.keys.dir_prefix(path), entry)
            self.cache.put_made(path)
            return
        cond = Precondition(absent=True) if self.files.settings.conditional_writes else None
        try:
            self._put_marker(path, entry, cond)
        except ConflictError:
            self.cache.forget(path)
            raise FuseOSError(errno.EEXIST) from None
        self.cache.put_made(path)  # nothing can be below a name that was free

    def _put_marker(self, path: str, entry: Entry, cond: Precondition | None = None) -> None:
        meta = encode_entry(entry, self.owner.uid, self.owner.gid)
        key = self.keys.dir_prefix(path)
        self.backend.put_stream(key, io.BytesIO(b""), meta, DIR_CONTENT_TYPE, cond)
        self.cache.put(path, entry.copy(marker=True, content_type=DIR_CONTENT_TYPE))

    def _copy_onto_itself(self, key: str, entry: Entry, size: int, ctype: str) -> str | None:
        """Give ``key`` the attributes of ``entry`` with a server-side copy (the bytes
        stay where they are), with the headers its object is served with; its new ETag."""
        meta = encode_entry(entry, self.owner.uid, self.owner.gid)
        served = metadata.kept_headers(entry.extra)
        return self.backend.copy(key, key, size, metadata=meta, content_type=ctype, headers=served)

    def _rewrite_marker(self, path: str, entry: Entry) -> None:
        """New attributes for a directory. An existing marker is copied onto itself, so
        whatever body it has (other tools write markers with content) is kept."""
        if not entry.marker:
            self._put_marker(path, entry)
            return
        prefix = self.keys.dir_prefix(path)
        ctype = entry.content_type or DIR_CONTENT_TYPE
        try:
            self._copy_onto_itself(prefix, entry, 0, ctype)
        except Exception as exc:
            if not is_not_found(exc):
                raise
            self._put_marker(path, entry)  # removed meanwhile by another host
            return
        self.cache.put(path, entry.copy(content_type=ctype))

    def put_special(self, path: str, mode: int, uid: int, gid: int, body: bytes = b"") -> Entry:
        """A symlink, FIFO or socket: one object whose mode carries the type."""
        self.check_new(path)
        self.touch_parent(path)
        entry = self.new_entry(mode, uid, gid).copy(size=len(body))
        meta = encode_entry(entry, self.owner.uid, self.owner.gid)
        self.backend.put(self.keys.key(path), body, meta, "application/octet-stream")
        self.cache.put(path, entry.copy(content_type="application/octet-stream"))
        return entry

    def readlink(self, path: str) -> str:
        entry = self.lookup(path)
        if not entry.is_link:
            raise FuseOSError(errno.EINVAL)
        if entry.symlink_target is None:
            target = self.backend.get(self.keys.key(path)).decode("utf-8", "surrogateescape")
            self.cache.put(path, entry.copy(symlink_target=target))
            return target
        return entry.symlink_target

    # -- removing names ------------------------------------------------------------------
    def unlink(self, path: str) -> None:
        entry = self.lookup(path)
        if entry.is_dir:
            raise FuseOSError(errno.EISDIR)
        of = self.files.lookup(path)
        key = self.keys.key(path)
        if of is None:
            self.backend.delete(key)
            self.files.unlinked(path, key)
        else:
            with of.lock:  # an upload in progress finishes first, then is deleted
                if of.exists_remote:
                    self.backend.delete(key)
                self.files.unlinked(path, key)
        self.cache.put_missing(path)

    def rmdir(self, path: str) -> None:
        if path == "/":
            raise FuseOSError(errno.EBUSY)
        self.require_dir(path)
        empty, marker = self._emptiness(path)
        if not empty:
            raise FuseOSError(errno.ENOTEMPTY)
        if marker is not None:
            self.backend.delete(marker.key)
        self.cache.put_missing(path)

    # -- attributes ----------------------------------------------------------------------
    def set_attrs(self, path: str, **changes) -> None:
        """chmod/chown/utimens: rewrite the metadata with a server-side copy."""
        if path == "/":
            raise FuseOSError(errno.EPERM)
        of = self.files.lookup(path)
        if of is not None and (of.dirty or not of.exists_remote):
            with of.lock:
                of.entry = of.entry.copy(**changes)
                of.dirty = True
            self.files.changed(of)  # a closed file waiting for S3: journal, upload later
            return
        if self.dirs is not None and self.dirs.set_attrs(path, changes):
            return  # merged into the marker's upload
        current = self.lookup(path)
        if all(getattr(current, k) == v for k, v in changes.items() if k != "ctime_ns"):
            return  # tar and cp -p restate what is already there: no request needed
        entry = current.copy(**changes)
        if entry.is_dir:
            self._rewrite_marker(path, entry)
            return
        key = self.keys.key(path)
        ctype = entry.content_type or "application/octet-stream"
        etag = self._copy_onto_itself(key, entry, entry.size, ctype)
        self.cache.put(path, entry.copy(etag=etag))
        self.files.data.retag(key, entry.etag, etag)  # same bytes, new version
        if of is not None:
            with of.lock:
                of.entry = of.entry.copy(**changes, etag=etag)

    # -- extended attributes (use_xattr) -------------------------------------------------
    def _current(self, path: str) -> Entry:
        """``path``'s entry, an open file's own while it is open (it may not be in S3)."""
        of = self.files.lookup(path)
        return of.entry if of is not None else self.lookup(path)

    def xattrs(self, path: str) -> dict[str, bytes]:
        """``path``'s user.* attributes, kept in its metadata as s3fs-fuse keeps them."""
        return metadata.xattrs_of(self._current(path).extra)

    def set_xattr(self, path: str, name: str, value: bytes | None, flags: int = 0) -> None:
        """setxattr(2) (``value`` None: removexattr), written like a chmod."""
        entry = self._current(path)
        current = metadata.xattrs_of(entry.extra)
        if value is None and name not in current:
            raise FuseOSError(errno.ENODATA)
        if flags & os.XATTR_CREATE and name in current:
            raise FuseOSError(errno.EEXIST)
        if flags & os.XATTR_REPLACE and name not in current:
            raise FuseOSError(errno.ENODATA)
        if value is None:
            del current[name]
        else:
            current[name] = value
        extra = metadata.with_xattrs(entry.extra, current)
        self.set_attrs(path, extra=extra, ctime_ns=now_ns())

    # -- rename --------------------------------------------------------------------------
    def rename(self, old: str, new: str) -> None:
        if old == "/" or new == "/" or is_below(new, old):
            raise FuseOSError(errno.EINVAL)
        src = self.lookup(old)
        self.require_dir(parent(new))
        dst = self.exists(new)
        if dst is not None:
            if src.is_dir and not dst.is_dir:
                raise FuseOSError(errno.ENOTDIR)
            if dst.is_dir and not src.is_dir:
                raise FuseOSError(errno.EISDIR)
            if dst.is_dir and not self.is_empty(new):
                raise FuseOSError(errno.ENOTEMPTY)
        self.touch_parent(new)
        if src.is_dir:
            self._rename_dir(old, new, dst)
        else:
            self._rename_file(old, new, src, dst)

    def _rename_file(self, old: str, new: str, src: Entry, dst: Entry | None) -> None:
        of = self.files.lookup(old)
        if of is not None:
            of.flush()
        if dst is not None and dst.is_dir:
            self.rmdir(new)
        old_key, new_key = self.keys.key(old), self.keys.key(new)
        if of is not None:
            src = src.copy(etag=of.cf.etag, size=of.size())
        etag = self.backend.copy(old_key, new_key, src.size)
        self.backend.delete(old_key)
        self.files.unlinked(new, new_key)
        self.files.renamed(old, new, old_key, new_key)
        self.files.data.retag(new_key, src.etag, etag)
        self.cache.put_missing(old)
        self.cache.put(new, src.copy(etag=etag))

    def _rename_dir(self, old: str, new: str, dst: Entry | None) -> None:
        if self.dirs is not None:
            self.dirs.flush_below(old)  # the move copies what S3 holds
        for of in self.files.open_below(old):
            of.flush()
        old_prefix, new_prefix = self.keys.dir_prefix(old), self.keys.dir_prefix(new)
        objects = self.backend.all_objects(old_prefix)
        moves = [(o, new_prefix + o.key[len(old_prefix) :]) for o in objects]
        if any(len(key.encode("utf-8", "surrogateescape")) > KEY_MAX for _, key in moves):
            raise FuseOSError(errno.ENAMETOOLONG)  # before anything is copied or removed
        journal = self.files.journal
        record = move_record(old_prefix, new_prefix) if journal is not None else None
        if record is not None:
            journal.write(record)
        try:
            if dst is not None:
                self.rmdir(new)
            copy = self.backend.copy
            copies = [(key, self.pool.submit(copy, o.key, key, o.size)) for o, key in moves]
            self._copied_all(new, copies, dst)
            self.backend.delete_many([o.key for o in objects])
        finally:  # reported either way: only a move the daemon died in is finished later
            if record is not None:
                journal.remove(record.name)
        for of in self.files.open_below(old):
            rel = of.path[len(old) :]
            self.files.renamed(of.path, new + rel, of.key, self.keys.key(new + rel))
        self.cache.forget_tree(old)
        self.cache.forget_tree(new)
        self.cache.put_missing(old)

    def _copied_all(self, new: str, copies: list[tuple[str, Future]], dst: Entry | None) -> None:
        """Wait for a directory move's copies. If one failed, the copies made are removed
        (the destination was empty) and an empty directory the move replaced is put
        back before the failure is reported: a failed ``mv`` leaves the tree where it
        was, not part of it in both places, and can simply be run again."""
        made, failure = [], None
        for key, future in copies:
            try:
                future.result()
                made.append(key)
            except Exception as exc:
                failure = failure or exc
        if failure is None:
            return
        try:
            self.backend.delete_many(made)
            if dst is not None:
                self._put_marker(new, dst)
        except Exception as exc:
            log.error("a failed move to %s left copies there: %s", new, exc)
        self.cache.forget_tree(new)
        raise failure


def fits(key: str) -> bool:
    """Whether a listed key is short enough to be looked up (S3 allows 1024 bytes; some
    servers store longer keys, which lookups refuse with ENAMETOOLONG)."""
    return len(key.encode("utf-8", "surrogateescape")) <= KEY_MAX


def modified(listed: ObjectInfo) -> int:
    """A listing's Last-Modified in milliseconds (HEAD gives only seconds, so the index is
    filled and read with listing values only)."""
    return listed.mtime_ns // 1_000_000
