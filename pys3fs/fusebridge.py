"""fusepy's FUSE class, made cheaper per call where ``ls -l`` and ``find`` spend their time.

Every FUSE request costs one ctypes callback; ``ls -l`` of 10,000 names costs 10,000 of
them, and their fixed cost, not S3, is what a warm listing waits for. The changes:

- libfuse's worker threads keep their Python thread state between callbacks. ctypes
  otherwise creates one at the start of every callback and destroys it at the end,
  which maps and unmaps its frame stack each time: a third of the CPU of a lookup.
- ``getattr`` fills the kernel's stat buffer directly from the known fields.
- ``readdir`` receives the kernel's directory offset and numbers each name, so a
  listing is handed out page by page (see :mod:`pys3fs.dirstream`).
- ``write`` lends the operation libfuse's buffer (a memoryview) instead of a copy.
- ``read`` is libfuse's ``read_buf``: the answer names the cache file's descriptor and
  offset, and libfuse moves the bytes to the kernel itself (spliced, with
  ``splice_write``), without the GIL. fusepy's ``read`` made a bytes object of every
  128 KiB and copied it twice more; on a cold 1 GiB read those copies were a large
  part of the daemon's CPU. fusepy's table of operations ends before ``read_buf``, so
  the mount is made with a longer one (libfuse 2.9's full ``struct fuse_operations``).
- ``fallocate``, which fusepy does not offer either, is passed on from the same table.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading

import fuse
from fuse import FUSE, c_off_t, c_stat, fuse_file_info

log = logging.getLogger("pys3fs.fusebridge")

_ensure = ctypes.pythonapi.PyGILState_Ensure
_ensure.restype = ctypes.c_int
_current = ctypes.pythonapi.PyThreadState_Get
_current.restype = ctypes.c_void_p
_clear = ctypes.pythonapi.PyThreadState_Clear
_clear.argtypes = [ctypes.c_void_p]
_delete = ctypes.pythonapi.PyThreadState_Delete
_delete.argtypes = [ctypes.c_void_p]

NS = 1_000_000_000

FUSE_BUF_IS_FD = 1 << 1  # libfuse's enum fuse_buf_flags
FUSE_BUF_FD_SEEK = 1 << 2

_libc = ctypes.CDLL(None)
_libc.calloc.restype = ctypes.c_void_p
_libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]


class fuse_buf(ctypes.Structure):  # noqa: N801 (libfuse's name)
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("flags", ctypes.c_int),
        ("mem", ctypes.c_void_p),
        ("fd", ctypes.c_int),
        ("pos", c_off_t),
    ]


class fuse_bufvec(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("count", ctypes.c_size_t),
        ("idx", ctypes.c_size_t),
        ("off", ctypes.c_size_t),
        ("buf", fuse_buf * 1),
    ]


class fuse_operations_29(ctypes.Structure):  # noqa: N801
    """fusepy's table plus the members libfuse 2.9 has after ``ioctl``; of these
    ``read_buf`` and ``fallocate`` are filled in. (fusepy walks ``_fields_``, so the
    list is whole here.)"""

    _fields_ = [
        *fuse.fuse_operations._fields_,
        ("poll", ctypes.c_void_p),
        ("write_buf", ctypes.c_void_p),
        (
            "read_buf",
            ctypes.CFUNCTYPE(
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.POINTER(ctypes.POINTER(fuse_bufvec)),
                ctypes.c_size_t,
                c_off_t,
                ctypes.POINTER(fuse_file_info),
            ),
        ),
        ("flock", ctypes.c_void_p),
        (
            "fallocate",
            ctypes.CFUNCTYPE(
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_int,
                c_off_t,
                c_off_t,
                ctypes.POINTER(fuse_file_info),
            ),
        ),
    ]


class ThreadStates:
    """Keeps one Python thread state per libfuse worker thread alive across callbacks.

    One extra ``PyGILState_Ensure`` makes the state outlive the callback. libfuse ends
    a worker when more than 10 are idle; the state it leaves is freed once the thread
    is gone from /proc (checked when more states are kept than threads may run)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._kept: dict[int, int] = {}  # native thread id -> PyThreadState*

    def keep(self) -> None:
        """Called with the GIL held, at the start of every callback."""
        if getattr(self._local, "kept", False):
            return
        _ensure()
        self._local.kept = True
        tid = threading.get_native_id()
        with self._lock:
            old = self._kept.get(tid)
            if old is not None:  # the id of a thread that ended was given to this one
                self._free(old)
            self._kept[tid] = _current()
            if len(self._kept) > 32:
                self._free_ended()

    def _free_ended(self) -> None:
        for tid in [t for t in self._kept if not _alive(t)]:
            self._free(self._kept.pop(tid))

    @staticmethod
    def _free(state: int) -> None:
        _clear(state)
        _delete(state)


def _alive(tid: int) -> bool:
    """Whether thread ``tid`` of this process still exists, asked by name: a listing of
    /proc/self/task stops short when a thread ends while it is read, and freeing the
    state of a live thread that it missed brought the daemon down."""
    return os.path.exists(f"/proc/self/task/{tid}")


_states = ThreadStates()


def fill_stat(st: c_stat, attrs: dict) -> None:
    """The fields :meth:`S3Operations.getattr` returns, times in nanoseconds."""
    st.st_mode = attrs["st_mode"]
    st.st_nlink = attrs["st_nlink"]
    st.st_uid = attrs["st_uid"]
    st.st_gid = attrs["st_gid"]
    st.st_size = attrs["st_size"]
    st.st_blocks = attrs.get("st_blocks", 0)
    for name in ("st_atime", "st_mtime", "st_ctime"):
        spec = getattr(st, name + "spec")
        spec.tv_sec, spec.tv_nsec = divmod(attrs.get(name, 0), NS)


class FastFUSE(FUSE):
    """fusepy's FUSE with cheaper callbacks (see the module's docstring)."""

    def __init__(self, operations, mountpoint, **kwargs) -> None:
        # fusepy builds its table from this module global: the longer table, with read_buf
        fuse.fuse_operations = fuse_operations_29
        super().__init__(operations, mountpoint, **kwargs)

    def read_buf(self, path, bufp, size, offset, fip):
        """The reply to a read names the cache file's bytes; libfuse frees the vector."""
        fd, length = self.operations(
            "read_buf", self._decode_optional_path(path), size, offset, fip.contents.fh
        )
        address = _libc.calloc(1, ctypes.sizeof(fuse_bufvec))
        if not address:
            return -errno.ENOMEM
        vec = fuse_bufvec.from_address(address)
        vec.count = 1
        if length:
            buf = vec.buf[0]
            buf.size, buf.flags, buf.fd, buf.pos = (
                length,
                FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK,
                fd,
                offset,
            )
        bufp[0] = ctypes.cast(address, ctypes.POINTER(fuse_bufvec))
        return 0

    def fallocate(self, path, mode, offset, length, fip):
        fh = fip.contents.fh if fip else None
        return self.operations(
            "fallocate", self._decode_optional_path(path), mode, offset, length, fh
        )

    @staticmethod
    def _wrapper(func, *args, **kwargs):
        try:
            _states.keep()
        except Exception:  # only an optimisation; escaping, it would skip fusepy's
            # error handling, and a read_buf answered 0 without a vector crashes libfuse
            log.exception("cannot keep the thread state of a FUSE worker")
        return FUSE._wrapper(func, *args, **kwargs)

    def write(self, path, buf, size, offset, fip):
        """The written bytes are lent to the operation, not copied into a bytes object:
        it stores them in the cache file before it returns (libfuse reuses the buffer
        after), and a 128 KiB copy per call held the GIL for a sixth of a big write."""
        data = memoryview(b"")
        if size:
            data = memoryview((ctypes.c_char * size).from_address(ctypes.addressof(buf.contents)))
        return self.operations(
            "write", self._decode_optional_path(path), data.cast("B"), offset, fip.contents.fh
        )

    def fgetattr(self, path, buf, fip):
        fh = fip.contents.fh if fip else None
        attrs = self.operations("getattr", self._decode_optional_path(path), fh)
        ctypes.memset(buf, 0, ctypes.sizeof(c_stat))
        fill_stat(buf.contents, attrs)
        return 0

    def readdir(self, path, buf, filler, offset, fip):
        entries = self.operations(
            "readdir", self._decode_optional_path(path), fip.contents.fh, offset
        )
        for name, next_offset in entries:
            if filler(buf, name.encode(self.encoding), None, next_offset) != 0:
                break
        return 0
