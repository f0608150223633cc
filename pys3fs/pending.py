"""``pys3fs pending [MOUNTPOINT|CACHE_DIR]``: what is not in S3 yet, and how far along.

A live mount answers through a virtual extended attribute of its root (with the
progress of uploads in flight); a cache directory is read offline from its journal,
which is what the next mount will upload.
"""

from __future__ import annotations

import json
import os
import time

from .journal import is_move_record, journal_dir, load_records
from .stats import PENDING_XATTR


def is_cache_dir(path: str) -> bool:
    """A cache root (holding BUCKET/journal) or one bucket's directory in it."""
    if not os.path.isdir(path):
        return False
    if os.path.isdir(journal_dir(path)):
        return True
    return any(os.path.isdir(journal_dir(os.path.join(path, d))) for d in _subdirs(path))


def _subdirs(path: str) -> list[str]:
    try:
        return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    except OSError:
        return []


def live_rows(mountpoint: str) -> list[dict]:
    return json.loads(os.getxattr(mountpoint, PENDING_XATTR))


def journal_rows(cache_dir: str) -> list[dict]:
    """Closed files the journal holds (uploaded by the next mount) and multipart
    uploads of files that were never closed (aborted by the next mount)."""
    bucket_dirs = [cache_dir] if os.path.isdir(journal_dir(cache_dir)) else []
    bucket_dirs += [os.path.join(cache_dir, d) for d in _subdirs(cache_dir)]
    rows = []
    now = time.time()
    for bucket_dir in bucket_dirs:
        for record in load_records(journal_dir(bucket_dir)):
            if is_move_record(record):
                state = f"move to {record.attrs['to']} left unfinished: the next mount ends it"
            elif record.closed:
                state = f"waiting for upload ({_age(now - record.since)})"
            else:
                state = "never closed: upload will be aborted"
            rows.append(
                {
                    "key": f"{os.path.basename(bucket_dir)}/{record.key}",
                    "size": record.size,
                    "state": state,
                    "parts_done": 0,
                    "parts_total": 0,
                }
            )
    return rows


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_rows(rows: list[dict]) -> str:
    if not rows:
        return "nothing pending: everything is in S3"
    lines = [f"{len(rows)} file(s) not yet in S3:"]
    for row in rows:
        progress = ""
        if row.get("parts_total"):
            progress = f", {row['parts_done']}/{row['parts_total']} parts uploaded"
        lines.append(f"  {row['key']}  {row['size']} bytes  {row['state']}{progress}")
    return "\n".join(lines)
