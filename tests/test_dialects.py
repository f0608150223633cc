"""Metadata dialects through a real mount.

Objects are written with boto3 ``put_object(Metadata=...)`` the way each tool stores them and
read back with ``os.stat``/``os.lstat``/``os.readlink``; objects pys3fs writes are checked
against the s3fs-fuse dialect byte for byte.
"""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime

import pytest
from test_dirs import fsync_dir

S = 1_000_000_000
DIR_TYPE = "application/x-directory"


def put(s3, bucket: str, key: str, body: bytes = b"data", **kw) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, **kw)


def perms(st: os.stat_result) -> int:
    return stat.S_IMODE(st.st_mode)


def last_modified(s3, bucket: str, key: str) -> int:
    """The object's Last-Modified in whole epoch seconds."""
    return int(s3.head_object(Bucket=bucket, Key=key)["LastModified"].timestamp())


def assert_alive(fs) -> None:
    with open("/proc/self/mounts") as f:
        assert any(line.split()[1] == fs.mountpoint for line in f)
    os.listdir(fs.mountpoint)
    assert all(os.path.exists(f"/proc/{pid}") for pid in fs.pids)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# ------------------------------------------------------------------ s3fs-fuse


def test_s3fs_mode_owner_and_times(mnt, s3, bucket):
    meta = {
        "mode": str(stat.S_IFREG | 0o640),  # "33184"
        "uid": "1001",
        "gid": "1002",
        "mtime": "1700000000",
        "ctime": "1700000100",
    }
    put(s3, bucket, "f.txt", Metadata=meta)

    st = os.stat(mnt.path("f.txt"))
    assert st.st_mode == stat.S_IFREG | 0o640
    assert (st.st_uid, st.st_gid) == (1001, 1002)
    assert st.st_mtime_ns == 1700000000 * S
    assert st.st_ctime_ns == 1700000100 * S
    assert st.st_size == 4


def test_s3fs_nanosecond_mtime_is_exact(mnt, s3, bucket):
    meta = {
        "mode": "33188",
        "mtime": "1700000000.123456789",
        "ctime": "1700000001.000000001",
    }
    put(s3, bucket, "ns.txt", Metadata=meta)

    st = os.stat(mnt.path("ns.txt"))
    assert st.st_mtime_ns == 1700000000 * S + 123456789
    assert st.st_ctime_ns == 1700000001 * S + 1


def test_s3fs_directory_marker_mode(mnt, s3, bucket):
    meta = {"mode": str(stat.S_IFDIR | 0o750), "uid": "1001", "gid": "1002", "mtime": "1600000000"}
    put(s3, bucket, "d/", b"", ContentType=DIR_TYPE, Metadata=meta)

    st = os.stat(mnt.path("d"))
    assert st.st_mode == stat.S_IFDIR | 0o750
    assert (st.st_uid, st.st_gid) == (1001, 1002)
    assert st.st_mtime_ns == 1600000000 * S


def test_s3fs_symlink_fifo_and_socket(mnt, s3, bucket):
    put(s3, bucket, "link", b"some/target.txt", Metadata={"mode": "41471"})  # 0o120777
    put(s3, bucket, "fifo", b"", Metadata={"mode": str(stat.S_IFIFO | 0o644)})
    put(s3, bucket, "sock", b"", Metadata={"mode": str(stat.S_IFSOCK | 0o755)})

    st = os.lstat(mnt.path("link"))
    assert stat.S_ISLNK(st.st_mode)
    assert os.readlink(mnt.path("link")) == "some/target.txt"
    assert st.st_size == len("some/target.txt")
    assert os.lstat(mnt.path("fifo")).st_mode == stat.S_IFIFO | 0o644
    assert os.lstat(mnt.path("sock")).st_mode == stat.S_IFSOCK | 0o755


# ------------------------------------------------------------------ rclone


def test_rclone_octal_mode_float_mtime_rfc3339_atime(mnt, s3, bucket):
    meta = {
        "mode": "100640",  # octal, no prefix
        "uid": "1010",
        "gid": "1011",
        "mtime": "1354040105.5",  # trailing zeros dropped: half a second
        "atime": "2012-11-27T18:15:05.25Z",
        "md5chksum": "XUFAKrxLKna5cZ2REBfFkg==",
    }
    put(s3, bucket, "r.txt", Metadata=meta)

    st = os.stat(mnt.path("r.txt"))
    assert st.st_mode == stat.S_IFREG | 0o640
    assert (st.st_uid, st.st_gid) == (1010, 1011)
    assert st.st_mtime_ns == 1354040105 * S + 500_000_000
    atime = datetime(2012, 11, 27, 18, 15, 5, tzinfo=UTC).timestamp()
    assert st.st_atime_ns == int(atime) * S + 250_000_000


def test_rclone_directory_mode(mnt, s3, bucket):
    put(s3, bucket, "rd/", b"", ContentType=DIR_TYPE, Metadata={"mode": "40700"})
    assert os.stat(mnt.path("rd")).st_mode == stat.S_IFDIR | 0o700


def test_rclone_rfc3339_mtime_with_offset(mnt, s3, bucket):
    put(s3, bucket, "o.txt", Metadata={"mtime": "2012-11-27T20:15:05.000000001+02:00"})
    expected = int(datetime(2012, 11, 27, 18, 15, 5, tzinfo=UTC).timestamp()) * S + 1
    assert os.stat(mnt.path("o.txt")).st_mtime_ns == expected


# ------------------------------------------------------------------ Google Cloud Storage


def test_gcs_posix_headers(mnt, s3, bucket):
    meta = {
        "goog-reserved-posix-mode": "640",  # octal
        "goog-reserved-posix-uid": "1020",
        "goog-reserved-posix-gid": "1021",
        "goog-reserved-file-mtime": "1600000000",
    }
    put(s3, bucket, "g.txt", Metadata=meta)

    st = os.stat(mnt.path("g.txt"))
    assert st.st_mode == stat.S_IFREG | 0o640
    assert (st.st_uid, st.st_gid) == (1020, 1021)
    assert st.st_mtime_ns == 1600000000 * S


def test_gcs_mode_is_always_octal(mnt, s3, bucket):
    # "420" read as decimal would be 0o644; GCS writes octal, so it is r---w----.
    put(s3, bucket, "g420", Metadata={"goog-reserved-posix-mode": "420"})
    assert perms(os.stat(mnt.path("g420"))) == 0o420


# ------------------------------------------------------------------ s3sync, yas3fs, geesefs


def test_s3sync_permissions_owner_group(mnt, s3, bucket):
    meta = {"permissions": str(stat.S_IFREG | 0o600), "owner": "1030", "group": "1031"}
    put(s3, bucket, "s.txt", Metadata=meta)

    st = os.stat(mnt.path("s.txt"))
    assert st.st_mode == stat.S_IFREG | 0o600
    assert (st.st_uid, st.st_gid) == (1030, 1031)


def test_yas3fs_attr_json(mnt, s3, bucket):
    attr = '{"st_mode": 33184, "st_uid": 1040, "st_gid": 1041, "st_mtime": 1500000000.25}'
    put(s3, bucket, "y.txt", Metadata={"attr": attr})

    st = os.stat(mnt.path("y.txt"))
    assert st.st_mode == stat.S_IFREG | 0o640
    assert (st.st_uid, st.st_gid) == (1040, 1041)
    assert st.st_mtime_ns == 1500000000 * S + 250_000_000


def test_yas3fs_symlink_by_content_type(mnt, s3, bucket):
    put(s3, bucket, "ylink", b"../elsewhere/file", ContentType="application/x-symlink")

    st = os.lstat(mnt.path("ylink"))
    assert stat.S_ISLNK(st.st_mode)
    assert os.readlink(mnt.path("ylink")) == "../elsewhere/file"
    assert st.st_size == len("../elsewhere/file")


def test_yas3fs_symlink_with_attr(mnt, s3, bucket):
    attr = '{"st_mode": 41471, "st_uid": 1040, "st_gid": 1041, "st_mtime": 1500000000}'
    put(
        s3,
        bucket,
        "ylink2",
        b"target.txt",
        ContentType="application/x-symlink",
        Metadata={"attr": attr},
    )
    st = os.lstat(mnt.path("ylink2"))
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_uid == 1040
    assert os.readlink(mnt.path("ylink2")) == "target.txt"


def test_geesefs_symlink_target_header(mnt, s3, bucket):
    put(s3, bucket, "target.txt", b"pointed at")
    put(s3, bucket, "glink", b"", Metadata={"--symlink-target": "target.txt"})

    st = os.lstat(mnt.path("glink"))
    assert stat.S_ISLNK(st.st_mode)
    assert os.readlink(mnt.path("glink")) == "target.txt"
    assert st.st_size == len("target.txt")
    with open(mnt.path("glink"), "rb") as f:  # followed by the kernel to target.txt
        assert f.read() == b"pointed at"


def test_nextcloud_directory_content_type(mnt, s3, bucket):
    put(s3, bucket, "nc/", b"", ContentType="httpd/unix-directory")
    put(s3, bucket, "nc2/", b"", ContentType="httpd/unix-directory")
    put(s3, bucket, "nc2/inside.txt")

    assert sorted(os.listdir(mnt.mountpoint)) == ["nc", "nc2"]
    assert os.stat(mnt.path("nc")).st_mode == stat.S_IFDIR | 0o755
    assert os.listdir(mnt.path("nc")) == []
    assert stat.S_ISDIR(os.stat(mnt.path("nc2")).st_mode)
    assert os.listdir(mnt.path("nc2")) == ["inside.txt"]


# ------------------------------------------------------------------ no metadata


def test_no_metadata_defaults(mnt, s3, bucket):
    put(s3, bucket, "plain.txt")
    put(s3, bucket, "marker/", b"", ContentType=DIR_TYPE)
    put(s3, bucket, "implicit/child.txt")

    f = os.stat(mnt.path("plain.txt"))
    assert f.st_mode == stat.S_IFREG | 0o644
    assert int(f.st_mtime) == last_modified(s3, bucket, "plain.txt")
    d = os.stat(mnt.path("marker"))
    assert d.st_mode == stat.S_IFDIR | 0o755
    assert int(d.st_mtime) == last_modified(s3, bucket, "marker/")
    assert os.stat(mnt.path("implicit")).st_mode == stat.S_IFDIR | 0o755
    for name in ("plain.txt", "marker", "implicit", "implicit/child.txt"):
        st = os.stat(mnt.path(name))
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()), name


def test_no_metadata_mtime_after_listing(mnt, s3, bucket):
    # ls -l: the listing, then a stat per entry, must agree with HEAD's Last-Modified.
    for i in range(3):
        put(s3, bucket, f"l{i}")
    assert sorted(os.listdir(mnt.mountpoint)) == ["l0", "l1", "l2"]
    for i in range(3):
        st = os.stat(mnt.path(f"l{i}"))
        assert int(st.st_mtime) == last_modified(s3, bucket, f"l{i}")
        assert st.st_mode == stat.S_IFREG | 0o644


# ------------------------------------------------------------------ malformed metadata


@pytest.mark.parametrize(
    "meta",
    [
        {"mode": "abc", "uid": "-5", "mtime": "soon"},
        {"mode": "99999999", "gid": "4294967296", "ctime": "1e9"},
        {"attr": "{not json"},
        {"attr": '{"st_mode": "x", "st_uid": -1, "st_mtime": "later"}'},
        {"goog-reserved-posix-mode": "999", "goog-reserved-file-mtime": "yesterday"},
        {"permissions": "-1", "owner": "root", "group": ""},
        {"mode": "", "mtime": "2023-02-30T00:00:00Z", "uid": "12x"},
    ],
)
def test_malformed_metadata_falls_back_to_defaults(mnt, s3, bucket, meta):
    put(s3, bucket, "bad.txt", Metadata=meta)
    put(s3, bucket, "good.txt", Metadata={"mode": "33152", "uid": "1050"})

    st = os.stat(mnt.path("bad.txt"))
    assert stat.S_ISREG(st.st_mode)
    assert perms(st) == 0o644
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert int(st.st_mtime) == last_modified(s3, bucket, "bad.txt")
    with open(mnt.path("bad.txt"), "rb") as f:
        assert f.read() == b"data"
    assert sorted(os.listdir(mnt.mountpoint)) == ["bad.txt", "good.txt"]
    good = os.stat(mnt.path("good.txt"))
    assert (good.st_mode, good.st_uid) == (stat.S_IFREG | 0o600, 1050)
    assert_alive(mnt)


def test_malformed_directory_marker_metadata(mnt, s3, bucket):
    put(s3, bucket, "d/", b"", ContentType=DIR_TYPE, Metadata={"mode": "abc", "uid": "x"})
    st = os.stat(mnt.path("d"))
    assert st.st_mode == stat.S_IFDIR | 0o755
    assert st.st_uid == os.getuid()
    assert_alive(mnt)


# ------------------------------------------------------------------ mount overrides


def populate_mixed(s3, bucket: str) -> list[str]:
    """Files and dirs with and without metadata; returns their paths (the root first)."""
    owned = {"uid": "1001", "gid": "1002"}
    put(s3, bucket, "meta.txt", Metadata={"mode": str(stat.S_IFREG | 0o600), **owned})
    put(s3, bucket, "plain.txt")
    put(s3, bucket, "rclone.txt", Metadata={"mode": "100777", "uid": "7"})
    put(s3, bucket, "mdir/", b"", ContentType=DIR_TYPE, Metadata={"mode": "16832", **owned})
    put(s3, bucket, "pdir/", b"", ContentType=DIR_TYPE)
    put(s3, bucket, "idir/inner.txt", Metadata={"mode": "33279"})  # 0o100777
    return ["", "meta.txt", "plain.txt", "rclone.txt", "mdir", "pdir", "idir", "idir/inner.txt"]


@pytest.mark.parametrize(("umask", "expected"), [("022", 0o755), ("077", 0o700), ("0", 0o777)])
def test_uid_gid_umask_override_every_entry(s3, bucket, mounter, umask, expected):
    paths = populate_mixed(s3, bucket)
    fs = mounter(bucket, "uid=1234", "gid=2345", f"umask={umask}")

    for rel in paths:
        st = os.stat(fs.path(rel)) if rel else os.stat(fs.mountpoint)
        assert (st.st_uid, st.st_gid) == (1234, 2345), rel
        assert perms(st) == expected, (rel, oct(st.st_mode))
    assert stat.S_ISDIR(os.stat(fs.path("mdir")).st_mode)
    assert stat.S_ISREG(os.stat(fs.path("meta.txt")).st_mode)


def test_umask_alone_keeps_owners(s3, bucket, mounter):
    populate_mixed(s3, bucket)
    fs = mounter(bucket, "umask=027")
    st = os.stat(fs.path("meta.txt"))
    assert perms(st) == 0o750
    assert (st.st_uid, st.st_gid) == (1001, 1002)
    plain = os.stat(fs.path("plain.txt"))
    assert (plain.st_uid, plain.st_gid) == (os.getuid(), os.getgid())


def test_uid_override_applies_to_new_files(s3, bucket, mounter):
    fs = mounter(bucket, "uid=1234", "gid=2345", "umask=022")
    with open(fs.path("new.txt"), "w") as f:
        f.write("x")
    os.mkdir(fs.path("newdir"))
    for rel in ("new.txt", "newdir"):
        st = os.stat(fs.path(rel))
        assert (st.st_uid, st.st_gid, perms(st)) == (1234, 2345, 0o755), rel


@pytest.mark.parametrize(("mp_umask", "expected"), [("022", 0o755), ("027", 0o750)])
def test_mp_umask_sets_the_mount_root_mode(s3, bucket, mounter, mp_umask, expected):
    put(s3, bucket, "plain.txt")
    fs = mounter(bucket, f"mp_umask={mp_umask}")
    assert os.stat(fs.mountpoint).st_mode == stat.S_IFDIR | expected
    # only the root: other entries keep their own modes
    assert os.stat(fs.path("plain.txt")).st_mode == stat.S_IFREG | 0o644


# ------------------------------------------------------------------ what pys3fs writes

S3FS_NAMES = {"mode", "uid", "gid", "mtime", "ctime"}
S3FS_TIME = re.compile(r"\d+(\.\d{9})?")


def s3fs_time_ns(value: str) -> int:
    """Parse an s3fs-fuse time string the way s3fs-fuse does (seconds, optional 9 digits)."""
    assert S3FS_TIME.fullmatch(value), value
    sec, _, frac = value.partition(".")
    return int(sec) * S + int(frac or 0)


def test_file_written_through_mount_has_exact_s3fs_metadata(mnt, s3, bucket, umask022):
    with open(mnt.path("new.txt"), "w") as f:
        f.write("hello")

    head = s3.head_object(Bucket=bucket, Key="new.txt")
    meta = head["Metadata"]
    assert set(meta) == S3FS_NAMES
    assert meta["mode"] == "33188"  # 0o100644, decimal, with S_IFREG
    assert meta["uid"] == str(os.getuid())
    assert meta["gid"] == str(os.getgid())
    st = os.stat(mnt.path("new.txt"))
    assert s3fs_time_ns(meta["mtime"]) == st.st_mtime_ns
    assert s3fs_time_ns(meta["ctime"]) == st.st_ctime_ns
    assert head["ContentType"] == "text/plain"
    assert head["ContentLength"] == 5


def test_mkdir_and_symlink_write_s3fs_metadata(mnt, s3, bucket, umask022):
    os.mkdir(mnt.path("d"), 0o750)
    os.symlink("d/target", mnt.path("ln"))
    fsync_dir(mnt.path("d"))

    marker = s3.head_object(Bucket=bucket, Key="d/")
    assert set(marker["Metadata"]) == S3FS_NAMES
    assert marker["Metadata"]["mode"] == str(stat.S_IFDIR | 0o750)  # "16872"
    link = s3.get_object(Bucket=bucket, Key="ln")
    assert set(link["Metadata"]) == S3FS_NAMES
    assert link["Metadata"]["mode"] == "41471"
    assert link["Body"].read() == b"d/target"


def test_chmod_chown_and_utime_rewrite_s3fs_metadata(mnt, s3, bucket, umask022):
    with open(mnt.path("f"), "w") as f:
        f.write("x")
    os.chmod(mnt.path("f"), 0o600)
    os.chown(mnt.path("f"), 1060, 1061)
    os.utime(mnt.path("f"), ns=(1700000000 * S, 1700000000 * S + 5))

    meta = s3.head_object(Bucket=bucket, Key="f")["Metadata"]
    assert set(meta) == S3FS_NAMES
    assert meta["mode"] == str(stat.S_IFREG | 0o600)
    assert (meta["uid"], meta["gid"]) == ("1060", "1061")
    assert meta["mtime"] == "1700000000.000000005"
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"x"


def test_metadata_written_by_pys3fs_reads_back_in_a_new_mount(s3, bucket, mounter, umask022):
    first = mounter(bucket)
    with open(first.path("f"), "w") as f:
        f.write("x")
    os.chmod(first.path("f"), 0o640)
    os.utime(first.path("f"), ns=(1600000000 * S + 7, 1600000000 * S + 7))
    before = os.stat(first.path("f"))
    first.unmount()

    second = mounter(bucket)
    after = os.stat(second.path("f"))
    assert after.st_mode == stat.S_IFREG | 0o640
    assert after.st_mtime_ns == before.st_mtime_ns == 1600000000 * S + 7
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)


# -- what pys3fs rewrites keeps what other tools wrote -------------------------------------
OTHERS = {
    "app-tag": "keep-me",  # an application's own tag
    "xattr": "%7B%22user.origin%22%3A%22czNmcw%3D%3D%22%7D",  # s3fs-fuse use_xattr
    "btime": "2020-01-02T03:04:05Z",  # rclone's birth time
    "md5chksum": "XrY7u+Ae7tCTyyK7j1rNww==",  # rclone's MD5 of the bytes
}


def test_attribute_changes_keep_other_tools_metadata(mounter, s3, bucket, tmp_path):
    put(s3, bucket, "f", b"hello world", Metadata={"mode": "33188", **OTHERS})
    cache = f"use_cache={tmp_path / 'kept'}"
    mnt = mounter(bucket, cache)
    os.chmod(mnt.path("f"), 0o600)
    os.utime(mnt.path("f"), (1_600_000_000, 1_600_000_000))
    meta = s3.head_object(Bucket=bucket, Key="f")["Metadata"]
    assert {k: meta.get(k) for k in OTHERS} == OTHERS
    assert int(meta["mode"]) == stat.S_IFREG | 0o600
    mnt.unmount()
    # a remount that knows the entry from its metadata index, not from a HEAD
    mnt = mounter(bucket, cache, mountpoint=mnt.mountpoint)
    assert perms(os.stat(mnt.path("f"))) == 0o600
    os.chmod(mnt.path("f"), 0o640)
    meta = s3.head_object(Bucket=bucket, Key="f")["Metadata"]
    assert {k: meta.get(k) for k in OTHERS} == OTHERS
    assert int(meta["mode"]) == stat.S_IFREG | 0o640


def test_new_bytes_keep_other_tools_metadata_but_not_a_checksum_of_the_old(mnt, s3, bucket):
    put(s3, bucket, "f", b"hello world", Metadata={"mode": "33188", **OTHERS})
    with open(mnt.path("f"), "r+b") as f:
        f.write(b"HELLO")
    meta = s3.head_object(Bucket=bucket, Key="f")["Metadata"]
    assert {k: meta.get(k) for k in OTHERS} == {**OTHERS, "md5chksum": None}
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"HELLO world"


# how an object is served (a website's caching, a download's file name)
SERVED = {
    "CacheControl": "max-age=3600",
    "ContentDisposition": 'attachment; filename="report.pdf"',
    "ContentEncoding": "identity",
    "ContentLanguage": "en",
}


def served(s3, bucket: str, key: str) -> dict:
    head = s3.head_object(Bucket=bucket, Key=key)
    return {k: head.get(k) for k in SERVED}


def test_attribute_changes_and_renames_keep_how_objects_are_served(mounter, s3, bucket):
    put(s3, bucket, "page.html", b"<p>hi</p>", ContentType="text/html", **SERVED)
    big = os.urandom(11 * 1024 * 1024)  # over multipart_size: multipart copies
    put(s3, bucket, "big.bin", big, **SERVED)
    mnt = mounter(bucket, "multipart_size=5")
    os.chmod(mnt.path("page.html"), 0o600)  # CopyObject replacing the metadata
    os.utime(mnt.path("page.html"), (1_600_000_000, 1_600_000_000))
    os.rename(mnt.path("big.bin"), mnt.path("moved.bin"))
    os.chmod(mnt.path("moved.bin"), 0o640)
    assert served(s3, bucket, "page.html") == SERVED
    head = s3.head_object(Bucket=bucket, Key="page.html")
    assert head["ContentType"] == "text/html"
    assert int(head["Metadata"]["mode"]) == stat.S_IFREG | 0o600
    assert served(s3, bucket, "moved.bin") == SERVED
    assert int(s3.head_object(Bucket=bucket, Key="moved.bin")["Metadata"]["mode"]) == (
        stat.S_IFREG | 0o640
    )
    with open(mnt.path("moved.bin"), "rb") as f:
        assert f.read() == big


def test_chmod_and_utime_of_a_big_file_reach_s3(mounter, s3, bucket, tmp_path):
    """A file over multipart_size is rewritten with a multipart copy (UploadPartCopy),
    which must take the new metadata: a new mount, with a new cache, shows it."""
    mnt = mounter(bucket, "multipart_size=5", f"use_cache={tmp_path / 'first'}")
    data = os.urandom(11 * 1024 * 1024)
    with open(mnt.path("big"), "wb") as f:
        f.write(data)
    os.chmod(mnt.path("big"), 0o600)
    os.utime(mnt.path("big"), (1_500_000_000, 1_500_000_000))
    mnt.unmount()
    mnt = mounter(bucket, f"use_cache={tmp_path / 'second'}", mountpoint=mnt.mountpoint)
    st = os.stat(mnt.path("big"))
    assert perms(st) == 0o600
    assert st.st_mtime == 1_500_000_000
    with open(mnt.path("big"), "rb") as f:
        assert f.read() == data
