"""Metadata caches: attributes, missing names and listing hints, keyed by path.

Attribute lookups are the hottest path of any S3 filesystem (``ls -l`` stats every
entry), so positive and negative answers are kept for ``stat_cache_expire`` seconds in
cachetools TTL caches. Local changes update the caches directly; only other hosts'
changes wait for the TTL.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from cachetools import TTLCache

from .attrs import Entry
from .paths import is_below
from .s3client import ObjectInfo

# starts the HEAD of one deferred file: (path, listed object) -> its future
Submit = Callable[[str, ObjectInfo], Future]


@dataclass(frozen=True)
class Hint:
    """What a parent listing said about a name: saves HEADs that would 404."""

    is_dir: bool


class MetaCache:
    """Thread-safe attribute cache, negative cache and listing hints, keyed by path."""

    def __init__(self, ttl: float, maxsize: int) -> None:
        self._lock = threading.Lock()
        ttl = max(ttl, 0.000001)
        self._entries: TTLCache = TTLCache(maxsize=maxsize, ttl=ttl)
        self._missing: TTLCache = TTLCache(maxsize=maxsize, ttl=min(ttl, 5.0))
        self._hints: TTLCache = TTLCache(maxsize=maxsize, ttl=ttl)
        # Names of directories whose full content is known (listed, or made here):
        # a name not in it needs no request to be "not found".
        self._listings: TTLCache = TTLCache(maxsize=max(1, maxsize // 100), ttl=ttl)
        self._made: TTLCache = TTLCache(maxsize=max(1, maxsize // 100), ttl=ttl)

    def get(self, path: str) -> Entry | None:
        with self._lock:
            return self._entries.get(path)

    def put(self, path: str, entry: Entry) -> None:
        with self._lock:
            self._entries[path] = entry
            self._seen([path])

    def get_many(self, paths: list[str]) -> dict[str, Entry]:
        """The cached entries among ``paths`` (one lock for a whole listing page)."""
        with self._lock:
            found = {}
            for path in paths:
                entry = self._entries.get(path)
                if entry is not None:
                    found[path] = entry
            return found

    def put_many(self, entries: dict[str, Entry]) -> None:
        with self._lock:
            for path, entry in entries.items():
                self._entries[path] = entry
            self._seen(entries)

    def _seen(self, paths) -> None:
        """These names exist: not missing, and part of their parents' known content.
        Written for whole listing pages (one parent, usually nothing missing)."""
        missing = self._missing
        if len(missing):
            for path in paths:
                if path in missing:
                    del missing[path]
        parent, names = None, None
        for path in paths:
            head, _, name = path.rpartition("/")
            if head != parent:
                parent, names = head, self._listings.get(head or "/")
            if names is not None:
                names.add(name)

    def put_listing(self, path: str, names: set[str]) -> None:
        """The complete content of a directory, as just listed (or just created)."""
        with self._lock:
            self._listings[path] = set(names)

    def put_made(self, path: str) -> None:
        """A directory this mount just created: its content is what this mount put there."""
        with self._lock:
            self._listings[path] = set()
            self._made[path] = True

    def absent_from_made(self, path: str) -> bool:
        """True when ``path``'s parent was created by this mount and ``path`` was not."""
        head = path.rpartition("/")[0] or "/"
        with self._lock:
            if head not in self._made:
                return False
        return self.listed_absent(path)

    def listed_absent(self, path: str) -> bool:
        """True when the parent's known content says ``path`` does not exist."""
        head, _, name = path.rpartition("/")
        with self._lock:
            names = self._listings.get(head or "/")
            return names is not None and name not in names

    def is_missing(self, path: str) -> bool:
        with self._lock:
            return path in self._missing

    def put_missing(self, path: str) -> None:
        with self._lock:
            self._entries.pop(path, None)
            self._hints.pop(path, None)
            self._missing[path] = True

    def hint(self, path: str) -> Hint | None:
        with self._lock:
            return self._hints.get(path)

    def put_hint(self, path: str, hint: Hint) -> None:
        self.put_hints([path], hint)

    def put_hints(self, paths, hint: Hint) -> None:
        paths = list(paths)
        with self._lock:
            for path in paths:
                self._hints[path] = hint
            self._seen(paths)

    def forget(self, path: str) -> None:
        """Drop everything known about one path, and its parent's known content."""
        with self._lock:
            for cache in (self._entries, self._missing, self._hints):
                cache.pop(path, None)
            self._listings.pop(path.rpartition("/")[0] or "/", None)

    def forget_tree(self, path: str) -> None:
        """Drop a path, everything below it, and its parent's known content."""
        with self._lock:
            caches = (self._entries, self._missing, self._hints, self._listings, self._made)
            for cache in caches:
                for key in [k for k in list(cache.keys()) if k == path or is_below(k, path)]:
                    cache.pop(key, None)
            self._listings.pop(path.rpartition("/")[0] or "/", None)


class DeferredAttrs:
    """Files a listing showed but did not HEAD yet (mode and owner live in user
    metadata, which listings lack). The first lookup of one starts the HEADs of the next
    ones in listing order, and a reader that goes on in that order (``ls -l``) keeps them
    running ahead of it, so it pays as it goes at the pool's full rate; ``ls -f`` or
    ``find -name`` of 100,000 names pays nothing.

    At most ``limit`` names are kept: past it, the directories listed longest ago are
    forgotten (a lookup there then costs its own HEAD), so ``find`` over a bucket of
    millions of objects does not keep them all."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._lock = threading.RLock()  # a HEAD may be done as soon as it is started
        self._objects: dict[str, ObjectInfo] = {}
        self._order: dict[str, list[str]] = {}
        self._pos: dict[str, int] = {}
        self._cursor: dict[str, int] = {}  # where the next batch of a directory starts
        self._running: dict[str, Future] = {}
        self._ahead: Counter[str] = Counter()  # HEADs running, by directory

    def reset(self, directory: str) -> None:
        """A new listing of ``directory`` replaces what the last one deferred."""
        with self._lock:
            for child in self._order.pop(directory, []):
                self._objects.pop(child, None)
                self._pos.pop(child, None)
            self._cursor.pop(directory, None)

    def add(self, directory: str, items: list[tuple[str, ObjectInfo]]) -> None:
        with self._lock:
            order = self._order.setdefault(directory, [])
            for child, obj in items:
                self._pos[child] = len(order)
                order.append(child)
                self._objects[child] = obj
            excess = len(self._objects) - self.limit
            victims = []
            for listed, names in self._order.items():  # listed longest ago first
                if excess <= 0:
                    break
                if listed != directory:  # one huge directory is kept whole
                    victims.append(listed)
                    excess -= len(names)
            for listed in victims:
                self.reset(listed)

    def start(self, child: str, count: int, submit: Submit) -> Future | None:
        """The HEAD of ``child`` (None if it is neither deferred nor running): the one
        running, or one started now with those of the ``count - 1`` deferred names after
        it. Fewer than half a batch of the directory's HEADs running ahead of a lookup
        starts the next batch."""
        directory = child.rpartition("/")[0] or "/"
        with self._lock:
            future = self._running.get(child)
            if future is None:
                if child not in self._objects:
                    return None
                # (its HEAD may be done, and gone from _running, before _launch returns)
                return self._launch(directory, self._pos[child], count, submit)
            if self._ahead[directory] < count // 2 and directory in self._cursor:
                self._launch(directory, self._cursor[directory], count, submit)
            return future

    def _launch(self, directory: str, start: int, count: int, submit: Submit) -> Future | None:
        """Start up to ``count`` HEADs from ``start`` on; the first one's future."""
        order = self._order.get(directory, [])
        pos, launched, first = start, 0, None
        while pos < len(order) and launched < count:
            child = order[pos]
            pos += 1
            obj = self._objects.pop(child, None)
            if obj is None:
                continue  # handed out before
            future = submit(child, obj)
            first = first or future
            self._running[child] = future
            self._ahead[directory] += 1
            launched += 1
            future.add_done_callback(lambda _, c=child, d=directory: self._done(c, d))
        self._cursor[directory] = pos
        return first

    def _done(self, child: str, directory: str) -> None:
        with self._lock:
            self._running.pop(child, None)
            self._ahead[directory] -= 1
