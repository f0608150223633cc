"""Listings fill the attribute cache; the metadata index spares HEADs across mounts."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from pys3fs.attrs import Entry
from pys3fs.cache import DeferredAttrs
from pys3fs.metaindex import SETTLE, MetaIndex, settled
from pys3fs.s3client import ObjectInfo


def requests(mnt) -> dict[str, int]:
    return json.loads(os.getxattr(mnt.mountpoint, "user.pys3fs.stats"))["requests"]


def fill(s3, bucket: str, prefix: str, count: int) -> None:
    def put(i: int) -> None:
        meta = {"mode": str(stat.S_IFREG | 0o640), "uid": "1234", "gid": "2345"}
        s3.put_object(Bucket=bucket, Key=f"{prefix}f{i:05d}", Body=b"x" * i, Metadata=meta)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


def test_a_listing_and_the_stats_of_its_names_cost_one_head_per_file(s3, bucket, mounter):
    fill(s3, bucket, "d/", 60)
    s3.put_object(Bucket=bucket, Key="d/sub/", Body=b"", ContentType="application/x-directory")
    mnt = mounter(bucket)
    os.stat(mnt.path("d"))
    before = requests(mnt)
    names = os.listdir(mnt.path("d"))
    assert len(names) == 61
    listed = requests(mnt)
    assert listed.get("HEAD", 0) - before.get("HEAD", 0) <= 1  # sub's marker; no file's
    for name in names:
        st = os.lstat(mnt.path("d", name))
        if name != "sub":
            assert stat.S_IMODE(st.st_mode) == 0o640
            assert (st.st_uid, st.st_gid) == (1234, 2345)
            assert st.st_size == int(name[1:])
    after = requests(mnt)
    assert after.get("HEAD", 0) - listed.get("HEAD", 0) == 60  # one per file, no more
    assert after.get("LIST", 0) == listed.get("LIST", 0)  # no lookup of its own


def test_ls_l_shows_metadata_from_the_listing_pass(s3, bucket, mounter):
    fill(s3, bucket, "", 30)
    mnt = mounter(bucket)
    out = subprocess.run(
        ["ls", "-ln", mnt.mountpoint], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    assert len(rows) == 30
    assert all(r[0] == "-rw-r-----" and r[2:4] == ["1234", "2345"] for r in rows)
    assert requests(mnt).get("HEAD", 0) == 30  # one per entry, no more


def test_a_warm_remount_of_10000_entries_needs_no_head(s3_server, bucket, mounter, tmp_path):
    count = 10_000
    client = s3_server.client(pool=32)  # one connection per thread: 10,000 PUTs go quickly

    def put(i: int) -> None:
        meta = {"mode": str(stat.S_IFREG | 0o640), "uid": "1234", "gid": "2345"}
        body = b"x" * (i % 1000)
        client.put_object(Bucket=bucket, Key=f"many/f{i:05d}", Body=body, Metadata=meta)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, range(count)))
    time.sleep(SETTLE.total_seconds())  # the index learns only versions this old
    cache = str(tmp_path / "kept-cache")
    first = mounter(bucket, f"use_cache={cache}")
    subprocess.run(["ls", "-l", first.path("many")], capture_output=True, check=True)
    assert requests(first).get("HEAD", 0) >= count
    first.unmount()

    second = mounter(bucket, f"use_cache={cache}")
    os.stat(second.path("many"))  # the directory's own lookup
    before = requests(second)
    out = subprocess.run(
        ["ls", "-ln", second.path("many")], capture_output=True, text=True, check=True
    ).stdout
    after = requests(second)
    sent = {kind: n - before.get(kind, 0) for kind, n in after.items() if n != before.get(kind)}
    assert sent == {"LIST": count // 1000}  # the listing's pages, not one HEAD
    rows = [line.split() for line in out.splitlines()[1:]]
    assert len(rows) == count
    for mode, _, uid, gid, size, *_, name in rows:
        assert (mode, uid, gid) == ("-rw-r-----", "1234", "2345")
        assert int(size) == int(name[1:]) % 1000


def test_a_metadata_change_by_another_tool_is_not_hidden_by_the_index(
    s3, bucket, mounter, tmp_path
):
    fill(s3, bucket, "", 3)
    cache = str(tmp_path / "cache")
    first = mounter(bucket, f"use_cache={cache}")
    os.listdir(first.mountpoint)
    first.unmount()
    # chmod by another tool rewrites the object: new Last-Modified, maybe the same ETag
    s3.copy_object(
        Bucket=bucket,
        Key="f00001",
        CopySource={"Bucket": bucket, "Key": "f00001"},
        Metadata={"mode": str(stat.S_IFREG | 0o600), "uid": "7", "gid": "8"},
        MetadataDirective="REPLACE",
    )
    second = mounter(bucket, f"use_cache={cache}")
    os.listdir(second.mountpoint)
    st = os.stat(second.path("f00001"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 7, 8)


def test_a_rewrite_in_the_second_of_the_indexed_version_is_not_hidden(
    s3, bucket, mounter, tmp_path
):
    """Last-Modified counts seconds and a chmod by another tool keeps the ETag: a
    rewrite in the same second as the version a listing HEADed looks the same to the
    next listing, so the index must not have kept that version."""
    cache = str(tmp_path / "cache")
    first = mounter(bucket, f"use_cache={cache}")
    old = {"mode": str(stat.S_IFREG | 0o640), "uid": "1234", "gid": "2345"}
    new = {"mode": str(stat.S_IFREG | 0o600), "uid": "7", "gid": "8"}
    for attempt in range(10):
        key = f"try{attempt}/f"
        s3.put_object(Bucket=bucket, Key=key, Body=b"same", Metadata=old)
        written = s3.head_object(Bucket=bucket, Key=key)["LastModified"]
        os.listdir(first.path(f"try{attempt}"))  # a fresh directory: LIST and HEAD
        s3.copy_object(
            Bucket=bucket,
            Key=key,
            CopySource={"Bucket": bucket, "Key": key},
            Metadata=new,
            MetadataDirective="REPLACE",
        )
        if s3.head_object(Bucket=bucket, Key=key)["LastModified"] == written:
            break  # the race happened: same ETag, same Last-Modified
    else:
        pytest.skip("no rewrite landed in the second of the first write")
    first.unmount()
    second = mounter(bucket, f"use_cache={cache}")
    os.listdir(second.path(f"try{attempt}"))
    st = os.stat(second.path(key))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 7, 8)


def test_only_versions_described_well_after_their_write_are_settled():
    written = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
    assert not settled(written, written)
    assert not settled(written, written + timedelta(seconds=1))
    assert settled(written, written + timedelta(seconds=2))
    assert settled(written, written + timedelta(days=300))
    assert not settled(None, written)
    assert not settled(written, None)


def test_the_heads_of_a_listing_run_concurrently(s3, bucket, mounter, s3_server):
    from dataclasses import replace

    from s3proxy import S3Proxy

    fill(s3, bucket, "d/", 48)
    proxy = S3Proxy(s3_server.url).start()
    try:
        mnt = mounter(bucket, server=replace(s3_server, url=proxy.url))
        names = os.listdir(mnt.path("d"))
        assert len(names) == 48
        for name in names:  # what ls -l does: each stat waits for its running HEAD
            os.stat(mnt.path("d", name))
        assert proxy.total["HEAD"] >= 48
        assert proxy.max_in_flight["HEAD"] > 1  # not one after another
        mnt.unmount()
    finally:
        proxy.stop()


def test_a_huge_listing_heads_files_only_when_asked(s3, bucket, mounter):
    """A listing defers its HEADs: `ls -f` of a huge directory costs LIST pages, and
    `ls -l` fetches attributes in concurrent batches as it stats them, one HEAD per file
    in all, never more."""
    count = 1300
    fill(s3, bucket, "big/", count)
    mnt = mounter(bucket)
    os.stat(mnt.path("big"))
    base = requests(mnt).get("HEAD", 0)
    names = os.listdir(mnt.path("big"))
    assert len(names) == count
    time.sleep(0.5)  # (no HEAD may be on its way either)
    assert requests(mnt).get("HEAD", 0) == base  # ls -f: LIST pages only
    out = subprocess.run(
        ["ls", "-ln", mnt.path("big")], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    assert len(rows) == count
    assert all(r[0] == "-rw-r-----" and r[2:4] == ["1234", "2345"] for r in rows)
    assert sorted(int(r[4]) for r in rows) == list(range(count))
    assert requests(mnt).get("HEAD", 0) - base == count  # each file once


def test_deferred_heads_keep_a_bounded_number_of_names():
    deferred = DeferredAttrs(limit=5)

    def listed(directory: str, count: int) -> list[tuple[str, ObjectInfo]]:
        return [
            (f"{directory}/f{i}", ObjectInfo(f"{directory}/f{i}", 0, None, None))
            for i in range(count)
        ]

    started: list[str] = []

    def submit(child, obj):
        started.append(child)
        future: Future = Future()
        future.set_result(None)
        return future

    deferred.add("/a", listed("/a", 3))
    deferred.add("/b", listed("/b", 3))  # over the limit: /a, listed first, is forgotten
    assert deferred.start("/a/f0", 10, submit) is None
    assert deferred.start("/b/f0", 10, submit) is not None
    deferred.add("/c", listed("/c", 8))  # one directory over the limit is kept whole
    assert deferred.start("/c/f7", 1, submit) is not None
    assert started == ["/b/f0", "/b/f1", "/b/f2", "/c/f7"]


def test_an_index_of_an_older_layout_is_replaced(tmp_path):
    # a cache directory from before the "extra" column: its index is dropped, not
    # left failing every lookup
    path = str(tmp_path / "index.db")
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, etag TEXT, modified INTEGER, mode)")
    old.commit()
    old.close()
    index = MetaIndex(path)
    entry = Entry(mode=stat.S_IFREG | 0o600, size=5, etag='"e"', extra='{"app-tag": "x"}')
    index.put_many([("k", 7, entry)])
    assert index.get("k", '"e"', 7) == entry
    assert index.get_many([("k", '"e"', 7, 5)])["k"] == entry
    index.close()
