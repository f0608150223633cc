"""File behaviour through a real pys3fs mount, checked against what lands in S3.

Every test works through ordinary system calls (or cp/tar/find/dd) on the FUSE mount and
looks at the bucket with a plain boto3 client, as another tool sharing the bucket would.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import random
import re
import stat
import time

import botocore.exceptions
import pytest

MiB = 1024 * 1024
is_root = os.geteuid() == 0


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def s3_bytes(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def s3_meta(s3, bucket: str, key: str) -> dict[str, str]:
    return s3.head_object(Bucket=bucket, Key=key)["Metadata"]


def s3_exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise
    return True


def s3_keys(s3, bucket: str) -> list[str]:
    resp = s3.list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def s3fs_time(ns: int) -> str:
    sec, frac = divmod(ns, 1_000_000_000)
    return f"{sec}.{frac:09d}" if frac else str(sec)


# ------------------------------------------------------------------------------ reads


def test_read_whole_file_offsets_and_past_eof(mnt, s3, bucket):
    data = payload(300_000, seed=1)
    s3.put_object(Bucket=bucket, Key="r.bin", Body=data)
    path = mnt.path("r.bin")
    assert os.stat(path).st_size == len(data)
    assert read_file(path) == data
    rng = random.Random(2)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(60):
            offset = rng.randrange(len(data))
            length = rng.randrange(1, 70_000)
            assert os.pread(fd, length, offset) == data[offset : offset + length]
        assert os.pread(fd, 100, len(data) - 10) == data[-10:]
        assert os.pread(fd, 100, len(data)) == b""
        assert os.pread(fd, 100, len(data) + 5000) == b""
        os.lseek(fd, len(data) - 3, os.SEEK_SET)
        assert os.read(fd, 10) == data[-3:]
        assert os.read(fd, 10) == b""
    finally:
        os.close(fd)


def test_empty_object_reads_empty(mnt, s3, bucket):
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert os.stat(mnt.path("empty")).st_size == 0
    assert read_file(mnt.path("empty")) == b""


def test_large_object_sequential_and_random_reads(mnt, s3, bucket, run):
    data = payload(3 * MiB, seed=3)
    s3.put_object(Bucket=bucket, Key="big/three.bin", Body=data)
    path = mnt.path("big", "three.bin")
    chunks = []
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(100_000):
            chunks.append(chunk)
    assert b"".join(chunks) == data
    rng = random.Random(4)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(40):
            offset = rng.randrange(len(data))
            length = rng.choice([1, 4096, 131072, 300_000, 2 * MiB])
            assert os.pread(fd, length, offset) == data[offset : offset + length]
    finally:
        os.close(fd)
    dd = run("dd", f"if={path}", "bs=64k", "skip=20", "count=5", "status=none", text=False)
    assert dd.stdout == data[20 * 65536 : 25 * 65536]


# ------------------------------------------------------------------------------ writes


def test_create_and_write(mnt, s3, bucket):
    data = payload(123_457, seed=5)
    write_file(mnt.path("new.bin"), data)
    assert s3_bytes(s3, bucket, "new.bin") == data
    assert os.stat(mnt.path("new.bin")).st_size == len(data)
    assert read_file(mnt.path("new.bin")) == data
    assert "new.bin" in os.listdir(mnt.mountpoint)


def test_write_beyond_eof_leaves_zero_hole(mnt, s3, bucket):
    path = mnt.path("holey")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"head")
        os.pwrite(fd, b"tail", 200_000)
    finally:
        os.close(fd)
    expected = b"head" + bytes(200_000 - 4) + b"tail"
    assert os.stat(path).st_size == len(expected)
    assert read_file(path) == expected
    assert s3_bytes(s3, bucket, "holey") == expected


def test_overwrite_middle_of_existing_object_keeps_the_rest(mnt, s3, bucket, run):
    data = bytearray(payload(MiB, seed=6))
    s3.put_object(Bucket=bucket, Key="mid.bin", Body=bytes(data))
    path = mnt.path("mid.bin")
    patch = b"X" * 5000
    with open(path, "r+b") as f:
        f.seek(400_000)
        f.write(patch)
    data[400_000:405_000] = patch
    assert s3_bytes(s3, bucket, "mid.bin") == bytes(data)
    assert os.stat(path).st_size == MiB

    # dd conv=notrunc: the classic in-place patch of a block
    run("dd", "if=/dev/zero", f"of={path}", "bs=4096", "seek=10", "count=2", "conv=notrunc")
    data[40960:49152] = bytes(8192)
    assert s3_bytes(s3, bucket, "mid.bin") == bytes(data)
    assert read_file(path) == bytes(data)


def test_append_twice(mnt, s3, bucket):
    s3.put_object(Bucket=bucket, Key="log.txt", Body=b"base\n")
    path = mnt.path("log.txt")
    with open(path, "ab") as f:
        f.write(b"one\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)  # O_APPEND writes at the end wherever the offset is
        os.write(fd, b"two\n")
    finally:
        os.close(fd)
    assert read_file(path) == b"base\none\ntwo\n"
    assert s3_bytes(s3, bucket, "log.txt") == b"base\none\ntwo\n"


def test_o_trunc_empties_existing_object(mnt, s3, bucket):
    s3.put_object(Bucket=bucket, Key="t1", Body=b"old contents")
    s3.put_object(Bucket=bucket, Key="t2", Body=b"old contents, longer than the new")
    os.close(os.open(mnt.path("t1"), os.O_WRONLY | os.O_TRUNC))
    assert os.stat(mnt.path("t1")).st_size == 0
    assert s3_bytes(s3, bucket, "t1") == b""
    write_file(mnt.path("t2"), b"new")
    assert s3_bytes(s3, bucket, "t2") == b"new"
    assert read_file(mnt.path("t2")) == b"new"


def test_read_after_write_in_one_rdwr_handle(mnt, s3, bucket):
    s3.put_object(Bucket=bucket, Key="rw.bin", Body=b"0123456789")
    with open(mnt.path("rw.bin"), "r+b") as f:
        assert f.read(3) == b"012"
        f.write(b"abc")
        f.seek(0)
        assert f.read() == b"012abc6789"
        f.seek(0, os.SEEK_END)
        f.write(b"END")
        f.seek(8)
        assert f.read() == b"89END"
    assert s3_bytes(s3, bucket, "rw.bin") == b"012abc6789END"

    with open(mnt.path("fresh.bin"), "w+b") as f:
        f.write(b"hello world")
        f.seek(6)
        assert f.read() == b"world"
    assert s3_bytes(s3, bucket, "fresh.bin") == b"hello world"


def test_second_handle_sees_unclosed_writes(mnt, s3, bucket):
    path = mnt.path("shared.txt")
    wfd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(wfd, b"written by the first handle")
        assert os.stat(path).st_size == 27
        rfd = os.open(path, os.O_RDONLY)
        try:
            assert os.read(rfd, 100) == b"written by the first handle"
        finally:
            os.close(rfd)
        assert "shared.txt" in os.listdir(mnt.mountpoint)
        os.write(wfd, b"!")
    finally:
        os.close(wfd)
    assert s3_bytes(s3, bucket, "shared.txt") == b"written by the first handle!"


# --------------------------------------------------------------------------- truncate


def test_truncate_by_path_shrink_and_grow(mnt, s3, bucket):
    data = payload(10_000, seed=7)
    s3.put_object(Bucket=bucket, Key="tr.bin", Body=data)
    path = mnt.path("tr.bin")
    os.truncate(path, 4000)
    assert os.stat(path).st_size == 4000
    assert s3_bytes(s3, bucket, "tr.bin") == data[:4000]
    os.truncate(path, 6000)
    assert os.stat(path).st_size == 6000
    assert s3_bytes(s3, bucket, "tr.bin") == data[:4000] + bytes(2000)
    assert read_file(path) == data[:4000] + bytes(2000)
    os.truncate(path, 0)
    assert s3_bytes(s3, bucket, "tr.bin") == b""


def test_ftruncate_on_open_fd(mnt, s3, bucket):
    data = payload(50_000, seed=8)
    s3.put_object(Bucket=bucket, Key="ft.bin", Body=data)
    path = mnt.path("ft.bin")
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, 100)
        assert os.fstat(fd).st_size == 100
        assert os.pread(fd, 1000, 0) == data[:100]
        os.ftruncate(fd, 300)
        assert os.pread(fd, 1000, 0) == data[:100] + bytes(200)
    finally:
        os.close(fd)
    assert s3_bytes(s3, bucket, "ft.bin") == data[:100] + bytes(200)

    with open(mnt.path("ft2.bin"), "w+b") as f:
        f.write(b"abcdef")
        f.truncate(3)
    assert s3_bytes(s3, bucket, "ft2.bin") == b"abc"


def test_fallocate_extends_or_keeps_the_size_and_refuses_holes(mnt, s3, bucket, run):
    path = mnt.path("fa.bin")
    with open(path, "wb") as f:
        f.write(b"abc")
    run("fallocate", "-l", str(MiB), path)  # fallocate(2), mode 0: the size grows
    assert os.stat(path).st_size == MiB
    assert s3_bytes(s3, bucket, "fa.bin") == b"abc" + bytes(MiB - 3)
    run("fallocate", "-n", "-l", str(4 * MiB), path)  # FALLOC_FL_KEEP_SIZE: nothing to do
    run("fallocate", "-l", "1000", path)  # inside the file: nothing to do
    assert os.stat(path).st_size == MiB
    for hole in (["-p"], ["-z"], ["-c"]):  # punch, zero, collapse a range
        failed = run("fallocate", *hole, "-o", "0", "-l", "4096", path, check=False)
        assert failed.returncode != 0 and "supported" in failed.stderr  # EOPNOTSUPP
    assert read_file(path) == b"abc" + bytes(MiB - 3)
    with open(mnt.path("posix.bin"), "wb") as f:  # glibc's posix_fallocate, as databases use
        os.posix_fallocate(f.fileno(), 0, 2 * MiB)
        assert os.fstat(f.fileno()).st_size == 2 * MiB
    assert s3.head_object(Bucket=bucket, Key="posix.bin")["ContentLength"] == 2 * MiB


def test_locks_hold_between_processes_of_one_host(mnt):
    path = mnt.path("locked")
    with open(path, "wb") as f:
        f.write(b"x")
    first, second = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        fcntl.flock(first, fcntl.LOCK_EX)
        with pytest.raises(BlockingIOError):
            fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(first, fcntl.LOCK_UN)
        fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(first)
        os.close(second)


# ---------------------------------------------------------------------- durability


def test_fsync_uploads_before_close(mnt, s3, bucket):
    fd = os.open(mnt.path("synced"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"first part")
        os.fsync(fd)
        assert s3_bytes(s3, bucket, "synced") == b"first part"
        os.write(fd, b", second part")
        os.fdatasync(fd)
        assert s3_bytes(s3, bucket, "synced") == b"first part, second part"
    finally:
        os.close(fd)
    assert s3_bytes(s3, bucket, "synced") == b"first part, second part"


def test_close_returns_after_upload(mnt, s3, bucket):
    data = payload(2 * MiB, seed=9)
    fd = os.open(mnt.path("closed.bin"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data)
    os.close(fd)
    assert s3_bytes(s3, bucket, "closed.bin") == data


def test_multipart_upload(bucket, mounter, s3):
    mnt = mounter(bucket, "multipart_size=5")
    digest = hashlib.md5()
    with open(mnt.path("mp.bin"), "wb") as f:
        for i in range(12):
            chunk = payload(MiB, seed=100 + i)
            digest.update(chunk)
            f.write(chunk)
    body = s3_bytes(s3, bucket, "mp.bin")
    assert len(body) == 12 * MiB
    assert hashlib.md5(body).hexdigest() == digest.hexdigest()
    etag = s3.head_object(Bucket=bucket, Key="mp.bin")["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}-3"', etag), etag
    assert s3_meta(s3, bucket, "mp.bin")["mode"] == str(stat.S_IFREG | 0o644)
    assert os.stat(mnt.path("mp.bin")).st_size == 12 * MiB


# --------------------------------------------------------------------- cp, tar, find


def make_tree(root) -> None:
    os.makedirs(os.path.join(root, "sub", "deeper"))
    os.makedirs(os.path.join(root, "emptydir"))
    write_file(os.path.join(root, "a.txt"), b"alpha\n")
    write_file(os.path.join(root, "empty"), b"")
    write_file(os.path.join(root, "sub", "b.bin"), payload(200_000, seed=10))
    write_file(os.path.join(root, "sub", "deeper", "c.txt"), b"gamma\n" * 1000)
    write_file(os.path.join(root, "sub", "run.sh"), b"#!/bin/sh\necho hi\n")
    os.chmod(os.path.join(root, "sub", "run.sh"), 0o755)
    os.chmod(os.path.join(root, "a.txt"), 0o600)
    os.symlink("sub/b.bin", os.path.join(root, "link"))
    os.symlink("../a.txt", os.path.join(root, "sub", "uplink"))


def snapshot(root) -> dict:
    """Type, permissions, link target and bytes of every entry below root."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                found[rel] = ("file", stat.S_IMODE(st.st_mode), read_file(full))
    return found


def file_mtimes(root) -> dict:
    return {
        os.path.relpath(os.path.join(d, n), root): os.lstat(os.path.join(d, n)).st_mtime_ns
        for d, _, names in os.walk(root)
        for n in names
    }


def test_cp_file_in_and_out(mnt, s3, bucket, run, tmp_path):
    src = tmp_path / "src.bin"
    data = payload(700_000, seed=11)
    src.write_bytes(data)
    run("cp", str(src), mnt.path("copied.bin"))
    assert s3_bytes(s3, bucket, "copied.bin") == data
    run("cp", mnt.path("copied.bin"), str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data


def test_cp_a_tree_round_trip(mnt, s3, bucket, run, tmp_path):
    src = tmp_path / "tree"
    make_tree(src)
    run("cp", "-a", str(src), mnt.path("tree"))
    assert snapshot(mnt.path("tree")) == snapshot(src)
    assert file_mtimes(mnt.path("tree")) == file_mtimes(src)
    assert s3_bytes(s3, bucket, "tree/sub/b.bin") == payload(200_000, seed=10)
    assert s3_bytes(s3, bucket, "tree/link") == b"sub/b.bin"

    out = tmp_path / "out"
    run("cp", "-a", mnt.path("tree"), str(out))
    assert snapshot(out) == snapshot(src)
    assert file_mtimes(out) == file_mtimes(src)


def test_tar_tree_in_and_out(mnt, run, tmp_path):
    src = tmp_path / "tree"
    make_tree(src)
    archive = tmp_path / "in.tar"
    run("tar", "cf", str(archive), "-C", str(src), ".")
    os.mkdir(mnt.path("untarred"))
    run("tar", "xf", str(archive), "-C", mnt.path("untarred"))
    assert snapshot(mnt.path("untarred")) == snapshot(src)

    back = tmp_path / "back.tar"
    run("tar", "cf", str(back), "-C", mnt.path("untarred"), ".")
    out = tmp_path / "out"
    out.mkdir()
    run("tar", "xf", str(back), "-C", str(out))
    assert snapshot(out) == snapshot(src)


def test_find_lists_everything(mnt, run, tmp_path):
    src = tmp_path / "tree"
    make_tree(src)
    run("cp", "-a", str(src), mnt.path("tree"))
    listed = run("find", ".", cwd=mnt.path("tree")).stdout.split("\n")
    expected = run("find", ".", cwd=str(src)).stdout.split("\n")
    assert sorted(listed) == sorted(expected)
    links = run("find", ".", "-type", "l", cwd=mnt.path("tree")).stdout.split()
    assert sorted(links) == ["./link", "./sub/uplink"]
    files = run("find", ".", "-type", "f", "-size", "+100k", cwd=mnt.path("tree")).stdout.split()
    assert files == ["./sub/b.bin"]


# ------------------------------------------------------------------------------ unlink


def test_unlink(mnt, s3, bucket):
    s3.put_object(Bucket=bucket, Key="gone.txt", Body=b"bye")
    path = mnt.path("gone.txt")
    assert read_file(path) == b"bye"
    os.unlink(path)
    assert not os.path.exists(path)
    assert not s3_exists(s3, bucket, "gone.txt")
    assert "gone.txt" not in os.listdir(mnt.mountpoint)
    with pytest.raises(FileNotFoundError):
        os.unlink(path)


def test_unlink_open_file_being_written(mnt, s3, bucket):
    path = mnt.path("doomed.bin")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"some data")
        os.fsync(fd)
        assert s3_exists(s3, bucket, "doomed.bin")
        os.unlink(path)
        assert not os.path.exists(path)
        assert not s3_exists(s3, bucket, "doomed.bin")
        assert os.pread(fd, 100, 0) == b"some data"
        os.write(fd, b" and more")
        assert os.pread(fd, 100, 0) == b"some data and more"
        assert os.fstat(fd).st_size == 18
    finally:
        os.close(fd)
    assert os.stat(mnt.mountpoint)
    assert s3_keys(s3, bucket) == []
    assert os.listdir(mnt.mountpoint) == []


def test_unlink_open_file_being_read(mnt, s3, bucket):
    s3.put_object(Bucket=bucket, Key="reading.bin", Body=payload(1000, seed=12))
    path = mnt.path("reading.bin")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 10, 0) == payload(1000, seed=12)[:10]
        os.unlink(path)
        with contextlib.suppress(OSError):  # may or may not still work; no crash
            os.pread(fd, 100, 500)
    finally:
        os.close(fd)
    assert os.listdir(mnt.mountpoint) == []
    assert s3_keys(s3, bucket) == []


# ------------------------------------------------------------------------------ rename


def test_rename_keeps_metadata(mnt, s3, bucket):
    write_file(mnt.path("before.txt"), b"contents")
    os.chmod(mnt.path("before.txt"), 0o640)
    if is_root:
        os.chown(mnt.path("before.txt"), 1234, 5678)
    mtime = 1_600_000_000_123_456_789
    os.utime(mnt.path("before.txt"), ns=(mtime, mtime))
    os.mkdir(mnt.path("d"))
    os.rename(mnt.path("before.txt"), mnt.path("d", "after.txt"))

    assert not os.path.exists(mnt.path("before.txt"))
    assert not s3_exists(s3, bucket, "before.txt")
    assert s3_bytes(s3, bucket, "d/after.txt") == b"contents"
    meta = s3_meta(s3, bucket, "d/after.txt")
    assert meta["mode"] == str(stat.S_IFREG | 0o640)
    assert meta["mtime"] == "1600000000.123456789"
    st = os.stat(mnt.path("d", "after.txt"))
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime_ns == mtime
    if is_root:
        assert (meta["uid"], meta["gid"]) == ("1234", "5678")
        assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert read_file(mnt.path("d", "after.txt")) == b"contents"


def test_rename_replaces_existing_file(mnt, s3, bucket):
    write_file(mnt.path("src"), b"new contents")
    write_file(mnt.path("dst"), b"old contents, to be replaced")
    os.rename(mnt.path("src"), mnt.path("dst"))
    assert read_file(mnt.path("dst")) == b"new contents"
    assert not os.path.exists(mnt.path("src"))
    assert s3_keys(s3, bucket) == ["dst"]
    assert s3_bytes(s3, bucket, "dst") == b"new contents"


def test_rename_open_file_being_written(mnt, s3, bucket):
    fd = os.open(mnt.path("partial.tmp"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"part one, ")
        os.rename(mnt.path("partial.tmp"), mnt.path("final.txt"))
        os.write(fd, b"part two")
    finally:
        os.close(fd)
    assert s3_keys(s3, bucket) == ["final.txt"]
    assert s3_bytes(s3, bucket, "final.txt") == b"part one, part two"
    assert read_file(mnt.path("final.txt")) == b"part one, part two"
    assert os.listdir(mnt.mountpoint) == ["final.txt"]


# -------------------------------------------------------------------------- attributes


def test_chmod_chown_utime_in_stat_and_s3(mnt, s3, bucket):
    path = mnt.path("attrs.txt")
    write_file(path, b"x")
    os.chmod(path, 0o700)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert s3_meta(s3, bucket, "attrs.txt")["mode"] == "33216"

    if is_root:
        os.chown(path, 1001, 1002)
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (1001, 1002)
        meta = s3_meta(s3, bucket, "attrs.txt")
        assert (meta["uid"], meta["gid"]) == ("1001", "1002")
        os.chown(path, -1, 2002)  # -1 keeps the owner
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (1001, 2002)
        meta = s3_meta(s3, bucket, "attrs.txt")
        assert (meta["uid"], meta["gid"]) == ("1001", "2002")

    atime, mtime = 1_500_000_000_111_111_111, 1_400_000_000_987_654_321
    os.utime(path, ns=(atime, mtime))
    st = os.stat(path)
    assert st.st_mtime_ns == mtime
    meta = s3_meta(s3, bucket, "attrs.txt")
    assert meta["mtime"] == "1400000000.987654321"
    assert meta["mode"] == "33216"  # utime keeps the mode
    os.utime(path, ns=(atime, 1_300_000_000 * 10**9))
    assert os.stat(path).st_mtime_ns == 1_300_000_000 * 10**9
    assert s3_meta(s3, bucket, "attrs.txt")["mtime"] == "1300000000"
    assert s3_bytes(s3, bucket, "attrs.txt") == b"x"  # the metadata copy keeps the data


def test_chmod_on_open_dirty_file_is_uploaded_with_data(mnt, s3, bucket):
    path = mnt.path("open-chmod.sh")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"#!/bin/sh\n")
        os.fchmod(fd, 0o750)
    finally:
        os.close(fd)
    assert s3_meta(s3, bucket, "open-chmod.sh")["mode"] == str(stat.S_IFREG | 0o750)
    assert s3_bytes(s3, bucket, "open-chmod.sh") == b"#!/bin/sh\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o750


def test_metadata_written_on_create(mnt, s3, bucket):
    old_umask = os.umask(0o022)
    try:
        before = time.time_ns()
        write_file(mnt.path("notes.txt"), b"hello")
        fd = os.open(mnt.path("page.html"), os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
        after = time.time_ns()
    finally:
        os.umask(old_umask)
    head = s3.head_object(Bucket=bucket, Key="notes.txt")
    meta = head["Metadata"]
    assert meta["mode"] == "33188"
    assert meta["uid"] == str(os.getuid())
    assert meta["gid"] == str(os.getgid())
    for name in ("mtime", "ctime"):
        assert re.fullmatch(r"\d+(\.\d{9})?", meta[name]), meta
        assert before // 10**9 <= float(meta[name]) <= after / 10**9 + 1
    assert head["ContentType"].split(";")[0] == "text/plain"

    head = s3.head_object(Bucket=bucket, Key="page.html")
    assert head["Metadata"]["mode"] == str(stat.S_IFREG | 0o600)
    assert head["ContentType"].split(";")[0] == "text/html"
    assert head["ContentLength"] == 0


# ------------------------------------------------------------------ special files


def test_symlink_created_through_mount(mnt, s3, bucket):
    os.symlink("some/target file.txt", mnt.path("ln"))
    assert os.readlink(mnt.path("ln")) == "some/target file.txt"
    st = os.lstat(mnt.path("ln"))
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_size == len("some/target file.txt")
    assert s3_bytes(s3, bucket, "ln") == b"some/target file.txt"
    assert s3_meta(s3, bucket, "ln")["mode"] == "41471"

    write_file(mnt.path("real.txt"), b"through the link")
    os.symlink("real.txt", mnt.path("ln2"))
    assert read_file(mnt.path("ln2")) == b"through the link"


def test_symlink_written_by_s3fs_reads_back(mnt, s3, bucket):
    s3.put_object(Bucket=bucket, Key="dir/dest.txt", Body=b"destination")
    s3.put_object(
        Bucket=bucket,
        Key="dir/s3fs-link",
        Body=b"dest.txt",
        Metadata={"mode": "41471", "uid": "0", "gid": "0", "mtime": "1700000000"},
    )
    path = mnt.path("dir", "s3fs-link")
    assert stat.S_ISLNK(os.lstat(path).st_mode)
    assert os.readlink(path) == "dest.txt"
    assert read_file(path) == b"destination"


def test_mkfifo(mnt, s3, bucket):
    os.mkfifo(mnt.path("pipe"), 0o640)
    st = os.stat(mnt.path("pipe"))
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    head = s3.head_object(Bucket=bucket, Key="pipe")
    assert head["ContentLength"] == 0
    assert head["Metadata"]["mode"] == str(stat.S_IFIFO | 0o640)


def test_hard_link_not_supported(mnt, s3, bucket):
    write_file(mnt.path("orig"), b"data")
    with pytest.raises(OSError) as info:
        os.link(mnt.path("orig"), mnt.path("hard"))
    assert info.value.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)
    assert not os.path.exists(mnt.path("hard"))
    assert s3_keys(s3, bucket) == ["orig"]


def test_statvfs(mnt):
    st = os.statvfs(mnt.mountpoint)
    assert st.f_namemax == 255
    assert st.f_bsize > 0 and st.f_frsize > 0
    assert st.f_blocks > 0 and st.f_bavail > 0 and st.f_bfree >= st.f_bavail
    assert st.f_files > 0 and st.f_ffree > 0


# ------------------------------------------------------------------------ errors


def find_file_with(root, data: bytes, below: str = "") -> str | None:
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            if below and below not in full:
                continue
            try:
                if read_file(full) == data:
                    return full
            except OSError:
                continue
    return None


def test_failed_upload_reaches_the_writer(bucket, mounter, s3, tmp_path, run):
    """EIO at close, the bytes stay in the cache (journaled), `pys3fs pending` lists
    them, and they reach S3 by themselves once the bucket is back."""
    mnt = mounter(bucket)
    cache_root = tmp_path / "cache0"
    data = b"precious data that must not be lost\n" * 100
    fd = os.open(mnt.path("precious.txt"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, data)
        for key in s3_keys(s3, bucket):
            s3.delete_object(Bucket=bucket, Key=key)
        s3.delete_bucket(Bucket=bucket)
    finally:
        with pytest.raises(OSError) as info:
            os.close(fd)
    try:
        assert info.value.errno == errno.EIO
        assert os.stat(mnt.mountpoint)
        assert find_file_with(cache_root, data, below="/data/") is not None
        assert os.stat(mnt.path("precious.txt")).st_size == len(data)
        assert read_file(mnt.path("precious.txt")) == data
        shown = run("pys3fs", "pending", mnt.mountpoint).stdout
        assert "precious.txt" in shown and str(len(data)) in shown
    finally:
        s3.create_bucket(Bucket=bucket)
    deadline = time.monotonic() + 60
    while "precious.txt" not in s3_keys(s3, bucket) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert s3_bytes(s3, bucket, "precious.txt") == data
    assert "nothing pending" in run("pys3fs", "pending", mnt.mountpoint).stdout
    # the mount still works once the bucket is back
    write_file(mnt.path("after.txt"), b"ok")
    assert s3_bytes(s3, bucket, "after.txt") == b"ok"


def test_name_too_long(mnt, s3, bucket):
    with pytest.raises(OSError) as info:
        write_file(mnt.path("n" * 256), b"x")
    assert info.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as info:
        os.mkdir(mnt.path("d" * 256))
    assert info.value.errno == errno.ENAMETOOLONG
    write_file(mnt.path("n" * 255), b"fits")
    assert s3_bytes(s3, bucket, "n" * 255) == b"fits"

    # five 200-byte directories are fine (key "ddd.../" of 1005 bytes) ...
    deep = mnt.mountpoint
    for i in range(5):
        deep = os.path.join(deep, str(i) * 200)
        os.mkdir(deep)
    write_file(os.path.join(deep, "f" * 19), b"ok")  # key of exactly 1024 bytes
    key = "/".join(str(i) * 200 for i in range(5)) + "/" + "f" * 19
    assert len(key.encode()) == 1024
    assert s3_bytes(s3, bucket, key) == b"ok"
    # ... one byte more and S3 could not hold the key
    for make in (
        lambda: write_file(os.path.join(deep, "f" * 20), b"x"),
        lambda: os.mkdir(os.path.join(deep, "g" * 50)),
        lambda: os.symlink("t", os.path.join(deep, "s" * 50)),
    ):
        with pytest.raises(OSError) as info:
            make()
        assert info.value.errno == errno.ENAMETOOLONG


def test_key_length_counts_the_mount_prefix(bucket, mounter, s3):
    prefix = "p" * 100
    s3.put_object(Bucket=bucket, Key=prefix + "/", Body=b"")
    mnt = mounter(bucket, prefix="/" + prefix)
    deep = mnt.path("a" * 200, "b" * 200, "c" * 200, "d" * 200)
    os.makedirs(deep)
    ok = "f" * (1024 - 101 - 804)  # prefix "ppp/" + four dirs + name = 1024 bytes
    write_file(os.path.join(deep, ok), b"ok")
    assert s3_bytes(s3, bucket, f"{prefix}/{'a' * 200}/{'b' * 200}/{'c' * 200}/{'d' * 200}/{ok}")
    with pytest.raises(OSError) as info:
        write_file(os.path.join(deep, ok + "f"), b"x")
    assert info.value.errno == errno.ENAMETOOLONG
