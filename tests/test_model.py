"""Model-based test: random sequences of POSIX calls on a pys3fs mount and on a local
directory side by side must give the same results, the same errno and the same contents.

Hypothesis's stateful testing draws the sequences (and shrinks a failing one to a short
reproduction). Mounting costs a second, so the test mounts once and every example works in
a fresh directory of that mount, removed again (through the mount) when the example ends.

Where pys3fs intentionally differs from POSIX the call is left out or the result is
normalized (see the README, "What works"):
- hard links are not supported (ENOTSUP): ``link`` is left out;
- ``st_nlink`` of directories is always 2, ``st_ino``/``st_dev``/``st_blocks`` and directory
  ``st_size`` are the filesystem's own: none of them is compared;
- atime is not updated on reads, and mtime/ctime of ordinary calls come from two clocks:
  times are compared only right after ``utime`` set them;
- rename is a copy then a delete, not atomic: one thread here, so only the end result
  (which is POSIX's) is compared;
- a handle whose file was unlinked or renamed over while open is only closed (hard_remove:
  pys3fs cannot keep serving bytes S3 no longer has); handles of renamed files, and of
  files in renamed directories, go on being used;
- FIFOs and special files are left out (tested in test_files.py); xattrs too.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import random
import shutil
import stat
from dataclasses import dataclass
from functools import partial

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pys3fs.stats import INVALIDATE_XATTR

# Mount modes the model runs against: each is extra pys3fs command-line arguments.
MODES = [(), ("writeback",)]

EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "30"))
STEPS = int(os.environ.get("MODEL_STEPS", "30"))
# Shrinking a failure replays examples against the mount for minutes: off by default (the
# report lists the failing example's calls); MODEL_SHRINK=1 turns it on.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("MODEL_SHRINK"):
    PHASES.append(Phase.shrink)

# Few names, so that calls meet existing files and directories (and each other) often.
NAMES = ["a", "b"]
PATHS = NAMES + [f"{x}/{y}" for x in NAMES for y in NAMES]

paths = st.sampled_from(PATHS)
modes = st.sampled_from([0o600, 0o640, 0o644, 0o700, 0o755])
small = st.binary(max_size=64)
big = st.builds(
    lambda seed, size: random.Random(seed).randbytes(size),
    st.integers(0, 1000),
    st.sampled_from([4096, 65536 + 3, 200_000]),
)
payloads = st.one_of(small, small, big)
offsets = st.sampled_from([0, 1, 10, 4095, 4096, 65536, 70_000, 250_000])
open_flags = st.sampled_from(
    [
        os.O_RDONLY,
        os.O_RDWR,
        os.O_RDWR | os.O_CREAT,
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        os.O_RDWR | os.O_APPEND,
    ]
)
times_ns = st.tuples(st.integers(946_684_800, 4_102_444_800), st.integers(0, 999_999_999)).map(
    lambda t: t[0] * 1_000_000_000 + t[1]
)


def options_of(mode: tuple[str, ...]) -> list[str]:
    """``("-o", "a,b", "c")`` -> ``["a", "b", "c"]``: the mounter takes ``-o`` values."""
    opts, args = [], iter(mode)
    for arg in args:
        opts.extend((next(args) if arg == "-o" else arg).split(","))
    return opts


def outcome(call, root: str):
    """What a call on one side gave: ("ok", value) or ("error", errno name)."""
    try:
        return "ok", compact(call(root))
    except OSError as exc:
        return "error", errno.errorcode.get(exc.errno, exc.errno)


def compact(value):
    """Long byte strings as (length, head, digest, tail): compared as exactly, but a failure
    message stays readable."""
    if isinstance(value, bytes) and len(value) > 48:
        return len(value), value[:16], hashlib.sha256(value).hexdigest()[:16], value[-16:]
    if isinstance(value, tuple):
        return tuple(compact(v) for v in value)
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items()}
    return value


def kind_of(st_mode: int) -> str:
    if stat.S_ISLNK(st_mode):
        return "link"
    return "dir" if stat.S_ISDIR(st_mode) else "file" if stat.S_ISREG(st_mode) else "other"


def tree(root: str) -> dict[str, tuple]:
    """Every entry below ``root``: type, permissions and, for files, size and bytes."""
    found = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            st_ = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISREG(st_.st_mode):
                with open(path, "rb") as f:
                    found[rel] = ("file", stat.S_IMODE(st_.st_mode), st_.st_size, f.read())
            elif stat.S_ISLNK(st_.st_mode):
                found[rel] = ("link", st_.st_size, os.readlink(path))
            else:
                found[rel] = (kind_of(st_.st_mode), stat.S_IMODE(st_.st_mode))
    return found


# -- the calls: each takes the root of one side, so both sides run the very same code --


def create(path, data, mode, flags):
    def call(root):
        fd = os.open(os.path.join(root, path), flags, mode)
        try:
            return os.write(fd, data)
        finally:
            os.close(fd)

    return call


def write_at(path, offset, data):
    def call(root):
        fd = os.open(os.path.join(root, path), os.O_WRONLY)
        try:
            return os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    return call


def read_all(path):
    def call(root):
        with open(os.path.join(root, path), "rb") as f:
            return f.read()

    return call


def pread(path, offset, size):
    def call(root):
        fd = os.open(os.path.join(root, path), os.O_RDONLY)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    return call


def rdwr(path, offset, data):
    """Write then read back through one O_RDWR handle (before the upload at close)."""

    def call(root):
        fd = os.open(os.path.join(root, path), os.O_RDWR)
        try:
            os.pwrite(fd, data, offset)
            return os.pread(fd, len(data) + 10, max(0, offset - 5)), os.fstat(fd).st_size
        finally:
            os.close(fd)

    return call


def stat_of(path):
    def call(root):
        st_ = os.stat(os.path.join(root, path))
        size = st_.st_size if stat.S_ISREG(st_.st_mode) else None
        return kind_of(st_.st_mode), stat.S_IMODE(st_.st_mode), size

    return call


def on_path(func, *paths, after=None):
    """Apply ``func`` to the paths joined to a root; ``after`` turns the root into a result."""

    def call(root):
        func(*(os.path.join(root, p) for p in paths))
        return after(root) if after else None

    return call


_examples = itertools.count()


@dataclass
class Handle:
    """One open file: the same open(2) on each side (local fd, mount fd)."""

    path: str
    flags: int
    fds: tuple[int, int]
    orphan: bool = False  # unlinked or renamed over while open: only closed


def machine_for(mount_root: str, local_root: str):
    class PosixModel(RuleBasedStateMachine):
        """One example: a fresh directory on each side, the same calls on both."""

        def __init__(self) -> None:
            super().__init__()
            name = f"ex{next(_examples)}"
            self.sides = (os.path.join(local_root, name), os.path.join(mount_root, name))
            for side in self.sides:
                os.mkdir(side)
            self.calls = 0
            self.handles: list[Handle] = []

        @initialize(dir_first=st.booleans(), fill=st.booleans(), data=payloads)
        def start(self, dir_first, fill, data):
            """Start from a directory and a file, so that the first calls find something."""
            first, second = ("a", "b") if dir_first else ("b", "a")
            flags = os.O_CREAT | os.O_WRONLY
            self.both(f"mkdir {first}", on_path(os.mkdir, first))
            self.both(f"create {second}", create(second, data, 0o644, flags))
            if fill:
                self.both(
                    f"create {first}/{second}", create(f"{first}/{second}", b"x", 0o600, flags)
                )

        def both_fds(self, what: str, handle: Handle, call):
            """Run ``call(fd)`` on the handle's descriptor on each side."""
            local, mounted = (outcome(call, fd) for fd in handle.fds)
            self.calls += 1
            assert mounted == local, (
                f"{what} on a handle of {handle.path} ({handle.flags:o}): "
                f"pys3fs gave {mounted!r}, a local fs {local!r}"
            )
            return local

        def pick(self, index: int) -> Handle:
            live = [h for h in self.handles if not h.orphan]
            return live[index % len(live)]

        def has_live_handle(self) -> bool:
            return any(not h.orphan for h in self.handles)

        def moved(self, src: str, dst: str) -> None:
            """A rename succeeded: handles follow their file, a replaced file's go stale."""
            for h in self.handles:
                if h.path == dst or h.path.startswith(dst + "/"):
                    h.orphan = True
            for h in self.handles:
                if h.path == src or h.path.startswith(src + "/"):
                    h.path = dst + h.path[len(src) :]

        def removed(self, path: str) -> None:
            for h in self.handles:
                if h.path == path:
                    h.orphan = True

        def both(self, what: str, call):
            local, mounted = (outcome(call, side) for side in self.sides)
            self.calls += 1
            assert mounted == local, f"{what}: pys3fs gave {mounted!r}, a local fs {local!r}"
            return local

        # -- files ---------------------------------------------------------------------
        @rule(path=paths, data=payloads, mode=modes)
        def create_truncating(self, path, data, mode):
            flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC
            self.both(f"create {path}", create(path, data, mode, flags))

        @rule(path=paths, data=small, mode=modes)
        def create_exclusive(self, path, data, mode):
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
            self.both(f"create O_EXCL {path}", create(path, data, mode, flags))

        @rule(path=paths, data=payloads)
        def append(self, path, data):
            flags = os.O_CREAT | os.O_WRONLY | os.O_APPEND
            self.both(f"append {path}", create(path, data, 0o644, flags))

        @rule(path=paths, offset=offsets, data=payloads)
        def write_at_offset(self, path, offset, data):
            self.both(f"pwrite {path} at {offset}", write_at(path, offset, data))

        @rule(path=paths, offset=offsets, data=small)
        def write_and_read_back(self, path, offset, data):
            self.both(f"O_RDWR {path} at {offset}", rdwr(path, offset, data))

        @rule(path=paths, length=offsets)
        def truncate(self, path, length):
            self.both(
                f"truncate {path} {length}",
                on_path(lambda p: os.truncate(p, length), path, after=stat_of(path)),
            )

        @rule(path=paths)
        def read(self, path):
            self.both(f"read {path}", read_all(path))

        @rule(path=paths, offset=offsets, size=st.sampled_from([1, 100, 5000, 100_000]))
        def read_at_offset(self, path, offset, size):
            self.both(f"pread {path} {size} at {offset}", pread(path, offset, size))

        @rule(path=paths)
        def unlink(self, path):
            if self.both(f"unlink {path}", on_path(os.unlink, path))[0] == "ok":
                self.removed(path)

        # -- open handles ----------------------------------------------------------------
        @precondition(lambda self: len(self.handles) < 4)
        @rule(path=paths, flags=open_flags)
        def open_handle(self, path, flags):
            opened = []
            for side in self.sides:
                try:
                    opened.append(("ok", os.open(os.path.join(side, path), flags, 0o644)))
                except OSError as exc:
                    opened.append(("error", errno.errorcode.get(exc.errno, exc.errno)))
            self.calls += 1
            (local_kind, local_fd), (mount_kind, mount_fd) = opened
            if local_kind == mount_kind == "ok":
                self.handles.append(Handle(path, flags, (local_fd, mount_fd)))
                return
            for kind, fd in opened:
                if kind == "ok":
                    os.close(fd)
            assert local_kind == mount_kind == "error" and local_fd == mount_fd, (
                f"open {path} {flags:o}: pys3fs gave {opened[1]!r}, a local fs {opened[0]!r}"
            )

        @precondition(lambda self: self.has_live_handle())
        @rule(index=st.integers(0, 3), offset=offsets, data=payloads)
        def handle_write(self, index, offset, data):
            h = self.pick(index)
            self.both_fds(
                f"pwrite {len(data)} at {offset}", h, lambda fd: os.pwrite(fd, data, offset)
            )

        @precondition(lambda self: self.has_live_handle())
        @rule(index=st.integers(0, 3), offset=offsets, size=st.sampled_from([1, 5000, 300_000]))
        def handle_read(self, index, offset, size):
            h = self.pick(index)
            self.both_fds(f"pread {size} at {offset}", h, lambda fd: os.pread(fd, size, offset))

        @precondition(lambda self: self.has_live_handle())
        @rule(index=st.integers(0, 3), length=offsets)
        def handle_truncate(self, index, length):
            h = self.pick(index)
            self.both_fds(f"ftruncate {length}", h, lambda fd: os.ftruncate(fd, length))

        @precondition(lambda self: self.has_live_handle())
        @rule(index=st.integers(0, 3))
        def handle_fsync_and_fstat(self, index):
            h = self.pick(index)

            def call(fd):
                os.fsync(fd)
                st_ = os.fstat(fd)
                size = st_.st_size if stat.S_ISREG(st_.st_mode) else None
                return kind_of(st_.st_mode), stat.S_IMODE(st_.st_mode), size

            self.both_fds("fsync, fstat", h, call)

        @precondition(lambda self: self.handles)
        @rule(index=st.integers(0, 3))
        def close_handle(self, index):
            h = self.handles.pop(index % len(self.handles))
            for fd in h.fds:
                os.close(fd)

        # -- names -----------------------------------------------------------------------
        @rule(src=paths, dst=paths)
        def rename(self, src, dst):
            result = self.both(f"rename {src} {dst}", on_path(os.rename, src, dst))
            if result[0] == "ok" and src != dst:
                self.moved(src, dst)

        @rule(path=paths, mode=modes)
        def mkdir(self, path, mode):
            self.both(f"mkdir {path}", on_path(lambda p: os.mkdir(p, mode), path))

        @rule(path=paths)
        def rmdir(self, path):
            self.both(f"rmdir {path}", on_path(os.rmdir, path))

        @rule(path=st.sampled_from(["", *NAMES]))
        def listdir(self, path):
            self.both(f"listdir {path}", lambda root: sorted(os.listdir(os.path.join(root, path))))

        # -- symlinks (relative targets: the same inside each side) -----------------------
        @rule(path=paths, to=st.sampled_from(["a", "b", "a/b", "b/a", "nowhere", "."]))
        def symlink(self, path, to):
            self.both(f"symlink {path} -> {to}", on_path(partial(os.symlink, to), path))

        @rule(path=paths)
        def readlink(self, path):
            self.both(f"readlink {path}", lambda root: os.readlink(os.path.join(root, path)))

        @rule(path=paths)
        def lstat(self, path):
            def call(root):
                st_ = os.lstat(os.path.join(root, path))
                size = st_.st_size if not stat.S_ISDIR(st_.st_mode) else None
                return kind_of(st_.st_mode), stat.S_IMODE(st_.st_mode), size

            self.both(f"lstat {path}", call)

        # -- attributes ------------------------------------------------------------------
        @rule(path=paths)
        def stat(self, path):
            self.both(f"stat {path}", stat_of(path))

        @rule(path=paths, mode=modes)
        def chmod(self, path, mode):
            self.both(
                f"chmod {path} {mode:o}",
                on_path(lambda p: os.chmod(p, mode), path, after=stat_of(path)),
            )

        @rule(path=paths, atime=times_ns, mtime=times_ns)
        def utime(self, path, atime, mtime):
            def times(root):
                st_ = os.stat(os.path.join(root, path))
                return st_.st_mtime_ns

            self.both(
                f"utime {path}",
                on_path(lambda p: os.utime(p, ns=(atime, mtime)), path, after=times),
            )

        @precondition(lambda self: self.calls > 0)
        @rule()
        def compare_trees(self):
            self.both("the whole tree", tree)

        @rule()
        def forget_cached_state(self):
            """pys3fs drops what it cached of the example's tree: the calls that follow
            see what S3 holds, not what the daemon remembers."""
            os.setxattr(self.sides[1], INVALIDATE_XATTR, b"1")

        def teardown(self) -> None:
            while self.handles:
                self.close_handle(0)
            try:
                self.forget_cached_state()
                self.both("the whole tree at the end", tree)
            finally:
                for side in self.sides:
                    shutil.rmtree(side)
            assert not os.path.exists(self.sides[1])

    return PosixModel


@pytest.mark.parametrize("mode", MODES, ids=lambda m: " ".join(m) or "default")
def test_posix_calls_match_a_local_filesystem(mode, bucket, mounter, tmp_path, s3):
    mnt = mounter(bucket, *options_of(mode))
    local = tmp_path / "local"
    local.mkdir()
    machine = machine_for(mnt.mountpoint, str(local))
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
            phases=PHASES,
        ),
    )
    # every example removed its directory through the mount: nothing is left in S3
    assert os.listdir(mnt.mountpoint) == []
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
