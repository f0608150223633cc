"""Never lose a byte: a real mount behind a fault-injecting proxy (tests/s3proxy.py).

Failing S3 requests (500 InternalError, 503 SlowDown, reset connections, delays,
silence) and a server cut off entirely must never look like "not found", never show a
wrong size, never replace an object by an empty one, never return wrong bytes, never
take the daemon down and never lose written data. What the user sees is EIO, or the
operation succeeds after retries. Every outcome is also checked in S3 itself, with boto3
talking to the server directly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import stat
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from conftest import PYS3FS
from s3proxy import DELAY, ERROR_500, ERROR_503, LOST, RESET, SILENCE
from test_dirs import fsync_dir, requests
from test_files import read_file, write_file
from test_writeback import kill_daemon

MiB = 1024 * 1024
# Short timeouts keep "silence" and "cut off" quick; a test never asserts a duration.
QUICK = ("connect_timeout=1", "readwrite_timeout=2")


@pytest.fixture
def via_proxy(proxy, mounter, s3_server, tmp_path):
    """Mount through the proxy; faults end before the mount is unmounted (so an
    unmount after a failed test does not wait on them)."""
    log = tmp_path / "pys3fs.log"

    def make(bucket: str, *options: str):
        server = replace(s3_server, url=proxy.url)
        mnt = mounter(bucket, *QUICK, f"logfile={log}", *options, server=server)
        mnt.log = log
        return mnt

    try:
        yield make
    finally:
        proxy.clear()
        proxy.restore()


def s3_bytes(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def assert_attempts(proxy, method: str, attempts: int, call, *args) -> None:
    """With every ``method`` request answered 500, ``call`` fails with EIO after exactly
    ``attempts`` of them."""
    proxy.inject(1.0, [ERROR_500], methods=[method])
    before = proxy.total[method]
    fails_with_eio(call, *args)
    assert proxy.total[method] - before == attempts


def fails_with_eio(call, *args) -> None:
    """The call fails, and with EIO: never ENOENT (or anything else)."""
    with pytest.raises(OSError) as info:
        call(*args)
    assert info.value.errno == errno.EIO, f"{call.__name__}{args}: {info.value}"


def all_fail_with_eio(*calls: tuple) -> None:
    """fails_with_eio for each (call, *args), run side by side as by several users."""
    with ThreadPoolExecutor(len(calls)) as pool:
        list(pool.map(lambda c: fails_with_eio(*c), calls))


def wait_for(find, count: int, timeout: float = 60) -> list:
    """What ``find()`` returns once it holds ``count`` items (for what the daemon does
    after a call has returned); fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while len(found := find()) < count:
        assert time.monotonic() < deadline, f"only {found}"
        time.sleep(0.05)
    return found


def close_quietly(fds: list[int]) -> None:
    """Close what a failed test left open (an open file would block the unmount)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def close_failing(fds: list[int], i: int) -> None:
    """close(2) of ``fds[i]`` fails with EIO (the descriptor is gone all the same)."""
    fd, fds[i] = fds[i], -1
    fails_with_eio(os.close, fd)


# -- only a real 404 is "not found" -------------------------------------------------------


@pytest.mark.parametrize("kind", [ERROR_500, ERROR_503, RESET, SILENCE])
def test_a_failing_server_never_makes_a_file_look_missing_or_empty(
    s3, bucket, proxy, via_proxy, kind
):
    data, other = os.urandom(300_000), os.urandom(1000)
    mode = stat.S_IFREG | 0o640
    s3.put_object(Bucket=bucket, Key="d/f.bin", Body=data, Metadata={"mode": str(mode)})
    s3.put_object(Bucket=bucket, Key="d/g.bin", Body=other)
    retries = "retries=1" if kind in (ERROR_500, RESET) else "retries=0"  # quick either way
    mnt = via_proxy(bucket, retries, "readwrite_timeout=1")
    path = mnt.path("d", "f.bin")
    assert os.path.isdir(mnt.path("d"))  # the directory is known; its files are not yet
    opened = os.open(mnt.path("d", "g.bin"), os.O_RDONLY)  # a HEAD, no data yet
    try:
        proxy.inject(1.0, [kind], methods=["HEAD", "GET"])  # GET: reads and listings
        all_fail_with_eio(
            (os.read, opened, 4096),
            (os.stat, path),
            (os.listdir, mnt.path("d")),
            (os.listdir, mnt.mountpoint),
            (open, path, "ab"),
            (open, path, "wb"),  # O_TRUNC of a file it cannot see: no empty PUT
        )

        proxy.inject(1.0, [kind], methods=["HEAD"])  # listings work, their HEADs fail
        assert sorted(os.listdir(mnt.path("d"))) == ["f.bin", "g.bin"]
        fails_with_eio(os.stat, path)

        proxy.clear()
        st = os.stat(path)
        assert (st.st_size, st.st_mode) == (len(data), mode)
        assert read_file(path) == data
        assert os.read(opened, len(other) + 1) == other
    finally:
        os.close(opened)
    assert proxy.injected[kind] > 0
    assert s3_bytes(s3, bucket, "d/f.bin") == data  # never replaced by an empty object
    assert s3_bytes(s3, bucket, "d/g.bin") == other
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]} == {
        "d/f.bin",
        "d/g.bin",
    }


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_is_the_number_of_retries(s3, bucket, proxy, via_proxy, retries):
    s3.put_object(Bucket=bucket, Key="f", Body=b"f")
    mnt = via_proxy(bucket, f"retries={retries}")
    assert_attempts(proxy, "HEAD", retries + 1, os.stat, mnt.path("f"))


def test_a_retried_request_counts_once_in_the_stats(s3, bucket, proxy, via_proxy):
    # The first attempt of a HEAD goes without boto3 (pys3fs.quickreq), the retry through
    # boto3: the request counters say what was asked, not how often it was tried.
    s3.put_object(Bucket=bucket, Key="f", Body=b"f")
    mnt = via_proxy(bucket, "retries=2")
    before = requests(mnt).get("HEAD", 0)
    proxy.inject(1.0, [ERROR_503], methods=["HEAD"], limit=1)
    attempts = proxy.total["HEAD"]
    assert os.stat(mnt.path("f")).st_size == 1
    assert proxy.total["HEAD"] - attempts == 2
    assert requests(mnt)["HEAD"] - before == 1


def test_a_connection_the_server_closed_while_idle_is_no_failure(s3, bucket, proxy, via_proxy):
    # HEADs go out on kept-alive connections of their own (pys3fs.quickreq): one that
    # the server closed while idle is opened again, not counted as a failed attempt.
    for name in ("f", "g"):
        s3.put_object(Bucket=bucket, Key=name, Body=name.encode())
    proxy.idle_timeout = 0.3
    mnt = via_proxy(bucket, "retries=0")
    assert os.stat(mnt.path("f")).st_size == 1
    time.sleep(1)  # the proxy has closed every connection by now
    assert os.stat(mnt.path("g")).st_size == 1
    assert read_file(mnt.path("g")) == b"g"


# -- reads ---------------------------------------------------------------------------------


def test_reads_under_faults_return_the_right_bytes_or_eio(s3, bucket, proxy, via_proxy):
    data = os.urandom(3 * MiB)
    s3.put_object(Bucket=bucket, Key="r.bin", Body=data)
    mnt = via_proxy(bucket, "retries=0", "readwrite_timeout=1", "direct_io")
    fds = [os.open(mnt.path("r.bin"), os.O_RDONLY) for _ in range(4)]
    kinds = [ERROR_500, ERROR_503, RESET, DELAY, SILENCE]
    proxy.inject(0.5, kinds, methods=["GET"], delay=0.3)
    outcomes: list[str] = []
    wrong: list[tuple[int, int]] = []

    def reader(fd: int, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(8):
            offset, size = rng.randrange(len(data)), rng.choice([1, 4096, 65536, 131072])
            try:
                got = os.pread(fd, size, offset)
            except OSError as exc:
                outcomes.append("EIO" if exc.errno == errno.EIO else f"errno {exc.errno}")
                continue
            outcomes.append("ok")
            if got != data[offset : offset + size]:
                wrong.append((offset, size))

    threads = [threading.Thread(target=reader, args=(fd, i)) for i, fd in enumerate(fds)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proxy.clear()
        close_quietly(fds)
    proxy.wait_idle()  # reads still waiting on a silenced request are done
    assert wrong == []
    assert set(outcomes) == {"ok", "EIO"}  # both happened, nothing else did
    assert read_file(mnt.path("r.bin")) == data


def test_a_read_waiting_on_another_reads_fetch_gets_its_own_bytes(s3, bucket, proxy, via_proxy):
    """Two reads of one file, the first one's ranged GET slowed down: the second must
    not take that GET for its own when it covers only part of what it needs."""
    data = os.urandom(1 * MiB)
    s3.put_object(Bucket=bucket, Key="two.bin", Body=data)
    mnt = via_proxy(bucket, "direct_io")
    first, second = (os.open(mnt.path("two.bin"), os.O_RDONLY) for _ in range(2))
    got: dict[str, bytes] = {}
    proxy.inject(1.0, [DELAY], methods=["GET"], delay=0.6)
    try:
        later = threading.Thread(target=lambda: got.update(a=os.pread(first, 65536, 100_000)))
        later.start()
        threading.Event().wait(0.2)  # the first GET is on its way
        got["b"] = os.pread(second, 65536, 0)
        later.join()
    finally:
        os.close(first)
        os.close(second)
    assert got["a"] == data[100_000:165_536]
    assert got["b"] == data[:65536]


def test_a_slow_fetch_never_brings_old_bytes_back_after_a_truncate(s3, bucket, proxy, via_proxy):
    """A read-ahead GET still under way when the file is truncated and rewritten must
    not fill the new file's holes with the old object's bytes."""
    s3.put_object(Bucket=bucket, Key="t.bin", Body=os.urandom(1 * MiB))
    mnt = via_proxy(bucket, "direct_io")
    fds = [os.open(mnt.path("t.bin"), os.O_RDONLY)]
    proxy.inject(1.0, [DELAY], methods=["GET"], delay=0.6)
    try:
        reading = threading.Thread(target=os.pread, args=(fds[0], 4096, 0))
        reading.start()
        threading.Event().wait(0.2)  # its GET of the whole object is on its way
        fds.append(os.open(mnt.path("t.bin"), os.O_RDWR | os.O_TRUNC))
        os.pwrite(fds[1], b"new", 100_000)
        reading.join()
        proxy.wait_idle()  # the old bytes have come
        assert os.pread(fds[1], 200_000, 0) == bytes(100_000) + b"new"
        os.close(fds.pop())
    finally:
        close_quietly(fds)
    assert s3_bytes(s3, bucket, "t.bin") == bytes(100_000) + b"new"


# -- uploads -------------------------------------------------------------------------------


def test_an_upload_out_of_retries_fails_with_eio_keeps_the_data_and_succeeds_later(
    s3, bucket, proxy, via_proxy
):
    s3.put_object(Bucket=bucket, Key="old.txt", Body=b"old content")
    mnt = via_proxy(bucket, "retries=1", "multipart_size=5")
    new, over, big = os.urandom(200_000), os.urandom(50_000), os.urandom(6 * MiB + 123)
    os.stat(mnt.path("old.txt"))
    proxy.inject(1.0, [ERROR_500], methods=["PUT", "POST"])  # uploads, parts, completions
    fds = [
        os.open(mnt.path("new.bin"), os.O_CREAT | os.O_WRONLY, 0o600),
        os.open(mnt.path("old.txt"), os.O_WRONLY | os.O_TRUNC),
        os.open(mnt.path("big.bin"), os.O_CREAT | os.O_WRONLY, 0o644),
    ]
    try:
        assert os.write(fds[0], new) == len(new)
        fails_with_eio(os.fsync, fds[0])
        assert os.write(fds[1], over) == len(over)
        for start in range(0, len(big), MiB):  # every write lands in the cache, parts fail
            assert os.write(fds[2], big[start : start + MiB]) == len(big[start : start + MiB])
        for i in range(len(fds)):
            close_failing(fds, i)
    finally:
        close_quietly(fds)

    # A copy of each is in the cache directory, where the log says (once the last
    # close, which close(2) does not wait for, has run).
    kept = wait_for(
        lambda: re.findall(r"upload of (\S+) failed; .* kept in (\S+)", mnt.log.read_text()), 3
    )
    assert {name: read_file(copy) for name, copy in kept} == {
        "new.bin": new,
        "old.txt": over,
        "big.bin": big,
    }
    # The files show what was written; S3 keeps what it had (never an empty object).
    assert s3_bytes(s3, bucket, "old.txt") == b"old content"
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]} == {"old.txt"}
    assert os.stat(mnt.path("new.bin")).st_size == len(new)
    assert read_file(mnt.path("old.txt")) == over
    assert sorted(os.listdir(mnt.mountpoint)) == ["big.bin", "new.bin", "old.txt"]

    proxy.clear()
    write_file(mnt.path("other.txt"), b"the daemon is fine")  # still up, other files work
    assert s3_bytes(s3, bucket, "other.txt") == b"the daemon is fine"
    for name in ("new.bin", "old.txt", "big.bin"):  # the next open + fsync uploads
        fd = os.open(mnt.path(name), os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    assert s3_bytes(s3, bucket, "new.bin") == new
    assert s3_bytes(s3, bucket, "old.txt") == over
    assert s3_bytes(s3, bucket, "big.bin") == big
    assert stat.S_IMODE(os.stat(mnt.path("new.bin")).st_mode) == 0o600


def src_tree(s3, bucket: str) -> dict[str, bytes]:
    """A directory src/ of 30 small files (and its marker), written straight to S3."""
    files = {f"src/f{i:02d}": os.urandom(100 + i) for i in range(30)}
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    s3.put_object(Bucket=bucket, Key="src/", Body=b"", ContentType="application/x-directory")
    return files


def bucket_keys(s3, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


@pytest.mark.parametrize("over_empty_dir", [False, True])
def test_a_directory_move_that_fails_leaves_the_tree_where_it_was(
    s3, bucket, proxy, via_proxy, over_empty_dir
):
    files = src_tree(s3, bucket)
    if over_empty_dir:
        s3.put_object(Bucket=bucket, Key="dst/", Body=b"", ContentType="application/x-directory")
    mnt = via_proxy(bucket, "retries=0")
    os.listdir(mnt.path("src"))
    proxy.inject(0.3, [ERROR_500], methods=["PUT"])  # some of the copies fail, for good
    fails_with_eio(os.rename, mnt.path("src"), mnt.path("dst"))
    proxy.clear()
    assert 0 < proxy.injected[ERROR_500] < len(files)  # some copies were made
    keys = bucket_keys(s3, bucket)
    assert keys == {*files, "src/"} | ({"dst/"} if over_empty_dir else set())
    assert sorted(os.listdir(mnt.path("src"))) == sorted(k[4:] for k in files)
    assert os.path.isdir(mnt.path("dst")) is over_empty_dir
    if over_empty_dir:
        assert os.listdir(mnt.path("dst")) == []
    os.rename(mnt.path("src"), mnt.path("dst"))  # and it can simply be run again
    assert sorted(os.listdir(mnt.path("dst"))) == sorted(k[4:] for k in files)
    assert all(s3_bytes(s3, bucket, "dst/" + k[4:]) == body for k, body in files.items())
    assert not any(k.startswith("src/") for k in bucket_keys(s3, bucket))


def test_a_directory_move_the_daemon_died_in_is_finished_by_the_next_mount(
    s3, bucket, proxy, via_proxy, tmp_path
):
    files = src_tree(s3, bucket)
    cache = tmp_path / "kept-cache"
    mnt = via_proxy(bucket, f"use_cache={cache}")
    os.listdir(mnt.path("src"))
    proxy.inject(1.0, [DELAY], methods=["PUT"], delay=1.0)  # the copies are under way...

    def move() -> None:
        with contextlib.suppress(OSError):  # the daemon is killed under it
            os.rename(mnt.path("src"), mnt.path("dst"))

    mover = threading.Thread(target=move)
    mover.start()
    wait_for(lambda: [1] if proxy.in_flight["PUT"] else [], 1)
    kill_daemon(mnt)  # ... when the daemon dies
    mover.join()
    proxy.clear()
    proxy.wait_idle()
    assert {*files, "src/"} <= bucket_keys(
        s3, bucket
    )  # nothing was deleted yet: the tree is in both places
    shown = subprocess.run([PYS3FS, "pending", str(cache)], capture_output=True, text=True)
    assert "move to dst/ left unfinished" in shown.stdout

    mnt = via_proxy(bucket, f"use_cache={cache}")  # finishes the move before serving
    assert bucket_keys(s3, bucket) == {"dst/" + k[4:] for k in files} | {"dst/"}
    assert all(s3_bytes(s3, bucket, "dst/" + k[4:]) == body for k, body in files.items())
    assert sorted(os.listdir(mnt.mountpoint)) == ["dst"]
    assert sorted(os.listdir(mnt.path("dst"))) == sorted(k[4:] for k in files)
    assert "finishing the move of src/ to dst/" in mnt.log.read_text()


def test_a_failed_directory_marker_is_logged_retried_and_fsync_is_eio(s3, bucket, proxy, via_proxy):
    """mkdir returns before its marker is sent. When S3 does not take it, the log says
    so, fsync of the directory fails with EIO, the directory stays, and the marker is
    sent again (with backoff) until S3 takes it."""
    mnt = via_proxy(bucket, "retries=1")
    proxy.inject(1.0, [ERROR_500], methods=["PUT"])
    os.mkdir(mnt.path("d"), 0o750)
    fails_with_eio(fsync_dir, mnt.path("d"))
    wait_for(lambda: re.findall(r"marker of d/ failed", mnt.log.read_text()), 1)
    assert os.stat(mnt.path("d")).st_mode == stat.S_IFDIR | 0o750
    assert os.listdir(mnt.mountpoint) == ["d"]
    assert not _exists(s3, bucket, "d/")
    proxy.clear()
    wait_for(lambda: [1] if _exists(s3, bucket, "d/") else [], 1)  # the background retry
    fsync_dir(mnt.path("d"))
    mode = int(s3.head_object(Bucket=bucket, Key="d/")["Metadata"]["mode"])
    assert mode == stat.S_IFDIR | 0o750


def test_a_directory_whose_marker_s3_has_not_taken_survives_kill_9(
    s3, bucket, proxy, via_proxy, tmp_path
):
    """Its journal record stands for the marker: the next mount makes it, with its mode."""
    cache = tmp_path / "kept-cache"
    mnt = via_proxy(bucket, "retries=0", f"use_cache={cache}")
    proxy.inject(1.0, [ERROR_500], methods=["PUT"])
    os.mkdir(mnt.path("kept"), 0o705)
    wait_for(lambda: re.findall(r"marker of kept/ failed", mnt.log.read_text()), 1)
    kill_daemon(mnt)
    proxy.clear()
    assert not _exists(s3, bucket, "kept/")
    mnt = via_proxy(bucket, f"use_cache={cache}")
    assert _exists(s3, bucket, "kept/")  # made at mount, before anything is served
    mode = int(s3.head_object(Bucket=bucket, Key="kept/")["Metadata"]["mode"])
    assert mode == stat.S_IFDIR | 0o705
    assert os.stat(mnt.path("kept")).st_mode == stat.S_IFDIR | 0o705


# -- the server cut off --------------------------------------------------------------------


@pytest.mark.parametrize("refuse", [True, False], ids=["refused", "reset"])
def test_a_server_cut_off_gives_eio_then_everything_works_again(
    s3, bucket, proxy, via_proxy, refuse
):
    data = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="here.bin", Body=data)
    s3.put_object(Bucket=bucket, Key="dir/x", Body=b"x")
    mnt = via_proxy(bucket, "retries=1")
    fds = [
        os.open(mnt.path("here.bin"), os.O_RDONLY),
        os.open(mnt.path("during.txt"), os.O_CREAT | os.O_WRONLY, 0o644),
    ]
    try:
        proxy.cut_off(refuse=refuse)
        os.write(fds[1], b"written while the server was away")
        close_failing(fds, 1)
        fails_with_eio(os.read, fds[0], 1000)
        fails_with_eio(os.stat, mnt.path("dir"))
        fails_with_eio(os.listdir, mnt.mountpoint)
        fails_with_eio(write_file, mnt.path("new.txt"), b"n")
        fails_with_eio(os.mkdir, mnt.path("newdir"))

        proxy.restore()
        assert os.read(fds[0], len(data)) == data
        assert os.listdir(mnt.path("dir")) == ["x"]
        write_file(mnt.path("new.txt"), b"n")
        os.mkdir(mnt.path("newdir"))
        os.close(os.open(mnt.path("during.txt"), os.O_WRONLY))  # uploads it now
    finally:
        close_quietly(fds)
    names = ["dir", "during.txt", "here.bin", "new.txt", "newdir"]
    assert sorted(os.listdir(mnt.mountpoint)) == names
    assert s3_bytes(s3, bucket, "during.txt") == b"written while the server was away"
    assert s3_bytes(s3, bucket, "new.txt") == b"n"
    assert s3_bytes(s3, bucket, "here.bin") == data


# -- a mixed workload ----------------------------------------------------------------------


def test_a_mixed_workload_under_ten_percent_faults_loses_nothing(s3, bucket, proxy, via_proxy):
    """Creates, writes, appends, reads, renames, chmod, unlinks and mkdir with 10% of
    all requests failing or slow; the default retries make every one succeed."""
    mnt = via_proxy(bucket, "retries=5")
    umask = os.umask(0)
    os.umask(umask)
    proxy.inject(0.10, [ERROR_500, ERROR_503, RESET, DELAY], delay=0.2)
    rng = random.Random(5)
    files: dict[str, list] = {}  # relative path -> [content, permission bits]
    dirs = ["a", "b", "a/c"]
    for d in dirs:
        os.mkdir(mnt.path(d))
    for i in range(36):
        rel = f"{dirs[i % 3]}/f{i:02d}"
        data = rng.randbytes(rng.choice([0, 100, 5000, 70_000]))
        write_file(mnt.path(rel), data)
        files[rel] = [data, 0o666 & ~umask]
    for i, rel in enumerate(list(files)):
        if i % 4 == 0:
            extra = rng.randbytes(3000)
            with open(mnt.path(rel), "ab") as f:
                f.write(extra)
            files[rel][0] += extra
        if i % 5 == 1:
            os.chmod(mnt.path(rel), 0o600)
            files[rel][1] = 0o600
        if i % 6 == 2:
            new = rel.replace("/f", "/r")
            os.rename(mnt.path(rel), mnt.path(new))
            files[new] = files.pop(rel)
        elif i % 7 == 3:
            os.unlink(mnt.path(rel))
            del files[rel]
    os.rename(mnt.path("b"), mnt.path("b2"))
    files = {("b2" + k[1:] if k.startswith("b/") else k): v for k, v in files.items()}
    for rel, (data, _) in files.items():  # read back while the faults go on
        assert read_file(mnt.path(rel)) == data
    assert proxy.injected.total() > 10
    proxy.clear()
    fsync_dir(mnt.mountpoint)  # directory markers: one that failed waits for its retry

    seen = {}
    for root, _, names in os.walk(mnt.mountpoint):
        for name in names:
            path = os.path.join(root, name)
            st, content = os.stat(path), read_file(path)
            assert st.st_size == len(content)
            seen[os.path.relpath(path, mnt.mountpoint)] = [content, stat.S_IMODE(st.st_mode)]
    assert seen == files
    objects = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert objects == set(files) | {"a/", "a/c/", "b2/"}
    for rel, (data, mode) in files.items():
        head = s3.head_object(Bucket=bucket, Key=rel)
        assert int(head["Metadata"]["mode"]) == stat.S_IFREG | mode, rel
        assert s3_bytes(s3, bucket, rel) == data


# -- answers lost after the server acted -----------------------------------------------


def test_a_lost_answer_to_an_upload_is_not_a_conflict(s3, bucket, proxy, via_proxy, tmp_path):
    """The server stores a conditional PUT but its answer is lost: botocore's retry then
    meets the new version (412). That is our own upload, not another writer's."""
    s3.put_object(Bucket=bucket, Key="old.txt", Body=b"old content")
    mnt = via_proxy(bucket, "retries=3")
    os.stat(mnt.path("old.txt"))
    created, replaced = os.urandom(70_000), os.urandom(30_000)
    proxy.inject(1.0, [LOST], methods=["PUT"], limit=1)
    write_file(mnt.path("new.bin"), created)  # If-None-Match: *
    proxy.inject(1.0, [LOST], methods=["PUT"], limit=1)
    write_file(mnt.path("old.txt"), replaced)  # If-Match: the old ETag
    assert proxy.injected[LOST] == 2
    assert s3_bytes(s3, bucket, "new.bin") == created
    assert s3_bytes(s3, bucket, "old.txt") == replaced
    assert not (tmp_path / "cache0" / bucket / "failed").exists()
    assert "conflict" not in mnt.log.read_text()


def test_data_of_a_failed_upload_reaches_s3_at_the_next_mount(
    s3, bucket, proxy, via_proxy, tmp_path
):
    """Server gone at close and still gone at unmount: the journal keeps the data, and
    the next mount with the same cache directory uploads it once S3 is back."""
    cache = tmp_path / "kept-cache"
    mnt = via_proxy(bucket, "retries=0", f"use_cache={cache}")
    data = os.urandom(150_000)
    fds = [os.open(mnt.path("survivor.bin"), os.O_CREAT | os.O_WRONLY, 0o640)]
    try:
        proxy.cut_off()
        os.write(fds[0], data)
        close_failing(fds, 0)  # (closing it again could close another thread's file)
    finally:
        close_quietly(fds)
    mnt.unmount()  # the unmount's last try fails too: the data stays journaled
    assert not _exists(s3, bucket, "survivor.bin")
    proxy.restore()
    mnt = via_proxy(bucket, f"use_cache={cache}")
    assert read_file(mnt.path("survivor.bin")) == data
    wait_for(lambda: [1] if _exists(s3, bucket, "survivor.bin") else [], 1)
    assert s3_bytes(s3, bucket, "survivor.bin") == data
    mode = int(s3.head_object(Bucket=bucket, Key="survivor.bin")["Metadata"]["mode"])
    assert stat.S_IMODE(mode) == 0o640


def _exists(s3, bucket: str, key: str) -> bool:
    return key in {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


# -- small PUTs made without boto3 (pys3fs.quickreq) ------------------------------------


def test_a_small_put_answered_with_500_is_made_again_by_boto3(s3, bucket, proxy, via_proxy):
    mnt = via_proxy(bucket, "retries=2")
    data = os.urandom(5000)
    proxy.inject(1.0, [ERROR_500], methods=["PUT"], limit=1)
    before = proxy.total["PUT"]
    write_file(mnt.path("f.bin"), data)
    assert proxy.total["PUT"] - before == 2  # the refused attempt, then boto3's
    assert s3_bytes(s3, bucket, "f.bin") == data


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_is_the_number_of_retries_of_a_small_put(s3, bucket, proxy, via_proxy, retries):
    mnt = via_proxy(bucket, f"retries={retries}")
    fds = [os.open(mnt.path("f.bin"), os.O_CREAT | os.O_WRONLY, 0o644)]
    try:
        os.write(fds[0], b"kept")
        assert_attempts(proxy, "PUT", retries + 1, os.fsync, fds[0])
        proxy.clear()
        os.fsync(fds[0])
    finally:
        close_quietly(fds)
    assert s3_bytes(s3, bucket, "f.bin") == b"kept"


def test_a_small_put_refused_with_412_is_a_conflict_and_keeps_the_data(
    s3, bucket, proxy, via_proxy, tmp_path
):
    """With no retries left, a 412 is still a conflict (boto3 maps it), never a
    failure of the quick attempt."""
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"original")
    mnt = via_proxy(bucket, "retries=0")
    fds = [os.open(mnt.path("doc.txt"), os.O_RDWR)]
    try:
        os.write(fds[0], b"this host's edit")
        s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"another host's version")
        close_failing(fds, 0)
    finally:
        close_quietly(fds)
    assert s3_bytes(s3, bucket, "doc.txt") == b"another host's version"
    kept = wait_for(lambda: re.findall(r"conflict: .* kept in (\S+)", mnt.log.read_text()), 1)
    assert read_file(kept[0]).startswith(b"this host's edit")


def test_a_small_put_writes_the_metadata_boto3_writes(s3, bucket, proxy, via_proxy):
    """The first file goes through boto3 (its quick attempt fails), the second does
    not: S3 holds the same metadata and content type for both."""
    mnt = via_proxy(bucket, "retries=1")
    proxy.inject(1.0, [ERROR_500], methods=["PUT"], limit=1)
    for name in ("by-boto3.txt", "quick.txt"):
        fd = os.open(mnt.path(name), os.O_CREAT | os.O_WRONLY, 0o640)
        try:
            os.write(fd, b"same")
            os.fchown(fd, 1060, 1061)
            os.utime(fd, ns=(1700000000_000000005, 1700000000_000000005))
        finally:
            os.close(fd)
    assert proxy.injected[ERROR_500] == 1
    heads = [s3.head_object(Bucket=bucket, Key=n) for n in ("by-boto3.txt", "quick.txt")]
    fields = [
        ({k: v for k, v in h["Metadata"].items() if k != "ctime"}, h["ContentType"], h["ETag"])
        for h in heads
    ]
    assert fields[0] == fields[1]
    assert fields[1][0]["mode"] == str(stat.S_IFREG | 0o640)
    assert fields[1][0]["mtime"] == "1700000000.000000005"


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_is_the_number_of_retries_of_a_probe(s3, bucket, proxy, via_proxy, retries):
    """A name nobody has seen is probed with one small LIST (made without boto3)."""
    s3.put_object(Bucket=bucket, Key="d x/f+é", Body=b"f")
    s3.put_object(Bucket=bucket, Key="d x/g+é", Body=b"g")
    mnt = via_proxy(bucket, f"retries={retries}")
    assert_attempts(proxy, "GET", retries + 1, os.stat, mnt.path("d x/f+é"))
    proxy.clear()
    assert os.stat(mnt.path("d x/f+é")).st_size == 1
    with pytest.raises(FileNotFoundError):
        os.stat(mnt.path("d x/h"))
    if retries:  # a probe that boto3 makes again reads keys as before
        proxy.inject(1.0, [ERROR_500], methods=["GET"], limit=1)
        assert os.stat(mnt.path("d x/g+é")).st_size == 1


def test_a_metadata_copy_answered_with_500_is_made_again_by_boto3(s3, bucket, proxy, via_proxy):
    """chmod of a closed file copies the object onto itself (without boto3 first); boto3
    copies from the same source (botocore's presigning must not alter its parameters)."""
    data = os.urandom(3000)
    mnt = via_proxy(bucket, "retries=1")
    os.mkdir(mnt.path("d x"))
    write_file(mnt.path("d x/f+é.bin"), data)
    fsync_dir(mnt.path("d x"))  # its queued marker: not among the PUTs counted below
    proxy.inject(1.0, [ERROR_500], methods=["PUT"], limit=1)
    before = proxy.total["PUT"]
    os.chmod(mnt.path("d x/f+é.bin"), 0o600)
    assert proxy.total["PUT"] - before == 2
    head = s3.head_object(Bucket=bucket, Key="d x/f+é.bin")
    assert head["Metadata"]["mode"] == str(stat.S_IFREG | 0o600)
    assert s3_bytes(s3, bucket, "d x/f+é.bin") == data
    os.chmod(mnt.path("d x/f+é.bin"), 0o640)  # and without a fault
    head = s3.head_object(Bucket=bucket, Key="d x/f+é.bin")
    assert head["Metadata"]["mode"] == str(stat.S_IFREG | 0o640)
    assert s3_bytes(s3, bucket, "d x/f+é.bin") == data
