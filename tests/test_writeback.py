"""Write-back mode and crash safety, through real mounts.

``-o writeback``: close returns once the bytes and a journal record are on the local
disk; uploads run in the background; fsync, unmount and SIGTERM wait for S3. After a
``kill -9`` the next mount with the same cache directory uploads every closed file
(resuming multipart uploads), aborts the uploads of files never closed, and nothing
half-written ever appears in S3 as a complete object.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import tarfile
import time

import pytest
from conftest import daemon_pids, force_unmount
from test_files import payload, read_file, s3_bytes, s3_exists, s3_keys, s3_meta, write_file

MiB = 1024 * 1024
NEVER = "writeback_delay=3600"  # uploads wait: the test decides when the daemon dies


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def kill_daemon(mnt, open_fd: int | None = None) -> None:
    """A crash: SIGKILL, no chance to upload anything; then clear the dead mount."""
    pids = daemon_pids(mnt.mountpoint)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_daemon_exit(pids)
    if open_fd is not None:
        with contextlib.suppress(OSError):  # the daemon is gone: this close reaches nobody
            os.close(open_fd)
    force_unmount(mnt.mountpoint, pids)


def wait_daemon_exit(pids: list[int], timeout: float = 120) -> None:
    def gone() -> bool:
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(")")[-1].split()[0] != "Z":
                        return False
            except OSError:
                continue
        return True

    wait_for(gone, timeout, "the daemon to exit")


def pending(run, target: str) -> str:
    return run("pys3fs", "pending", target).stdout


def multipart_uploads(s3, bucket: str) -> list[dict]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


@pytest.fixture
def cache(tmp_path) -> str:
    path = str(tmp_path / "wb-cache")
    os.makedirs(path, exist_ok=True)
    return path


def test_close_returns_before_upload_and_fsync_waits(bucket, mounter, s3, cache, run):
    mnt = mounter(bucket, "writeback", NEVER, f"use_cache={cache}")
    data = payload(300_000, seed=1)
    write_file(mnt.path("later.bin"), data)
    # closed: durable here, not in S3 yet, and every local call sees it
    assert not s3_exists(s3, bucket, "later.bin")
    assert os.stat(mnt.path("later.bin")).st_size == len(data)
    assert read_file(mnt.path("later.bin")) == data
    assert "later.bin" in os.listdir(mnt.mountpoint)
    journal = os.listdir(os.path.join(cache, bucket, "journal"))
    assert any(name.endswith(".json") for name in journal)
    shown = pending(run, mnt.mountpoint)
    assert "later.bin" in shown and "queued" in shown
    # fsync waits for S3
    fd = os.open(mnt.path("later.bin"), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    assert s3_bytes(s3, bucket, "later.bin") == data
    assert "nothing pending" in pending(run, mnt.mountpoint)
    assert not [n for n in os.listdir(os.path.join(cache, bucket, "journal")) if n.endswith("json")]


def test_background_upload_carries_attributes_set_after_close(bucket, mounter, s3, cache):
    """tar sets times and modes after close: they join the pending upload."""
    mnt = mounter(bucket, "writeback", "writeback_delay=1", f"use_cache={cache}")
    write_file(mnt.path("f.txt"), b"content")
    os.chmod(mnt.path("f.txt"), 0o600)
    os.utime(mnt.path("f.txt"), (1_000_000_000, 1_234_567_890))
    wait_for(lambda: s3_exists(s3, bucket, "f.txt"), what="the upload")
    wait_for(lambda: s3_meta(s3, bucket, "f.txt").get("mtime") == "1234567890", what="mtime")
    meta = s3_meta(s3, bucket, "f.txt")
    assert int(meta["mode"]) & 0o7777 == 0o600
    assert s3_bytes(s3, bucket, "f.txt") == b"content"


def test_rename_and_unlink_of_pending_files(bucket, mounter, s3, cache, run):
    mnt = mounter(bucket, "writeback", NEVER, f"use_cache={cache}")
    write_file(mnt.path("a.txt"), b"moved")
    write_file(mnt.path("gone.txt"), b"deleted before upload")
    os.rename(mnt.path("a.txt"), mnt.path("b.txt"))
    os.unlink(mnt.path("gone.txt"))
    assert sorted(os.listdir(mnt.mountpoint)) == ["b.txt"]
    assert s3_bytes(s3, bucket, "b.txt") == b"moved"
    mnt.unmount()
    assert s3_keys(s3, bucket) == ["b.txt"]


def test_unmount_and_sigterm_wait_for_the_queue(bucket, mounter, s3, cache):
    files = {f"dir/f{i}.bin": payload(10_000 + i, seed=i) for i in range(20)}
    mnt = mounter(bucket, "writeback", NEVER, f"use_cache={cache}")
    os.mkdir(mnt.path("dir"))
    for key, data in files.items():
        write_file(mnt.path(key), data)
    assert not any(k.startswith("dir/f") for k in s3_keys(s3, bucket))
    pids = daemon_pids(mnt.mountpoint)
    subprocess.run(["fusermount", "-u", mnt.mountpoint], check=True)
    wait_daemon_exit(pids)
    for key, data in files.items():
        assert s3_bytes(s3, bucket, key) == data

    mnt = mounter(bucket, "writeback", NEVER, f"use_cache={cache}", mountpoint=mnt.mountpoint)
    write_file(mnt.path("dir/term.bin"), b"sigterm")
    pids = daemon_pids(mnt.mountpoint)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    wait_daemon_exit(pids)
    force_unmount(mnt.mountpoint, pids)
    assert s3_bytes(s3, bucket, "dir/term.bin") == b"sigterm"


def test_kill_after_close_before_upload(bucket, mounter, s3, cache, run):
    """Closed files survive kill -9: the next mount uploads them, with their modes."""
    opts = ("writeback", NEVER, f"use_cache={cache}", "multipart_size=5")
    mnt = mounter(bucket, *opts)
    small = payload(4096, seed=2)
    big = payload(13 * MiB, seed=3)  # three parts
    write_file(mnt.path("small.txt"), small)
    os.chmod(mnt.path("small.txt"), 0o640)
    write_file(mnt.path("big.bin"), big)
    kill_daemon(mnt)
    assert not s3_exists(s3, bucket, "small.txt")
    assert not s3_exists(s3, bucket, "big.bin")
    offline = pending(run, cache)
    assert "small.txt" in offline and "big.bin" in offline

    mnt = mounter(bucket, "writeback", f"use_cache={cache}", mountpoint=mnt.mountpoint)
    # served from the cache before it reaches S3, then uploaded
    assert read_file(mnt.path("small.txt")) == small
    wait_for(lambda: s3_exists(s3, bucket, "big.bin"), what="the recovered upload")
    wait_for(lambda: "nothing pending" in pending(run, mnt.mountpoint), what="no pending")
    assert s3_bytes(s3, bucket, "small.txt") == small
    assert s3_bytes(s3, bucket, "big.bin") == big
    assert int(s3_meta(s3, bucket, "small.txt")["mode"]) & 0o7777 == 0o640
    assert multipart_uploads(s3, bucket) == []
    assert read_file(mnt.path("big.bin")) == big


def test_del_cache_keeps_what_the_journal_still_needs(bucket, mounter, s3, cache):
    """del_cache drops cached data at mount, but never a file still waiting for S3."""
    s3.put_object(Bucket=bucket, Key="clean", Body=b"only cached")
    mnt = mounter(bucket, "writeback", NEVER, f"use_cache={cache}")
    assert read_file(mnt.path("clean")) == b"only cached"
    data = payload(200_000, seed=9)
    write_file(mnt.path("unsent.bin"), data)
    kill_daemon(mnt)
    assert not s3_exists(s3, bucket, "unsent.bin")

    mnt = mounter(bucket, "writeback", "del_cache", f"use_cache={cache}", mountpoint=mnt.mountpoint)
    wait_for(lambda: s3_exists(s3, bucket, "unsent.bin"), what="the recovered upload")
    assert s3_bytes(s3, bucket, "unsent.bin") == data
    assert read_file(mnt.path("clean")) == b"only cached"


@pytest.mark.parametrize("mode", [(), ("writeback",)], ids=["default", "writeback"])
def test_kill_mid_write_leaves_no_object_and_no_orphan_upload(bucket, mounter, s3, cache, mode):
    """A file being written when the daemon dies was never closed: no object appears,
    its multipart upload is aborted at the next mount, its bytes go to failed/."""
    mnt = mounter(bucket, *mode, f"use_cache={cache}", "multipart_size=5")
    write_file(mnt.path("old.txt"), b"closed before the crash")
    fd = os.open(mnt.path("open.bin"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, payload(12 * MiB, seed=4))  # two full parts stream while writing
    wait_for(lambda: multipart_uploads(s3, bucket), what="a multipart upload to start")
    kill_daemon(mnt, open_fd=fd)

    mnt = mounter(bucket, *mode, f"use_cache={cache}", mountpoint=mnt.mountpoint)
    assert multipart_uploads(s3, bucket) == []
    assert not s3_exists(s3, bucket, "open.bin")
    assert "open.bin" not in os.listdir(mnt.mountpoint)
    assert read_file(mnt.path("old.txt")) == b"closed before the crash"
    failed = os.listdir(os.path.join(cache, bucket, "failed"))
    assert any(name.startswith("open.bin") for name in failed)


def test_kill_mid_multipart_upload_resumes(bucket, mounter, s3, cache, run):
    """Killed while the parts of a closed file go up: the next mount completes the
    upload, and the object is either absent or complete, never partial."""
    opts = ("writeback", "writeback_delay=0", f"use_cache={cache}", "multipart_size=5")
    mnt = mounter(bucket, *opts, "max_thread_count=1")
    data = payload(60 * MiB, seed=5)
    write_file(mnt.path("huge.bin"), data)
    kill_daemon(mnt)
    if s3_exists(s3, bucket, "huge.bin"):  # the upload won the race: still whole
        assert s3_bytes(s3, bucket, "huge.bin") == data
    mnt = mounter(bucket, *opts, mountpoint=mnt.mountpoint)
    wait_for(lambda: "nothing pending" in pending(run, mnt.mountpoint), 120, "the upload")
    assert s3_bytes(s3, bucket, "huge.bin") == data
    assert multipart_uploads(s3, bucket) == []


def test_untar_through_writeback(bucket, mounter, s3, cache, tmp_path):
    src = tmp_path / "src"
    (src / "pkg" / "sub").mkdir(parents=True)
    expected = {}
    for i in range(60):
        rel = f"pkg/sub/m{i}.py" if i % 2 else f"pkg/m{i}.py"
        data = payload(100 + i * 37, seed=i)
        (src / rel).write_bytes(data)
        os.chmod(src / rel, 0o750 if i % 3 else 0o640)
        expected[rel] = data
    tarball = tmp_path / "t.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(src / "pkg", arcname="pkg")
    mnt = mounter(bucket, "writeback", f"use_cache={cache}")
    subprocess.run(["tar", "xf", str(tarball), "-C", mnt.mountpoint], check=True)
    for rel, data in expected.items():
        assert read_file(mnt.path(rel)) == data
    pids = daemon_pids(mnt.mountpoint)
    subprocess.run(["fusermount", "-u", mnt.mountpoint], check=True)
    wait_daemon_exit(pids)
    # tar's fchmod after writing joins the upload (its mtime-only utimensat never
    # reaches a libfuse 2 filesystem: see the README)
    for i, (rel, data) in enumerate(expected.items()):
        assert s3_bytes(s3, bucket, rel) == data
        assert int(s3_meta(s3, bucket, rel)["mode"]) & 0o777 == (0o750 if i % 3 else 0o640)


def test_writeback_refuses_a_shared_cache_dir(bucket, mounter, cache, tmp_path):
    mounter(bucket, f"use_cache={cache}")
    with pytest.raises(RuntimeError, match="writeback needs a cache directory of its own"):
        mounter(bucket, "writeback", f"use_cache={cache}")


def test_pending_of_an_empty_cache_dir(cache, run):
    os.makedirs(os.path.join(cache, "b", "journal"))
    assert "nothing pending" in pending(run, cache)


def requests(mnt) -> dict[str, int]:
    return json.loads(os.getxattr(mnt.mountpoint, "user.pys3fs.stats"))["requests"]


def test_directory_marker_waits_and_takes_later_attributes(bucket, mounter, s3, cache):
    """tar's mkdir, then chmod once the directory is filled: one PUT, no COPY."""
    mnt = mounter(bucket, "writeback", "writeback_delay=1", f"use_cache={cache}")
    before = requests(mnt)
    os.mkdir(mnt.path("d"), 0o700)
    write_file(mnt.path("d/f.txt"), b"inside")
    os.chmod(mnt.path("d"), 0o750)
    assert stat.S_IMODE(os.stat(mnt.path("d")).st_mode) == 0o750
    assert "d" in os.listdir(mnt.mountpoint)
    assert requests(mnt).get("PUT", 0) == before.get("PUT", 0)  # nothing sent yet
    wait_for(lambda: s3_exists(s3, bucket, "d/"), what="the marker")
    assert int(s3_meta(s3, bucket, "d/")["mode"]) & 0o7777 == 0o750
    wait_for(lambda: s3_exists(s3, bucket, "d/f.txt"), what="the file")
    after = requests(mnt)
    assert after.get("PUT", 0) - before.get("PUT", 0) == 2  # the marker and the file
    assert after.get("COPY", 0) == before.get("COPY", 0)


def test_rmdir_and_rename_of_pending_directories(bucket, mounter, s3, cache):
    mnt = mounter(bucket, "writeback", NEVER, f"use_cache={cache}")
    os.mkdir(mnt.path("gone"))
    os.rmdir(mnt.path("gone"))
    os.makedirs(mnt.path("old/sub"))
    os.rename(mnt.path("old"), mnt.path("new"))
    assert sorted(os.listdir(mnt.mountpoint)) == ["new"]
    assert os.listdir(mnt.path("new")) == ["sub"]
    assert s3_keys(s3, bucket) == ["new/", "new/sub/"]
    mnt.unmount()
    assert s3_keys(s3, bucket) == ["new/", "new/sub/"]


def test_unmount_uploads_pending_directories(bucket, mounter, s3, cache):
    mnt = mounter(bucket, "writeback", NEVER, f"use_cache={cache}")
    os.makedirs(mnt.path("a/b"))
    os.chmod(mnt.path("a/b"), 0o711)
    assert s3_keys(s3, bucket) == []
    mnt.unmount()
    assert s3_keys(s3, bucket) == ["a/", "a/b/"]
    assert int(s3_meta(s3, bucket, "a/b/")["mode"]) & 0o7777 == 0o711


def test_kill_after_mkdir_before_marker(bucket, mounter, s3, cache):
    """An empty directory made in write-back mode survives kill -9, with its mode."""
    mnt = mounter(bucket, "writeback", NEVER, f"use_cache={cache}")
    os.mkdir(mnt.path("empty"))
    os.chmod(mnt.path("empty"), 0o705)
    kill_daemon(mnt)
    assert s3_keys(s3, bucket) == []
    mnt = mounter(bucket, "writeback", NEVER, f"use_cache={cache}", mountpoint=mnt.mountpoint)
    assert s3_keys(s3, bucket) == ["empty/"]
    assert int(s3_meta(s3, bucket, "empty/")["mode"]) & 0o7777 == 0o705
    assert stat.S_IMODE(os.stat(mnt.path("empty")).st_mode) == 0o705
