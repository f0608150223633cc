"""Two pys3fs daemons on one bucket stand for two hosts."""

from __future__ import annotations

import errno
import glob
import os
import time

import pytest


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def hosts(bucket, mounter, tmp_path):
    a = mounter(bucket, "stat_cache_expire=1", f"logfile={tmp_path / 'a.log'}")
    b = mounter(bucket, "stat_cache_expire=1", f"logfile={tmp_path / 'b.log'}")
    return a, b


def test_close_to_open_a_closed_file_is_seen_by_the_next_open(hosts):
    a, b = hosts
    write(a.path("shared.txt"), b"version 1")
    assert read(b.path("shared.txt")) == b"version 1"  # B caches it
    write(a.path("shared.txt"), b"version 2, longer")
    assert read(b.path("shared.txt")) == b"version 2, longer"
    write(a.path("shared.txt"), b"version 3, longer")  # same size as version 2
    assert read(b.path("shared.txt")) == b"version 3, longer"


def test_creations_and_deletions_show_up_within_the_cache_expiry(hosts):
    a, b = hosts
    assert "new.txt" not in os.listdir(b.mountpoint)
    write(a.path("new.txt"), b"x")
    assert "new.txt" in os.listdir(b.mountpoint)
    assert read(b.path("new.txt")) == b"x"
    os.unlink(a.path("new.txt"))
    time.sleep(1.5)  # stat_cache_expire=1
    assert "new.txt" not in os.listdir(b.mountpoint)
    with pytest.raises(FileNotFoundError):
        os.stat(b.path("new.txt"))


def test_a_conflicting_upload_is_refused_and_its_data_kept(hosts, s3, bucket, tmp_path):
    a, b = hosts
    write(a.path("doc.txt"), b"original")
    fd = os.open(b.path("doc.txt"), os.O_RDWR)  # B opens the version it knows
    try:
        os.write(fd, b"B's edit")
        write(a.path("doc.txt"), b"A's newer version")  # A saves first
        with pytest.raises(OSError) as exc:
            os.fsync(fd)
        assert exc.value.errno == errno.EIO
    finally:
        with pytest.raises(OSError):
            os.close(fd)
    assert s3.get_object(Bucket=bucket, Key="doc.txt")["Body"].read() == b"A's newer version"
    kept = [
        p
        for p in glob.glob(str(tmp_path / "cache1" / "**" / "failed" / "*"), recursive=True)
        if not p.endswith(".json")
    ]
    assert kept and any(read(p).startswith(b"B's edit") for p in kept)
    log = (tmp_path / "b.log").read_text()
    assert "conflict" in log and "failed" in log


def test_a_file_created_on_both_hosts_is_not_silently_overwritten(hosts, s3, bucket):
    a, b = hosts
    fd = os.open(b.path("race.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"from B")
        write(a.path("race.txt"), b"from A")
    finally:
        with pytest.raises(OSError) as exc:
            os.close(fd)
    assert exc.value.errno == errno.EIO
    assert s3.get_object(Bucket=bucket, Key="race.txt")["Body"].read() == b"from A"


def test_setfattr_invalidate_drops_cached_state_at_once(bucket, mounter, s3):
    # attr_timeout=0: the kernel keeps no attributes of its own (default: 1 s)
    mnt = mounter(bucket, "stat_cache_expire=3600", "consistency=relaxed", "attr_timeout=0")
    s3.put_object(Bucket=bucket, Key="d/f.txt", Body=b"old")
    assert read(mnt.path("d/f.txt")) == b"old"
    s3.put_object(Bucket=bucket, Key="d/f.txt", Body=b"new!")
    assert read(mnt.path("d/f.txt")) == b"old"  # relaxed: the cache is trusted
    os.setxattr(mnt.path("d"), "user.pys3fs.invalidate", b"1")
    assert os.stat(mnt.path("d/f.txt")).st_size == 4
    assert read(mnt.path("d/f.txt")) == b"new!"


def test_stat_cache_expire_zero_leaves_no_kernel_cache_either(bucket, mounter):
    # The kernel keeps names and attributes for entry_timeout/attr_timeout (1 s in
    # libfuse): pys3fs sets both from stat_cache_expire, so 0 means every stat asks.
    a = mounter(bucket, "stat_cache_expire=0")
    b = mounter(bucket)
    write(b.path("f.txt"), b"1")
    assert os.stat(a.path("f.txt")).st_size == 1
    write(b.path("f.txt"), b"12345")
    assert os.stat(a.path("f.txt")).st_size == 5  # at once, not after a second
    os.unlink(b.path("f.txt"))
    assert not os.path.exists(a.path("f.txt"))
