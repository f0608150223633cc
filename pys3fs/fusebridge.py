"""fusepy's FUSE class, made cheaper per call where ``ls -l`` and ``find`` spend their time.

Every FUSE request costs one ctypes callback; ``ls -l`` of 10,000 names costs 10,000 of
them, and their fixed cost, not S3, is what a warm listing waits for. Three changes:

- libfuse's worker threads keep their Python thread state between callbacks. ctypes
  otherwise creates one at the start of every callback and destroys it at the end,
  which maps and unmaps its frame stack each time: a third of the CPU of a lookup.
- ``getattr`` fills the kernel's stat buffer directly from the known fields.
- ``readdir`` receives the kernel's directory offset and numbers each name, so a
  listing is handed out page by page (see :mod:`pys3fs.dirstream`).
"""

from __future__ import annotations

import ctypes
import os
import threading

from fuse import FUSE, c_stat

_ensure = ctypes.pythonapi.PyGILState_Ensure
_ensure.restype = ctypes.c_int
_current = ctypes.pythonapi.PyThreadState_Get
_current.restype = ctypes.c_void_p
_clear = ctypes.pythonapi.PyThreadState_Clear
_clear.argtypes = [ctypes.c_void_p]
_delete = ctypes.pythonapi.PyThreadState_Delete
_delete.argtypes = [ctypes.c_void_p]

NS = 1_000_000_000


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
        alive = {int(t) for t in os.listdir("/proc/self/task")}
        for tid in [t for t in self._kept if t not in alive]:
            self._free(self._kept.pop(tid))

    @staticmethod
    def _free(state: int) -> None:
        _clear(state)
        _delete(state)


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

    @staticmethod
    def _wrapper(func, *args, **kwargs):
        _states.keep()
        return FUSE._wrapper(func, *args, **kwargs)

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
