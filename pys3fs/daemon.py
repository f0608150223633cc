"""Starting the FUSE daemon and knowing when its mount is live.

The daemon is always a fresh ``python -m pys3fs ... -f`` process rather than a fork:
boto3 clients and thread pools do not survive ``fork()``. It reports readiness by
writing one byte to an inherited pipe from the FUSE ``init`` callback, which libfuse
calls only after the kernel mount exists; until then its stderr goes to the parent so
early errors are shown to whoever ran ``pys3fs`` or ``mount``.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

READY_FD_ENV = "PYS3FS_READY_FD"
DETACHED_ENV = "PYS3FS_DETACHED"


class StartError(RuntimeError):
    """The daemon exited or hung before its mount was live; the message says why."""


def spawn(
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    detached: bool = True,
) -> subprocess.Popen:
    """Run ``pys3fs ARGV -f`` in a child and return it once the mount is live."""
    ready_r, ready_w = os.pipe()
    child_env = dict(os.environ if env is None else env)
    child_env[READY_FD_ENV] = str(ready_w)
    if detached:
        child_env[DETACHED_ENV] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pys3fs", *argv, "-f"],
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(ready_w,),
        start_new_session=True,
    )
    os.close(ready_w)
    try:
        early = _wait_ready(proc, ready_r, timeout)
    finally:
        os.close(ready_r)
    if detached:
        proc.stderr.close()
    else:  # the daemon keeps logging to stderr (library debug): pass it on to ours
        threading.Thread(target=_forward_stderr, args=(proc.stderr, early), daemon=True).start()
    return proc


def _forward_stderr(stream, early: bytes) -> None:
    """Copy the daemon's stderr to this process's stderr until the daemon exits."""
    with stream:
        data = early
        while True:
            if data:
                try:
                    sys.stderr.write(data.decode("utf-8", "replace"))
                    sys.stderr.flush()
                except (OSError, ValueError):  # our stderr is gone: keep draining
                    pass
            data = stream.read1(65536)
            if not data:
                return


def _wait_ready(proc: subprocess.Popen, ready_r: int, timeout: float) -> bytes:
    """Collect the child's stderr until it says ready (return it), exits, or time is up."""
    assert proc.stderr is not None
    err_fd = proc.stderr.fileno()
    errors = bytearray()
    deadline = time.monotonic() + timeout
    open_fds = [ready_r, err_fd]
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            proc.wait()
            raise StartError(_last_line(errors) or f"mount not live after {timeout:.0f} s")
        readable, _, _ = select.select(open_fds, [], [], left)
        if ready_r in readable:
            if os.read(ready_r, 1):
                return bytes(errors)
            open_fds.remove(ready_r)
        if err_fd in readable:
            chunk = os.read(err_fd, 65536)
            if chunk:
                errors += chunk
            else:
                open_fds.remove(err_fd)
    proc.wait()
    raise StartError(_last_line(errors) or f"daemon exited with status {proc.returncode}")


def _last_line(data: bytes) -> str:
    """The most telling line of the child's stderr (its last non-empty one)."""
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    fuse_lines = [ln for ln in lines if ln.startswith("fuse:")]
    if fuse_lines:
        return "mount failed: " + fuse_lines[0].removeprefix("fuse:").strip()
    return lines[-1].removeprefix("pys3fs:").strip() if lines else ""


def notify_ready() -> None:
    """Tell the parent the mount is live, then stop writing to its stderr pipe."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"1")
        os.close(int(fd))
    except OSError:
        pass
    if os.environ.get(DETACHED_ENV):
        devnull = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(devnull, target)
        os.close(devnull)


def set_read_ahead(device: int, kb: int) -> None:
    """Let the kernel read ahead ``kb`` KiB in the files of the mount on ``device`` (its
    sysfs knob: OSError unless root). The kernel reads ahead 128 KiB in a FUSE file,
    which libfuse 2 cannot raise: a cold sequential read then keeps one or two 128 KiB
    reads in flight. 512 KiB made a cold 1 GiB read about 7% faster on Ceph RGW here;
    2 MiB and more were slower (reads then arrive too far out of order)."""
    bdi = f"{os.major(device)}:{os.minor(device)}"
    with open(f"/sys/class/bdi/{bdi}/read_ahead_kb", "w") as knob:
        knob.write(str(kb))


def unmount(mountpoint: str) -> None:
    """``fusermount -u``, falling back to ``umount`` and a lazy unmount."""
    for cmd in (
        ["fusermount", "-u", mountpoint],
        ["umount", mountpoint],
        ["umount", "-l", mountpoint],
    ):
        try:
            if subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0:
                return
        except (OSError, subprocess.TimeoutExpired):
            continue
