"""One bucket shared with s3fs-fuse users: what pys3fs writes, s3fs-fuse (Debian's
``s3fs``, mounted on the same bucket) shows the same, and the other way round: content,
modes, owners, times, symlinks, directories and user xattrs (both with ``use_xattr``)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import force_unmount

S3FS = "/usr/bin/s3fs"


@pytest.fixture
def s3fs_mounter(s3_server, tmp_path):
    """Factory: mount the bucket with s3fs-fuse; unmounted afterwards, even on failure."""
    if not os.path.exists(S3FS):
        pytest.fail("s3fs-fuse is missing: scripts/setup.sh installs it (apt package s3fs)")
    made: list[str] = []
    passwd = tmp_path / "passwd-s3fs"
    passwd.write_text(f"{s3_server.access_key}:{s3_server.secret_key}\n")
    passwd.chmod(0o600)

    def mount(bucket: str) -> str:
        mp = str(tmp_path / f"s3fs{len(made)}")
        os.makedirs(mp)
        made.append(mp)
        opts = (
            f"url={s3_server.url},use_path_request_style,passwd_file={passwd},use_xattr,"
            f"use_cache={tmp_path / 's3fs-cache'},stat_cache_expire=1"
        )
        subprocess.run([S3FS, bucket, mp, "-o", opts], check=True, timeout=60)
        return mp

    yield mount
    for mp in made:
        force_unmount(mp)


def test_what_pys3fs_writes_s3fs_fuse_shows(mounter, s3fs_mounter, bucket):
    mnt = mounter(bucket, "use_xattr")
    Path(mnt.path("d")).mkdir(mode=0o750)
    Path(mnt.path("d", "f")).write_bytes(b"from pys3fs")
    os.chmod(mnt.path("d", "f"), 0o640)
    os.chown(mnt.path("d", "f"), 1234, 5678)
    os.utime(mnt.path("d", "f"), (1_600_000_000, 1_600_000_001))
    os.setxattr(mnt.path("d", "f"), "user.colour", b"blue")
    os.symlink("d/f", mnt.path("link"))
    mnt.unmount()

    other = s3fs_mounter(bucket)
    st = os.stat(os.path.join(other, "d", "f"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert int(st.st_mtime) == 1_600_000_001
    assert Path(other, "d", "f").read_bytes() == b"from pys3fs"
    assert os.getxattr(os.path.join(other, "d", "f"), "user.colour") == b"blue"
    assert stat.S_IMODE(os.stat(os.path.join(other, "d")).st_mode) == 0o750
    assert os.readlink(os.path.join(other, "link")) == "d/f"


def test_what_s3fs_fuse_writes_pys3fs_shows(mounter, s3fs_mounter, bucket):
    other = s3fs_mounter(bucket)
    Path(other, "d").mkdir(mode=0o700)
    Path(other, "d", "f").write_bytes(b"from s3fs-fuse")
    os.chmod(os.path.join(other, "d", "f"), 0o604)
    os.chown(os.path.join(other, "d", "f"), 4321, 8765)
    os.utime(os.path.join(other, "d", "f"), (1_500_000_000, 1_500_000_002))
    os.setxattr(os.path.join(other, "d", "f"), "user.shape", b"round")
    os.symlink("d/f", os.path.join(other, "link"))
    force_unmount(other)  # s3fs-fuse has uploaded everything once unmounted

    mnt = mounter(bucket, "use_xattr")
    st = os.stat(mnt.path("d", "f"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o604, 4321, 8765)
    assert int(st.st_mtime) == 1_500_000_002
    assert Path(mnt.path("d", "f")).read_bytes() == b"from s3fs-fuse"
    assert os.getxattr(mnt.path("d", "f"), "user.shape") == b"round"
    assert stat.S_IMODE(os.stat(mnt.path("d")).st_mode) == 0o700
    assert os.readlink(mnt.path("link")) == "d/f"
    # and a change pys3fs makes keeps what s3fs-fuse stored
    os.chmod(mnt.path("d", "f"), 0o600)
    mnt.unmount()
    again = s3fs_mounter(bucket)
    assert stat.S_IMODE(os.stat(os.path.join(again, "d", "f")).st_mode) == 0o600
    assert os.getxattr(os.path.join(again, "d", "f"), "user.shape") == b"round"
