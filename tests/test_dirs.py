"""Directories through a real mount: implicit and marker dirs, listings, mkdir/rmdir/rename.

Objects "another tool" wrote are created with boto3 directly; everything pys3fs shows or
writes is checked through ordinary file operations on the mount and against the bucket.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError
from test_writeback import wait_for

DIR_TYPE = "application/x-directory"


# ---------------------------------------------------------------------------- helpers


def put(s3, bucket: str, key: str, body: bytes = b"x", **kw) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, **kw)


def put_marker(s3, bucket: str, key: str, **kw) -> None:
    assert key.endswith("/")
    s3.put_object(Bucket=bucket, Key=key, Body=b"", ContentType=DIR_TYPE, **kw)


def keys_under(s3, bucket: str, prefix: str = "") -> set[str]:
    """Every key below ``prefix``, reading every ListObjectsV2 page."""
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


def put_many(server, bucket: str, keys: list[str], workers: int = 32) -> None:
    client = server.client(pool=workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=b""), keys))


def assert_errno(code: int, func, *args) -> None:
    with pytest.raises(OSError) as info:
        func(*args)
    assert info.value.errno == code, os.strerror(info.value.errno or 0)


def assert_alive(fs) -> None:
    """The daemon still answers: the mount is listed and its root can be read."""
    with open("/proc/self/mounts") as f:
        assert any(line.split()[1] == fs.mountpoint for line in f)
    os.listdir(fs.mountpoint)
    assert all(os.path.exists(f"/proc/{pid}") for pid in fs.pids)


def ls_count(run, path: str) -> int:
    """``ls PATH | wc -l``, failing when ls fails."""
    out = run("bash", "-c", 'set -o pipefail; ls "$1" | wc -l', "bash", path).stdout
    return int(out.strip())


def is_dir(path: str) -> bool:
    return stat.S_ISDIR(os.stat(path).st_mode)


def is_file(path: str) -> bool:
    return stat.S_ISREG(os.stat(path).st_mode)


def fsync_dir(path: str) -> None:
    """fsync(2) of a directory: its queued marker (and its parents') is in S3 after."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ implicit and markers


def test_implicit_directories_list_and_stat_at_every_level(mnt, s3, bucket):
    put(s3, bucket, "a/b/c.txt", b"hello")

    assert os.listdir(mnt.mountpoint) == ["a"]
    assert is_dir(mnt.path("a"))
    assert os.listdir(mnt.path("a")) == ["b"]
    assert is_dir(mnt.path("a/b"))
    assert os.listdir(mnt.path("a/b")) == ["c.txt"]
    st = os.stat(mnt.path("a/b/c.txt"))
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size == 5


def test_implicit_directory_stat_without_listing_first(mnt, s3, bucket):
    put(s3, bucket, "p/q/r/s.txt")
    # No listing fills any cache: every level is found by lookup alone.
    assert is_dir(mnt.path("p/q/r"))
    assert is_dir(mnt.path("p/q"))
    assert is_dir(mnt.path("p"))
    assert is_file(mnt.path("p/q/r/s.txt"))


def test_marker_objects_are_empty_directories(mnt, s3, bucket):
    put_marker(s3, bucket, "empty/")
    put_marker(s3, bucket, "outer/inner/")

    assert sorted(os.listdir(mnt.mountpoint)) == ["empty", "outer"]
    assert is_dir(mnt.path("empty"))
    assert os.listdir(mnt.path("empty")) == []
    assert os.listdir(mnt.path("outer")) == ["inner"]
    assert is_dir(mnt.path("outer/inner"))
    assert os.listdir(mnt.path("outer/inner")) == []


def test_marker_of_a_non_empty_directory_is_not_listed_as_an_entry(mnt, s3, bucket):
    put_marker(s3, bucket, "d/")
    put(s3, bucket, "d/f.txt")
    assert os.listdir(mnt.path("d")) == ["f.txt"]


# ------------------------------------------------------------------ big listings


def test_directory_of_2500_objects_lists_completely(mnt, s3_server, bucket, run):
    names = [f"f{i:05d}" for i in range(2500)]
    put_many(s3_server, bucket, [f"big/{n}" for n in names])

    assert sorted(os.listdir(mnt.path("big"))) == names
    assert ls_count(run, mnt.path("big")) == 2500


def test_directory_of_2500_subdirectories_lists_completely(mnt, s3_server, bucket):
    # CommonPrefixes are paginated too, and each page mixes them with objects.
    names = [f"d{i:05d}" for i in range(2500)]
    put_many(s3_server, bucket, [f"tree/{n}/leaf" for n in names] + ["tree/zfile"])
    assert sorted(os.listdir(mnt.path("tree"))) == [*names, "zfile"]


def test_a_file_and_a_prefix_of_one_name_on_two_listing_pages_list_once_as_directory(
    mnt, s3_server, bucket, run
):
    # "n-0000".."n-1199" sort between the file "n" and the prefix "n/" ('-' < '/'), so
    # a listing shows "n" on its first page and "n/" on its second. Names are handed
    # out page by page: "n" must wait for the page that settles it.
    fillers = [f"p/n-{i:04d}" for i in range(1200)]
    put_many(s3_server, bucket, ["p/n", *fillers, "p/n/inside"])

    long = run("ls", "-l", mnt.path("p")).stdout.splitlines()  # stats each name as it comes
    assert [line[0] for line in long if line.endswith(" n")] == ["d"]
    assert is_dir(mnt.path("p/n"))
    names = os.listdir(mnt.path("p"))
    assert names.count("n") == 1
    assert sorted(names) == sorted(["n", *(f.removeprefix("p/") for f in fillers)])
    found = run("find", mnt.path("p"), "-name", "inside").stdout.split()
    assert found == [mnt.path("p/n/inside")]


def test_rewinddir_and_an_early_closedir_on_a_paged_listing(mnt, s3_server, bucket):
    names = [f"r{i:05d}" for i in range(2100)]
    put_many(s3_server, bucket, [f"rw/{n}" for n in names])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.readdir.restype = ctypes.c_void_p
    libc.readdir.argtypes = libc.rewinddir.argtypes = libc.closedir.argtypes = [ctypes.c_void_p]
    name_at = 19  # d_name in glibc's struct dirent64 on Linux: after ino, off, reclen, type

    def read_names(handle, count: int | None = None) -> list[str]:
        got = []
        while count is None or len(got) < count:
            entry = libc.readdir(handle)
            if not entry:
                break
            got.append(ctypes.string_at(entry + name_at).decode())
        return [n for n in got if n not in (".", "..")]

    handle = libc.opendir(mnt.path("rw").encode())
    assert handle
    try:
        first = read_names(handle, 1500)  # into the second listing page
        libc.rewinddir(handle)
        again = read_names(handle)
    finally:
        libc.closedir(handle)
    assert len(first) == 1498 and first == again[:1498]
    assert sorted(again) == names
    with os.scandir(mnt.path("rw")) as it:  # closed after a few names: the rest is dropped
        assert len([next(it) for _ in range(5)]) == 5
    assert sorted(os.listdir(mnt.path("rw"))) == names
    assert_alive(mnt)


# ------------------------------------------------------------------ keys that are no paths


def test_keys_that_cannot_be_paths_are_hidden(mnt, s3_server, s3, bucket, run):
    long_name = "n" * 300
    bad = [
        "x//y",
        "./z",
        "../w",
        "a/./b",
        "a/../c",
        "/lead",
        "/",
        long_name,
        f"deep/{long_name}",
        "é" * 150,  # 150 characters, 300 bytes
    ]
    good = ["ok.txt", "a/fine.txt", "deep/fine.txt", "x/real.txt"]
    for key in bad:
        with contextlib.suppress(ClientError):  # a stricter server may refuse some
            put(s3, bucket, key)
    for key in good:
        put(s3, bucket, key)
    if s3_server.kind == "moto":
        assert keys_under(s3, bucket) == set(bad + good)  # the server kept every key

    assert sorted(os.listdir(mnt.mountpoint)) == ["a", "deep", "ok.txt", "x"]
    assert os.listdir(mnt.path("a")) == ["fine.txt"]
    assert os.listdir(mnt.path("deep")) == ["fine.txt"]
    assert os.listdir(mnt.path("x")) == ["real.txt"]
    assert is_file(mnt.path("a/fine.txt"))
    found = run("find", mnt.mountpoint).stdout.split("\n")
    rel = sorted(os.path.relpath(p, mnt.mountpoint) for p in found if p)
    assert rel == sorted([".", "a", "deep", "x", *good])
    assert_errno(errno.ENAMETOOLONG, os.stat, mnt.path(long_name))
    assert_alive(mnt)


def test_directory_holding_only_unusable_keys_lists_empty(mnt, s3, bucket):
    put(s3, bucket, "only//bad")
    assert os.listdir(mnt.mountpoint) == ["only"]
    assert os.listdir(mnt.path("only")) == []
    assert_alive(mnt)


# ------------------------------------------------------------------ file and prefix clash


def test_file_and_prefix_with_one_name_list_once_as_directory(mnt, s3, bucket):
    put(s3, bucket, "a", b"file body")
    put(s3, bucket, "a/inside.txt")
    put(s3, bucket, "b", b"plain file")

    assert sorted(os.listdir(mnt.mountpoint)) == ["a", "b"]
    assert is_dir(mnt.path("a"))
    assert os.listdir(mnt.path("a")) == ["inside.txt"]
    assert is_file(mnt.path("b"))


def test_file_and_prefix_clash_is_a_directory_without_listing_first(mnt, s3, bucket):
    put(s3, bucket, "a", b"file body")
    put(s3, bucket, "a/inside.txt")
    put(s3, bucket, "m", b"file body")
    put_marker(s3, bucket, "m/")
    # The first thing the kernel asks about "a" is a lookup, not the root listing.
    assert is_dir(mnt.path("a"))
    assert os.listdir(mnt.path("a")) == ["inside.txt"]
    assert is_dir(mnt.path("m"))
    assert sorted(os.listdir(mnt.mountpoint)) == ["a", "m"]


# ------------------------------------------------------------------ mkdir


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o700])
def test_mkdir_writes_an_s3fs_marker(mnt, s3, bucket, umask022, mode):
    os.mkdir(mnt.path("newdir"), mode)
    fsync_dir(mnt.path("newdir"))

    head = s3.head_object(Bucket=bucket, Key="newdir/")
    assert head["ContentLength"] == 0
    assert head["ContentType"] == DIR_TYPE
    meta = head["Metadata"]
    assert meta["mode"] == str(stat.S_IFDIR | mode)
    assert meta["uid"] == str(os.getuid())
    assert meta["gid"] == str(os.getgid())
    assert keys_under(s3, bucket) == {"newdir/"}
    st = os.stat(mnt.path("newdir"))
    assert st.st_mode == stat.S_IFDIR | mode
    assert os.listdir(mnt.path("newdir")) == []


def test_mkdir_marker_mode_matches_s3fs_value(mnt, s3, bucket, umask022):
    os.mkdir(mnt.path("d"), 0o755)
    fsync_dir(mnt.path("d"))
    assert s3.head_object(Bucket=bucket, Key="d/")["Metadata"]["mode"] == "16877"


def test_mkdir_nested_writes_marker_under_parent(mnt, s3, bucket):
    os.mkdir(mnt.path("one"))
    os.mkdir(mnt.path("one/two"))
    fsync_dir(mnt.path("one/two"))  # its parent's marker too
    assert keys_under(s3, bucket) == {"one/", "one/two/"}
    assert os.listdir(mnt.path("one")) == ["two"]


def test_mkdir_existing_name_is_eexist(mnt, s3, bucket):
    put_marker(s3, bucket, "marker/")
    put(s3, bucket, "implicit/child")
    put(s3, bucket, "file")
    os.mkdir(mnt.path("mine"))
    for name in ("marker", "implicit", "file", "mine"):
        assert_errno(errno.EEXIST, os.mkdir, mnt.path(name))
    fsync_dir(mnt.mountpoint)
    assert keys_under(s3, bucket) == {"marker/", "implicit/child", "file", "mine/"}


def test_mkdir_existing_name_is_eexist_without_kernel_cache(mnt, s3, bucket):
    # Created behind the mount's back after it started: only S3 knows.
    os.listdir(mnt.mountpoint)
    put(s3, bucket, "late/child")
    put(s3, bucket, "latefile")
    assert_errno(errno.EEXIST, os.mkdir, mnt.path("late"))
    assert_errno(errno.EEXIST, os.mkdir, mnt.path("latefile"))


def test_mkdir_in_missing_parent_is_enoent(mnt, s3, bucket):
    assert_errno(errno.ENOENT, os.mkdir, mnt.path("nope/child"))
    assert keys_under(s3, bucket) == set()


# ------------------------------------------------------------------ rmdir


def test_rmdir_with_a_real_child_is_enotempty(mnt, s3, bucket):
    put_marker(s3, bucket, "d/")
    put(s3, bucket, "d/child.txt")
    assert_errno(errno.ENOTEMPTY, os.rmdir, mnt.path("d"))
    assert keys_under(s3, bucket) == {"d/", "d/child.txt"}


def test_rmdir_with_a_child_made_through_the_mount_is_enotempty(mnt, s3, bucket):
    os.mkdir(mnt.path("d"))
    with open(mnt.path("d/f"), "w") as f:
        f.write("x")
    assert_errno(errno.ENOTEMPTY, os.rmdir, mnt.path("d"))
    assert keys_under(s3, bucket) == {"d/", "d/f"}


def test_rmdir_with_an_implicit_child_is_enotempty(mnt, s3, bucket):
    put_marker(s3, bucket, "d/")
    put(s3, bucket, "d/sub/deep.txt")  # d/sub exists only as a prefix
    assert_errno(errno.ENOTEMPTY, os.rmdir, mnt.path("d"))
    assert keys_under(s3, bucket) == {"d/", "d/sub/deep.txt"}
    assert is_dir(mnt.path("d/sub"))


def test_rmdir_with_a_file_still_open_is_enotempty(mnt, s3, bucket):
    os.mkdir(mnt.path("d"))
    with open(mnt.path("d/open.txt"), "w") as f:
        f.write("not uploaded yet")
        assert_errno(errno.ENOTEMPTY, os.rmdir, mnt.path("d"))
    assert s3.get_object(Bucket=bucket, Key="d/open.txt")["Body"].read() == b"not uploaded yet"


def test_rmdir_of_an_empty_marker_dir_removes_the_marker(mnt, s3, bucket):
    put_marker(s3, bucket, "gone/")
    put(s3, bucket, "keep.txt")
    assert is_dir(mnt.path("gone"))
    os.rmdir(mnt.path("gone"))
    assert keys_under(s3, bucket) == {"keep.txt"}
    assert os.listdir(mnt.mountpoint) == ["keep.txt"]
    assert not os.path.exists(mnt.path("gone"))


def test_rmdir_of_a_dir_made_by_mkdir(mnt, s3, bucket):
    os.mkdir(mnt.path("tmp"))
    os.rmdir(mnt.path("tmp"))
    assert keys_under(s3, bucket) == set()
    assert_errno(errno.ENOENT, os.stat, mnt.path("tmp"))


def test_rmdir_of_a_file_is_enotdir_and_of_missing_is_enoent(mnt, s3, bucket):
    put(s3, bucket, "file")
    assert_errno(errno.ENOTDIR, os.rmdir, mnt.path("file"))
    assert_errno(errno.ENOENT, os.rmdir, mnt.path("missing"))
    assert keys_under(s3, bucket) == {"file"}


# ------------------------------------------------------------------ rename


def test_rename_directory_moves_every_object_below(mnt, s3, bucket):
    put_marker(s3, bucket, "src/")
    put(s3, bucket, "src/top.txt", b"top")
    put_marker(s3, bucket, "src/sub/")
    put(s3, bucket, "src/sub/mid.txt", b"mid")
    put(s3, bucket, "src/sub/implicit/deep.txt", b"deep")
    put_marker(s3, bucket, "src/sub/emptydir/")
    put(s3, bucket, "srcx/unrelated.txt", b"other")  # shares the name's first letters

    os.rename(mnt.path("src"), mnt.path("dst"))

    assert keys_under(s3, bucket) == {
        "dst/",
        "dst/top.txt",
        "dst/sub/",
        "dst/sub/mid.txt",
        "dst/sub/implicit/deep.txt",
        "dst/sub/emptydir/",
        "srcx/unrelated.txt",
    }
    assert keys_under(s3, bucket, "src/") == set()
    body = s3.get_object(Bucket=bucket, Key="dst/sub/implicit/deep.txt")["Body"].read()
    assert body == b"deep"
    assert s3.head_object(Bucket=bucket, Key="dst/sub/emptydir/")["ContentType"] == DIR_TYPE
    assert sorted(os.listdir(mnt.mountpoint)) == ["dst", "srcx"]
    assert not os.path.exists(mnt.path("src"))
    with open(mnt.path("dst/sub/mid.txt"), "rb") as f:
        assert f.read() == b"mid"
    assert os.listdir(mnt.path("dst/sub/emptydir")) == []


def test_rename_directory_keeps_modes_and_owners(mnt, s3, bucket):
    put_marker(s3, bucket, "src/", Metadata={"mode": str(stat.S_IFDIR | 0o750), "uid": "1001"})
    put(s3, bucket, "src/f", Metadata={"mode": str(stat.S_IFREG | 0o600), "gid": "1002"})
    os.rename(mnt.path("src"), mnt.path("dst"))

    assert s3.head_object(Bucket=bucket, Key="dst/")["Metadata"]["mode"] == "16872"
    assert s3.head_object(Bucket=bucket, Key="dst/f")["Metadata"]["mode"] == "33152"
    d = os.stat(mnt.path("dst"))
    assert (d.st_mode, d.st_uid) == (stat.S_IFDIR | 0o750, 1001)
    f = os.stat(mnt.path("dst/f"))
    assert (f.st_mode, f.st_gid) == (stat.S_IFREG | 0o600, 1002)


def test_rename_directory_made_through_the_mount(mnt, s3, bucket):
    os.makedirs(mnt.path("a/b/c"))
    with open(mnt.path("a/b/c/f.txt"), "w") as f:
        f.write("data")
    os.rename(mnt.path("a"), mnt.path("z"))
    assert keys_under(s3, bucket) == {"z/", "z/b/", "z/b/c/", "z/b/c/f.txt"}
    with open(mnt.path("z/b/c/f.txt")) as f:
        assert f.read() == "data"


def test_rename_onto_a_non_empty_directory_is_enotempty(mnt, s3, bucket):
    put(s3, bucket, "src/a.txt")
    put_marker(s3, bucket, "dst/")
    put(s3, bucket, "dst/b.txt")
    assert_errno(errno.ENOTEMPTY, os.rename, mnt.path("src"), mnt.path("dst"))
    assert keys_under(s3, bucket) == {"src/a.txt", "dst/", "dst/b.txt"}


def test_rename_onto_an_implicitly_non_empty_directory_is_enotempty(mnt, s3, bucket):
    put(s3, bucket, "src/a.txt")
    put(s3, bucket, "dst/sub/b.txt")
    assert_errno(errno.ENOTEMPTY, os.rename, mnt.path("src"), mnt.path("dst"))
    assert keys_under(s3, bucket) == {"src/a.txt", "dst/sub/b.txt"}


def test_rename_onto_an_empty_directory_replaces_it(mnt, s3, bucket):
    put(s3, bucket, "src/a.txt", b"a")
    put_marker(s3, bucket, "dst/")
    os.rename(mnt.path("src"), mnt.path("dst"))
    assert keys_under(s3, bucket) == {"dst/a.txt"}
    assert os.listdir(mnt.path("dst")) == ["a.txt"]


def test_rename_of_an_implicit_directory(mnt, s3, bucket):
    put(s3, bucket, "imp/one.txt", b"1")
    put(s3, bucket, "imp/deeper/two.txt", b"2")
    os.rename(mnt.path("imp"), mnt.path("moved"))
    assert keys_under(s3, bucket) == {"moved/one.txt", "moved/deeper/two.txt"}
    assert sorted(os.listdir(mnt.path("moved"))) == ["deeper", "one.txt"]
    assert os.listdir(mnt.mountpoint) == ["moved"]


def test_rename_directory_into_a_subdirectory_of_another(mnt, s3, bucket):
    put(s3, bucket, "a/f.txt")
    put_marker(s3, bucket, "b/")
    os.rename(mnt.path("a"), mnt.path("b/a"))
    assert keys_under(s3, bucket) == {"b/", "b/a/f.txt"}
    assert os.listdir(mnt.path("b/a")) == ["f.txt"]


def test_rename_directory_into_itself_is_einval(mnt, s3, bucket):
    put(s3, bucket, "a/f.txt")
    assert_errno(errno.EINVAL, os.rename, mnt.path("a"), mnt.path("a/inner"))
    assert keys_under(s3, bucket) == {"a/f.txt"}


# ------------------------------------------------------------------ prefix mounts


def test_prefix_mount_shows_only_the_prefix(s3, bucket, mounter):
    put(s3, bucket, "sub/dir/a.txt", b"a")
    put(s3, bucket, "sub/dir/x/y.txt", b"y")
    put(s3, bucket, "sub/dirt.txt", b"not below sub/dir/")
    put(s3, bucket, "sub/other.txt")
    put(s3, bucket, "top.txt")

    fs = mounter(bucket, prefix="/sub/dir")
    assert sorted(os.listdir(fs.mountpoint)) == ["a.txt", "x"]
    assert os.listdir(fs.path("x")) == ["y.txt"]
    with open(fs.path("a.txt"), "rb") as f:
        assert f.read() == b"a"
    assert not os.path.exists(fs.path("top.txt"))
    assert not os.path.exists(fs.path("other.txt"))


def test_prefix_mount_writes_under_the_prefix(s3, bucket, mounter):
    put(s3, bucket, "sub/dir/a.txt")
    fs = mounter(bucket, prefix="/sub/dir")

    with open(fs.path("new.txt"), "wb") as f:
        f.write(b"new")
    os.mkdir(fs.path("made"))
    with open(fs.path("made/inner.txt"), "wb") as f:
        f.write(b"inner")
    os.rename(fs.path("made"), fs.path("renamed"))

    assert keys_under(s3, bucket) == {
        "sub/dir/a.txt",
        "sub/dir/new.txt",
        "sub/dir/renamed/",
        "sub/dir/renamed/inner.txt",
    }
    assert s3.get_object(Bucket=bucket, Key="sub/dir/new.txt")["Body"].read() == b"new"
    os.unlink(fs.path("renamed/inner.txt"))
    os.rmdir(fs.path("renamed"))
    assert keys_under(s3, bucket) == {"sub/dir/a.txt", "sub/dir/new.txt"}


# ------------------------------------------------------------------ find


def test_find_returns_every_path_of_a_nested_tree(mnt, s3, bucket, run):
    files = ["r.txt", "a/1.txt", "a/b/2.txt", "a/b/c/3.txt", "a/b/c/d/4.txt", "e/5.txt"]
    for key in files:
        put(s3, bucket, key)
    put_marker(s3, bucket, "a/b/")
    put_marker(s3, bucket, "empty/")
    os.mkdir(mnt.path("made"))

    out = run("find", mnt.mountpoint).stdout.splitlines()
    found = sorted(os.path.relpath(p, mnt.mountpoint) for p in out)
    dirs = [".", "a", "a/b", "a/b/c", "a/b/c/d", "e", "empty", "made"]
    assert found == sorted(dirs + files)

    out = run("find", mnt.mountpoint, "-type", "d").stdout.splitlines()
    assert sorted(os.path.relpath(p, mnt.mountpoint) for p in out) == sorted(dirs)


def test_ls_of_tree_written_by_another_tool_agrees_with_bucket(mnt, s3, bucket):
    put(s3, bucket, "top/one.txt")
    put(s3, bucket, "top/two.txt")
    put_marker(s3, bucket, "top/three/")
    result = subprocess.run(["ls", "-1", mnt.path("top")], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.split() == ["one.txt", "three", "two.txt"]


def test_mkdir_inside_a_new_directory_sends_no_request(mnt, s3, bucket):
    """tar x and mkdir -p: below a directory made by this mount, mkdir asks S3 nothing
    and its marker is queued; the markers then go up in the background, one PUT each
    (``top``'s too)."""
    os.mkdir(mnt.path("top"))
    before = requests(mnt)
    os.makedirs(mnt.path("top/a/b/c"))
    after = requests(mnt)
    assert after == before
    wait_for(lambda: len(keys_under(s3, bucket)) == 4, what="the markers")
    assert keys_under(s3, bucket) == {"top/", "top/a/", "top/a/b/", "top/a/b/c/"}
    spent = {k: v - before.get(k, 0) for k, v in requests(mnt).items()}
    assert {k: v for k, v in spent.items() if v} == {"PUT": 4}


def test_mkdir_racing_another_host_is_eexist_with_immediate_markers(mounter, s3, bucket, tmp_path):
    """Without a journal (another mount uses the cache directory), the marker is
    written at mkdir with If-None-Match: a racing mkdir elsewhere is EEXIST."""
    cache = str(tmp_path / "shared-cache")
    mounter(bucket, f"use_cache={cache}")
    mnt = mounter(bucket, f"use_cache={cache}")
    os.mkdir(mnt.path("top"))
    assert keys_under(s3, bucket) == {"top/"}
    put_marker(s3, bucket, "top/raced/")  # another host, after this mount made "top"
    assert_errno(errno.EEXIST, os.mkdir, mnt.path("top/raced"))


def test_mkdir_racing_another_host_with_a_queued_marker(mnt, s3, bucket):
    """A queued marker that meets one made meanwhile elsewhere takes its place, with
    this mount's attributes: both mkdirs succeed, the directory is never lost."""
    os.mkdir(mnt.path("top"))
    put_marker(s3, bucket, "top/raced/", Metadata={"mode": str(stat.S_IFDIR | 0o755)})
    os.mkdir(mnt.path("top/raced"), 0o700)
    fsync_dir(mnt.path("top/raced"))
    assert s3.head_object(Bucket=bucket, Key="top/raced/")["Metadata"]["mode"] == str(
        stat.S_IFDIR | 0o700
    )


def test_attribute_changes_to_the_same_value_send_no_request(mnt):
    """tar (as root) restates owner and mode after close: that must cost nothing."""
    os.mkdir(mnt.path("d"), 0o755)
    with open(mnt.path("d/f.txt"), "wb") as f:
        f.write(b"x")
    os.chmod(mnt.path("d/f.txt"), 0o640)
    before = requests(mnt)
    for name, mode in (("d", 0o755), ("d/f.txt", 0o640)):
        st = os.stat(mnt.path(name))
        os.chown(mnt.path(name), st.st_uid, st.st_gid)
        os.chown(mnt.path(name), -1, -1)
        os.chmod(mnt.path(name), mode)
    after = requests(mnt)
    assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {}


def requests(mnt) -> dict[str, int]:
    return json.loads(os.getxattr(mnt.mountpoint, "user.pys3fs.stats"))["requests"]


# ------------------------------------------------------------------ queued markers
# mkdir queues the marker (with a journal record) and returns; it goes up once the
# directory and everything below it have been left alone for a moment, with the
# attributes they have by then.


def s3_dir_meta(s3, bucket: str, key: str) -> dict[str, str]:
    return s3.head_object(Bucket=bucket, Key=key)["Metadata"]


def spent_since(mnt, before: dict[str, int]) -> dict[str, int]:
    """Requests made since ``before`` (a ``requests(mnt)``), by kind."""
    return {k: v - before.get(k, 0) for k, v in requests(mnt).items() if v != before.get(k, 0)}


def test_mkdir_then_chmod_and_utime_is_one_marker_with_the_final_attributes(mnt, s3, bucket):
    """tar's order: mkdir, fill, then chmod and utime once the directory is complete:
    one PUT for the marker, carrying the final attributes, and no COPY."""
    os.mkdir(mnt.path("d"), 0o700)
    before = requests(mnt)
    with open(mnt.path("d/f.txt"), "wb") as f:
        f.write(b"inside")
    os.chmod(mnt.path("d"), 0o750)
    mtime = 1_234_567_890_500_000_000
    os.utime(mnt.path("d"), ns=(1_000_000_000_000_000_000, mtime))
    st = os.stat(mnt.path("d"))
    assert (st.st_mode, st.st_mtime_ns) == (stat.S_IFDIR | 0o750, mtime)
    wait_for(lambda: "d/" in keys_under(s3, bucket), what="the marker")
    meta = s3_dir_meta(s3, bucket, "d/")
    assert meta["mode"] == str(stat.S_IFDIR | 0o750)
    assert meta["mtime"] == "1234567890.500000000"
    assert spent_since(mnt, before) == {"PUT": 2}  # the file and the marker


def test_rmdir_and_rename_of_just_made_directories(mnt, s3, bucket):
    os.mkdir(mnt.path("gone"))
    os.rmdir(mnt.path("gone"))
    os.makedirs(mnt.path("full/sub"))
    assert_errno(errno.ENOTEMPTY, os.rmdir, mnt.path("full"))
    os.makedirs(mnt.path("old/sub"))
    os.mkdir(mnt.path("target"))
    assert_errno(errno.ENOTEMPTY, os.rename, mnt.path("target"), mnt.path("full"))
    os.rename(mnt.path("old"), mnt.path("new"))
    assert sorted(os.listdir(mnt.mountpoint)) == ["full", "new", "target"]
    assert os.listdir(mnt.path("new")) == ["sub"]
    assert keys_under(s3, bucket, "new/") == {"new/", "new/sub/"}
    assert keys_under(s3, bucket, "old/") == set()
    assert keys_under(s3, bucket, "gone/") == set()
    mnt.unmount()
    assert keys_under(s3, bucket) == {"full/", "full/sub/", "new/", "new/sub/", "target/"}


def test_fsync_puts_queued_markers_at_once(mnt, s3, bucket):
    """fsync of a directory puts its marker and its parents'; fsync of a file puts the
    markers of the directories leading to it (whose modes protect it)."""
    os.makedirs(mnt.path("a/b/c"), 0o700)
    fsync_dir(mnt.path("a/b"))
    assert {"a/", "a/b/", "a/b/c/"} <= keys_under(s3, bucket)
    os.makedirs(mnt.path("x/y"))
    os.chmod(mnt.path("x/y"), 0o711)
    fd = os.open(mnt.path("x/y/f.txt"), os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.write(fd, b"durable")
        os.fsync(fd)
        assert {"x/", "x/y/", "x/y/f.txt"} <= keys_under(s3, bucket)
        assert s3_dir_meta(s3, bucket, "x/y/")["mode"] == str(stat.S_IFDIR | 0o711)
    finally:
        os.close(fd)


def test_another_mount_sees_a_new_directory_shortly(mounter, s3, bucket):
    here, there = mounter(bucket), mounter(bucket)
    assert os.listdir(there.mountpoint) == []
    os.mkdir(here.path("new"), 0o710)
    # the marker is queued for 0.1 s (at most 2 s when kept busy); no timing is asserted
    wait_for(lambda: "new" in os.listdir(there.mountpoint), timeout=30, what="the directory")
    assert os.stat(there.path("new")).st_mode == stat.S_IFDIR | 0o710


def test_unmount_puts_queued_markers(mnt, s3, bucket):
    os.makedirs(mnt.path("a/b"))
    os.chmod(mnt.path("a/b"), 0o711)
    mnt.unmount()
    assert keys_under(s3, bucket) == {"a/", "a/b/"}
    assert s3_dir_meta(s3, bucket, "a/b/")["mode"] == str(stat.S_IFDIR | 0o711)


def test_untar_gives_directories_their_modes_and_times_in_s3(mnt, s3, bucket, tmp_path, run):
    """tar x sets each directory's mode and times after filling it: the markers carry
    them (s3fs format), one PUT per directory, no COPY. (``-G`` makes GNU tar set the
    atime too: the mtime-only utimensat it sends otherwise never reaches a libfuse 2
    filesystem, see the README.)"""
    src = tmp_path / "src"
    dirs = {"pkg": 0o755, "pkg/sub": 0o750, "pkg/sub/deep": 0o700, "pkg/empty": 0o711}
    for rel in dirs:
        (src / rel).mkdir(parents=True, exist_ok=True)
        for j in range(3 if rel != "pkg/empty" else 0):
            (src / rel / f"f{j}.txt").write_bytes(f"{rel} {j}".encode())
    for i, (rel, mode) in enumerate(sorted(dirs.items(), reverse=True)):  # deepest first
        os.chmod(src / rel, mode)
        os.utime(src / rel, (1_600_000_000, 1_500_000_000 + i * 1000))
    mtimes = {rel: os.stat(src / rel).st_mtime_ns for rel in dirs}
    tarball = tmp_path / "t.tar"
    run("tar", "cf", str(tarball), "-C", str(src), "pkg")

    before = requests(mnt)
    run("tar", "-x", "-G", "-f", str(tarball), "-C", mnt.mountpoint)
    wait_for(lambda: not pending_dirs(mnt), what="the markers")
    for rel, mode in dirs.items():
        meta = s3_dir_meta(s3, bucket, rel + "/")
        assert meta["mode"] == str(stat.S_IFDIR | mode), rel
        assert meta["mtime"] == str(mtimes[rel] // 1_000_000_000), rel
        st = os.stat(mnt.path(rel))
        assert (st.st_mode, st.st_mtime_ns) == (stat.S_IFDIR | mode, mtimes[rel]), rel
    spent = spent_since(mnt, before)
    assert spent.get("COPY", 0) == 0, spent
    assert spent["PUT"] == len(dirs) + 9, spent  # 9 files


def pending_dirs(mnt) -> list[dict]:
    pending = json.loads(os.getxattr(mnt.mountpoint, "user.pys3fs.pending"))
    return [p for p in pending if "directory" in p["state"]]
