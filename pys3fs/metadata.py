"""Translate between S3 user metadata and POSIX attributes.

pys3fs writes the s3fs-fuse dialect so that a bucket stays usable by s3fs-fuse users, and reads
the dialects of other tools (rclone, Google Cloud Storage tools, s3sync, yas3fs, geesefs, s3cmd)
so that buckets they filled mount with the right modes, owners and times.

Metadata arrives as boto3 hands it over: keys lowercased and without the ``x-amz-meta-`` prefix.
Everything read from a bucket is untrusted input, so nothing here raises on bad values: a value
that cannot be understood is treated as absent and reported with a warning that names the header.
"""

import base64
import json
import logging
import mimetypes
import posixpath
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import quote, unquote

log = logging.getLogger("pys3fs.metadata")

T = TypeVar("T")

NS_PER_SEC = 1_000_000_000
DIRECTORY_CONTENT_TYPE = "application/x-directory"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
DIRECTORY_CONTENT_TYPES = frozenset({DIRECTORY_CONTENT_TYPE, "httpd/unix-directory"})
SYMLINK_CONTENT_TYPE = "application/x-symlink"
SYMLINK_TARGET_KEY = "--symlink-target"  # geesefs: header x-amz-meta---symlink-target

_MAX_MODE = 0o177777
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_MAX_ID = 2**32
# Times must fit a signed 64-bit nanosecond count, as the kernel's and Python's clocks do.
_MAX_ABS_NS = 2**63 - 1
_FILE_TYPES = frozenset(
    {
        stat.S_IFIFO,
        stat.S_IFCHR,
        stat.S_IFDIR,
        stat.S_IFBLK,
        stat.S_IFREG,
        stat.S_IFLNK,
        stat.S_IFSOCK,
    }
)
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# re.ASCII keeps \d from accepting other scripts' digits, which int() would silently take.
# Length caps keep int() clear of its 4300-digit limit (a ValueError) and of pointless work.
_DIGITS = re.compile(r"\d{1,20}", re.ASCII)
_OCTAL_DIGITS = re.compile(r"[0-7]{1,20}", re.ASCII)
_DECIMAL_TIME = re.compile(r"([+-]?)(\d{1,20})(?:\.(\d{1,30}))?", re.ASCII)
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):(\d\d))",
    re.ASCII,
)


@dataclass
class PosixMeta:
    """Attributes found in an object's metadata; None where the object doesn't say."""

    mode: int | None = None  # full st_mode including S_IFMT type bits when known
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None  # nanoseconds since epoch (ints keep s3fs's 9-digit fractions)
    ctime_ns: int | None = None
    atime_ns: int | None = None
    symlink_target: str | None = None  # only when the target is IN the metadata (geesefs)
    is_dir_hint: bool = False  # content-type says directory
    is_symlink_hint: bool = False  # content-type application/x-symlink (yas3fs)


# The attribute fields that dialects fill, merged by precedence one field at a time.
_ATTR_FIELDS = ("mode", "uid", "gid", "mtime_ns", "ctime_ns", "atime_ns")
_Attrs = dict[str, int | None]


# --------------------------------------------------------------------------- times


def format_time(ns: int) -> str:
    """Render nanoseconds as s3fs-fuse does: whole seconds, plus 9 digits only when needed.

    A negative time is written as a plain signed decimal (-1.5 s is ``-1.500000000``) so every
    float-reading tool understands it; s3fs-fuse itself splits at the dot and would misread
    fractional times before 1970, which no one stores in practice.
    """
    sign = "-" if ns < 0 else ""
    seconds, fraction = divmod(abs(ns), NS_PER_SEC)
    if fraction:
        return f"{sign}{seconds}.{fraction:09d}"
    return f"{sign}{seconds}"


def parse_time(value: str) -> int | None:
    """Nanoseconds since the epoch from any dialect's time string; None when malformed.

    Decimal seconds cover s3fs (``sec``/``sec.nnnnnnnnn``), rclone floats with trailing zeros
    dropped (``.5`` is half a second) and gsutil's integer seconds; RFC 3339 covers rclone's
    atime/btime and gcsfuse. Parsing digits rather than going through float keeps nanoseconds exact.
    """
    text = value.strip()
    match = _DECIMAL_TIME.fullmatch(text)
    if match:
        ns = _decimal_seconds_to_ns(*match.groups())
    else:
        match = _RFC3339.fullmatch(text)
        ns = _rfc3339_to_ns(match) if match else None
    if ns is None or abs(ns) > _MAX_ABS_NS:
        return None
    return ns


def _fraction_to_ns(fraction: str | None) -> int:
    """Digits after the dot as nanoseconds; beyond 9 digits is below our resolution, so dropped."""
    if not fraction:
        return 0
    return int(fraction[:9].ljust(9, "0"))


def _decimal_seconds_to_ns(sign: str, seconds: str, fraction: str | None) -> int:
    """Signed decimal seconds, read as the number they spell (so -1.5 is minus one and a half)."""
    ns = int(seconds) * NS_PER_SEC + _fraction_to_ns(fraction)
    return -ns if sign == "-" else ns


def _rfc3339_to_ns(match: re.Match[str]) -> int | None:
    """RFC 3339 timestamp to epoch nanoseconds; None for impossible dates or offsets."""
    year, month, day, hour, minute, second, fraction, _z, sign, off_h, off_m = match.groups()
    if sign and int(off_m) > 59:
        return None
    try:
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) if sign else timedelta(0)
        tz = timezone(-offset if sign == "-" else offset)
        when = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=tz
        )
    except ValueError:  # 2023-02-30, hour 25, leap second 60, offset >= 24h ...
        return None
    delta = when - _UNIX_EPOCH
    seconds = delta.days * 86400 + delta.seconds
    return seconds * NS_PER_SEC + _fraction_to_ns(fraction)


# --------------------------------------------------------------------------- modes


def parse_mode(value: str) -> int | None:
    """st_mode from a decimal (s3fs, s3sync, yas3fs) or octal (rclone) string; None if neither.

    Decimal is tried first because that is what s3fs-fuse writes. The octal reading is used when
    the decimal one cannot be a mode (above 0o177777, or file-type bits that name no file type),
    when the text has a leading zero, or when both readings are possible and the octal one is
    clearly more ordinary (see _less_odd) -- which is how a permission-only ``644`` (decimal
    644 would be 0o1204, sticky) reads as 0o644 while decimal ``420`` stays 0o644.
    A permission-only result (no type bits) is returned as is; the caller knows the type.
    """
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        return None
    octal = _octal_mode(text)
    if len(text) > 1 and text.startswith("0"):
        return octal
    decimal = int(text)
    if not _is_mode(decimal):
        return octal
    if octal is not None and _less_odd(octal, decimal):
        return octal
    return decimal


def _octal_mode(text: str) -> int | None:
    """The octal reading of a digit string, if it is a possible st_mode."""
    if not _OCTAL_DIGITS.fullmatch(text):
        return None
    mode = int(text, 8)
    return mode if _is_mode(mode) else None


def _is_mode(mode: int) -> bool:
    """Whether an int can be an st_mode: 16 bits, with a real file type or none at all."""
    if not 0 <= mode <= _MAX_MODE:
        return False
    kind = stat.S_IFMT(mode)
    return kind == 0 or kind in _FILE_TYPES


def _less_odd(octal: int, decimal: int) -> bool:
    """Whether the octal reading of a mode string is clearly the more ordinary one.

    s3fs-fuse always writes type bits, so when the decimal reading has them only the special
    bits are compared, keeping every s3fs value with ordinary special bits decimal. Without type
    bits no s3fs value is at stake, and permission patterns decide as well: ``400`` is 0o400,
    not 0o620, while ``420`` stays 0o644 rather than r---w----.
    """
    weigh_permissions = stat.S_IFMT(decimal) == 0
    return _oddness(octal, weigh_permissions) < _oddness(decimal, weigh_permissions)


def _oddness(mode: int, weigh_permissions: bool) -> int:
    """How unusual a mode is; the sum of the two scores below."""
    score = _special_oddness(mode)
    return score + _permission_oddness(mode) if weigh_permissions else score


def _special_oddness(mode: int) -> int:
    """Score setuid/setgid/sticky by how rarely each appears on the mode's file type.

    Directories are often sticky (/tmp) or setgid (shared group dirs), never usefully setuid;
    files are setuid/setgid now and then, sticky almost never; devices, FIFOs, sockets and
    symlinks carry none of them.
    """
    kind = stat.S_IFMT(mode)
    special = mode & _SPECIAL_BITS
    if kind == stat.S_IFDIR:
        return 2 if special & stat.S_ISUID else 0
    if kind in (0, stat.S_IFREG):
        return (special & (stat.S_ISUID | stat.S_ISGID)).bit_count() + (
            2 if special & stat.S_ISVTX else 0
        )
    return 2 * special.bit_count()


def _permission_oddness(mode: int) -> int:
    """Count permission patterns people rarely choose.

    Group or others holding a right the owner lacks, and write without read, both hint that
    the digits were read in the wrong base (decimal ``400`` is 0o620, octal ``420`` is r---w----).
    """
    owner, group, other = (mode >> 6) & 7, (mode >> 3) & 7, mode & 7
    score = sum(1 for bits in (group, other) if bits & ~owner)
    return score + sum(1 for bits in (owner, group, other) if bits & 2 and not bits & 4)


def _parse_octal_only(value: str) -> int | None:
    """Mode for dialects documented as octal (GCS: permission bits like ``644``)."""
    return _octal_mode(value.strip())


def parse_id(value: str) -> int | None:
    """A uid/gid: a non-negative decimal below 2**32; None otherwise (e.g. ``-1``)."""
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if number < _MAX_ID else None


# --------------------------------------------------------------------------- writing


def encode(
    mode: int,
    uid: int,
    gid: int,
    mtime_ns: int,
    ctime_ns: int,
    atime_ns: int | None = None,
) -> dict[str, str]:
    """Metadata in the s3fs-fuse dialect, which pys3fs writes so s3fs-fuse users see the same tree.

    Keys: "mode" (decimal, including type bits), "uid", "gid", "mtime", "ctime" and, when
    given, "atime".

    Raises ValueError for values decode() would reject, so a caller bug (say uid -1, the
    "unchanged" marker of chown) fails loudly instead of writing metadata no one can read.
    """
    if not _is_mode(mode):
        raise ValueError(f"not a valid st_mode: {mode!r}")
    for name, ident in (("uid", uid), ("gid", gid)):
        if not 0 <= ident < _MAX_ID:
            raise ValueError(f"{name} out of range: {ident!r}")
    result = {
        "mode": str(mode),
        "uid": str(uid),
        "gid": str(gid),
        "mtime": format_time(mtime_ns),
        "ctime": format_time(ctime_ns),
    }
    if atime_ns is not None:
        result["atime"] = format_time(atime_ns)
    return result


# keys pys3fs writes itself (an old atime is not carried over: pys3fs writes none)
OWN_KEYS = frozenset({"mode", "uid", "gid", "mtime", "ctime", "atime"})
DATA_KEYS = frozenset({"md5chksum"})  # describe the bytes: stale once they change


# Standard headers that describe how an object is served (a website's Cache-Control,
# a download's Content-Disposition): a copy that replaces the metadata drops them unless
# it names them again. boto3's parameter name -> the HTTP header.
KEPT_HEADERS = {
    "CacheControl": "cache-control",
    "ContentDisposition": "content-disposition",
    "ContentEncoding": "content-encoding",
    "ContentLanguage": "content-language",
}
HEADERS_KEY = " headers"  # in ``extra``: a space is in no header (nor metadata) name


def foreign(
    metadata: Mapping[str, str] | None, headers: Mapping[str, str] | None = None
) -> str | None:
    """The user metadata pys3fs does not write itself, and the object's KEPT_HEADERS
    (boto3 names), as JSON (None when there is neither): kept with the entry and
    written back by every metadata rewrite."""
    rest: dict = {
        str(key).lower(): value
        for key, value in (metadata or {}).items()
        if str(key).lower() not in OWN_KEYS and isinstance(value, str)
    }
    served = {k: v for k, v in (headers or {}).items() if k in KEPT_HEADERS and v}
    if served:
        rest[HEADERS_KEY] = served
    return json.dumps(rest, sort_keys=True) if rest else None


def _kept(extra: str | None) -> dict | None:
    """``extra`` read back (an empty one as {}); None when it is unreadable."""
    try:
        kept = json.loads(extra or "{}")
    except ValueError:
        return None
    return kept if isinstance(kept, dict) else None


def without_headers(extra: str | None) -> str | None:
    """``extra`` after new bytes were PUT: the new object has none of KEPT_HEADERS."""
    kept = _kept(extra)
    if kept is None or HEADERS_KEY not in kept:
        return extra
    del kept[HEADERS_KEY]
    return json.dumps(kept, sort_keys=True) if kept else None


def kept_headers(extra: str | None) -> dict[str, str]:
    """The KEPT_HEADERS ``foreign`` stored in ``extra``, as boto3 parameters."""
    served = (_kept(extra) or {}).get(HEADERS_KEY)
    if not isinstance(served, dict):
        return {}
    return {k: v for k, v in served.items() if k in KEPT_HEADERS and isinstance(v, str)}


def with_foreign(own: dict[str, str], extra: str, new_data: bool = False) -> dict[str, str]:
    """``own`` (pys3fs's keys) plus the kept ``extra`` ones; pys3fs's win."""
    drop = OWN_KEYS | (DATA_KEYS if new_data else frozenset())
    kept = _kept(extra) or {}
    merged = {k: v for k, v in kept.items() if isinstance(v, str) and k not in drop}
    return merged | own


XATTR_KEY = "xattr"


def xattrs_of(extra: str | None) -> dict[str, bytes]:
    """Extended attributes as s3fs-fuse's ``use_xattr`` stores them in the ``xattr``
    key: URL-encoded JSON of name -> base64 value. Unreadable: none."""
    try:
        text = json.loads(extra or "{}").get(XATTR_KEY)
        table = json.loads(unquote(text)) if isinstance(text, str) else {}
        return {str(k): base64.b64decode(v) for k, v in table.items() if isinstance(v, str)}
    except (ValueError, TypeError, AttributeError):
        log.warning("ignoring an unreadable xattr header")
        return {}


def with_xattrs(extra: str | None, xattrs: dict[str, bytes]) -> str | None:
    """``extra`` with its ``xattr`` key rewritten (dropped when there is none left)."""
    kept = _kept(extra) or {}
    kept.pop(XATTR_KEY, None)
    if xattrs:
        table = {k: base64.b64encode(v).decode() for k, v in sorted(xattrs.items())}
        kept[XATTR_KEY] = quote(json.dumps(table, separators=(",", ":")), safe="")
    return json.dumps(kept, sort_keys=True) if kept else None


def content_type_for(path: str, mode: int) -> str:
    """Content-Type to store with an object, as s3fs-fuse chooses it.

    Directory markers get application/x-directory, which other tools recognise. Files are
    looked up by their last extension in the mime.types tables, as s3fs-fuse does, so
    ``a.tar.gz`` gets the gzip type where one is registered. mimetypes.guess_type is avoided: it
    would call that file application/x-tar, hiding the compression, and it reads names such as
    ``data:text/html,x`` as URLs.
    """
    if stat.S_ISDIR(mode):
        return DIRECTORY_CONTENT_TYPE
    if not stat.S_ISREG(mode) and stat.S_IFMT(mode) != 0:
        return DEFAULT_CONTENT_TYPE
    return _type_by_extension(path) or DEFAULT_CONTENT_TYPE


def use_mime_types(path: str) -> None:
    """``mime=FILE``: the types FILE registers are added to the system's tables (and
    win over them), as s3fs-fuse reads the mime.types file it is given."""
    mimetypes.init([path])


def _type_by_extension(path: str) -> str | None:
    """The MIME type registered for a file name's last extension, if any."""
    _, ext = posixpath.splitext(path)
    if not ext:
        return None
    if not mimetypes.inited:
        mimetypes.init()
    table = mimetypes.types_map
    return table.get(ext) or table.get(ext.lower())


# --------------------------------------------------------------------------- reading


class _Reader:
    """Header lookup that parses values and warns once per malformed header per decode."""

    def __init__(self, metadata: Mapping[str, str]) -> None:
        self._meta = {str(key).strip().lower(): value for key, value in metadata.items()}
        self._warned: set[str] = set()

    def raw(self, key: str) -> str | None:
        """The header's text, or None when absent (or not text, which boto3 never gives)."""
        value = self._meta.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.warn(key, value)
            return None
        return value

    def get(self, key: str, parser: Callable[[str], T | None]) -> T | None:
        """Parse a header; a value that fails to parse counts as absent."""
        value = self.raw(key)
        if value is None:
            return None
        parsed = parser(value)
        if parsed is None:
            self.warn(key, value)
        return parsed

    def warn(self, key: str, value: object, detail: str = "") -> None:
        """Name the ignored header, so a user can find the object and the tool that wrote it."""
        if key in self._warned:
            return
        self._warned.add(key)
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        suffix = f" ({detail})" if detail else ""
        log.warning("ignoring malformed metadata header x-amz-meta-%s: %s%s", key, shown, suffix)


def _s3fs_attrs(reader: _Reader) -> _Attrs:
    """s3fs-fuse and rclone share header names; the parsers accept both value formats."""
    return {
        "mode": reader.get("mode", parse_mode),
        "uid": reader.get("uid", parse_id),
        "gid": reader.get("gid", parse_id),
        "mtime_ns": reader.get("mtime", parse_time),
        "ctime_ns": reader.get("ctime", parse_time),
        "atime_ns": reader.get("atime", parse_time),
    }


def _gcs_attrs(reader: _Reader) -> _Attrs:
    """gsutil/gcloud ``-P`` (octal permission bits, integer seconds) and gcsfuse's RFC 3339 mtime.

    gcsfuse's own ``gcsfuse_mtime`` wins over gsutil's header when both exist, as in gcsfuse.
    """
    mtime = reader.get("gcsfuse_mtime", parse_time)
    if mtime is None:
        mtime = reader.get("goog-reserved-file-mtime", parse_time)
    return {
        "mode": reader.get("goog-reserved-posix-mode", _parse_octal_only),
        "uid": reader.get("goog-reserved-posix-uid", parse_id),
        "gid": reader.get("goog-reserved-posix-gid", parse_id),
        "mtime_ns": mtime,
        "atime_ns": reader.get("goog-reserved-file-atime", parse_time),
    }


def _s3sync_attrs(reader: _Reader) -> _Attrs:
    """s3sync: numeric ``owner``/``group`` and a ``permissions`` mode in either base."""
    return {
        "mode": reader.get("permissions", parse_mode),
        "uid": reader.get("owner", parse_id),
        "gid": reader.get("group", parse_id),
    }


_YAS3FS_FIELDS = {
    "st_mode": "mode",
    "st_uid": "uid",
    "st_gid": "gid",
    "st_mtime": "mtime_ns",
    "st_ctime": "ctime_ns",
    "st_atime": "atime_ns",
}


def _yas3fs_attrs(reader: _Reader) -> _Attrs:
    """yas3fs keeps every attribute in one JSON ``attr`` header of numbers."""
    raw = reader.raw("attr")
    if raw is None:
        return {}
    data = _load_json_object(raw)
    if data is None:
        reader.warn("attr", raw, "not a JSON object")
        return {}
    attrs: _Attrs = {}
    for json_key, field_name in _YAS3FS_FIELDS.items():
        if json_key not in data:
            continue
        attrs[field_name] = _json_attr(field_name, data[json_key])
        if attrs[field_name] is None:
            reader.warn("attr", raw, f"bad {json_key}")
    return attrs


def _load_json_object(raw: str) -> dict[str, Any] | None:
    """Parse JSON, also when URL-encoded (header-safe form some writers use); dicts only."""
    for text in (raw, unquote(raw)):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            continue
        return data if isinstance(data, dict) else None
    return None


def _json_attr(field_name: str, value: object) -> int | None:
    """Validate one yas3fs JSON value with the same rules as header strings."""
    if isinstance(value, bool):  # a JSON true is an int to Python, but never an attribute
        return None
    if isinstance(value, str):
        return _JSON_TEXT_PARSERS[field_name](value)
    if field_name.endswith("_ns"):
        if isinstance(value, float):
            # repr() is the shortest exact decimal of the float: 1700000000.1 stays ".1".
            return parse_time(repr(value))
        return _int_time(value) if isinstance(value, int) else None
    if not isinstance(value, int):
        return None
    if field_name == "mode":
        return value if _is_mode(value) else None  # a JSON number is the decimal st_mode
    return value if 0 <= value < _MAX_ID else None


_JSON_TEXT_PARSERS: dict[str, Callable[[str], int | None]] = {
    "mode": parse_mode,
    "uid": parse_id,
    "gid": parse_id,
    "mtime_ns": parse_time,
    "ctime_ns": parse_time,
    "atime_ns": parse_time,
}


def _int_time(seconds: int) -> int | None:
    """Whole seconds to nanoseconds, within the representable range."""
    ns = seconds * NS_PER_SEC
    return ns if abs(ns) <= _MAX_ABS_NS else None


_S3CMD_FIELDS: dict[str, tuple[str, Callable[[str], int | None]]] = {
    "mode": ("mode", parse_mode),
    "uid": ("uid", parse_id),
    "gid": ("gid", parse_id),
    "mtime": ("mtime_ns", parse_time),
    "ctime": ("ctime_ns", parse_time),
    "atime": ("atime_ns", parse_time),
}


def _s3cmd_attrs(reader: _Reader) -> _Attrs:
    """s3cmd ``--preserve``: ``s3cmd-attrs`` holds ``uid:1000/mode:33188/mtime:...`` pairs."""
    raw = reader.raw("s3cmd-attrs")
    if raw is None:
        return {}
    attrs: _Attrs = {}
    for name, text in _s3cmd_pairs(raw):
        if name not in _S3CMD_FIELDS:
            continue  # uname, gname, md5: nothing a stat needs
        field_name, parser = _S3CMD_FIELDS[name]
        attrs[field_name] = parser(text)
        if attrs[field_name] is None:
            reader.warn("s3cmd-attrs", raw, f"bad {name}")
    return attrs


def _s3cmd_pairs(raw: str) -> Iterator[tuple[str, str]]:
    """Split s3cmd's slash-separated ``name:value`` list."""
    for item in raw.split("/"):
        name, sep, text = item.partition(":")
        if sep:
            yield name.strip().lower(), text


# Highest precedence first; each attribute comes from the first dialect that gives it.
_DIALECTS: tuple[Callable[[_Reader], _Attrs], ...] = (
    _s3fs_attrs,
    _gcs_attrs,
    _s3sync_attrs,
    _yas3fs_attrs,
    _s3cmd_attrs,
)


def _merge(found: list[_Attrs]) -> _Attrs:
    """Take each attribute from the highest-precedence dialect that gave a usable value."""
    merged: _Attrs = dict.fromkeys(_ATTR_FIELDS)
    for attrs in found:
        for name, value in attrs.items():
            if merged[name] is None and value is not None:
                merged[name] = value
    return merged


def _symlink_target(reader: _Reader) -> str | None:
    """geesefs keeps a symlink's target in a header instead of the object body."""
    target = reader.raw(SYMLINK_TARGET_KEY)
    if target is None:
        return None
    if not target or "\0" in target:
        reader.warn(SYMLINK_TARGET_KEY, target, "not a usable link target")
        return None
    return target


def _media_type(content_type: str | None) -> str:
    """The bare, lowercased media type: ``Application/X-Directory; charset=x`` compares equal."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _link_mode(mode: int | None) -> int:
    """A geesefs link target makes the object a symlink unless its mode names another type."""
    if mode is None:
        return stat.S_IFLNK | 0o777
    if stat.S_IFMT(mode) == 0:
        return stat.S_IFLNK | mode
    return mode


def decode(metadata: Mapping[str, str], content_type: str | None = None) -> PosixMeta:
    """Read every dialect; never raises.

    Malformed values are ignored (treated as absent) and logged once per header with a warning
    naming it, because one odd object written by some other tool must not make a directory
    unlistable.
    """
    media = _media_type(content_type) if isinstance(content_type, str) else ""
    meta = PosixMeta(
        is_dir_hint=media in DIRECTORY_CONTENT_TYPES,
        is_symlink_hint=media == SYMLINK_CONTENT_TYPE,
    )
    try:
        reader = _Reader(metadata or {})
        merged = _merge([dialect(reader) for dialect in _DIALECTS])
        target = _symlink_target(reader)
    except Exception:  # a safety net: unexpected input must degrade to "no metadata"
        log.warning("ignoring unreadable object metadata", exc_info=True)
        return meta
    for name, value in merged.items():
        setattr(meta, name, value)
    if target is not None:
        meta.symlink_target = target
        meta.mode = _link_mode(meta.mode)
    return meta
