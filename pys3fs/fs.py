"""The fusepy Operations class: a thin layer from POSIX calls to the namespace and files.

Every call passes through :meth:`S3Operations.__call__`, which turns any exception into
a ``FuseOSError`` with a real errno: fusepy takes the whole mount down on anything else.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat

from fuse import FuseOSError, Operations, fuse_get_context

from .attrs import AttrPolicy, now_ns
from .dirstream import OpenDirs
from .handles import FileTable, is_writable
from .namespace import Namespace
from .paths import KeyMap
from .s3client import errno_for
from .stats import INVALIDATE_XATTR, PENDING_XATTR, STATS_XATTR

log = logging.getLogger("pys3fs.fs")

FALLOC_FL_KEEP_SIZE = 1  # <linux/falloc.h>

READ_ONLY_OPS = {
    "getattr",
    "readdir",
    "open",
    "read",
    "read_buf",
    "readlink",
    "statfs",
    "flush",
    "release",
    "fsync",
    "fsyncdir",
    "opendir",
    "releasedir",
    "access",
    "init",
    "destroy",
    "getxattr",
    "setxattr",
    "listxattr",
}


class S3Operations(Operations):
    """POSIX operations on one mounted bucket prefix."""

    use_ns = True
    # with hard_remove, calls on a deleted but still open file come with path None
    flag_nullpath_ok = True

    def __init__(
        self,
        namespace: Namespace,
        files: FileTable,
        policy: AttrPolicy,
        keys: KeyMap,
        read_only: bool = False,
        strict_open: bool = True,
        on_ready=None,
        on_exit=None,
        use_xattr: bool = False,
    ) -> None:
        self.ns = namespace
        self.files = files
        self.policy = policy
        self.keys = keys
        self.read_only = read_only
        self.strict_open = strict_open
        self.use_xattr = use_xattr  # user.* attributes kept in S3 (s3fs-fuse's format)
        self.on_ready = on_ready
        self.on_exit = on_exit
        self.open_dirs = OpenDirs()

    def __call__(self, op: str, *args):
        if log.isEnabledFor(logging.DEBUG):  # -d: one line per call, paths only, never data
            log.debug("%s %s", op, " ".join(a for a in args[:2] if isinstance(a, str)))
        if self.read_only and op not in READ_ONLY_OPS:
            raise FuseOSError(errno.EROFS)
        try:
            return getattr(self, op)(*args)
        except FuseOSError:
            raise
        except OSError as exc:
            if exc.errno:
                raise FuseOSError(exc.errno) from exc
            log.exception("%s%r failed", op, args[:1])
            raise FuseOSError(errno.EIO) from exc
        except Exception as exc:
            code = errno_for(exc)
            if code == errno.EIO:
                log.error("%s %s failed: %s", op, args[:1], exc, exc_info=log.isEnabledFor(10))
            raise FuseOSError(code) from exc

    # -- lifecycle -----------------------------------------------------------------------
    def init(self, path):
        if self.on_ready:
            self.on_ready()

    def destroy(self, path):
        if self.ns.dirs is not None:
            self.ns.dirs.flush_all()
        self.files.flush_all()
        if self.on_exit:
            self.on_exit()

    # -- attributes ----------------------------------------------------------------------
    def getattr(self, path, fh=None):
        if path is None:  # fstat of an open file that was unlinked
            of, _ = self.files.get(fh)
            return self.policy.stat(of.entry.copy(size=of.size()))
        return self.policy.stat(self.ns.lookup(path))

    def chmod(self, path, mode):
        entry = self.ns.lookup(path)
        mode = stat.S_IFMT(entry.mode) | stat.S_IMODE(mode)
        self.ns.set_attrs(path, mode=mode, ctime_ns=now_ns())

    def chown(self, path, uid, gid):
        changes = {"ctime_ns": now_ns()}
        if uid != -1:
            changes["uid"] = uid
        if gid != -1:
            changes["gid"] = gid
        self.ns.set_attrs(path, **changes)

    def utimens(self, path, times=None):
        if times is None:
            t = now_ns()
            times = (t, t)
        self.ns.set_attrs(path, atime_ns=times[0], mtime_ns=times[1], ctime_ns=now_ns())

    # -- extended attributes: pys3fs's control attributes; user.* ones with use_xattr ----
    def getxattr(self, path, name, position=0):
        if path == "/" and name == STATS_XATTR:
            return self.files.backend.stats.to_json()
        if path == "/" and name == PENDING_XATTR:
            dirs = self.ns.dirs.pending() if self.ns.dirs is not None else []
            return json.dumps(self.files.pending() + dirs).encode()
        if not name.startswith("user."):
            # ACLs and security labels are not supported: `ls -l` asks for both on every
            # entry, and stops asking on a filesystem that says ENOTSUP once.
            raise FuseOSError(errno.ENOTSUP)
        value = self.ns.xattrs(path).get(name) if self.use_xattr else None
        if value is None:
            raise FuseOSError(errno.ENODATA)
        return value

    def listxattr(self, path):
        # the control attributes are read by name, never copied by cp -a
        return list(self.ns.xattrs(path)) if self.use_xattr else []

    def setxattr(self, path, name, value, options, position=0):
        if name == INVALIDATE_XATTR:
            self.ns.lookup(path)
            self.ns.invalidate(path)
            return
        if not (self.use_xattr and name.startswith("user.")):
            raise FuseOSError(errno.ENOTSUP)
        self.ns.set_xattr(path, name, bytes(value), options)

    def removexattr(self, path, name):
        if not (self.use_xattr and name.startswith("user.")):
            raise FuseOSError(errno.ENOTSUP)
        self.ns.set_xattr(path, name, None)

    def statfs(self, path):
        blocks = 1 << 40
        return {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": blocks,
            "f_bfree": blocks,
            "f_bavail": blocks,
            "f_files": 1 << 30,
            "f_ffree": 1 << 30,
            "f_favail": 1 << 30,
            "f_namemax": 255,
        }

    # -- directories ---------------------------------------------------------------------
    def opendir(self, path):
        return self.open_dirs.open(lambda: self.ns.scan(path))

    def readdir(self, path, fh, offset=0):
        """Names from ``offset`` on (see :class:`~pys3fs.fusebridge.FastFUSE`), a listing
        page at a time."""
        stream = self.open_dirs.get(fh)
        if stream is None:
            raise FuseOSError(errno.EBADF)
        return stream.entries_from(offset)

    def releasedir(self, path, fh):
        self.open_dirs.release(fh)

    def fsyncdir(self, path, datasync, fh):
        self.ns.sync(path, is_dir=True)

    def mkdir(self, path, mode):
        uid, gid, _ = fuse_get_context()
        self.ns.mkdir(path, mode, uid, gid)

    def rmdir(self, path):
        self.ns.rmdir(path)

    def rename(self, old, new):
        self.ns.rename(old, new)

    def unlink(self, path):
        self.ns.unlink(path)

    def symlink(self, target, source):
        uid, gid, _ = fuse_get_context()
        body = source.encode("utf-8", "surrogateescape")
        self.ns.put_special(target, stat.S_IFLNK | 0o777, uid, gid, body)

    def readlink(self, path):
        return self.ns.readlink(path)

    def mknod(self, path, mode, dev):
        uid, gid, _ = fuse_get_context()
        kind = stat.S_IFMT(mode)
        if kind in (stat.S_IFIFO, stat.S_IFSOCK):
            self.ns.put_special(path, mode, uid, gid)
        elif kind in (stat.S_IFREG, 0):
            fh = self.create(path, stat.S_IFREG | stat.S_IMODE(mode))
            self.release(path, fh)
        else:
            raise FuseOSError(errno.EPERM)

    def link(self, target, source):
        raise FuseOSError(errno.ENOTSUP)

    # -- files ---------------------------------------------------------------------------
    def create(self, path, mode, fi=None):
        uid, gid, _ = fuse_get_context()
        self.ns.check_new(path)
        self.ns.touch_parent(path)
        entry = self.ns.new_entry(stat.S_IFREG | stat.S_IMODE(mode), uid, gid)
        return self.files.open(path, self.keys.key(path), entry, os.O_RDWR, exists_remote=False)

    def open(self, path, flags):
        entry = self.ns.revalidate(path) if self.strict_open else self.ns.lookup(path)
        if entry.is_dir:
            raise FuseOSError(errno.EISDIR)
        if not stat.S_ISREG(entry.mode) and is_writable(flags):
            raise FuseOSError(errno.EPERM)
        return self.files.open(path, self.keys.key(path), entry, flags, exists_remote=True)

    def read(self, path, size, offset, fh):
        """fusepy's plain read, for a FUSE without ``read_buf`` (the mount itself calls
        :meth:`read_buf`)."""
        fd, length = self.read_buf(path, size, offset, fh)
        return os.pread(fd, length, offset)

    def read_buf(self, path, size, offset, fh):
        """Where the bytes of a read are, once they are in the cache file: (its
        descriptor, how many); libfuse copies them (:mod:`pys3fs.fusebridge`)."""
        of, _ = self.files.get(fh)
        return of.locate(offset, size)

    def write(self, path, data, offset, fh):
        of, flags = self.files.get(fh)
        return of.write(data, offset, bool(flags & os.O_APPEND))

    def truncate(self, path, length, fh=None):
        if fh is not None:
            of, _ = self.files.get(fh)
            of.truncate(length)
            return
        entry = self.ns.lookup(path)
        if entry.is_dir:
            raise FuseOSError(errno.EISDIR)
        fh = self.files.open(path, self.keys.key(path), entry, os.O_RDWR, exists_remote=True)
        try:
            of, _ = self.files.get(fh)
            of.truncate(length)
            if of.refs == 1:
                self.files.flush(fh)
        finally:
            self.files.release(fh)

    def fallocate(self, path, mode, offset, length, fh):
        """Space cannot be reserved in S3, and a file's unwritten bytes read as zeros
        anyway: plain fallocate only extends the size, as s3fs-fuse does, and with
        FALLOC_FL_KEEP_SIZE it does nothing. Punching or zeroing holes is EOPNOTSUPP."""
        if mode & ~FALLOC_FL_KEEP_SIZE:
            raise FuseOSError(errno.EOPNOTSUPP)
        if offset < 0 or length <= 0:
            raise FuseOSError(errno.EINVAL)
        of, _ = self.files.get(fh)
        if not mode and offset + length > of.size():
            of.truncate(offset + length)
        return 0

    def flush(self, path, fh):
        try:
            self.files.flush(fh)
        finally:
            self.ns.touch_parent(path)  # a queued marker waits while its files are written

    def fsync(self, path, datasync, fh):
        self.files.fsync(fh)
        if path is not None:
            self.ns.sync(path, is_dir=False)  # and the directories leading to it (as ext4)

    def release(self, path, fh):
        self.files.release(fh)
