"""File attributes: what one path looks like to ``stat``.

An :class:`Entry` is built from an object's HEAD (metadata in any dialect), a listing
(size and Last-Modified only) or a local change. :class:`AttrPolicy` then applies the
mount-wide defaults and the ``uid=``/``gid=``/``umask=`` overrides when the kernel asks.
"""

from __future__ import annotations

import hashlib
import stat
import time
from dataclasses import dataclass, replace

from . import metadata
from .s3client import ObjectInfo

DIR_CONTENT_TYPES = {"application/x-directory", "httpd/unix-directory"}


def now_ns() -> int:
    return time.time_ns()


@dataclass
class Entry:
    """The attributes of one path as stored (before mount-wide overrides)."""

    mode: int  # full st_mode with type bits
    size: int = 0
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int = 0
    ctime_ns: int = 0
    atime_ns: int = 0
    etag: str | None = None
    content_type: str | None = None
    marker: bool = False  # a directory with a ``dir/`` marker object
    symlink_target: str | None = None
    # user metadata pys3fs does not write itself (another tool's tags, s3fs-fuse's
    # xattr): JSON, written back with every rewrite so that a chmod loses none of it
    extra: str | None = None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def copy(self, **changes) -> Entry:
        return replace(self, **changes)


def kind_bits(mode: int) -> int:
    return stat.S_IFMT(mode)


def entry_from_object(info: ObjectInfo, as_dir: bool = False) -> Entry:
    """Decode an object's metadata, filling what it lacks from the object itself."""
    meta = metadata.decode(info.metadata, info.content_type)
    is_dir = as_dir or info.key.endswith("/") or meta.is_dir_hint
    if meta.mode is not None and stat.S_IFMT(meta.mode):
        mode = meta.mode
        if is_dir and not stat.S_ISDIR(mode):
            mode = stat.S_IFDIR | stat.S_IMODE(mode)
    else:
        perms = stat.S_IMODE(meta.mode) if meta.mode is not None else None
        if is_dir:
            mode = stat.S_IFDIR | (0o755 if perms is None else perms)
        elif meta.symlink_target is not None or meta.is_symlink_hint:
            mode = stat.S_IFLNK | 0o777
        else:
            mode = stat.S_IFREG | (0o644 if perms is None else perms)
    mtime = meta.mtime_ns if meta.mtime_ns is not None else version_time(info)
    return Entry(
        mode=mode,
        size=0 if stat.S_ISDIR(mode) else info.size,
        uid=meta.uid,
        gid=meta.gid,
        mtime_ns=mtime,
        ctime_ns=meta.ctime_ns if meta.ctime_ns is not None else mtime,
        atime_ns=meta.atime_ns if meta.atime_ns is not None else mtime,
        etag=info.etag,
        content_type=info.content_type,
        marker=is_dir and info.key.endswith("/"),
        symlink_target=meta.symlink_target,
        extra=metadata.foreign(info.metadata, info.headers),
    )


def version_time(info: ObjectInfo) -> int:
    """mtime of an object whose metadata has none: its Last-Modified, which has whole
    seconds only. Two versions of one size written within one second would then look
    unchanged to the kernel, which keeps a file's page cache while size and mtime match
    (``auto_cache``), and a reopen would read the old bytes. A sub-second part derived
    from the ETag tells versions apart; the whole seconds stay Last-Modified's."""
    seconds = info.mtime_ns - info.mtime_ns % 1_000_000_000
    if not info.etag:
        return seconds
    digest = hashlib.md5(info.etag.encode(), usedforsecurity=False).digest()
    return seconds + int.from_bytes(digest[:4], "big") % 1_000_000_000


def implicit_dir(mtime_ns: int = 0) -> Entry:
    """A directory that exists only because keys share its prefix."""
    return Entry(mode=stat.S_IFDIR | 0o755, mtime_ns=mtime_ns, ctime_ns=mtime_ns, atime_ns=mtime_ns)


def encode_entry(entry: Entry, uid: int, gid: int, new_data: bool = False) -> dict[str, str]:
    """s3fs-fuse metadata for an entry (owner defaults to the mounting user), with the
    other user metadata the object had. ``new_data``: the bytes changed, so what
    describes the old ones (rclone's md5chksum) is dropped."""
    own = metadata.encode(
        entry.mode,
        entry.uid if entry.uid is not None else uid,
        entry.gid if entry.gid is not None else gid,
        entry.mtime_ns,
        entry.ctime_ns,
    )
    if not entry.extra:
        return own
    return metadata.with_foreign(own, entry.extra, new_data)


@dataclass(frozen=True)
class AttrPolicy:
    """Mount-wide defaults and overrides applied to every entry shown to the kernel."""

    uid: int
    gid: int
    uid_override: int | None = None
    gid_override: int | None = None
    umask: int | None = None
    root_mode: int = 0o755

    def owner(self, entry: Entry) -> tuple[int, int]:
        uid = self.uid_override if self.uid_override is not None else entry.uid
        gid = self.gid_override if self.gid_override is not None else entry.gid
        return (self.uid if uid is None else uid, self.gid if gid is None else gid)

    def stat(self, entry: Entry) -> dict:
        """The dict fusepy hands to the kernel for ``getattr``."""
        mode = entry.mode
        if self.umask is not None and not stat.S_ISLNK(mode):
            mode = stat.S_IFMT(mode) | (0o777 & ~self.umask)
        uid, gid = self.owner(entry)
        size = len(entry.symlink_target.encode()) if entry.symlink_target else entry.size
        return {
            "st_mode": mode,
            "st_nlink": 2 if stat.S_ISDIR(mode) else 1,
            "st_uid": uid,
            "st_gid": gid,
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_mtime": entry.mtime_ns,
            "st_ctime": entry.ctime_ns or entry.mtime_ns,
            "st_atime": entry.atime_ns or entry.mtime_ns,
        }
