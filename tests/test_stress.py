"""Concurrency stress through a real mount: many threads of mixed file calls at once.

``test_owned_names``: 16 threads, each owning a disjoint part of a pool of 2,000 names in
a few directories, create, write, append, overwrite, truncate, read, rename, unlink, stat
and list for a bounded time. Each thread knows exactly what its files must hold, so every
read is checked as it happens, and at the end every surviving file is compared byte for
byte through the mount and directly in S3, and nothing else may exist.

``test_shared_names``: threads replace, rename and delete a small set of shared names
(writing a private file and renaming it over the shared name, as editors and package
managers do), while others read them through the mount and with boto3. Only invariants are
checked: whatever is read is one complete version, never a mix or a truncation.

They run ~20 s and ~10 s (``STRESS_SEED=N`` repeats a run); ``pytest --soak`` runs
them 10 and 5 minutes.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest

THREADS = 16
POOL = 2000
DIRS = ("d0", "d1", "d2", "d3")
SECONDS = 20  # owned names; the shared-names test runs half as long
SOAK_SECONDS = 600


@pytest.fixture
def seconds(request) -> float:
    return SOAK_SECONDS if request.config.getoption("soak") else SECONDS


def s3_objects(s3, bucket: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def mount_files(root: str) -> set[str]:
    found = set()
    for top, _dirs, files in os.walk(root):
        found.update(os.path.relpath(os.path.join(top, f), root) for f in files)
    return found


class Failures:
    """Thread-safe record of what went wrong (the first few, with context)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[str] = []

    def add(self, message: str) -> None:
        with self.lock:
            self.items.append(message)

    def check(self, log: str | None = None) -> None:
        """Fail with the first failures and, when given, the daemon's error lines."""
        if not self.items:
            return
        errors = ""
        if log and os.path.exists(log):
            with open(log, errors="replace") as f:
                lines = [line for line in f if " ERROR " in line or " WARNING " in line]
            errors = "\ndaemon log:\n" + "".join(lines[-20:])
        raise AssertionError(f"{len(self.items)} failures:\n" + "\n".join(self.items[:10]) + errors)


@pytest.fixture
def logged_mnt(bucket, mounter, tmp_path):
    """The bucket mounted with its log in a file, shown when a stress test fails."""
    log = str(tmp_path / "pys3fs.log")
    return mounter(bucket, f"logfile={log}"), log


# ---------------------------------------------------------------------- owned names


class Owner:
    """One thread's names and exactly what each of them holds (absent: not in ``files``)."""

    def __init__(self, root: str, tid: int, seed: int) -> None:
        self.root = root
        self.tid = tid
        self.rng = random.Random(seed * 1000 + tid)
        per_dir = POOL // THREADS // len(DIRS)
        self.names = [f"{d}/t{tid:02d}-{j:03d}" for d in DIRS for j in range(per_dir)]
        self.files: dict[str, bytes] = {}
        self.ops = 0
        self.log: list[str] = []  # last calls, for the failure message

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def data(self) -> bytes:
        size = self.rng.choice([0, 1, 100, 4096, 65536, 70000, 131072 + 17, 300_000])
        return self.rng.randbytes(self.rng.randint(0, size))

    def expect_enoent(self, call, *args) -> None:
        try:
            call(*args)
        except FileNotFoundError:
            return
        raise AssertionError(f"{call.__name__}{args} did not fail with ENOENT")

    # each step does one call and checks its result against the model
    def write(self, name: str) -> None:
        data = self.data()
        with open(self.path(name), "wb") as f:
            f.write(data)
        self.files[name] = data

    def append(self, name: str) -> None:
        data = self.data()
        with open(self.path(name), "ab") as f:
            f.write(data)
        self.files[name] = self.files.get(name, b"") + data

    def pwrite(self, name: str) -> None:
        if name not in self.files:
            return self.expect_enoent(os.open, self.path(name), os.O_WRONLY)
        old = self.files[name]
        data = self.rng.randbytes(self.rng.randint(1, 70000))
        offset = self.rng.randint(0, len(old) + 5000)
        fd = os.open(self.path(name), os.O_WRONLY)
        try:
            assert os.pwrite(fd, data, offset) == len(data)
        finally:
            os.close(fd)
        grown = old.ljust(offset, b"\0")
        self.files[name] = grown[:offset] + data + grown[offset + len(data) :]

    def truncate(self, name: str) -> None:
        if name not in self.files:
            return self.expect_enoent(os.truncate, self.path(name), 0)
        old = self.files[name]
        length = self.rng.randint(0, len(old) + 1000)
        os.truncate(self.path(name), length)
        self.files[name] = old[:length].ljust(length, b"\0")

    def read(self, name: str) -> None:
        if name not in self.files:
            return self.expect_enoent(read, self.path(name))
        got = read(self.path(name))
        assert got == self.files[name], f"read {name}: {len(got)} bytes, expected other bytes"

    def stat(self, name: str) -> None:
        if name not in self.files:
            return self.expect_enoent(os.stat, self.path(name))
        st = os.stat(self.path(name))
        assert stat.S_ISREG(st.st_mode), oct(st.st_mode)
        assert st.st_size == len(self.files[name]), (st.st_size, len(self.files[name]))

    def rename(self, name: str) -> None:
        dst = self.rng.choice(self.names)
        if name not in self.files:
            return self.expect_enoent(os.rename, self.path(name), self.path(dst))
        os.rename(self.path(name), self.path(dst))
        if dst != name:
            self.files[dst] = self.files.pop(name)

    def unlink(self, name: str) -> None:
        if name not in self.files:
            return self.expect_enoent(os.unlink, self.path(name))
        os.unlink(self.path(name))
        del self.files[name]

    def listdir(self, name: str) -> None:
        directory = name.split("/")[0]
        mine = f"t{self.tid:02d}-"
        shown = sorted(n for n in os.listdir(self.path(directory)) if n.startswith(mine))
        expected = sorted(n.split("/")[1] for n in self.files if n.startswith(directory + "/"))
        assert shown == expected, f"listing of {directory}: {set(shown) ^ set(expected)}"

    STEPS = {
        "write": 6,
        "append": 3,
        "pwrite": 3,
        "truncate": 2,
        "read": 6,
        "stat": 4,
        "rename": 3,
        "unlink": 2,
        "listdir": 1,
    }

    def run(self, deadline: float, failures: Failures, stop: threading.Event) -> None:
        steps, weights = zip(*self.STEPS.items(), strict=True)
        while time.monotonic() < deadline and not stop.is_set():
            step = self.rng.choices(steps, weights)[0]
            name = self.rng.choice(self.names)
            self.log = [*self.log[-4:], f"{step} {name}"]
            try:
                getattr(self, step)(name)
            except Exception as exc:
                failures.add(
                    f"thread {self.tid} after {self.ops} calls ({' / '.join(self.log)}): "
                    f"{exc!r}\n{traceback.format_exc(limit=3)}"
                )
                stop.set()
                return
            self.ops += 1


def test_owned_names(logged_mnt, s3_server, bucket, seconds):
    mnt, log = logged_mnt
    for d in DIRS:
        os.mkdir(mnt.path(d))
    seed = int(os.environ.get("STRESS_SEED", random.randrange(1 << 30)))
    owners = [Owner(mnt.mountpoint, tid, seed) for tid in range(THREADS)]
    failures, stop = Failures(), threading.Event()
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=o.run, args=(deadline, failures, stop)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures.check(log)
    ops = sum(o.ops for o in owners)
    assert ops > THREADS * 10, f"only {ops} calls in {seconds} s (seed {seed})"

    expected = {name: data for o in owners for name, data in o.files.items()}
    # through the mount: exactly the expected files, byte for byte
    assert mount_files(mnt.mountpoint) == set(expected), f"seed {seed}"
    with ThreadPoolExecutor(THREADS) as pool:
        got = dict(zip(expected, pool.map(lambda n: read(mnt.path(n)), expected), strict=True))
    wrong = [n for n in expected if got[n] != expected[n]]
    assert not wrong, f"other bytes through the mount: {wrong[:10]} (seed {seed})"
    # in S3, without unmounting: every write was closed, so every object is there
    s3 = s3_server.client(pool=THREADS)
    assert s3_objects(s3, bucket) == set(expected) | {f"{d}/" for d in DIRS}, f"seed {seed}"

    def in_s3(name: str) -> bytes:
        return s3.get_object(Bucket=bucket, Key=name)["Body"].read()

    with ThreadPoolExecutor(THREADS) as pool:
        got = dict(zip(expected, pool.map(in_s3, expected), strict=True))
    wrong = [n for n in expected if got[n] != expected[n]]
    assert not wrong, f"objects with other bytes in S3: {wrong[:10]} (seed {seed})"


# ---------------------------------------------------------------------- shared names

SHARED = [f"s{i % 2}/n{i:02d}" for i in range(24)]


def version(writer: int, seq: int, rng: random.Random) -> bytes:
    """A self-describing complete version: a header naming it, then its own bytes."""
    length = rng.choice([0, 10, 5000, 65536, 200_000])
    head = f"{writer}:{seq}:{length}\n".encode()
    return head + random.Random(f"{writer}-{seq}").randbytes(length)


def is_complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\n")
    try:
        writer, seq, length = (int(x) for x in head.decode().split(":"))
    except ValueError:
        return False
    return bool(sep) and body == random.Random(f"{writer}-{seq}").randbytes(length)


def shared_worker(root, tid, seed, deadline, failures, stop, s3, bucket, counts):
    rng = random.Random(seed * 1000 + tid)
    seq = 0
    tmp = os.path.join(root, "tmp")
    while time.monotonic() < deadline and not stop.is_set():
        name = rng.choice(SHARED)
        step = rng.choices(["replace", "read", "s3read", "rename", "unlink"], [4, 5, 2, 2, 1])[0]
        try:
            if step == "replace":
                seq += 1
                private = os.path.join(tmp, f"w{tid}-{seq}")
                with open(private, "wb") as f:
                    f.write(version(tid, seq, rng))
                os.rename(private, os.path.join(root, name))
            elif step == "read":
                try:
                    data = read(os.path.join(root, name))
                except FileNotFoundError:
                    continue
                assert is_complete(data), f"read {name}: {data[:40]!r}... ({len(data)} bytes)"
            elif step == "s3read":
                try:
                    data = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
                except s3.exceptions.NoSuchKey:
                    continue
                assert is_complete(data), f"S3 {name}: {data[:40]!r}... ({len(data)} bytes)"
            elif step == "rename":
                dst = rng.choice(SHARED)
                try:
                    os.rename(os.path.join(root, name), os.path.join(root, dst))
                except FileNotFoundError:
                    continue
            else:
                try:
                    os.unlink(os.path.join(root, name))
                except FileNotFoundError:
                    continue
            counts[tid] += 1
        except Exception as exc:
            failures.add(f"thread {tid} {step} {name}: {exc!r}\n{traceback.format_exc(limit=3)}")
            stop.set()
            return


def test_shared_names(logged_mnt, s3_server, bucket, seconds):
    mnt, log = logged_mnt
    for d in ("s0", "s1", "tmp"):
        os.mkdir(mnt.path(d))
    seed = int(os.environ.get("STRESS_SEED", random.randrange(1 << 30)))
    failures, stop = Failures(), threading.Event()
    counts = [0] * THREADS
    s3 = s3_server.client(pool=THREADS)
    deadline = time.monotonic() + seconds / 2
    with ThreadPoolExecutor(THREADS) as pool:
        for tid in range(THREADS):
            pool.submit(
                shared_worker,
                mnt.mountpoint,
                tid,
                seed,
                deadline,
                failures,
                stop,
                s3,
                mnt.bucket,
                counts,
            )
    failures.check(log)
    assert sum(counts) > THREADS * 10, f"only {sum(counts)} calls (seed {seed})"

    # at rest: the mount and S3 agree, every file is one complete version, no leftovers
    shown = mount_files(mnt.mountpoint)
    assert shown <= set(SHARED), f"unexpected files: {shown - set(SHARED)} (seed {seed})"
    assert s3_objects(s3, bucket) == shown | {"s0/", "s1/", "tmp/"}, f"seed {seed}"
    for name in shown:
        data = read(mnt.path(name))
        assert is_complete(data), f"{name} through the mount (seed {seed})"
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == data, name


# ---------------------------------------------------------------------- the race, made certain


@pytest.mark.parametrize("replaced_by", ["another_host", "rename_through_the_mount"])
def test_an_open_reader_never_mixes_two_versions(mnt, s3, bucket, replaced_by):
    """The shared-names race without the luck: a file is replaced while a reader has read
    only part of it. Its later reads give the old bytes or EIO, never the new object's."""
    old, new = random.Random(1).randbytes(1 << 20), random.Random(2).randbytes(1 << 20)
    s3.put_object(Bucket=bucket, Key="f", Body=old)
    fd = os.open(mnt.path("f"), os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 600_000) == old[600_000:604_096]  # fetches one block
        if replaced_by == "another_host":
            s3.put_object(Bucket=bucket, Key="f", Body=new)
        else:
            with open(mnt.path("tmp"), "wb") as f:
                f.write(new)
            os.rename(mnt.path("tmp"), mnt.path("f"))
        for offset in (0, 300_000, 900_000):
            try:
                got = os.pread(fd, 4096, offset)
            except OSError as exc:
                assert exc.errno == errno.EIO, exc
            else:
                assert got == old[offset : offset + 4096], f"new bytes at {offset}"
    finally:
        os.close(fd)
    if replaced_by == "rename_through_the_mount":  # same size, same second: see below
        assert read(mnt.path("f")) == new  # a new open sees the new version
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == new


def test_reopen_sees_a_same_size_replacement_made_within_one_second(mnt, s3, bucket):
    old, new = random.Random(1).randbytes(1 << 20), random.Random(2).randbytes(1 << 20)
    for attempt in range(5):  # until both versions carry the same Last-Modified second
        key = f"f{attempt}"
        s3.put_object(Bucket=bucket, Key=key, Body=old)
        first = s3.head_object(Bucket=bucket, Key=key)["LastModified"]
        with open(mnt.path(key), "rb") as f:
            f.seek(600_000)
            assert f.read(4096) == old[600_000:604_096]
        s3.put_object(Bucket=bucket, Key=key, Body=new)
        if s3.head_object(Bucket=bucket, Key=key)["LastModified"] == first:
            break
    else:
        pytest.skip("could not make two versions within one second")
    # Versions differ in mtime below the second (from the ETag): the kernel drops the
    # old pages. (A boolean assert: pytest's diff of 1 MiB of bytes takes minutes.)
    fresh = read(mnt.path(key)) == new
    assert fresh, "a reopen read the old version's bytes"


def test_a_read_overlapping_a_fetch_in_flight_gets_the_right_bytes(s3, bucket, mounter, s3_server):
    """Two readers of one file: one reads a block in the middle, and while that block is
    still on its way the other reads from the start. The second must get the file's
    bytes (before: it waited for the first reader's fetch alone and got zeros)."""
    from dataclasses import replace

    from s3proxy import DELAY, S3Proxy

    data = random.Random(3).randbytes(3 << 20)
    s3.put_object(Bucket=bucket, Key="f", Body=data)
    proxy = S3Proxy(s3_server.url).start()
    proxy.inject(1.0, [DELAY], methods=["GET"], delay=0.5)  # every GET held a while
    try:
        mnt = mounter(bucket, server=replace(s3_server, url=proxy.url))
        fds = [os.open(mnt.path("f"), os.O_RDONLY) for _ in range(2)]
        try:
            with ThreadPoolExecutor(2) as pool:
                middle = pool.submit(os.pread, fds[0], 4096, 2 << 20)
                time.sleep(0.2)  # the middle block is being fetched
                start = pool.submit(os.pread, fds[1], 65536, 0)
                assert middle.result() == data[2 << 20 : (2 << 20) + 4096]
                assert start.result() == data[:65536]
            assert os.pread(fds[1], 1 << 20, 65536) == data[65536 : (1 << 20) + 65536]
        finally:
            for fd in fds:
                os.close(fd)
        assert read(mnt.path("f")) == data
        mnt.unmount()
    finally:
        proxy.stop()


def test_concurrent_overwrites_on_a_server_that_wants_bare_etags(s3, bucket, mounter, s3_server):
    """Ceph RGW refuses a quoted ETag in If-Match; pys3fs learns the bare form from the
    first refusal. Writers that learn it at the same moment must all end up using it
    (before: each flipped a shared switch, so every other writer failed with EIO)."""
    from dataclasses import replace

    from s3proxy import S3Proxy

    names = [f"f{i}" for i in range(6)]
    for name in names:
        s3.put_object(Bucket=bucket, Key=name, Body=b"old")
    proxy = S3Proxy(s3_server.url, unquoted_if_match=True).start()
    try:
        mnt = mounter(bucket, server=replace(s3_server, url=proxy.url))
        barrier = threading.Barrier(len(names))

        def overwrite(name: str) -> None:
            with open(mnt.path(name), "r+b") as f:
                f.write(b"new " + name.encode())
                barrier.wait(10)  # all closes (uploads) start together

        with ThreadPoolExecutor(len(names)) as pool:
            results = [pool.submit(overwrite, name) for name in names]
            errors = [repr(r.exception()) for r in results if r.exception()]
        assert not errors
        for name in names:
            body = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
            assert body == b"new " + name.encode()
        mnt.unmount()
    finally:
        proxy.stop()


def test_bursts_of_80_concurrent_callers_leave_the_daemon_answering(s3, bucket, mounter):
    # libfuse starts a worker thread per concurrent request and ends those beyond 10
    # idle ones; pys3fs keeps a Python thread state per worker and frees those of ended
    # threads (pys3fs.fusebridge): bursts make and end many workers.
    bodies = {f"f{i}": os.urandom(i * 37) for i in range(100)}
    for name, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=name, Body=body)
    mnt = mounter(bucket, "stat_cache_expire=0")
    failures: list[str] = []

    def caller(k: int) -> None:
        try:
            for i in range(3):
                name = f"f{(k * 7 + i) % 100}"
                assert os.stat(mnt.path(name)).st_size == len(bodies[name])
                with open(mnt.path(name), "rb") as f:
                    assert f.read() == bodies[name]
        except Exception:
            failures.append(traceback.format_exc())

    for _ in range(8):
        threads = [threading.Thread(target=caller, args=(k,)) for k in range(80)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.2)  # idle workers beyond 10 end
    assert not failures, failures[0]
    assert sorted(os.listdir(mnt.mountpoint)) == sorted(bodies)


def test_a_thread_is_alive_until_it_ends():
    # pys3fs.fusebridge frees the Python state of a FUSE worker once this says it ended;
    # a live thread reported dead had its state freed under it (a crash)
    from pys3fs.fusebridge import _alive

    release = threading.Event()
    found: list[int] = []
    worker = threading.Thread(
        target=lambda: (found.append(threading.get_native_id()), release.wait())
    )
    worker.start()
    while not found:
        time.sleep(0.001)
    assert _alive(threading.get_native_id())
    assert _alive(found[0])
    release.set()
    worker.join()
    deadline = time.monotonic() + 10
    while _alive(found[0]) and time.monotonic() < deadline:
        time.sleep(0.01)  # the kernel reaps an ended thread just after join returns
    assert not _alive(found[0])
