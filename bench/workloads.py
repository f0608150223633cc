"""The workloads: each is a small class in a registry, measured with raw boto3 and mounts.

A workload has
- ``prepare``: shared inputs made once per run (local files, reference objects), untimed;
- ``setup``: objects one target needs before it runs (copies, source trees), untimed;
- ``raw_variants``: ways to do the same work with boto3 directly; the best is the baseline;
- ``mounted``: the work through a live mount, with ordinary tools (dd, tar, mv) or a
  child Python process, so a hung mount can be killed without hanging the benchmark.

Every timed write is timed until the data is complete in S3: right after the command
returns the objects are checked, and polled for when a tool acknowledged early.

To add a row: write a subclass of Workload, decorate it with ``@register``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig

from .report import RAW
from .tools import MIB, BenchError, Mounted, RequestCounter, Server

KIB = 1024
SEED = 20240601
S3FS_FILE_META = {"mode": "33188", "uid": "0", "gid": "0"}  # 0644 regular file, root
S3FS_DIR_META = {"mode": "16877", "uid": "0", "gid": "0"}  # 0755 directory, root
TRANSFER = TransferConfig(
    multipart_threshold=16 * MIB, multipart_chunksize=16 * MIB, max_concurrency=8
)


@dataclass(frozen=True)
class Scale:
    """Sizes of one run: the full benchmark or a quick one for development."""

    quick: bool
    big_mib: int  # sequential write and read
    rand_object_mib: int
    rand_reads: int
    small_files: int
    tree_files: int | None  # files taken into the untar tarball (None: all)
    rename_files: int
    ls_files: int  # the directory of ls_l_10k_*
    tree_dirs: int  # find_stat_2k: directories x files in each
    tree_dir_files: int
    list_files: int  # the directory of list_100k
    timeout: float  # for one measured command, and for waiting on S3 after it


FULL = Scale(False, 1024, 256, 2000, 1000, None, 500, 10_000, 20, 100, 100_000, timeout=600)
QUICK = Scale(True, 64, 64, 300, 200, 300, 100, 1000, 10, 20, 5000, timeout=180)


@dataclass
class Ctx:
    """Everything a workload may use: the server, clients, sizes, a local work directory."""

    server: Server
    bucket: str
    scale: Scale
    workdir: Path
    notes: list[str] = field(default_factory=list)  # run-wide notes for the report
    inputs: dict = field(default_factory=dict)  # what prepare() made, for later steps
    client: Any = field(init=False)  # does the raw work; its requests are counted by kind
    probe: Any = field(init=False)  # setup and checks; left out of the request counts
    raw_counter: RequestCounter = field(init=False)
    probe_counter: RequestCounter = field(init=False)

    def __post_init__(self) -> None:
        self.client = self.server.client()
        self.probe = self.server.client()
        self.raw_counter = RequestCounter(self.client)
        self.probe_counter = RequestCounter(self.probe)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


@dataclass
class Target:
    """Where one measurement happens: raw boto3, or a mount, under its own key prefix."""

    tool: str
    prefix: str  # S3 key prefix, e.g. "pys3fs/seq_write_1g/"
    mounted: Mounted | None = None
    acks_early: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def is_raw(self) -> bool:
        return self.tool == RAW

    def path(self, *parts: str) -> Path:
        assert self.mounted is not None
        return self.mounted.path.joinpath(self.prefix, *parts)


class Workload:
    name = ""
    unit = ""
    higher_is_better = True
    cold = False  # drop the page cache before each measurement
    sample_rss = False  # report the daemon's peak RSS during the mounted run
    # Rows of one cache group mount with a cache directory kept for the group's remount
    # row, which measures on a remount with it (each tool's best warm case); when no
    # earlier row of the group ran, prime() makes one through an untimed first mount.
    cache_group: str | None = None
    remount = False

    def size(self, scale: Scale) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        return " ".join((self.__doc__ or "").split())

    def prepare(self, ctx: Ctx) -> None:
        pass

    def setup(self, ctx: Ctx, t: Target) -> None:
        pass

    def raw_variants(self, ctx: Ctx, t: Target) -> dict[str, Callable[[], float]]:
        raise NotImplementedError

    def mounted(self, ctx: Ctx, t: Target) -> float:
        raise NotImplementedError

    def prime(self, ctx: Ctx, t: Target) -> None:
        """The untimed work through the first mount of a ``remount`` workload."""


WORKLOADS: list[Workload] = []


def register(cls: type[Workload]) -> type[Workload]:
    WORKLOADS.append(cls())
    return cls


# -- helpers ---------------------------------------------------------------------------------
def random_file(ctx: Ctx, mib: int) -> Path:
    """A local file of incompressible bytes, made once per run and size."""
    path = ctx.workdir / f"random-{mib}m.bin"
    if not path.exists():
        rng = random.Random(SEED)
        with open(path, "wb") as f:
            for done in range(0, mib, 16):
                f.write(rng.randbytes(min(16, mib - done) * MIB))
        os.sync()
    return path


def warm(path: Path) -> None:
    """Read a local file so that it is in the page cache before a timed upload."""
    with open(path, "rb") as f:
        while f.read(16 * MIB):
            pass


def put_tree(ctx: Ctx, client, items: dict[str, bytes | Path], threads: int = 16) -> None:
    """put_object each key (bytes, or a local file) from ``threads`` threads."""

    def put(item: tuple[str, bytes | Path]) -> None:
        key, body = item
        data = body.read_bytes() if isinstance(body, Path) else body
        client.put_object(Bucket=ctx.bucket, Key=key, Body=data)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, items.items()))


def put_s3fs_style(ctx: Ctx, files: dict[str, bytes], dirs: list[str], threads: int = 16) -> None:
    """Objects as s3fs-fuse and pys3fs write them: mode/uid/gid/mtime, dir/ markers."""
    now = str(int(time.time()))

    def put(key: str, body: bytes, meta: dict, content_type: str) -> None:
        ctx.probe.put_object(
            Bucket=ctx.bucket,
            Key=key,
            Body=body,
            Metadata={**meta, "mtime": now},
            ContentType=content_type,
        )

    with ThreadPoolExecutor(threads) as pool:
        jobs = [pool.submit(put, d, b"", S3FS_DIR_META, "application/x-directory") for d in dirs]
        jobs += [
            pool.submit(put, k, v, S3FS_FILE_META, "application/octet-stream")
            for k, v in files.items()
        ]
        for job in jobs:
            job.result()


def dir_markers(prefix: str) -> list[str]:
    """``a/b/`` -> ``["a/", "a/b/"]``."""
    parts = prefix.strip("/").split("/")
    return ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


def list_sizes(ctx: Ctx, prefix: str) -> dict[str, int]:
    """Key (relative to prefix) -> size for every object below prefix, markers excluded."""
    sizes = {}
    for page in ctx.probe.get_paginator("list_objects_v2").paginate(
        Bucket=ctx.bucket, Prefix=prefix
    ):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                sizes[obj["Key"][len(prefix) :]] = obj["Size"]
    return sizes


def object_size(ctx: Ctx, key: str) -> int | None:
    try:
        return ctx.probe.head_object(Bucket=ctx.bucket, Key=key)["ContentLength"]
    except ctx.probe.exceptions.ClientError:
        return None


def copy_ref(ctx: Ctx, source: str, key: str) -> None:
    """Server-side copy of a reference object: each target reads its own, cold object."""
    ctx.probe.copy({"Bucket": ctx.bucket, "Key": source}, ctx.bucket, key, Config=TRANSFER)


def timed(argv: list[str], timeout: float, **kw) -> tuple[float, float, str]:
    """Run a command; its start and end times and its stderr. Fails on a non-zero exit."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, **kw
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{argv[0]} timed out after {timeout:.0f} s") from None
    end = time.perf_counter()
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise BenchError(f"{argv[0]}: {lines[-1] if lines else proc.returncode}"[:300])
    return start, end, proc.stderr


def child(op: str, timeout: float, **kwargs) -> tuple[float, float]:
    """Run CHILD_OPS[op] in a child Python (killable if the mount hangs): its start, end."""
    argv = [sys.executable, "-m", "bench.workloads", op, json.dumps(kwargs)]
    cwd = Path(__file__).resolve().parent.parent
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{op} timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise BenchError((lines[-1] if lines else f"{op} exited {proc.returncode}")[:300])
    start_end = json.loads(proc.stdout)
    return start_end["start"], start_end["end"]


def until_in_s3(
    ctx: Ctx, t: Target, start: float, returned: float, done: Callable[[], bool]
) -> float:
    """Seconds from start until ``done()`` (the data is complete in S3).

    Checked once right after the command returned; a tool that acknowledged early is
    polled until the data is there, and the gap is noted."""
    if done():
        return returned - start
    deadline = time.perf_counter() + ctx.scale.timeout
    while True:
        time.sleep(0.05)
        if done():
            end = time.perf_counter()
            break
        if time.perf_counter() > deadline:
            raise BenchError(f"data not complete in S3 {ctx.scale.timeout:.0f} s after return")
    what = "returned" if t.acks_early else "returned (before the data was in S3!)"
    t.notes.append(f"{what} after {returned - start:.2f} s, in S3 after {end - start:.2f} s")
    return end - start


def rand_offsets(count: int, object_size: int, block: int) -> list[int]:
    rng = random.Random(SEED)
    return [rng.randrange(object_size // block) * block for _ in range(count)]


# -- workloads -------------------------------------------------------------------------------
@register
class SeqWrite(Workload):
    """`dd bs=1M conv=fsync` of a local file of random bytes onto the mount, MiB/s until
    the object is complete in S3. Raw: put_object of the file, or upload_file (multipart)."""

    name = "seq_write_1g"
    unit = "MiB/s"
    sample_rss = True

    def size(self, scale):
        return f"{scale.big_mib} MiB"

    def prepare(self, ctx):
        random_file(ctx, ctx.scale.big_mib)

    def raw_variants(self, ctx, t):
        src = random_file(ctx, ctx.scale.big_mib)
        nbytes = ctx.scale.big_mib * MIB

        def put_object() -> float:
            warm(src)
            start = time.perf_counter()
            with open(src, "rb") as f:
                ctx.client.put_object(Bucket=ctx.bucket, Key=t.prefix + "put", Body=f)
            end = time.perf_counter()
            if object_size(ctx, t.prefix + "put") != nbytes:
                raise BenchError("object incomplete after put_object")
            return ctx.scale.big_mib / (end - start)

        def transfer_manager() -> float:
            warm(src)
            start = time.perf_counter()
            ctx.client.upload_file(str(src), ctx.bucket, t.prefix + "tm", Config=TRANSFER)
            end = time.perf_counter()
            if object_size(ctx, t.prefix + "tm") != nbytes:
                raise BenchError("object incomplete after upload_file")
            return ctx.scale.big_mib / (end - start)

        return {"put_object": put_object, "upload_file 16MiBx8": transfer_manager}

    def mounted(self, ctx, t):
        src = random_file(ctx, ctx.scale.big_mib)
        t.path().mkdir(parents=True, exist_ok=True)
        warm(src)
        dd = ["dd", f"if={src}", f"of={t.path('file')}", "bs=1M"]
        dd += [f"count={ctx.scale.big_mib}", "conv=fsync"]
        start, returned, _ = timed(dd, ctx.scale.timeout)
        want = ctx.scale.big_mib * MIB
        secs = until_in_s3(
            ctx, t, start, returned, lambda: object_size(ctx, t.prefix + "file") == want
        )
        return ctx.scale.big_mib / secs


@register
class SeqReadCold(Workload):
    """`dd bs=1M of=/dev/null` of an object no mount has read (page cache dropped, fresh
    mount). Raw: one streamed get_object, or download_fileobj (ranged GETs in parallel)."""

    name = "seq_read_1g_cold"
    unit = "MiB/s"
    cold = True
    sample_rss = True
    REF = "ref/read"

    def size(self, scale):
        return f"{scale.big_mib} MiB"

    def prepare(self, ctx):
        src = random_file(ctx, ctx.scale.big_mib)
        ctx.probe.upload_file(
            str(src),
            ctx.bucket,
            self.REF,
            ExtraArgs={"Metadata": {**S3FS_FILE_META, "mtime": str(int(time.time()))}},
            Config=TRANSFER,
        )

    def setup(self, ctx, t):
        copy_ref(ctx, self.REF, t.prefix + "file")
        if not t.is_raw:
            put_s3fs_style(ctx, {}, dir_markers(t.prefix))

    def raw_variants(self, ctx, t):
        key = t.prefix + "file"
        nbytes = ctx.scale.big_mib * MIB

        def get_object() -> float:
            start = time.perf_counter()
            body = ctx.client.get_object(Bucket=ctx.bucket, Key=key)["Body"]
            got = sum(len(chunk) for chunk in body.iter_chunks(MIB))
            end = time.perf_counter()
            if got != nbytes:
                raise BenchError(f"read {got} bytes of {nbytes}")
            return ctx.scale.big_mib / (end - start)

        def download() -> float:
            start = time.perf_counter()
            with open(os.devnull, "wb") as sink:
                ctx.client.download_fileobj(ctx.bucket, key, sink, Config=TRANSFER)
            return ctx.scale.big_mib / (time.perf_counter() - start)

        return {"get_object": get_object, "download_fileobj 16MiBx8": download}

    def mounted(self, ctx, t):
        dd = ["dd", f"if={t.path('file')}", "of=/dev/null", "bs=1M"]
        start, end, err = timed(dd, ctx.scale.timeout)
        if f"{ctx.scale.big_mib * MIB} bytes" not in err:
            raise BenchError("dd read a different size: " + err.strip().splitlines()[-1])
        return ctx.scale.big_mib / (end - start)


@register
class RandRead(Workload):
    """os.pread of 4 KiB at random 4 KiB-aligned offsets (fixed seed), checked against the
    source, fresh mount. Raw: one ranged get_object per read, one after the other."""

    name = "rand_read_4k"
    unit = "ops/s"
    REF = "ref/rand"
    BLOCK = 4 * KIB

    def size(self, scale):
        return f"{scale.rand_reads} x 4 KiB in {scale.rand_object_mib} MiB"

    def prepare(self, ctx):
        # The object is the start of the random file; reads are checked against it.
        src = random_file(ctx, ctx.scale.big_mib)
        with open(src, "rb") as f:
            data = f.read(ctx.scale.rand_object_mib * MIB)
        meta = {**S3FS_FILE_META, "mtime": str(int(time.time()))}
        ctx.probe.put_object(Bucket=ctx.bucket, Key=self.REF, Body=data, Metadata=meta)

    def setup(self, ctx, t):
        copy_ref(ctx, self.REF, t.prefix + "file")
        if not t.is_raw:
            put_s3fs_style(ctx, {}, dir_markers(t.prefix))

    def offsets(self, ctx):
        return rand_offsets(ctx.scale.rand_reads, ctx.scale.rand_object_mib * MIB, self.BLOCK)

    def raw_variants(self, ctx, t):
        src = random_file(ctx, ctx.scale.big_mib)

        def ranged_gets() -> float:
            offsets = self.offsets(ctx)
            got = []
            start = time.perf_counter()
            for off in offsets:
                rng = f"bytes={off}-{off + self.BLOCK - 1}"
                resp = ctx.client.get_object(Bucket=ctx.bucket, Key=t.prefix + "file", Range=rng)
                got.append(resp["Body"].read())
            end = time.perf_counter()
            check_reads(str(src), offsets, got, self.BLOCK)
            return len(offsets) / (end - start)

        return {"ranged get_object": ranged_gets}

    def mounted(self, ctx, t):
        src = random_file(ctx, ctx.scale.big_mib)
        start, end = child(
            "pread",
            ctx.scale.timeout,
            path=str(t.path("file")),
            source=str(src),
            count=ctx.scale.rand_reads,
            object_size=ctx.scale.rand_object_mib * MIB,
            block=self.BLOCK,
        )
        return ctx.scale.rand_reads / (end - start)


@register
class SmallCreate(Workload):
    """One process writes files of 4 KiB one after the other; files/s until all are in S3.
    Raw: put_object, one after the other or from 16 threads."""

    name = "small_create_1000"
    unit = "files/s"
    SIZE = 4 * KIB

    def size(self, scale):
        return f"{scale.small_files} x 4 KiB"

    def names(self, ctx) -> list[str]:
        return [f"f{i:05d}" for i in range(ctx.scale.small_files)]

    def all_in_s3(self, ctx, t) -> Callable[[], bool]:
        want = dict.fromkeys(self.names(ctx), self.SIZE)
        return lambda: list_sizes(ctx, t.prefix) == want

    def raw_variants(self, ctx, t):
        bodies = {t.prefix + n: os.urandom(self.SIZE) for n in self.names(ctx)}

        def sequential() -> float:
            start = time.perf_counter()
            for key, body in bodies.items():
                ctx.client.put_object(Bucket=ctx.bucket, Key=key, Body=body)
            return len(bodies) / (time.perf_counter() - start)

        def threaded() -> float:
            start = time.perf_counter()
            put_tree(ctx, ctx.client, bodies, threads=16)
            return len(bodies) / (time.perf_counter() - start)

        return {"put_object": sequential, "put_object 16 threads": threaded}

    def mounted(self, ctx, t):
        t.path().mkdir(parents=True, exist_ok=True)
        start, returned = child(
            "create", ctx.scale.timeout, dir=str(t.path()), names=self.names(ctx), size=self.SIZE
        )
        secs = until_in_s3(ctx, t, start, returned, self.all_in_s3(ctx, t))
        return ctx.scale.small_files / secs


@register
class Untar(Workload):
    """`tar xf` of the venv's boto3 and botocore onto the mount; seconds until every file is
    in S3 with its size. Raw: put_object of the same files from 16 threads."""

    name = "untar"
    unit = "s"
    higher_is_better = False
    PACKAGES = ("boto3", "botocore")

    def __init__(self) -> None:
        self.files: dict[str, int] = {}  # path in the tree -> size, once prepared

    def size(self, scale):
        if not self.files:
            return "boto3+botocore"
        return f"{len(self.files)} files, {sum(self.files.values()) / MIB:.0f} MiB"

    def prepare(self, ctx):
        """A tarball of the venv's boto3 and botocore (thousands of small files), and
        the same tree extracted locally for the raw upload."""
        site = Path(boto3.__file__).resolve().parent.parent
        members: list[Path] = []  # directories and regular files, in walk order
        cap = ctx.scale.tree_files
        self.files = {}
        for package in self.PACKAGES:
            for dirpath, dirnames, filenames in os.walk(site / package):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                members.append(Path(dirpath))
                for name in sorted(filenames):
                    full = Path(dirpath, name)
                    if cap is not None and len(self.files) >= cap:
                        break
                    if full.is_file() and not full.is_symlink():
                        members.append(full)
                        self.files[str(full.relative_to(site))] = full.stat().st_size
        tarball = ctx.workdir / "tree.tar"
        with tarfile.open(tarball, "w") as tar:
            for path in members:
                tar.add(path, arcname=str(path.relative_to(site)), recursive=False)
        local = ctx.workdir / "tree"
        local.mkdir()
        subprocess.run(["tar", "xf", str(tarball), "-C", str(local)], check=True)
        ctx.inputs["tarball"], ctx.inputs["tree"] = tarball, local

    def all_in_s3(self, ctx, t) -> Callable[[], bool]:
        return lambda: list_sizes(ctx, t.prefix) == self.files

    def raw_variants(self, ctx, t):
        tree = ctx.inputs["tree"]
        items = {t.prefix + rel: tree / rel for rel in self.files}

        def upload() -> float:
            for path in items.values():  # into the page cache, like the tarball for tar
                path.read_bytes()
            start = time.perf_counter()
            put_tree(ctx, ctx.client, items, threads=16)
            return time.perf_counter() - start

        return {"put_object 16 threads": upload}

    def mounted(self, ctx, t):
        t.path().mkdir(parents=True, exist_ok=True)
        warm(ctx.inputs["tarball"])
        tar = ["tar", "xf", str(ctx.inputs["tarball"]), "-C", str(t.path())]
        start, returned, _ = timed(tar, ctx.scale.timeout)
        return until_in_s3(ctx, t, start, returned, self.all_in_s3(ctx, t))


@register
class RenameDir(Workload):
    """`mv` of a directory of small files (made as s3fs-fuse makes them) within the mount;
    seconds until all are under the new name. Raw: copy_object from 16 threads, then
    delete_objects."""

    name = "rename_dir_500"
    unit = "s"
    higher_is_better = False
    SIZE = 4 * KIB

    def size(self, scale):
        return f"{scale.rename_files} x 4 KiB"

    def names(self, ctx) -> list[str]:
        return [f"f{i:05d}" for i in range(ctx.scale.rename_files)]

    def setup(self, ctx, t):
        """The source directory, written as s3fs-fuse and pys3fs write one."""
        files = {f"{t.prefix}src/{n}": os.urandom(self.SIZE) for n in self.names(ctx)}
        dirs = [] if t.is_raw else dir_markers(t.prefix + "src/")
        put_s3fs_style(ctx, files, dirs)

    def moved(self, ctx, t) -> Callable[[], bool]:
        want = {f"dst/{n}": self.SIZE for n in self.names(ctx)}
        return lambda: list_sizes(ctx, t.prefix) == want

    def raw_variants(self, ctx, t):
        def copy_delete() -> float:
            names = self.names(ctx)
            start = time.perf_counter()

            def copy(name: str) -> None:
                ctx.client.copy_object(
                    Bucket=ctx.bucket,
                    Key=f"{t.prefix}dst/{name}",
                    CopySource={"Bucket": ctx.bucket, "Key": f"{t.prefix}src/{name}"},
                )

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(copy, names))
            for i in range(0, len(names), 1000):
                keys = [{"Key": f"{t.prefix}src/{n}"} for n in names[i : i + 1000]]
                ctx.client.delete_objects(
                    Bucket=ctx.bucket, Delete={"Objects": keys, "Quiet": True}
                )
            end = time.perf_counter()
            if not self.moved(ctx, t)():
                raise BenchError("objects not all moved")
            return end - start

        return {"copy+delete 16 threads": copy_delete}

    def mounted(self, ctx, t):
        start, returned, _ = timed(
            ["mv", str(t.path("src")), str(t.path("dst"))], ctx.scale.timeout
        )
        return until_in_s3(ctx, t, start, returned, self.moved(ctx, t))


# -- metadata at scale: listings and stats of objects written by another tool ----------------
def shared_dataset(ctx: Ctx, name: str, files: list[str], dirs: list[str] = ()) -> str:
    """Objects under ``shared/NAME/`` that every tool of a row reads, written once per run
    by boto3 as s3fs-fuse writes them (0644, root, mtime; ``dir/`` markers): returns the
    prefix. The creation is untimed, its duration goes into the notes."""
    prefix = f"shared/{name}/"
    if prefix in ctx.inputs:
        return prefix
    bodies = {prefix + f: b"x" * (i % 1000) for i, f in enumerate(files)}
    markers = dir_markers(prefix) + [prefix + d for d in dirs]
    start = time.perf_counter()
    put_s3fs_style(ctx, bodies, markers, threads=32)
    secs = time.perf_counter() - start
    count = len(bodies) + len(markers)
    ctx.note(
        f"{name}: {len(bodies)} objects and {len(markers)} directory markers written once "
        f"for all tools by put_object from 32 threads in {secs:.0f} s ({count / secs:.0f} PUT/s)"
    )
    ctx.inputs[prefix] = len(bodies)
    return prefix


def list_objects(ctx: Ctx, prefix: str, delimiter: bool = True) -> list[dict]:
    """Every object of a listing below ``prefix``, through the counted raw client."""
    kwargs = {"Bucket": ctx.bucket, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = "/"
    found = []
    for page in ctx.client.get_paginator("list_objects_v2").paginate(**kwargs):
        found += [o for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    return found


def head_all(ctx: Ctx, keys: list[str], threads: int = 32) -> list[dict]:
    """HEAD every key from ``threads`` threads, through the counted raw client."""

    def head(key: str) -> dict:
        return ctx.client.head_object(Bucket=ctx.bucket, Key=key)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(head, keys))


def output_of(argv: list[str], timeout: float, want_lines: int) -> float:
    """Seconds one command takes; its output must have ``want_lines`` lines."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{argv[0]} timed out after {timeout:.0f} s") from None
    end = time.perf_counter()
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        raise BenchError(f"{argv[0]}: {lines[-1] if lines else proc.returncode}"[:300])
    got = proc.stdout.count(b"\n")
    if got != want_lines:
        raise BenchError(f"{' '.join(argv[:2])}: {got} lines of output, not {want_lines}")
    return end - start


def file_names(count: int) -> list[str]:
    return [f"f{i:06d}" for i in range(count)]


@register
class LsLongCold(Workload):
    """`ls -l` of a directory of objects written by boto3 with s3fs-fuse's metadata (0644,
    root, mtime), on a fresh mount with a fresh cache directory. Raw: the list_objects_v2
    pages, then a HEAD of every object from 32 threads (modes and owners are only in the
    objects' user metadata)."""

    name = "ls_l_10k_cold"
    unit = "s"
    higher_is_better = False
    cache_group = "ls10k"
    DATASET = "ls10k"

    def size(self, scale):
        return f"{scale.ls_files} objects"

    def prepare(self, ctx):
        shared_dataset(ctx, self.DATASET, file_names(ctx.scale.ls_files))

    def raw_variants(self, ctx, t):
        prefix = f"shared/{self.DATASET}/"

        def list_and_head() -> float:
            start = time.perf_counter()
            heads = head_all(ctx, [o["Key"] for o in list_objects(ctx, prefix)])
            end = time.perf_counter()
            if len(heads) != ctx.scale.ls_files:
                raise BenchError(f"{len(heads)} objects listed, not {ctx.scale.ls_files}")
            return end - start

        return {"list + head 32 threads": list_and_head}

    def ls_l(self, ctx, t) -> float:
        path = t.mounted.path / "shared" / self.DATASET
        return output_of(["ls", "-l", str(path)], ctx.scale.timeout, ctx.scale.ls_files + 1)

    def mounted(self, ctx, t):
        return self.ls_l(ctx, t)


@register
class LsLongWarm(LsLongCold):
    """The same `ls -l` on a remount that gets the cache directory the ls_l_10k_cold mount
    left (pys3fs: use_cache with its metadata index; s3fs: use_cache without del_cache;
    rclone: --cache-dir; s3fs and rclone keep file data there, no metadata, so their
    remount asks S3 again). Raw: the list_objects_v2 pages alone (a client that
    remembers metadata by ETag needs nothing more)."""

    name = "ls_l_10k_warm"
    remount = True

    def raw_variants(self, ctx, t):
        prefix = f"shared/{self.DATASET}/"

        def list_only() -> float:
            start = time.perf_counter()
            found = list_objects(ctx, prefix)
            end = time.perf_counter()
            if len(found) != ctx.scale.ls_files:
                raise BenchError(f"{len(found)} objects listed, not {ctx.scale.ls_files}")
            return end - start

        return {"list_objects_v2": list_only}

    def prime(self, ctx, t):
        self.ls_l(ctx, t)


@register
class FindStat(Workload):
    """`find DIR -type f -exec stat -c '%a %u %g %s %n' {} +` over a tree of directories
    of objects written by boto3 with s3fs-fuse's metadata, fresh mount. Raw: one recursive
    list_objects_v2, then a HEAD of every object from 32 threads."""

    name = "find_stat_2k"
    unit = "s"
    higher_is_better = False
    DATASET = "tree2k"

    def size(self, scale):
        return f"{scale.tree_dirs * scale.tree_dir_files} files in {scale.tree_dirs} dirs"

    def count(self, ctx) -> int:
        return ctx.scale.tree_dirs * ctx.scale.tree_dir_files

    def prepare(self, ctx):
        dirs = [f"d{d:02d}/" for d in range(ctx.scale.tree_dirs)]
        files = [d + f for d in dirs for f in file_names(ctx.scale.tree_dir_files)]
        shared_dataset(ctx, self.DATASET, files, dirs)

    def raw_variants(self, ctx, t):
        def list_and_head() -> float:
            start = time.perf_counter()
            found = list_objects(ctx, f"shared/{self.DATASET}/", delimiter=False)
            heads = head_all(ctx, [o["Key"] for o in found])
            end = time.perf_counter()
            if len(heads) != self.count(ctx):
                raise BenchError(f"{len(heads)} objects listed, not {self.count(ctx)}")
            return end - start

        return {"list + head 32 threads": list_and_head}

    def mounted(self, ctx, t):
        path = t.mounted.path / "shared" / self.DATASET
        argv = ["find", str(path), "-type", "f", "-exec", "stat", "-c", "%a %u %g %s %n"]
        return output_of([*argv, "{}", "+"], ctx.scale.timeout, self.count(ctx))


@register
class ListHuge(Workload):
    """`ls -f` (names only, no stat, no sorting) of a directory of objects written by boto3,
    fresh mount. Raw: the list_objects_v2 pages."""

    name = "list_100k"
    unit = "s"
    higher_is_better = False
    DATASET = "list100k"

    def size(self, scale):
        return f"{scale.list_files} objects"

    def prepare(self, ctx):
        shared_dataset(ctx, self.DATASET, file_names(ctx.scale.list_files))

    def raw_variants(self, ctx, t):
        def list_only() -> float:
            start = time.perf_counter()
            found = list_objects(ctx, f"shared/{self.DATASET}/")
            end = time.perf_counter()
            if len(found) != ctx.scale.list_files:
                raise BenchError(f"{len(found)} objects listed, not {ctx.scale.list_files}")
            return end - start

        return {"list_objects_v2": list_only}

    def mounted(self, ctx, t):
        path = t.mounted.path / "shared" / self.DATASET
        return output_of(["ls", "-f", str(path)], ctx.scale.timeout, ctx.scale.list_files + 2)


# -- child processes (python -m bench.workloads OP JSON) -----------------------------------------
def check_reads(source: str, offsets: list[int], got: list[bytes], block: int) -> None:
    with open(source, "rb") as f:
        for off, data in zip(offsets, got, strict=True):
            if data != os.pread(f.fileno(), block, off):
                raise BenchError(f"wrong data read at offset {off}")


def child_pread(path: str, source: str, count: int, object_size: int, block: int) -> dict:
    offsets = rand_offsets(count, object_size, block)
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        got = [os.pread(fd, block, off) for off in offsets]
        end = time.perf_counter()
    finally:
        os.close(fd)
    check_reads(source, offsets, got, block)
    return {"start": start, "end": end}


def child_create(dir: str, names: list[str], size: int) -> dict:
    bodies = [os.urandom(size) for _ in names]
    start = time.perf_counter()
    for name, body in zip(names, bodies, strict=True):
        with open(os.path.join(dir, name), "wb") as f:
            f.write(body)
    return {"start": start, "end": time.perf_counter()}


CHILD_OPS = {"pread": child_pread, "create": child_create}

if __name__ == "__main__":
    print(json.dumps(CHILD_OPS[sys.argv[1]](**json.loads(sys.argv[2]))))
