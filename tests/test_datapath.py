"""The data path through a real mount: block cache, read-ahead, streamed multipart
uploads, UploadPartCopy and the cache limits."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import subprocess
import threading
import time

import pytest

from pys3fs import datacache

MiB = 1024 * 1024


def stats(mnt) -> dict[str, int]:
    return json.loads(os.getxattr(mnt.mountpoint, "user.pys3fs.stats"))["requests"]


def delta(before: dict[str, int], after: dict[str, int], kind: str) -> int:
    return after.get(kind, 0) - before.get(kind, 0)


def cache_usage(cache_dir: str) -> int:
    """Bytes the data cache really occupies on disk (sparse files count what they hold).

    The daemon saves block records as temp files renamed into place, so a file
    listed by the walk may be gone by the time it is measured: it holds nothing.
    """
    total = 0
    for root, _, files in os.walk(cache_dir):
        for name in files:
            if "/data" in root or "/private-" in root:
                try:
                    total += os.stat(os.path.join(root, name)).st_blocks * 512
                except FileNotFoundError:
                    continue
    return total


def put_random(s3, bucket: str, key: str, size: int, seed: int = 1) -> bytes:
    data = (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]
    data = bytes(b ^ (i * 7 & 0xFF) for i, b in enumerate(data[:4096])) + data[4096:]
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return data


def s3_bytes(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_partial_read_fetches_only_the_needed_blocks(s3, bucket, mounter, tmp_path):
    data = put_random(s3, bucket, "big.bin", 32 * MiB)
    cache = str(tmp_path / "c")
    mnt = mounter(bucket, f"use_cache={cache}")
    os.stat(mnt.path("big.bin"))
    before = stats(mnt)
    fd = os.open(mnt.path("big.bin"), os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 20 * MiB + 123) == data[20 * MiB + 123 : 20 * MiB + 123 + 4096]
    finally:
        os.close(fd)
    after = stats(mnt)
    assert delta(before, after, "GET") <= 2
    assert cache_usage(cache) < 2 * MiB  # not the 32 MiB object


def test_cached_blocks_serve_later_mounts_while_the_etag_is_unchanged(
    s3, bucket, mounter, tmp_path
):
    data = put_random(s3, bucket, "f.bin", 6 * MiB)
    cache = str(tmp_path / "c")
    first = mounter(bucket, f"use_cache={cache}")
    with open(first.path("f.bin"), "rb") as f:
        assert f.read() == data
    first.unmount()

    # one file per cached object: its block record is in the file's extended attributes
    (data_dir,) = {root for root, _, files in os.walk(cache) if root.endswith("/data")}
    assert len(os.listdir(data_dir)) == 1, os.listdir(data_dir)

    second = mounter(bucket, f"use_cache={cache}")
    before = stats(second)
    with open(second.path("f.bin"), "rb") as f:
        assert f.read() == data
    assert delta(before, stats(second), "GET") == 0


def test_a_changed_etag_invalidates_cached_blocks(s3, bucket, mounter, tmp_path):
    put_random(s3, bucket, "f.bin", 2 * MiB, seed=1)
    cache = str(tmp_path / "c")
    mnt = mounter(bucket, f"use_cache={cache}", "stat_cache_expire=1")
    with open(mnt.path("f.bin"), "rb") as f:
        f.read()
    newer = put_random(s3, bucket, "f.bin", 2 * MiB, seed=2)  # same size, new ETag
    time.sleep(1.5)  # let the attribute cache expire
    with open(mnt.path("f.bin"), "rb") as f:
        fresh = f.read() == newer  # (pytest's diff of 2 MiB of bytes takes minutes)
    assert fresh, "the old version's bytes were served"
    mnt.unmount()

    newest = put_random(s3, bucket, "f.bin", 2 * MiB, seed=3)
    again = mounter(bucket, f"use_cache={cache}")
    with open(again.path("f.bin"), "rb") as f:
        fresh = f.read() == newest
    assert fresh, "the old version's bytes were served after a remount"


def drop_page_cache() -> None:
    """Make reads reach the daemon again, not the kernel's copy of the file."""
    os.system("sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null")


def random_preads(fd: int, data: bytes, count: int, seed: int = 3) -> None:
    """``count`` 4 KiB preads at random offsets, each checked against ``data``."""
    rng = random.Random(seed)
    for _ in range(count):
        off = rng.randrange(len(data) - 4096)
        assert os.pread(fd, 4096, off) == data[off : off + 4096], f"wrong bytes at {off}"


def wait_cached(cache: str, nbytes: int) -> int:
    """Cache usage once it reaches ``nbytes`` (or after a minute of waiting)."""
    deadline = time.monotonic() + 60
    while cache_usage(cache) < nbytes and time.monotonic() < deadline:
        time.sleep(0.1)
    return cache_usage(cache)


def test_concurrent_cold_readers_get_exact_bytes(s3, bucket, mounter):
    """Reads are answered with where the bytes sit in the cache file (libfuse splices
    them): readers on several handles, sequential and random, while the object is still
    arriving, all get exactly the object's bytes, up to and past its end."""
    data = put_random(s3, bucket, "shared.bin", 24 * MiB + 12345, seed=9)
    mnt = mounter(bucket)
    drop_page_cache()
    errors: list[str] = []

    def sequential(chunk: int) -> None:
        with open(mnt.path("shared.bin"), "rb", buffering=0) as f:
            got = b"".join(iter(lambda: f.read(chunk), b""))
        if got != data:
            errors.append(f"sequential read in chunks of {chunk} differs")

    def scattered(seed: int) -> None:
        rng = random.Random(seed)
        fd = os.open(mnt.path("shared.bin"), os.O_RDONLY)
        try:
            for _ in range(200):
                off = rng.randrange(len(data) + 1000)
                size = rng.choice([1, 4096, 131072, 300_000])
                if os.pread(fd, size, off) != data[off : off + size]:
                    errors.append(f"pread({size}, {off}) differs")
        finally:
            os.close(fd)

    threads = [threading.Thread(target=sequential, args=(c,)) for c in (65536, 1 << 20, 777)]
    threads += [threading.Thread(target=scattered, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []


def test_random_reads_fetch_the_whole_object_in_the_background(s3, bucket, mounter, tmp_path):
    data = os.urandom(40 * MiB + 12345)
    s3.put_object(Bucket=bucket, Key="rand.bin", Body=data)
    cache = str(tmp_path / "c")
    mnt = mounter(bucket, f"use_cache={cache}")
    os.stat(mnt.path("rand.bin"))
    fd = os.open(mnt.path("rand.bin"), os.O_RDONLY)
    try:
        random_preads(fd, data, 50)  # each read gets its bytes, fetched or not
        assert wait_cached(cache, len(data)) >= len(data)
        before = stats(mnt)
        drop_page_cache()
        random_preads(fd, data, 200, seed=4)
        whole = os.pread(fd, len(data) + 1, 0) == data
        assert whole, "the whole object read back is not the object"
        assert delta(before, stats(mnt), "GET") == 0  # all of it came from the cache
    finally:
        os.close(fd)


def test_a_few_seeks_do_not_fetch_the_whole_object(s3, bucket, mounter, tmp_path):
    # Pulling one member out of a zip archive: its end, its directory, the member.
    data = put_random(s3, bucket, "archive.zip", 32 * MiB)
    cache = str(tmp_path / "c")
    mnt = mounter(bucket, f"use_cache={cache}")
    fd = os.open(mnt.path("archive.zip"), os.O_RDONLY)
    try:
        for off in (len(data) - 4096, 12 * MiB, 24 * MiB):
            assert os.pread(fd, 4096, off) == data[off : off + 4096]
        time.sleep(1)  # (a background fetch would be well under way by now)
        assert cache_usage(cache) < 8 * MiB  # three reads (and read-ahead), not 32 MiB
    finally:
        os.close(fd)


def test_no_whole_object_fetch_beyond_what_the_cache_limit_allows(s3, bucket, mounter, tmp_path):
    data = os.urandom(64 * MiB)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=data)
    cache = str(tmp_path / "c")
    mnt = mounter(bucket, f"use_cache={cache}", "max_cache_size=16")
    os.stat(mnt.path("big.bin"))
    before = stats(mnt)
    fd = os.open(mnt.path("big.bin"), os.O_RDONLY)
    try:
        # 30 reads (enough to start a whole-object fetch where the limit allows one),
        # 3 MiB apart or more: random reads
        slots = random.Random(7).sample(range(20), 20) + [19, 0, 17, 2, 15, 4, 13, 6, 11, 8]
        for slot in slots:
            off = slot * 3 * MiB + 12345
            assert os.pread(fd, 4096, off) == data[off : off + 4096]
    finally:
        os.close(fd)
    assert delta(before, stats(mnt), "GET") <= 20  # only the blocks read, one GET each
    assert cache_usage(cache) < 4 * MiB


def test_writes_during_a_background_fetch_are_never_overwritten(s3, bucket, mounter, tmp_path):
    data = bytearray(os.urandom(32 * MiB))
    s3.put_object(Bucket=bucket, Key="rw.bin", Body=bytes(data))
    cache = str(tmp_path / "c")
    mnt = mounter(bucket, f"use_cache={cache}")
    fd = os.open(mnt.path("rw.bin"), os.O_RDWR)
    try:
        random_preads(fd, bytes(data), 24)  # starts the fetch of the whole object
        rng = random.Random(5)
        for _ in range(40):  # while it runs
            off, patch = rng.randrange(len(data) - 8192), os.urandom(rng.randrange(1, 8192))
            os.pwrite(fd, patch, off)
            data[off : off + len(patch)] = patch
        wait_cached(cache, len(data))
        drop_page_cache()
        same = os.pread(fd, len(data), 0) == data
        assert same, "a fetched byte landed over a written one"
    finally:
        os.close(fd)
    assert s3_bytes(s3, bucket, "rw.bin") == data


def test_a_big_file_streams_as_multipart_while_it_is_written(s3, bucket, mounter):
    mnt = mounter(bucket, "multipart_size=8")
    block = os.urandom(MiB)
    digest = hashlib.md5()
    with open(mnt.path("big.bin"), "wb") as f:
        for _ in range(72):
            f.write(block)
            digest.update(block)
        f.flush()
        # Before close, parts of an upload in progress are already in S3.
        parts = []
        for _ in range(300):
            uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            if uploads:
                upload_id = uploads[0]["UploadId"]
                parts = s3.list_parts(Bucket=bucket, Key="big.bin", UploadId=upload_id).get(
                    "Parts", []
                )
                if parts:
                    break
            time.sleep(0.1)
        assert parts, "no part was uploaded before close"
        for _ in range(48):
            f.write(block)
            digest.update(block)
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == 120 * MiB
    assert head["ETag"].strip('"').endswith("-15")
    assert hashlib.md5(s3_bytes(s3, bucket, "big.bin")).hexdigest() == digest.hexdigest()
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_small_overwrite_in_a_large_object_copies_unchanged_parts(s3, bucket, mounter):
    data = bytearray(put_random(s3, bucket, "large.bin", 48 * MiB))
    mnt = mounter(bucket, "multipart_size=8")
    os.stat(mnt.path("large.bin"))
    before = stats(mnt)
    patch = b"P" * 4096
    with open(mnt.path("large.bin"), "r+b") as f:
        f.seek(20 * MiB + 100)
        f.write(patch)
    after = stats(mnt)
    data[20 * MiB + 100 : 20 * MiB + 100 + 4096] = patch
    assert delta(before, after, "COPY") == 5  # six 8 MiB parts, one of them re-uploaded
    assert delta(before, after, "GET") <= 2  # only the changed part was read
    assert s3_bytes(s3, bucket, "large.bin") == bytes(data)


def test_nomixupload_uploads_unchanged_parts_instead_of_copying_them(s3, bucket, mounter):
    # for servers without UploadPartCopy: the old bytes are fetched and sent again
    data = bytearray(put_random(s3, bucket, "large.bin", 24 * MiB))
    mnt = mounter(bucket, "multipart_size=8", "nomixupload")
    os.stat(mnt.path("large.bin"))
    before = stats(mnt)
    with open(mnt.path("large.bin"), "r+b") as f:
        f.seek(10 * MiB)
        f.write(b"P" * 4096)
    after = stats(mnt)
    data[10 * MiB : 10 * MiB + 4096] = b"P" * 4096
    assert delta(before, after, "COPY") == 0
    assert delta(before, after, "GET") >= 1  # the unchanged bytes came from S3
    assert s3_bytes(s3, bucket, "large.bin") == bytes(data)


def test_append_to_a_large_object_keeps_its_start_server_side(s3, bucket, mounter):
    data = put_random(s3, bucket, "log.bin", 24 * MiB)
    mnt = mounter(bucket, "multipart_size=8")
    before = stats(mnt)
    with open(mnt.path("log.bin"), "ab") as f:
        f.write(b"tail" * 1000)
    after = stats(mnt)
    assert delta(before, after, "COPY") == 3  # the three old parts, server-side
    assert delta(before, after, "GET") == 0  # nothing of the old data was downloaded
    assert s3_bytes(s3, bucket, "log.bin") == data + b"tail" * 1000


def test_the_cache_limit_evicts_clean_data_least_recently_used_first(s3, bucket, mounter, tmp_path):
    objects = {f"o{i}": put_random(s3, bucket, f"o{i}", 6 * MiB, seed=i) for i in range(4)}
    cache = str(tmp_path / "c")
    mnt = mounter(bucket, f"use_cache={cache}", "max_cache_size=16")
    for key, data in objects.items():
        with open(mnt.path(key), "rb") as f:
            assert f.read() == data
        assert cache_usage(cache) <= 16 * MiB + MiB
    before = stats(mnt)
    os.system("sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null")
    with open(mnt.path("o3"), "rb") as f:  # most recent: still cached
        assert f.read() == objects["o3"]
    assert delta(before, stats(mnt), "GET") == 0


def test_enospc_when_dirty_data_fills_the_cache_and_nothing_is_damaged(
    s3, bucket, mounter, tmp_path
):
    mnt = mounter(bucket, f"use_cache={tmp_path / 'c'}", "max_cache_size=8")
    block = os.urandom(MiB)
    written = 0
    fd = os.open(mnt.path("fill.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as exc:
            for _ in range(16):
                written += os.write(fd, block)
        assert exc.value.errno == errno.ENOSPC
        assert 4 * MiB <= written <= 8 * MiB
    finally:
        os.close(fd)
    assert s3_bytes(s3, bucket, "fill.bin") == (block * 16)[:written]
    with open(mnt.path("fill.bin"), "rb") as f:
        assert f.read() == (block * 16)[:written]


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs for the cache directory: a disk that really fills up."""
    path = tmp_path / "small-disk"
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(path)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield str(path)
    subprocess.run(["umount", "-l", str(path)])


def write_until_full(path: str, block: bytes, limit: int) -> tuple[int, int]:
    """Write blocks until an error or ``limit`` blocks; returns (bytes written, errno)."""
    written, code = 0, 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for _ in range(limit):
            written += os.write(fd, block)  # a short write counts what it wrote
    except OSError as exc:
        code = exc.errno
    finally:
        os.close(fd)
    return written, code


def test_ensure_diskfree_keeps_free_space_on_the_cache_disk(small_disk, s3, bucket, mounter):
    mnt = mounter(bucket, f"use_cache={small_disk}", "ensure_diskfree=16")
    block = os.urandom(MiB)
    written, code = write_until_full(mnt.path("f.bin"), block, 24)
    assert code == errno.ENOSPC
    assert 4 * MiB <= written <= 8 * MiB
    assert s3_bytes(s3, bucket, "f.bin") == (block * 24)[:written]


def test_a_full_cache_disk_evicts_clean_data_then_fails_with_enospc(
    small_disk, s3, bucket, mounter
):
    old = put_random(s3, bucket, "old.bin", 8 * MiB)
    mnt = mounter(bucket, f"use_cache={small_disk}")
    with open(mnt.path("old.bin"), "rb") as f:  # 8 MiB of clean data in the cache
        assert f.read() == old
    block = os.urandom(MiB)
    written, code = write_until_full(mnt.path("new.bin"), block, 40)
    assert code == errno.ENOSPC
    assert written > 16 * MiB  # the clean 8 MiB gave way to the new data
    assert s3_bytes(s3, bucket, "new.bin") == (block * 40)[:written]
    with open(mnt.path("new.bin"), "rb") as f:
        assert f.read() == (block * 40)[:written]
    assert s3_bytes(s3, bucket, "old.bin") == old


def test_truncate_after_streamed_parts_never_uploads_stale_bytes(s3, bucket, mounter):
    mnt = mounter(bucket, "multipart_size=5")
    first = os.urandom(MiB)
    fd = os.open(mnt.path("t.bin"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for _ in range(16):  # three full 5 MiB parts stream while writing
            os.write(fd, first)
        os.ftruncate(fd, 2 * MiB)
        second = os.urandom(MiB)
        os.pwrite(fd, second, 12 * MiB)  # beyond a hole of zeros
    finally:
        os.close(fd)
    expected = first * 2 + b"\0" * (10 * MiB) + second
    assert s3_bytes(s3, bucket, "t.bin") == expected


def test_a_block_record_goes_beside_the_file_where_xattrs_are_not_possible(tmp_path, monkeypatch):
    path = str(tmp_path / "cachefile")
    open(path, "wb").close()
    datacache.write_record(path, -1, b'{"v": 1}')
    assert datacache.read_record(path) == b'{"v": 1}'
    assert os.listdir(tmp_path) == ["cachefile"]

    def no_xattrs(*args):
        raise OSError(errno.ENOTSUP, "not supported")

    monkeypatch.setattr(os, "setxattr", no_xattrs)
    monkeypatch.setattr(os, "getxattr", no_xattrs)
    datacache.write_record(path, -1, b'{"v": 2}')
    assert sorted(os.listdir(tmp_path)) == ["cachefile", "cachefile.json"]
    assert datacache.read_record(path) == b'{"v": 2}'
    datacache.drop_record(path, -1)
    assert os.listdir(tmp_path) == ["cachefile"]
    with pytest.raises(OSError):
        datacache.read_record(path)
