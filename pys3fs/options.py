"""Command-line and ``-o`` option parsing.

Option names follow s3fs-fuse wherever s3fs-fuse has one, so an existing fstab line
keeps working when ``s3fs`` is swapped for ``pys3fs``. Unknown or malformed options
are rejected before the daemon starts, with one line naming the culprit.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field

from .paths import normalize_prefix


class OptionError(ValueError):
    """A bad command line; the message is one line meant for stderr."""


# mount(8) words that only matter to mount(8) itself.
# s3fs-fuse options whose effect pys3fs has anyway, or which tune machinery of s3fs-fuse
# that pys3fs does not have: accepted (and named in the log at mount), so that an fstab
# line written for s3fs-fuse mounts unchanged.
S3FS_COVERED = {
    "enable_noobj_cache": "names found missing are cached anyway",
    "complement_stat": "objects without metadata get default modes anyway",
    "compat_dir": "directories without a marker object are shown anyway",
    "notsup_compat_dir": "directories without a marker object are shown all the same",
    "sigv4": "requests are signed with SigV4 anyway",
    "listobjectsv2": "listings use ListObjectsV2 anyway",
    "multireq_max": "HEADs run concurrently with their own limit",
    "max_dirty_data": "big files go to S3 in parts while they are written anyway",
    "instance_name": "log lines carry the process id",
    "curldbg": "no curl here; -d logs each request's outcome",
    "nodnscache": "no DNS cache of its own: names are looked up as the system does",
    "nosscache": "no TLS session cache of curl here",
    "noxmlns": "listings are read with or without an XML namespace anyway",
    "noua": "the User-Agent is botocore's",
    "no_time_stamp_msg": "log lines carry a time stamp, as syslog and journald expect",
    "list_object_max_keys": "listings ask for S3's page size (1000 keys)",
    "multipart_threshold": "files of multipart_size or more go to S3 in parts",
    "multipart_copy_size": "big objects are copied in parts of multipart_size",
    "singlepart_copy_limit": "objects below multipart_size are copied with one CopyObject",
    "use_session_token": "a session token is used wherever the credentials carry one",
    "ecs": "boto3's credential chain includes the container's credentials",
}
# s3fs-fuse options that would change what reaches S3 and that pys3fs cannot honour:
# refused by name rather than as unknown
S3FS_UNSUPPORTED = {
    "nocopyapi": "renames and metadata changes need the server's CopyObject",
    "norenameapi": "renames need the server's CopyObject",
    "nomultipart": "big files are uploaded in parts",
    "sigv2": "only SigV4 signing is supported",
    "load_sse_c": "SSE-C (keys of the customer's own) is not supported",
    "requester_pays": "requester-pays buckets are not supported",
    "ahbe_conf": "no extra HTTP headers by file extension",
    "cipher_suites": "TLS ciphers are OpenSSL's defaults",
    "ibm_iam_auth": "IBM IAM credentials are not supported",
    "ibm_iam_endpoint": "IBM IAM credentials are not supported",
}

MOUNT_WORDS = {"_netdev", "auto", "noauto", "user", "nouser", "users", "nofail", "defaults"}

# Generic FUSE / kernel options handed to libfuse unchanged.
FUSE_FLAGS = {
    "allow_root",
    "default_permissions",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "noatime",
    "atime",
    "relatime",
    "norelatime",
    "nodiratime",
    "diratime",
    "sync",
    "async",
    "dirsync",
    "rw",
    "nonempty",
    "auto_unmount",
    "kernel_cache",
    "auto_cache",
    "direct_io",
    "big_writes",
    "large_read",
    "async_read",
    "sync_read",
    "hard_remove",
    "use_ino",
    "readdir_ino",
    "splice_read",
    "splice_write",
    "splice_move",
    "no_remote_lock",
}
FUSE_VALUED = {
    "max_read",
    "max_write",
    "max_readahead",
    "max_background",
    "entry_timeout",
    "negative_timeout",
    "attr_timeout",
    "ac_attr_timeout",
    "fsname",
    "subtype",
    "blkdev",
    "blksize",
    "context",
    "fscontext",
    "defcontext",
    "rootcontext",
}

MiB = 1024 * 1024


@dataclass
class MountOptions:
    """Everything one mount needs, parsed and validated."""

    bucket: str
    mountpoint: str
    prefix: str = ""
    url: str | None = None
    region: str | None = None
    use_path_request_style: bool = False
    passwd_file: str | None = None
    profile: str | None = None
    iam_role: str | None = None
    public_bucket: bool = False
    uid: int | None = None
    gid: int | None = None
    umask: int | None = None
    mp_umask: int | None = None
    allow_other: bool = False
    read_only: bool = False
    cache_dir: str | None = None
    storage_class: str | None = None
    acl: str | None = None  # default_acl, a canned ACL; None for private
    stat_cache_expire: float = 60.0
    max_stat_cache_size: int = 100_000
    consistency: str = "strict"
    max_cache_size: int = 0
    ensure_diskfree: int = 0
    multipart_size: int = 16 * MiB
    max_thread_count: int = 8
    writeback: bool = False
    writeback_delay: float = 0.2
    read_ahead_kb: int = 512  # the kernel's read-ahead in files of the mount; 0: its own
    retries: int = 5
    connect_timeout: float = 10.0
    readwrite_timeout: float = 60.0
    logfile: str | None = None
    foreground: bool = False
    debug: bool = False
    single_thread: bool = False
    check_certificate: bool = True  # no_check_certificate clears it
    verify_hostname: bool = True  # ssl_verify_hostname=0 (with no_check_certificate) clears it
    sse: str | None = None  # use_sse: "AES256" or "aws:kms"
    sse_kms_key: str | None = None
    del_cache: bool = False
    nomixupload: bool = False
    content_md5: bool = False
    use_xattr: bool = False
    tmpdir: str | None = None
    check_cache_dir_exist: bool = False
    mime_file: str | None = None
    fuse_options: dict[str, str | bool] = field(default_factory=dict)
    covered: list[str] = field(default_factory=list)  # s3fs-fuse options with nothing to do

    @property
    def endpoint_url(self) -> str | None:
        return self.url

    def resolved_cache_dir(self) -> str:
        """``use_cache=DIR`` or a private per-user directory under the temp dir
        (``tmpdir=DIR``, else $TMPDIR or /tmp)."""
        if self.cache_dir:
            return self.cache_dir
        return os.path.join(self.tmpdir or tempfile.gettempdir(), f"pys3fs-{os.getuid()}")


def parse_source(source: str) -> tuple[str, str]:
    """Split ``BUCKET[:/PREFIX]`` (also ``pys3fs#BUCKET`` left over from fstab)."""
    if "#" in source:
        source = source.split("#", 1)[1]
    bucket, _, prefix = source.partition(":")
    if not bucket or "/" in bucket:
        raise OptionError(f"invalid bucket name {bucket!r}: expected BUCKET or BUCKET:/PREFIX")
    return bucket, normalize_prefix(prefix)


def split_options(values: list[str]) -> list[tuple[str, str | None]]:
    """Split repeated ``-o a,b=c`` values into (name, value) pairs."""
    pairs: list[tuple[str, str | None]] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            name, eq, val = item.partition("=")
            pairs.append((name.strip(), val if eq else None))
    return pairs


def _int(name: str, value: str | None, base: int = 10, minimum: int = 0) -> int:
    if value is None or value.strip() == "":
        raise OptionError(f"option {name} needs a value")
    try:
        number = int(value, base)
    except ValueError:
        raise OptionError(f"option {name}: invalid number {value!r}") from None
    if number < minimum:
        raise OptionError(f"option {name}: must be at least {minimum}")
    return number


def _float(name: str, value: str | None) -> float:
    if value is None or value.strip() == "":
        raise OptionError(f"option {name} needs a value")
    try:
        number = float(value)
    except ValueError:
        raise OptionError(f"option {name}: invalid number {value!r}") from None
    if not math.isfinite(number):  # nan/inf would break the TTL caches and socket timeouts
        raise OptionError(f"option {name}: invalid number {value!r}")
    if number < 0:
        raise OptionError(f"option {name}: must not be negative")
    return number


def _text(name: str, value: str | None) -> str:
    if not value:
        raise OptionError(f"option {name} needs a value")
    return value


def _flag(name: str, value: str | None) -> bool:
    if value is None or value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise OptionError(f"option {name}: expected no value, 1 or 0, got {value!r}")


def apply_option(opts: MountOptions, name: str, value: str | None) -> None:
    """Set one ``-o`` option on ``opts``; raise OptionError for anything unknown."""
    handler = _HANDLERS.get(name)
    if handler is not None:
        handler(opts, name, value)
    elif name in MOUNT_WORDS or name.startswith("x-") or name == "comment":
        return
    elif name in S3FS_COVERED:
        opts.covered.append(name)
    elif name in S3FS_UNSUPPORTED:
        raise OptionError(f"s3fs-fuse option {name} is not supported: {S3FS_UNSUPPORTED[name]}")
    elif name in FUSE_FLAGS:
        if value is not None:
            raise OptionError(f"option {name} takes no value")
        opts.fuse_options[name] = True
    elif name in FUSE_VALUED:
        opts.fuse_options[name] = _text(name, value)
    else:
        raise OptionError(f"unknown option {name!r} (see pys3fs --help)")


def _set(attr: str, convert):
    def handler(opts: MountOptions, name: str, value: str | None) -> None:
        setattr(opts, attr, convert(name, value))

    return handler


def _set_url(opts: MountOptions, name: str, value: str | None) -> None:
    url = _text(name, value).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise OptionError(f"option {name}: expected http://HOST[:PORT] or https://..., got {url!r}")
    opts.url = url


def _set_storage_class(opts: MountOptions, name: str, value: str | None) -> None:
    allowed = {
        "STANDARD",
        "STANDARD_IA",
        "ONEZONE_IA",
        "REDUCED_REDUNDANCY",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "GLACIER_IR",
        "DEEP_ARCHIVE",
    }
    cls = _text(name, value).upper()
    if cls not in allowed:
        raise OptionError(f"option storage_class: unknown class {value!r}")
    opts.storage_class = cls


CANNED_ACLS = {
    "private",
    "public-read",
    "public-read-write",
    "aws-exec-read",
    "authenticated-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
}


def _set_acl(opts: MountOptions, name: str, value: str | None) -> None:
    """s3fs-fuse's canned ACLs. ``private`` sends no ACL header: it is what S3 gives an
    object without one, and a bucket with ACLs disabled (AWS's default since 2023)
    refuses every write that names another ACL."""
    acl = _text(name, value).lower()
    if acl not in CANNED_ACLS:
        known = ", ".join(sorted(CANNED_ACLS))
        raise OptionError(f"option default_acl: unknown canned ACL {value!r} (one of {known})")
    opts.acl = None if acl == "private" else acl


def _set_rrs(opts: MountOptions, name: str, value: str | None) -> None:
    if _flag(name, value):
        opts.storage_class = "REDUCED_REDUNDANCY"


def _set_multipart(opts: MountOptions, name: str, value: str | None) -> None:
    size = _int(name, value, minimum=5)
    if size > 5 * 1024:
        raise OptionError("option multipart_size: at most 5120 (MiB)")
    opts.multipart_size = size * MiB


def _set_consistency(opts: MountOptions, name: str, value: str | None) -> None:
    if value not in ("strict", "relaxed"):
        raise OptionError("option consistency: expected strict or relaxed")
    opts.consistency = value


def _set_sse(opts: MountOptions, name: str, value: str | None) -> None:
    """s3fs-fuse's forms: ``use_sse`` / ``use_sse=1`` / ``use_sse=AES256`` for SSE-S3,
    ``use_sse=kmsid`` or ``use_sse=kmsid:KEY`` (``k``, ``k:KEY``) for SSE-KMS. SSE-C
    (``custom``, ``c``) needs the key on every read and is refused."""
    kind, _, key = (value or "1").partition(":")
    kind = kind.lower()
    if kind in ("0", "false", "no") and not key:
        opts.sse = opts.sse_kms_key = None
    elif kind in ("1", "true", "yes", "aes256", "sse-s3") and not key:
        opts.sse, opts.sse_kms_key = "AES256", None
    elif kind in ("kmsid", "k"):
        opts.sse, opts.sse_kms_key = "aws:kms", key or None
    elif kind in ("custom", "c"):
        raise OptionError("option use_sse: SSE-C (custom keys) is not supported")
    else:
        raise OptionError(f"option use_sse: expected 1, kmsid or kmsid:KEY, got {value!r}")


def _set_verify_hostname(opts: MountOptions, name: str, value: str | None) -> None:
    """s3fs-fuse takes 0 (no check) or 2 (the default); checked in build_options that 0
    comes with no_check_certificate, as boto3 cannot skip the name check alone."""
    if value not in ("0", "1", "2"):
        raise OptionError(f"option ssl_verify_hostname: expected 0 or 2, got {value!r}")
    opts.verify_hostname = value != "0"


def _check_bucket(opts: MountOptions, name: str, value: str | None) -> None:
    """``bucket=`` next to a BUCKET argument must name the same one."""
    if parse_source(_text(name, value)) != (opts.bucket, opts.prefix):
        raise OptionError(f"option bucket={value} names another bucket than {opts.bucket!r}")


def _set_servicepath(opts: MountOptions, name: str, value: str | None) -> None:
    if (value or "/").strip("/"):
        raise OptionError("option servicepath: only / is supported (put the path in url=)")


def _set_iam(opts: MountOptions, name: str, value: str | None) -> None:
    opts.iam_role = value or "auto"


def _set_ro(opts: MountOptions, name: str, value: str | None) -> None:
    opts.read_only = _flag(name, value)


_HANDLERS = {
    "url": _set_url,
    "bucket": _check_bucket,
    "host": _set_url,  # s3fs-fuse's older name of url
    "servicepath": _set_servicepath,
    "no_check_certificate": lambda opts, n, v: setattr(opts, "check_certificate", not _flag(n, v)),
    "ssl_verify_hostname": _set_verify_hostname,
    "use_sse": _set_sse,
    "del_cache": _set("del_cache", _flag),
    "nomixupload": _set("nomixupload", _flag),
    "enable_content_md5": _set("content_md5", _flag),
    "use_xattr": _set("use_xattr", _flag),
    "tmpdir": _set("tmpdir", _text),
    "check_cache_dir_exist": _set("check_cache_dir_exist", _flag),
    "mime": _set("mime_file", _text),
    "endpoint": _set("region", _text),
    "region": _set("region", _text),
    "use_path_request_style": _set("use_path_request_style", _flag),
    "passwd_file": _set("passwd_file", _text),
    "profile": _set("profile", _text),
    "iam_role": _set_iam,
    "public_bucket": _set("public_bucket", _flag),
    "uid": _set("uid", _int),
    "gid": _set("gid", _int),
    "umask": _set("umask", lambda n, v: _int(n, v, base=8)),
    "mp_umask": _set("mp_umask", lambda n, v: _int(n, v, base=8)),
    "allow_other": _set("allow_other", _flag),
    "ro": _set_ro,
    "use_cache": _set("cache_dir", _text),
    "storage_class": _set_storage_class,
    "use_rrs": _set_rrs,
    "default_acl": _set_acl,
    "stat_cache_expire": _set("stat_cache_expire", _float),
    # s3fs-fuse counts from the last use, pys3fs from the lookup: never staler than asked
    "stat_cache_interval_expire": _set("stat_cache_expire", _float),
    "max_stat_cache_size": _set("max_stat_cache_size", lambda n, v: _int(n, v, minimum=1)),
    "multipart_size": _set_multipart,
    "consistency": _set_consistency,
    "max_cache_size": _set("max_cache_size", lambda n, v: _int(n, v) * MiB),
    "ensure_diskfree": _set("ensure_diskfree", lambda n, v: _int(n, v) * MiB),
    "max_thread_count": _set("max_thread_count", lambda n, v: _int(n, v, minimum=1)),
    "parallel_count": _set("max_thread_count", lambda n, v: _int(n, v, minimum=1)),
    "writeback": _set("writeback", _flag),
    "writeback_delay": _set("writeback_delay", _float),
    "read_ahead_kb": _set("read_ahead_kb", lambda n, v: _int(n, v, minimum=0)),
    "retries": _set("retries", lambda n, v: _int(n, v, minimum=0)),
    "connect_timeout": _set("connect_timeout", _float),
    "readwrite_timeout": _set("readwrite_timeout", _float),
    "logfile": _set("logfile", _text),
    "dbglevel": lambda opts, n, v: setattr(opts, "debug", (v or "").lower() in ("debug", "dbg")),
}

KNOWN_OPTIONS = sorted(_HANDLERS)


def build_options(
    source: str | None,
    mountpoint: str,
    option_values: list[str],
    foreground: bool = False,
    debug: bool = False,
    single_thread: bool = False,
) -> MountOptions:
    """Validate everything the command line says; the first problem raises OptionError.

    ``source`` None: s3fs-fuse's other form, ``MOUNTPOINT -o bucket=BUCKET[:/PREFIX]``."""
    pairs = split_options(option_values)
    named = [value for name, value in pairs if name == "bucket"]
    if source is None:
        if not named or not named[-1]:
            raise OptionError(
                "a bucket is required: pys3fs BUCKET MOUNTPOINT, or pys3fs MOUNTPOINT "
                "-o bucket=BUCKET"
            )
        source = named[-1]
    bucket, prefix = parse_source(source)
    opts = MountOptions(
        bucket=bucket,
        prefix=prefix,
        mountpoint=os.path.abspath(mountpoint),
        foreground=foreground,
        debug=debug,
        single_thread=single_thread,
    )
    for name, value in pairs:
        apply_option(opts, name, value)
    if not opts.verify_hostname and opts.check_certificate:
        raise OptionError(
            "option ssl_verify_hostname=0 needs no_check_certificate "
            "(certificates are checked together with their host name)"
        )
    return opts
