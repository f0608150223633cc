"""The upload journal: what this host holds that S3 does not have yet, kept across crashes.

One small JSON record per cache file, in ``CACHE/BUCKET/journal/``, written before the
call that depends on it returns (with fsync where a power cut must not lose it):

- when a multipart upload starts, its id is recorded, so that after a crash the next
  mount can resume it (or abort it: no orphaned parts are left behind on S3);
- while a directory is moved (a copy of every object below it, then their deletion),
  the old and new prefixes are recorded, so the next mount finishes a move the daemon
  died in, instead of leaving part of the tree in both places;
- when a file is closed with data not yet in S3 (``-o writeback``, or an upload that
  failed), the record says which object it becomes, with which attributes, on which
  version of the object it was based; the next mount uploads it before anything else.

The record is removed once the object is complete in S3.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field

log = logging.getLogger("pys3fs.journal")

PAGE = 4096  # a write within one page of the page cache is whole or not there at all


@dataclass
class Record:
    """One cache file whose bytes are (or are becoming) an object that S3 lacks."""

    name: str  # the cache file in CACHE/BUCKET/data/
    key: str
    closed: bool = False  # the writer closed it: the bytes must reach S3
    size: int = 0
    attrs: dict = field(default_factory=dict)  # Entry fields: mode, uid, gid, times...
    exists_remote: bool = False  # an older version exists: upload with If-Match
    base_etag: str | None = None
    upload_id: str | None = None  # a multipart upload in progress
    part_size: int = 0
    since: float = field(default_factory=time.time)


MOVE_PREFIX = "move-"  # records of directory moves under way (no cache file)


def move_record(old_prefix: str, new_prefix: str) -> Record:
    """The record of a directory move while it runs: if the daemon dies before the move
    returns, the next mount finishes it (see recovery)."""
    name = MOVE_PREFIX + uuid.uuid4().hex
    return Record(name=name, key=old_prefix, closed=True, attrs={"to": new_prefix})


def is_move_record(record: Record) -> bool:
    return record.name.startswith(MOVE_PREFIX)


class Journal:
    """The records of one bucket's cache directory."""

    def __init__(self, bucket_dir: str) -> None:
        self.dir = journal_dir(bucket_dir)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        # records written with fsync, or left by an earlier mount: never rewritten in
        # place, so that a power cut cannot tear one
        self._synced: set[str] = set()

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name + ".json")

    def write(self, record: Record, sync: bool = True) -> None:
        """Write the record; with ``sync`` durably (fsync of the file and of the
        directory). Without it the record is in the page cache, which outlives a killed
        daemon but not a power cut: what write-back ``close`` needs, as POSIX close
        promises no durability (fsync does). A first record is written in place (a torn
        one can only come from a crash before the call returned). A record that
        replaces another goes through a rename, so a crash leaves the old or the new
        one; except that a record never synced is replaced without sync by one write
        of at most a page at its start (padded with blanks, which JSON ignores): a
        killed daemon leaves the old or the new one just the same, and no new file is
        made (creating files is what costs most in a cache directory on ext4)."""
        path = self._path(record.name)
        data = json.dumps(asdict(record)).encode()
        try:
            self._write_file(path, data, os.O_EXCL, sync)
        except FileExistsError:
            if sync or record.name in self._synced or not self._overwrite(path, data):
                self._write_file(path + ".tmp", data, os.O_TRUNC, sync)
                os.replace(path + ".tmp", path)
        if sync:
            self._synced.add(record.name)
            self._sync_dir()

    @staticmethod
    def _overwrite(path: str, data: bytes) -> bool:
        """Replace the record at ``path`` by one ``pwrite`` of a page at most; False
        when it does not fit (or the record is gone)."""
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            return False
        try:
            padded = data.ljust(os.fstat(fd).st_size, b" ")
            if len(padded) > PAGE:
                return False
            os.pwrite(fd, padded, 0)
            return True
        finally:
            os.close(fd)

    @staticmethod
    def _write_file(path: str, data: bytes, mode: int, sync: bool) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o600)
        try:
            os.write(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, name: str, sync: bool = True) -> None:
        self._synced.discard(name)
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            return
        if sync:
            self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load(self) -> list[Record]:
        """Every readable record; a damaged one is reported and set aside, not deleted."""
        records = load_records(self.dir, quarantine=True)
        self._synced.update(r.name for r in records)  # maybe synced by that mount
        return records


def journal_dir(bucket_dir: str) -> str:
    return os.path.join(bucket_dir, "journal")


def load_records(directory: str, quarantine: bool = False) -> list[Record]:
    records = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    for entry in names:
        if not entry.endswith(".json"):
            continue
        path = os.path.join(directory, entry)
        try:
            with open(path) as f:
                records.append(Record(**json.load(f)))
        except (OSError, ValueError, TypeError) as exc:
            log.error("journal record %s is unreadable: %s", path, exc)
            if quarantine:
                os.replace(path, path + ".bad")
    records.sort(key=lambda r: r.since)
    return records
