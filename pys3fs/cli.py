"""``pys3fs BUCKET[:/PREFIX] MOUNTPOINT [-o OPTIONS] [-f] [-d]``.

Everything that can be wrong with a command line (options, mountpoint, credentials,
endpoint, bucket, prefix, cache directory) is checked here, before the daemon
detaches, and reported as one line on stderr with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import errno
import faulthandler
import gc
import json
import logging
import logging.handlers
import os
import signal
import stat
import sys
import threading
import time

import botocore.exceptions

from . import __version__, pending
from .attrs import AttrPolicy, Entry
from .cache import MetaCache
from .credentials import CredentialsError, resolve_credentials
from .daemon import DETACHED_ENV, StartError, notify_ready, set_read_ahead, spawn
from .datacache import CacheLimits, DataCache
from .fs import S3Operations
from .fusebridge import FastFUSE
from .handles import FileTable, Owner, TransferSettings
from .httpconn import ca_setting
from .journal import Journal, journal_dir, load_records
from .metadata import use_mime_types
from .metaindex import MetaIndex
from .namespace import Namespace
from .options import S3FS_COVERED, MountOptions, OptionError, build_options
from .paths import PATH_ENCODING, KeyMap
from .recovery import recover
from .s3client import Backend, ClientSettings, error_code, make_client
from .stats import STATS_XATTR, format_stats

SWITCH_INTERVAL = 0.0005  # seconds; see run_foreground
# seconds the kernel may answer lookups and stat from its own cache (libfuse's default);
# a shorter stat_cache_expire shortens it too
KERNEL_TTL_MAX = 1.0
log = logging.getLogger("pys3fs")

USAGE = (
    "pys3fs BUCKET[:/PREFIX] MOUNTPOINT [-o OPT[,OPT...]]... [-f] [-d]\n"
    "       pys3fs MOUNTPOINT -o bucket=BUCKET[:/PREFIX][,OPT...]... [-f] [-d]"
)


class StartupError(Exception):
    """A fatal problem found before mounting; the message is one line for stderr."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise OptionError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(
        prog="pys3fs",
        usage=USAGE,
        description="Mount an S3 bucket (or a prefix of it) as a filesystem.",
        epilog="Options: see README.md (all s3fs-fuse names: url, endpoint, passwd_file, ...).",
    )
    parser.add_argument("source", metavar="BUCKET[:/PREFIX]")
    # s3fs-fuse's other form: MOUNTPOINT alone, the bucket in -o bucket=
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", nargs="?")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS")
    parser.add_argument("-f", dest="foreground", action="store_true", help="stay in foreground")
    parser.add_argument("-d", dest="debug", action="store_true", help="debug log lines")
    parser.add_argument("-s", dest="single", action="store_true", help="single-threaded")
    parser.add_argument("--version", action="version", version=f"pys3fs {__version__}")
    return parser.parse_args(argv)


# -- checks --------------------------------------------------------------------------------
def check_mountpoint(path: str) -> None:
    try:
        os.statvfs(path)  # a dead FUSE mount says so here; its stat may come from a cache
        st = os.stat(path)
    except FileNotFoundError:
        raise StartupError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        hint = ""
        if exc.errno == errno.ENOTCONN:
            hint = f" (left by a daemon that died: fusermount -u {path})"
        raise StartupError(f"mountpoint {path}: {exc.strerror}{hint}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StartupError(f"mountpoint {path} is not a directory")


def client_settings(opts: MountOptions, quick: bool = False) -> ClientSettings:
    try:
        creds = resolve_credentials(
            opts.bucket,
            passwd_file=opts.passwd_file,
            profile=opts.profile,
            iam_role=opts.iam_role,
            public_bucket=opts.public_bucket,
        )
    except CredentialsError as exc:
        raise StartupError(str(exc)) from None
    verify = ca_setting(opts.check_certificate)
    if isinstance(verify, str) and not os.path.exists(verify):
        raise StartupError(f"CA bundle {verify} not found (AWS_CA_BUNDLE or SSL_CERT_FILE)")
    return ClientSettings(
        bucket=opts.bucket,
        endpoint_url=opts.url,
        region=opts.region,
        path_style=opts.use_path_request_style,
        credentials=creds,
        unsigned=opts.public_bucket,
        profile=opts.profile if creds is None else None,
        retries=1 if quick else opts.retries,
        connect_timeout=min(opts.connect_timeout, 5.0) if quick else opts.connect_timeout,
        read_timeout=min(opts.readwrite_timeout, 10.0) if quick else opts.readwrite_timeout,
        max_pool=max(32, opts.max_thread_count * 4),
        multipart_size=opts.multipart_size,
        max_concurrency=opts.max_thread_count,
        storage_class=opts.storage_class,
        acl=opts.acl,
        verify=verify,
        sse=opts.sse,
        sse_kms_key=opts.sse_kms_key,
        content_md5=opts.content_md5,
    )


def check_bucket(opts: MountOptions, settings: ClientSettings) -> None:
    """One bounded ListObjectsV2 call proves endpoint, credentials, bucket and prefix."""
    where = opts.url or "the S3 endpoint"
    try:
        client = make_client(settings)
        resp = client.list_objects_v2(Bucket=opts.bucket, Prefix=opts.prefix, MaxKeys=1)
    except (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectTimeoutError,
        botocore.exceptions.ReadTimeoutError,
    ):
        raise StartupError(
            f"cannot reach {where}: no answer (check url= and the network)"
        ) from None
    except botocore.exceptions.NoCredentialsError:
        raise StartupError("no credentials found (iam_role given but no role available)") from None
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code in ("NoSuchBucket", "404"):
            raise StartupError(f"bucket {opts.bucket!r} not found at {where}") from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"):
            raise StartupError(f"credentials rejected by {where} ({code})") from None
        if code in ("AccessDenied", "403"):
            raise StartupError(f"access denied to bucket {opts.bucket!r} ({code})") from None
        raise StartupError(f"cannot use bucket {opts.bucket!r}: {code}") from None
    except botocore.exceptions.SSLError:
        raise StartupError(
            f"TLS certificate of {where} not trusted (add its CA to the system's store, "
            "or set AWS_CA_BUNDLE; no_check_certificate skips the check)"
        ) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise StartupError(f"cannot reach {where}: {type(exc).__name__}") from None
    if opts.prefix and not resp.get("Contents"):
        raise StartupError(f"prefix /{opts.prefix.rstrip('/')} not found in bucket {opts.bucket!r}")


def check_cache_dir(opts: MountOptions) -> str:
    """The cache directory exists (or can be made), private, and writable."""
    root = os.path.abspath(opts.resolved_cache_dir())
    if opts.check_cache_dir_exist and opts.cache_dir and not os.path.isdir(root):
        raise StartupError(f"cache directory {root} does not exist (check_cache_dir_exist)")
    try:
        os.makedirs(os.path.join(root, opts.bucket), mode=0o700, exist_ok=True)
        if not os.access(os.path.join(root, opts.bucket), os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as exc:
        raise StartupError(f"cache directory {root}: {exc.strerror or exc}") from None
    return root


def open_data_cache(opts: MountOptions) -> tuple[DataCache, Journal | None]:
    """The data cache, and its upload journal when this mount owns the directory."""
    root = check_cache_dir(opts)
    limits = CacheLimits(opts.max_cache_size, opts.ensure_diskfree)
    data = DataCache(root, opts.bucket, limits, reuse=not opts.del_cache)
    try:
        pending = load_records(journal_dir(data.bucket_dir))
        data.prepare(keep=frozenset(r.name for r in pending))
        journal = Journal(data.bucket_dir) if data.persistent else None
    except OSError as exc:
        raise StartupError(f"cache directory {root}: {exc.strerror or exc}") from None
    if opts.writeback and journal is None:
        data.close()
        raise StartupError(f"writeback needs a cache directory of its own: {root} is in use")
    return data, journal


def check_writeback(opts: MountOptions) -> None:
    """Writeback keeps unsent data in the cache directory: it cannot share one."""
    root = check_cache_dir(opts)
    if opts.writeback and not DataCache(root, opts.bucket, CacheLimits()).lock_is_free():
        raise StartupError(
            f"writeback needs a cache directory of its own: {root} is used by another mount "
            "(give this mount its own use_cache=DIR)"
        )


def startup_checks(opts: MountOptions) -> ClientSettings:
    """All fail-fast checks; returns the client settings for the daemon."""
    check_mountpoint(opts.mountpoint)
    if opts.mime_file and not os.access(opts.mime_file, os.R_OK):
        raise StartupError(f"mime types file {opts.mime_file} cannot be read")
    settings = client_settings(opts)
    check_bucket(opts, client_settings(opts, quick=True))
    return settings


# -- running -------------------------------------------------------------------------------
def setup_logging(opts: MountOptions, detached: bool) -> None:
    level = logging.DEBUG if opts.debug else logging.INFO
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    log.setLevel(level)
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    fmt = "%(asctime)s pys3fs[%(process)d] %(levelname)s %(name)s: %(message)s"
    if opts.logfile:
        handler: logging.Handler = logging.FileHandler(opts.logfile)
    elif detached and os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        fmt = "pys3fs[%(process)d]: %(levelname)s %(name)s: %(message)s"
    elif detached:
        handler = logging.NullHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    # A fatal error in native code (libfuse, ctypes) ends the daemon without a Python
    # exception; faulthandler leaves every thread's stack where the log goes.
    if isinstance(handler, logging.FileHandler):
        faulthandler.enable(handler.stream, all_threads=True)
    elif not detached:
        faulthandler.enable(sys.stderr, all_threads=True)


def fuse_options(opts: MountOptions) -> dict:
    fuse = {
        "fsname": opts.bucket,
        "subtype": "pys3fs",
        "big_writes": True,
        "max_read": 131072,
        # read replies are spliced from the cache file (see fusebridge's read_buf)
        "splice_write": True,
        "atomic_o_trunc": True,
        # keep the kernel page cache across opens while size and mtime are unchanged
        "auto_cache": True,
        # ... compared at every open (libfuse otherwise trusts a check made within the
        # last attr_timeout, and a reopen right after another host's write kept old pages)
        "ac_attr_timeout": 0,
        # unlink really deletes: no .fuse_hidden* objects in the bucket for open files
        "hard_remove": True,
    }
    # the kernel's own caches of names and attributes, never longer than ours
    kernel_ttl = round(min(KERNEL_TTL_MAX, opts.stat_cache_expire), 3)
    fuse["entry_timeout"] = fuse["attr_timeout"] = kernel_ttl
    fuse.update(opts.fuse_options)
    if opts.allow_other:
        fuse["allow_other"] = True
        fuse["default_permissions"] = True
    if opts.read_only:
        fuse["ro"] = True
    return fuse


def build_operations(
    opts: MountOptions, settings: ClientSettings, data: DataCache, journal: Journal | None
) -> S3Operations:
    """Wire the layers together: backend, caches, files, namespace, operations."""
    backend = Backend(settings)
    owner = Owner(uid=os.getuid(), gid=os.getgid())
    meta = MetaCache(opts.stat_cache_expire, opts.max_stat_cache_size)
    transfer = TransferSettings(
        part_size=opts.multipart_size,
        threads=opts.max_thread_count,
        conditional_writes=opts.consistency == "strict",
        writeback=opts.writeback,
        writeback_delay=opts.writeback_delay,
        copy_parts=not opts.nomixupload,
    )
    files = FileTable(backend, data, owner, transfer, on_upload=meta.put, journal=journal)
    keys = KeyMap(opts.prefix)
    if journal is not None:
        recover(files, journal, keys, journal.load())
    started = time.time_ns()
    root_perm = 0o777 & ~opts.mp_umask if opts.mp_umask is not None else 0o755
    root = Entry(
        mode=stat.S_IFDIR | root_perm,
        uid=opts.uid,
        gid=opts.gid,
        mtime_ns=started,
        ctime_ns=started,
        atime_ns=started,
    )
    index = MetaIndex(os.path.join(data.bucket_dir, "metadata.sqlite"))
    namespace = Namespace(
        backend, keys, meta, files, owner, root, workers=opts.max_thread_count * 4, index=index
    )
    policy = AttrPolicy(
        uid=owner.uid,
        gid=owner.gid,
        uid_override=opts.uid,
        gid_override=opts.gid,
        umask=opts.umask,
    )
    return S3Operations(
        namespace,
        files,
        policy,
        keys,
        read_only=opts.read_only,
        strict_open=opts.consistency == "strict",
        on_ready=lambda: ready(opts),
        on_exit=data.close,
        use_xattr=opts.use_xattr,
    )


def ready(opts: MountOptions) -> None:
    """FUSE init: the mount is about to answer. Tune it, then tell whoever started us."""
    if not opts.read_ahead_kb:
        notify_ready()
        return
    threading.Thread(
        target=_tune_then_notify, args=(opts,), name="pys3fs-ready", daemon=True
    ).start()


def _tune_then_notify(opts: MountOptions) -> None:
    """The kernel sets a mount's read-ahead from the answer to init, so it is raised
    once the mount answers a stat (init answered), which also names its device."""
    try:
        set_read_ahead(os.stat(opts.mountpoint).st_dev, opts.read_ahead_kb)
    except OSError as exc:
        log.debug("read-ahead of %s left as it is: %s", opts.mountpoint, exc)
    finally:
        notify_ready()


def tune_gc() -> None:
    """Collect cycles less often. A listing puts tens of thousands of long-lived entries in
    the caches, and with the default thresholds each page triggers collections that walk
    all of them again: that was a third of the CPU of listing a 10,000-entry directory.
    pys3fs makes few reference cycles, so memory does not grow from this."""
    gc.freeze()  # what start-up made stays: no collection needs to look at it again
    gc.set_threshold(50_000, 20, 100)


def run_foreground(opts: MountOptions, settings: ClientSettings) -> int:
    detached = bool(os.environ.get(DETACHED_ENV))
    data, journal = open_data_cache(opts)
    setup_logging(opts, detached)
    if opts.mime_file:
        use_mime_types(opts.mime_file)
    if settings.credentials is not None:  # resolved before logging was set up
        log.debug("using credentials from %s", settings.credentials.source)
    ops = build_operations(opts, settings, data, journal)
    if detached:
        os.chdir("/")
    log.info("mounting %s on %s", opts.bucket, opts.mountpoint)
    for name in opts.covered:
        log.info("s3fs-fuse option %s: nothing to do (%s)", name, S3FS_COVERED[name])
    # libfuse's teardown puts SIGPIPE back to SIG_DFL before destroy() uploads what is
    # pending: a write to a closed socket or stderr pipe would then kill us mid-upload.
    # Blocked, such a write fails with EPIPE like anywhere else in Python.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    tune_gc()
    # Background uploads spend milliseconds of CPU per request in botocore: with the
    # default 5 ms switch interval a FUSE call (tar's next create) waits behind them
    # for the GIL; a shorter interval keeps those calls quick.
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        FastFUSE(
            ops,
            opts.mountpoint,
            foreground=True,
            nothreads=opts.single_thread,
            debug=False,
            encoding=PATH_ENCODING,
            **fuse_options(opts),
        )
    except RuntimeError as exc:
        print(f"pys3fs: mount of {opts.mountpoint} failed ({exc})", file=sys.stderr)
        return 1
    finally:
        ops.files.shutdown()
        data.close()
    return 0


def is_pys3fs_mount(path: str) -> bool:
    """Whether ``path`` is the mountpoint of a live pys3fs mount."""
    target = os.path.abspath(path)
    try:
        with open("/proc/self/mounts") as f:
            return any(
                len(fields) > 2 and fields[1] == target and fields[2] == "fuse.pys3fs"
                for fields in (line.split() for line in f)
            )
    except OSError:
        return False


def show_stats(mountpoint: str) -> int:
    """``pys3fs stats MOUNTPOINT``: request counts and cache hit rates of a mount."""
    try:
        data = json.loads(os.getxattr(mountpoint, STATS_XATTR))
    except OSError as exc:
        print(f"pys3fs: cannot read stats of {mountpoint}: {exc.strerror}", file=sys.stderr)
        return 1
    print(format_stats(data))
    return 0


def show_pending(target: str) -> int:
    """``pys3fs pending MOUNTPOINT|CACHE_DIR``: what is not in S3 yet."""
    try:
        live = is_pys3fs_mount(target)
        rows = pending.live_rows(target) if live else pending.journal_rows(target)
    except (OSError, ValueError) as exc:
        print(f"pys3fs: cannot read what is pending in {target}: {exc}", file=sys.stderr)
        return 1
    print(pending.format_rows(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "stats" and is_pys3fs_mount(argv[1]):
        return show_stats(argv[1])
    if (
        len(argv) == 2
        and argv[0] == "pending"
        and (is_pys3fs_mount(argv[1]) or pending.is_cache_dir(argv[1]))
    ):
        return show_pending(argv[1])
    try:
        args = parse_args(argv)
        source, mountpoint = args.source, args.mountpoint
        if mountpoint is None:
            source, mountpoint = None, args.source
        opts = build_options(
            source, mountpoint, args.options, args.foreground, args.debug, args.single
        )
        settings = startup_checks(opts)
        check_writeback(opts)
    except OptionError as exc:
        print(f"pys3fs: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"pys3fs: {exc}", file=sys.stderr)
        return 1
    if opts.foreground:
        return run_foreground(opts, settings)
    try:
        spawn(argv, timeout=max(30.0, opts.connect_timeout * 3))
    except StartError as exc:
        print(f"pys3fs: {exc}", file=sys.stderr)
        return 1
    return 0
