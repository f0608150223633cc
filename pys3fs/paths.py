"""Mapping between filesystem paths and S3 keys.

A mount of ``bucket:/prefix`` shows the object ``prefix/a/b`` as ``/a/b``. Keys that
cannot be expressed as a path (``a//b``, ``a/./b``, over-long names, NUL bytes) are
hidden from listings instead of crashing the daemon.
"""

from __future__ import annotations

import codecs
import errno
from dataclasses import dataclass

from fuse import FuseOSError

NAME_MAX = 255
KEY_MAX = 1024


# The encoding fusepy decodes every path from the kernel with: UTF-8, except that a name
# that is not UTF-8 (S3 keys are) fails the call with EINVAL, like a strict-UTF-8 ext4,
# rather than with an exception that escapes the filesystem code.
PATH_ENCODING = "pys3fs-path"


def _path_codec(name: str) -> codecs.CodecInfo | None:
    if name.replace("-", "_") != "pys3fs_path":
        return None

    def decode(data, errors="strict"):
        try:
            return codecs.utf_8_decode(data, "strict", True)
        except UnicodeDecodeError:
            raise FuseOSError(errno.EINVAL) from None

    def encode(text, errors="strict"):
        return codecs.utf_8_encode(text, "surrogateescape")  # symlink targets read back

    return codecs.CodecInfo(encode, decode, name=PATH_ENCODING)


codecs.register(_path_codec)


def normalize_prefix(prefix: str) -> str:
    """Turn ``/a/b``, ``a/b/`` or ``""`` into the key prefix ``a/b/`` (or ``""``)."""
    parts = [p for p in prefix.split("/") if p]
    return "/".join(parts) + "/" if parts else ""


@dataclass(frozen=True)
class KeyMap:
    """Translate between absolute mount paths and keys under ``prefix``."""

    prefix: str = ""

    def key(self, path: str) -> str:
        """The object key of a file; raises ENAMETOOLONG where S3 could not store it."""
        rel = path.strip("/")
        key = self.prefix + rel
        check_length(rel, key)
        return key

    def dir_prefix(self, path: str) -> str:
        """The key prefix of a directory, ending in ``/`` (the root is the mount prefix)."""
        rel = path.strip("/")
        if not rel:
            return self.prefix
        key = self.prefix + rel + "/"
        check_length(rel, key)
        return key

    def path(self, key: str) -> str:
        """The path of a key under the prefix (the caller checked the prefix)."""
        return "/" + key[len(self.prefix) :].rstrip("/")


def check_length(rel: str, key: str) -> None:
    """Refuse names S3 or the kernel cannot hold, with the errno POSIX expects."""
    if len(key.encode("utf-8", "surrogateescape")) > KEY_MAX:
        raise FuseOSError(errno.ENAMETOOLONG)
    for part in rel.split("/"):
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise FuseOSError(errno.ENAMETOOLONG)


def valid_name(name: str) -> bool:
    """Whether one listing entry can be shown as a directory entry."""
    if name in ("", ".", ".."):
        return False
    if "/" in name or "\0" in name:
        return False
    return len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX


def parent(path: str) -> str:
    """Parent directory of an absolute path (``/`` for top-level entries)."""
    head = path.rstrip("/").rsplit("/", 1)[0]
    return head or "/"


def join(directory: str, name: str) -> str:
    """Absolute path of ``name`` inside ``directory``."""
    return directory.rstrip("/") + "/" + name


def is_below(path: str, directory: str) -> bool:
    """True when ``path`` lies strictly inside ``directory``."""
    return directory == "/" and path != "/" or path.startswith(directory.rstrip("/") + "/")
