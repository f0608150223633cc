"""Mounting from Python: a context manager for other projects' tests and scripts.

It runs the real daemon (``python -m pys3fs ... -f``) in a child process, returns
once the mount is live, and on exit unmounts (which uploads anything pending) and
waits for the daemon to finish.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from .daemon import spawn, unmount

OptionValues = Mapping[str, str | int | float | bool | None] | Iterable[str] | None


@dataclass
class Mount:
    """A live mount: where it is and the daemon serving it."""

    mountpoint: str
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def path(self, *parts: str) -> str:
        """Absolute path of a file inside the mount."""
        return os.path.join(self.mountpoint, *parts)

    def unmount(self, timeout: float = 120.0) -> int:
        """Unmount, wait for the daemon to upload what is pending and exit."""
        if self.process.poll() is None:
            unmount(self.mountpoint)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def format_options(options: OptionValues) -> list[str]:
    """``{"url": "...", "ro": True}`` or ``["url=...", "ro"]`` to ``-o`` arguments."""
    if not options:
        return []
    if isinstance(options, Mapping):
        items = []
        for name, value in options.items():
            if value is True or value is None:
                items.append(name)
            elif value is not False:
                items.append(f"{name}={value}")
    else:
        items = list(options)
    return ["-o", ",".join(items)] if items else []


@contextmanager
def mount(
    source: str,
    mountpoint: str,
    options: OptionValues = None,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    debug: bool = False,
) -> Iterator[Mount]:
    """Mount ``BUCKET[:/PREFIX]`` on ``mountpoint`` for the duration of a ``with`` block.

    ``options`` are the same as ``-o`` on the command line. Raises
    :class:`pys3fs.daemon.StartError` with the daemon's own message when the mount
    cannot be made.
    """
    argv = [source, mountpoint, *format_options(options)]
    if debug:
        argv.append("-d")
    child_env = dict(os.environ)
    if env:
        child_env.update(env)
    proc = spawn(argv, env=child_env, timeout=timeout, detached=not debug)
    mounted = Mount(os.path.abspath(mountpoint), proc)
    try:
        yield mounted
    finally:
        mounted.unmount()
