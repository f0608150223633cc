"""Fixtures: a real S3 server on 127.0.0.1, buckets, and real pys3fs mounts.

Everything a test starts is stopped by a finalizer, even when the test fails: mounts are
unmounted (``fusermount -u``, then ``umount -l``) and their daemons waited for or killed,
and the S3 server is terminated at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import boto3
import pytest
from botocore.config import Config
from s3proxy import S3Proxy

ACCESS_KEY = "pys3fs-test-access"
SECRET_KEY = "pys3fs-test-secret-do-not-log"
BIN = os.path.dirname(sys.executable)
PYS3FS = os.path.join(BIN, "pys3fs")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CEPH_RGW = os.path.join(REPO, "scripts", "ceph-rgw.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class S3Server:
    """A running S3-compatible server the tests talk to over HTTP."""

    url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    proc: subprocess.Popen | None = None
    kind: str = "moto"
    stop_cmd: list[str] | None = None  # run by stop(), for servers started by a script

    def client(self, service: str = "s3", pool: int = 10):
        """A boto3 client on this server; ``pool`` sizes its connection pool for threads."""
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5},
                max_pool_connections=pool,
            ),
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.stop_cmd is not None:
            subprocess.run(self.stop_cmd, capture_output=True, timeout=120)


def start_moto(extra_env: dict[str, str] | None = None) -> S3Server:
    port = free_port()
    env = dict(os.environ, **(extra_env or {}))
    proc = subprocess.Popen(
        [os.path.join(BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_port(port, proc)
    except Exception:
        proc.kill()
        raise
    return S3Server(url=f"http://127.0.0.1:{port}", proc=proc)


# --- S3 server choice: --s3-server=moto (default) or --s3-server=ceph -------------------


def pytest_addoption(parser):
    parser.addoption(
        "--s3-server",
        choices=("moto", "ceph"),
        default="moto",
        help="S3 server for the tests: moto (default, quick) or ceph (Ceph RGW, a real "
        "S3 gateway on a throw-away one-node cluster, started by scripts/ceph-rgw.sh)",
    )
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the stress tests (tests/test_stress.py) for 10 minutes instead of ~20 s",
    )


def start_ceph(workdir: str) -> S3Server:
    """Ceph RGW via scripts/ceph-rgw.sh: a one-node cluster living in ``workdir``.

    The script prints the URL and detaches its daemons; ``stop()`` runs ``ceph-rgw.sh stop``,
    which kills them and removes ``workdir``. Its own session, so that a Ctrl-C meant for
    pytest reaches the finalizer, not the daemons.
    """
    stop_cmd = [CEPH_RGW, "stop", workdir]
    env = dict(os.environ, CEPH_RGW_ACCESS_KEY=ACCESS_KEY, CEPH_RGW_SECRET_KEY=SECRET_KEY)
    try:
        result = subprocess.run(
            [CEPH_RGW, "start", workdir],
            capture_output=True,
            text=True,
            timeout=900,  # includes apt-get install on a fresh machine
            env=env,
            start_new_session=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"ceph-rgw.sh start failed:\n{result.stderr[-4000:]}")
    except BaseException:
        subprocess.run(stop_cmd, capture_output=True, timeout=120)
        raise
    return S3Server(url=result.stdout.strip(), kind="ceph", stop_cmd=stop_cmd)


@pytest.fixture(scope="session")
def s3_server(request, tmp_path_factory) -> Iterator[S3Server]:
    if request.config.getoption("s3_server") == "ceph":
        server = start_ceph(str(tmp_path_factory.mktemp("ceph") / "rgw"))
    else:
        server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(s3_server):
    """A boto3 client on the test server: "another tool" writing to the bucket."""
    return s3_server.client()


@pytest.fixture
def bucket(s3) -> str:
    name = "t-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch, s3_server):
    """Credentials in the environment, a private HOME, and no instance-metadata lookups."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))
    return home


def daemon_pids(mountpoint: str) -> list[int]:
    """pys3fs daemons serving ``mountpoint`` (found through /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"pys3fs" in b" ".join(args) and mountpoint.encode() in args and b"-f" in args:
            pids.append(int(entry))
    return pids


def is_mounted(mountpoint: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == mountpoint for line in f)


def mount_options(mountpoint: str) -> set[str]:
    """The options the kernel shows for a mount (from /proc/self/mounts)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == mountpoint:
                return set(fields[3].split(","))
    raise AssertionError(f"{mountpoint} is not mounted")


def force_unmount(mountpoint: str, pids: list[int] | None = None, timeout: float = 60) -> None:
    """Unmount however it takes, and make sure the daemons are gone."""
    pids = daemon_pids(mountpoint) if pids is None else pids
    unmounted = subprocess.run(["fusermount", "-u", mountpoint], capture_output=True)
    if is_mounted(mountpoint) and unmounted.returncode:
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(")")[-1].split()[0] == "Z":
                        break
            except OSError:
                break
            time.sleep(0.05)
        if os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if is_mounted(mountpoint):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)


@dataclass
class MountedFS:
    """A pys3fs mount made with the real command line."""

    mountpoint: str
    bucket: str
    server: S3Server
    args: list[str]
    logfile: str
    pids: list[int] = field(default_factory=list)

    def path(self, *parts: str) -> str:
        return os.path.join(self.mountpoint, *parts)

    def unmount(self) -> None:
        force_unmount(self.mountpoint, self.pids)


@pytest.fixture
def mounter(s3_server, tmp_path, request):
    """Factory: ``mounter(bucket, "uid=1000", prefix="/x")`` mounts with the real CLI."""
    made: list[MountedFS] = []

    def make(
        bucket: str,
        *options: str,
        prefix: str = "",
        server: S3Server | None = None,
        env: dict[str, str] | None = None,
        mountpoint: str | None = None,
    ) -> MountedFS:
        server = server or s3_server
        mp = mountpoint or str(tmp_path / f"mnt{len(made)}")
        os.makedirs(mp, exist_ok=True)
        cache = str(tmp_path / f"cache{len(made)}")
        opts = [f"url={server.url}", "use_path_request_style", f"use_cache={cache}", *options]
        given = [o.removeprefix("logfile=") for o in options if o.startswith("logfile=")]
        logfile = given[-1] if given else str(tmp_path / f"pys3fs{len(made)}.log")
        if not given:
            opts.append(f"logfile={logfile}")
        source = bucket + (f":{prefix}" if prefix else "")
        args = [PYS3FS, source, mp, "-o", ",".join(opts)]
        result = subprocess.run(args, capture_output=True, text=True, timeout=90, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"mount failed: {result.stderr.strip()}")
        fs = MountedFS(mp, bucket, server, args, logfile, daemon_pids(mp))
        made.append(fs)
        return fs

    yield make
    for fs in made:
        fs.unmount()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        show_daemon_logs(made)


def show_daemon_logs(made: list[MountedFS]) -> None:
    """A failed test's daemons' last log lines (a crash's stacks among them), shown in
    its report: pytest may delete the temp dir before anyone looks."""
    for fs in made:
        try:
            with open(fs.logfile, errors="replace") as f:
                tail = f.readlines()[-150:]
        except OSError:
            continue
        print(f"--- last lines of {fs.logfile} ---\n{''.join(tail)}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (``rep_call``) for fixtures' teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def proxy(s3_server):
    """A fault-injecting proxy in front of the server (tests/s3proxy.py)."""
    proxy = S3Proxy(s3_server.url, seed=20240601).start()
    try:
        yield proxy
    finally:
        proxy.clear()
        proxy.stop()


@pytest.fixture
def mnt(bucket, mounter) -> MountedFS:
    """The bucket mounted with default options."""
    return mounter(bucket)


@pytest.fixture
def run():
    """Run a command, fail the test with its stderr when it fails."""

    def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 120)
        result = subprocess.run(list(cmd), **kw)
        if check and result.returncode != 0:
            raise AssertionError(f"{cmd} failed ({result.returncode}): {result.stderr}")
        return result

    return run


_SESSION_TMP: list[str] = []  # this session's base temp dir: the only mounts it may touch


@pytest.fixture(scope="session", autouse=True)
def _session_tmp(tmp_path_factory):
    _SESSION_TMP.append(str(tmp_path_factory.getbasetemp()).rstrip("/") + "/")


def pytest_sessionfinish(session, exitstatus):
    """Last resort: no test mount outlives the session.

    Only mounts below this session's own temp dir: other pytest sessions running at the
    same time on this machine have live mounts under /tmp/pytest-of-USER too.
    """
    with open("/proc/self/mounts") as f:
        leftovers = [line.split()[1] for line in f if "fuse.pys3fs" in line.split()[2]]
    for mp in leftovers:
        if any(mp.startswith(base) for base in _SESSION_TMP):
            force_unmount(mp)


if shutil.which("fusermount") is None:  # pragma: no cover - CI installs fuse3
    raise RuntimeError("fusermount not found: install fuse3 (apt-get install fuse3 libfuse2)")
