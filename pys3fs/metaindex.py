"""A persistent index of decoded object metadata, in the cache directory.

Listings carry size, ETag and Last-Modified but no user metadata, so without help
``ls -l`` costs one HEAD per entry. Any change of an object's metadata rewrites the
object (a new Last-Modified, usually a new ETag), so metadata decoded once stays
right for as long as a listing shows the same (ETag, Last-Modified): this index keeps
it across attribute-cache expiry and across mounts.

Last-Modified counts whole seconds on most servers, and a chmod by another tool keeps
the ETag: a rewrite in the second of the version this host decoded would look the
same. So the index learns only versions the server still described at least
:data:`SETTLE` later (:func:`settled`); any rewrite after that carries a later
Last-Modified, and the index can never serve stale modes or owners.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from datetime import datetime, timedelta

from .attrs import Entry

log = logging.getLogger("pys3fs.metaindex")

FIELDS = (
    "mode",
    "size",
    "uid",
    "gid",
    "mtime_ns",
    "ctime_ns",
    "atime_ns",
    "content_type",
    "marker",
    "symlink_target",
    "extra",
)
TABLE = "entries_v2"  # the columns above; older tables are dropped


# Whole seconds on both sides, plus one for a rewrite landing between the server reading
# the metadata and stamping its Date header
SETTLE = timedelta(seconds=2)


def settled(last_modified: datetime | None, answered: datetime | None) -> bool:
    """Whether metadata read in an answer dated ``answered`` (the server's clock, so
    hosts' clocks do not matter) may be kept for the version written at
    ``last_modified``: only if no later rewrite can carry the same Last-Modified."""
    if last_modified is None or answered is None:
        return False
    return answered - last_modified >= SETTLE


class MetaIndex:
    """(key, ETag, Last-Modified) -> Entry, in SQLite; every failure degrades to a miss."""

    def __init__(self, path: str | None) -> None:
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is None:
            return
        try:
            db = sqlite3.connect(path, check_same_thread=False, timeout=5, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")
            columns = ", ".join(f"{name}" for name in FIELDS)
            db.execute("DROP TABLE IF EXISTS entries")  # before "extra": lost metadata
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, etag TEXT, "
                f"modified INTEGER, {columns})"
            )
            self._db = db
        except sqlite3.Error as exc:
            log.warning("metadata index %s unusable, running without it: %s", path, exc)

    def get(self, key: str, etag: str | None, modified_ns: int) -> Entry | None:
        if self._db is None or etag is None:
            return None
        with self._lock:
            try:
                row = self._db.execute(
                    f"SELECT {', '.join(FIELDS)} FROM {TABLE} "
                    "WHERE key = ? AND etag = ? AND modified = ?",
                    (key, etag, modified_ns),
                ).fetchone()
            except sqlite3.Error:
                return None
        if row is None:
            return None
        values = dict(zip(FIELDS, row, strict=True))
        values["marker"] = bool(values["marker"])
        return Entry(**values, etag=etag)

    def get_many(self, items: list[tuple[str, str | None, int, int]]) -> dict[str, Entry]:
        """Entries for one listing page at once: (key, ETag, Last-Modified, size) items in,
        key -> entry out for those the index knows with that ETag and Last-Modified."""
        if self._db is None:
            return {}
        wanted = {key: (etag, modified, size) for key, etag, modified, size in items if etag}
        rows = []
        keys = list(wanted)
        with self._lock:
            try:
                for start in range(0, len(keys), 500):  # SQLite's limit on parameters
                    chunk = keys[start : start + 500]
                    rows += self._db.execute(
                        f"SELECT key, etag, modified, {', '.join(FIELDS)} FROM {TABLE} "
                        f"WHERE key IN ({', '.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
            except sqlite3.Error:
                return {}
        found = {}
        for key, etag, modified, *values in rows:
            want_etag, want_modified, size = wanted[key]
            if etag == want_etag and modified == want_modified:
                entry = Entry(**dict(zip(FIELDS, values, strict=True)), etag=etag)
                entry.marker = bool(entry.marker)
                entry.size = size
                found[key] = entry
        return found

    def put_many(self, items: list[tuple[str, int, Entry]]) -> None:
        """Remember entries decoded from HEADs: (key, Last-Modified ns, entry)."""
        if self._db is None:
            return
        rows = []
        for key, modified_ns, entry in items:
            if entry.etag is None:
                continue
            # getattr, not dataclasses.asdict: that deep-copies every field (a listing of
            # 10,000 new files writes 10,000 entries)
            rows.append((key, entry.etag, modified_ns, *(getattr(entry, f) for f in FIELDS)))
        if not rows:
            return
        marks = ", ".join("?" * (3 + len(FIELDS)))
        with self._lock:
            try:
                self._db.executemany(f"INSERT OR REPLACE INTO {TABLE} VALUES ({marks})", rows)
            except sqlite3.Error as exc:
                log.debug("metadata index write failed: %s", exc)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
