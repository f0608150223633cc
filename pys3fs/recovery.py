"""After a crash: finish what the journal says an earlier mount left undone.

Runs at mount time, before the filesystem serves anything. A closed file whose upload
had not finished becomes a pending file again: its path answers from the cache file
at once and its upload is queued (resuming the multipart upload when its parts are
still on S3 and still match the bytes). A file that was being written when the daemon
died was never closed, so it is not uploaded: its multipart upload is aborted, so that
no orphaned parts stay behind on S3, and its bytes are set aside in ``failed/``.
A directory move the daemon died in is finished.
"""

from __future__ import annotations

import logging
import stat
from concurrent.futures import ThreadPoolExecutor

from .attrs import Entry
from .dirqueue import is_dir_record, remake_dir
from .handles import FileTable, OpenFile, md5_range
from .journal import Journal, Record, is_move_record
from .paths import KeyMap
from .s3client import is_not_found

log = logging.getLogger("pys3fs.recovery")


def recover(table: FileTable, journal: Journal, keys: KeyMap, records: list[Record]) -> None:
    for record in records:
        try:
            if is_dir_record(record):
                remake_dir(table, record)
            elif is_move_record(record):
                finish_move(table, record)
            elif record.closed:
                _requeue(table, keys, record)
            else:
                _drop_unclosed(table, journal, record)
        except Exception as exc:  # never block the mount: the record stays for next time
            log.error("cannot recover %s from the journal yet: %s", record.key, exc)


def finish_move(table: FileTable, record: Record) -> None:
    """A directory move the daemon died in: whatever is still below the old prefix is
    copied (again: a copy is idempotent) below the new one, then deleted. The move had
    not returned, so its caller was told nothing; finishing it is what it asked for."""
    backend = table.backend
    old, new = record.key, record.attrs["to"]
    objects = backend.all_objects(old)
    log.info(
        "finishing the move of %s to %s (%d objects), left by an earlier mount",
        old,
        new,
        len(objects),
    )

    def copy(obj) -> None:
        backend.copy(obj.key, new + obj.key[len(old) :], obj.size)

    with ThreadPoolExecutor(max(1, table.settings.threads)) as pool:
        list(pool.map(copy, objects))
    backend.delete_many([o.key for o in objects])
    table.journal.remove(record.name)


def _requeue(table: FileTable, keys: KeyMap, record: Record) -> None:
    cf = table.data.adopt(record.name, record.key, record.size, record.base_etag)
    if cf is None:
        log.error("journaled data of %s is missing from the cache; cannot upload it", record.key)
        table.journal.remove(record.name)
        return
    attrs = dict(record.attrs)
    attrs.setdefault("mode", stat.S_IFREG | 0o644)
    entry = Entry(**attrs, size=record.size, etag=record.base_etag)
    inside = record.key.startswith(keys.prefix) and record.key != keys.prefix
    path = keys.path(record.key) if inside else None
    of = OpenFile(table, path, record.key, entry, record.exists_remote)
    of.dirty = of.journaled = of.recovered = True
    if record.upload_id:
        _resume(table, of, record)
    log.info("uploading %s, left pending by an earlier mount", record.key)
    table.adopt(of)


def _resume(table: FileTable, of: OpenFile, record: Record) -> None:
    """Reuse the parts of the interrupted multipart upload that hold the same bytes."""
    backend = table.backend
    parts = None
    if record.part_size == of.writer.part_size:
        parts = backend.list_parts(record.key, record.upload_id)
    if parts is None:
        _abort(table, record)
        return
    size, ps = record.size, record.part_size
    keep = {}
    for number, (length, etag) in parts.items():
        start = (number - 1) * ps
        end = min(size, start + ps)
        if length == end - start and etag == f'"{md5_range(of.cf.fd, start, end).hexdigest()}"':
            keep[number] = (start, end, etag)
    of.writer.resume(record.upload_id, keep)
    log.info("resuming upload of %s: %d parts already on S3", record.key, len(keep))


def _drop_unclosed(table: FileTable, journal: Journal, record: Record) -> None:
    if record.upload_id:
        _abort(table, record)
        log.info("aborted multipart upload %s of %s (never closed)", record.upload_id, record.key)
    kept = table.data.set_aside(record.name, record.key)
    if kept:
        log.warning("%s was being written when pys3fs stopped; bytes kept in %s", record.key, kept)
    journal.remove(record.name)


def _abort(table: FileTable, record: Record) -> None:
    """Abort an upload that will not be completed; one already gone is fine."""
    try:
        table.backend.abort_multipart(record.key, record.upload_id)
    except Exception as exc:
        if not is_not_found(exc):
            raise


def journal_names(records: list[Record]) -> frozenset[str]:
    """Cache files the journal still needs: the data cache must not clean them up."""
    return frozenset(r.name for r in records)
