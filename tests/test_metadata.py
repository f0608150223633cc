"""Unit tests for pys3fs.metadata: the s3fs-fuse dialect we write and every dialect we read."""

import json
import logging
import stat

import pytest

from pys3fs import metadata
from pys3fs.metadata import (
    PosixMeta,
    content_type_for,
    decode,
    encode,
    format_time,
    parse_mode,
    parse_time,
)

S = 1_000_000_000
REG_644 = stat.S_IFREG | 0o644
DIR_755 = stat.S_IFDIR | 0o755
LNK_777 = stat.S_IFLNK | 0o777
T_2023 = 1672628645  # 2023-01-02T03:04:05Z


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Messages our module logged at WARNING."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pys3fs.metadata" and r.levelno == logging.WARNING
    ]


# ------------------------------------------------------------------ encode / round trip


def test_encode_writes_exact_s3fs_strings() -> None:
    assert encode(REG_644, 1000, 100, 1700000000 * S, 1700000001 * S) == {
        "mode": "33188",
        "uid": "1000",
        "gid": "100",
        "mtime": "1700000000",
        "ctime": "1700000001",
    }
    assert encode(DIR_755, 0, 0, 0, 0)["mode"] == "16877"
    assert encode(LNK_777, 0, 0, 0, 0)["mode"] == "41471"


def test_encode_atime_only_when_given() -> None:
    assert "atime" not in encode(REG_644, 0, 0, 0, 0)
    assert encode(REG_644, 0, 0, 0, 0, atime_ns=5 * S + 1)["atime"] == "5.000000001"


@pytest.mark.parametrize(
    ("mode", "uid", "gid"),
    [(-1, 0, 0), (0o1000000, 0, 0), (stat.S_IFREG | 0o7000 | 0o110000, 0, 0), (REG_644, -1, 0)],
)
def test_encode_rejects_values_nobody_could_read(mode: int, uid: int, gid: int) -> None:
    with pytest.raises(ValueError):
        encode(mode, uid, gid, 0, 0)


@pytest.mark.parametrize(
    "ns",
    [
        1700000000 * S + 1,  # 1700000000.000000001: one nanosecond survives
        1700000000 * S + 123456789,
        1700000000 * S,
        0,
        -S,
        -1_500_000_000,
        -1,
        2**63 - 1,
    ],
)
def test_time_round_trip_is_exact(ns: int) -> None:
    assert parse_time(format_time(ns)) == ns


def test_encode_decode_round_trip() -> None:
    mtime = 1700000000 * S + 1
    ctime = 1700000000 * S + 999999999
    atime = 1700000002 * S
    encoded = encode(stat.S_IFREG | 0o4755, 4294967295, 0, mtime, ctime, atime)
    assert encoded["mtime"] == "1700000000.000000001"
    assert decode(encoded, "text/plain") == PosixMeta(
        mode=stat.S_IFREG | 0o4755,
        uid=4294967295,
        gid=0,
        mtime_ns=mtime,
        ctime_ns=ctime,
        atime_ns=atime,
    )


@pytest.mark.parametrize(
    "mode",
    [
        REG_644,
        DIR_755,
        LNK_777,
        stat.S_IFDIR | 0o1777,
        stat.S_IFDIR | 0o2775,
        stat.S_IFREG | 0o6755,
        stat.S_IFREG | 0o4711,
        stat.S_IFIFO | 0o644,
        stat.S_IFSOCK | 0o755,
        stat.S_IFCHR | 0o666,
        stat.S_IFBLK | 0o660,
        stat.S_IFLNK | 0o755,
    ],
)
def test_every_decimal_mode_s3fs_writes_reads_back(mode: int) -> None:
    assert parse_mode(encode(mode, 0, 0, 0, 0)["mode"]) == mode


ALL_TYPES = (
    stat.S_IFIFO,
    stat.S_IFCHR,
    stat.S_IFDIR,
    stat.S_IFBLK,
    stat.S_IFREG,
    stat.S_IFLNK,
    stat.S_IFSOCK,
)


def _realistic(mode: int) -> bool:
    """False for special bits nobody sets: on devices, FIFOs, sockets, symlinks; setuid dirs.

    Their decimal spellings are exactly the ones that also read as plain octal modes, which
    the heuristic deliberately prefers.
    """
    special = mode & 0o7000
    if stat.S_ISDIR(mode):
        return not special & stat.S_ISUID
    return stat.S_ISREG(mode) or not special


def test_every_realistic_s3fs_mode_reads_back() -> None:
    """The decimal/octal heuristic must never misread what s3fs-fuse itself writes."""
    modes = [kind | perms for kind in ALL_TYPES for perms in range(0o10000)]
    bad = [oct(m) for m in modes if _realistic(m) and parse_mode(str(m)) != m]
    assert bad == []


COMMON_PERMS = (0o400, 0o444, 0o555, 0o600, 0o640, 0o644, 0o664, 0o666, 0o700, 0o750, 0o755)
COMMON_PERMS += (0o775, 0o777, 0o1777, 0o1775, 0o2775, 0o2755, 0o2770, 0o4755, 0o6755)


@pytest.mark.parametrize("perms", COMMON_PERMS)
def test_common_octal_modes_read_back(perms: int) -> None:
    for kind in ALL_TYPES:
        if perms > 0o777 and kind not in (stat.S_IFDIR, stat.S_IFREG):
            continue
        assert parse_mode(f"{kind | perms:o}") == kind | perms  # rclone
    assert parse_mode(f"{perms:o}") == perms  # permission-only, written by hand


@pytest.mark.parametrize("perms", COMMON_PERMS)
def test_common_decimal_permission_only_modes_read_back(perms: int) -> None:
    assert parse_mode(str(perms)) == perms


# ------------------------------------------------------------------ format_time / parse_time


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (1700000000 * S, "1700000000"),
        (1700000000 * S + 123456789, "1700000000.123456789"),
        (1700000000 * S + 1, "1700000000.000000001"),
        (1700000000 * S + 500_000_000, "1700000000.500000000"),
        (0, "0"),
        (-S, "-1"),
        (-1_500_000_000, "-1.500000000"),
        (-500_000_000, "-0.500000000"),
    ],
)
def test_format_time(ns: int, text: str) -> None:
    assert format_time(ns) == text


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1700000000", 1700000000 * S),
        ("1700000000.123456789", 1700000000 * S + 123456789),
        ("  1700000000.000000001\t", 1700000000 * S + 1),
        ("1354040105.5", 1354040105 * S + 500_000_000),  # rclone: trailing zeros dropped
        ("1354040105.05", 1354040105 * S + 50_000_000),
        ("1.1234567899", S + 123456789),  # beyond nanoseconds is dropped
        ("-1.5", -1_500_000_000),
        ("+7", 7 * S),
        ("2023-01-02T03:04:05Z", T_2023 * S),
        ("2023-01-02T03:04:05.123456789Z", T_2023 * S + 123456789),
        ("2023-01-02T04:04:05.5+01:00", T_2023 * S + 500_000_000),
        ("2023-01-01T21:34:05-05:30", T_2023 * S),
        ("2023-01-02t03:04:05z", T_2023 * S),
        ("2023-05-11T17:54:11.523399602+01:00", 1683824051 * S + 523399602),
        ("1969-12-31T23:59:59Z", -S),
    ],
)
def test_parse_time_accepts_every_dialect(text: str, ns: int) -> None:
    assert parse_time(text) == ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x",
        "1e9",
        "1700000000.",
        ".5",
        "17 00",
        "0x10",
        "nan",
        "١٧٠٠",  # Arabic-Indic digits: int() would take them, a header never holds them
        "2023-01-02T03:04:05",  # RFC 3339 needs an offset
        "2023-02-30T00:00:00Z",
        "2023-01-02T25:00:00Z",
        "2023-01-02T03:04:60Z",
        "2023-01-02T03:04:05+24:00",
        "2023-01-02T03:04:05+01:60",
        "99999999999999999999",  # does not fit 64-bit nanoseconds
    ],
)
def test_parse_time_rejects_malformed(text: str) -> None:
    assert parse_time(text) is None


# ------------------------------------------------------------------ parse_mode


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("33188", REG_644),  # s3fs decimal
        ("16877", DIR_755),
        ("41471", LNK_777),
        ("17407", stat.S_IFDIR | 0o1777),  # decimal sticky dir, also valid octal digits
        (" 33188\n", REG_644),
        ("100644", REG_644),  # rclone octal: too big for decimal
        ("100664", stat.S_IFREG | 0o664),
        ("40755", DIR_755),  # decimal 40755 has no valid file type
        ("120777", LNK_777),
        ("41777", stat.S_IFDIR | 0o1777),
        ("10644", stat.S_IFIFO | 0o644),
        ("644", 0o644),  # permission-only octal
        ("755", 0o755),
        ("1777", 0o1777),
        ("0644", 0o644),  # a leading zero means octal
        ("420", 0o644),  # permission-only decimal
        ("493", 0o755),
        ("0", 0),
    ],
)
def test_parse_mode_decimal_or_octal(text: str, mode: int) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize(
    "text", ["", "abc", "-420", "33188.0", "0o644", "0x81a4", "1000000", "70000", "0999"]
)
def test_parse_mode_rejects_malformed(text: str) -> None:
    assert parse_mode(text) is None


# ------------------------------------------------------------------ decode: dialects


def test_decode_nothing() -> None:
    assert decode({}) == PosixMeta()
    assert decode({}, None) == PosixMeta()
    assert decode({"md5chksum": "1B2M2Y8AsgTpgAmY7PhCfg==", "other": "x"}) == PosixMeta()


def test_decode_s3fs() -> None:
    meta = decode(
        {
            "mode": "33188",
            "uid": "1000",
            "gid": "1000",
            "mtime": "1700000000.123456789",
            "ctime": "1700000001",
            "atime": "1700000002.000000001",
        },
        "text/plain",
    )
    assert meta == PosixMeta(
        mode=REG_644,
        uid=1000,
        gid=1000,
        mtime_ns=1700000000 * S + 123456789,
        ctime_ns=1700000001 * S,
        atime_ns=1700000002 * S + 1,
    )


def test_decode_rclone() -> None:
    meta = decode(
        {
            "mode": "100664",
            "uid": "1000",
            "gid": "1000",
            "mtime": "1354040105.5",
            "atime": "2023-05-11T17:54:11.523399602+01:00",
            "btime": "2023-05-11T17:54:11.523399602+01:00",
            "md5chksum": "1B2M2Y8AsgTpgAmY7PhCfg==",
        }
    )
    assert meta.mode == stat.S_IFREG | 0o664
    assert (meta.uid, meta.gid) == (1000, 1000)
    assert meta.mtime_ns == 1354040105 * S + 500_000_000
    assert meta.atime_ns == 1683824051 * S + 523399602
    assert meta.ctime_ns is None


def test_decode_rclone_rfc3339_mtime_and_directory() -> None:
    meta = decode({"mode": "40775", "mtime": "2023-01-02T03:04:05.123456789Z"})
    assert meta.mode == stat.S_IFDIR | 0o775
    assert meta.mtime_ns == T_2023 * S + 123456789


def test_decode_gcs() -> None:
    meta = decode(
        {
            "goog-reserved-posix-mode": "644",
            "goog-reserved-posix-uid": "1001",
            "goog-reserved-posix-gid": "1002",
            "goog-reserved-file-mtime": "1700000000",
            "goog-reserved-file-atime": "1700000005",
        }
    )
    assert meta == PosixMeta(
        mode=0o644, uid=1001, gid=1002, mtime_ns=1700000000 * S, atime_ns=1700000005 * S
    )


def test_decode_gcs_mode_is_always_octal() -> None:
    # "420" would be decimal 0o644 elsewhere; GCS documents this header as octal.
    assert decode({"goog-reserved-posix-mode": "420"}).mode == 0o420
    assert decode({"goog-reserved-posix-mode": "100755"}).mode == stat.S_IFREG | 0o755


def test_decode_gcs_rfc3339_mtime_and_gcsfuse() -> None:
    assert decode({"goog-reserved-file-mtime": "2023-01-02T03:04:05Z"}).mtime_ns == T_2023 * S
    meta = decode(
        {
            "gcsfuse_mtime": "2023-01-02T03:04:05.000000007Z",
            "goog-reserved-file-mtime": "1700000000",
        }
    )
    assert meta.mtime_ns == T_2023 * S + 7


def test_decode_s3sync() -> None:
    meta = decode({"permissions": "33261", "owner": "500", "group": "501"})
    assert meta == PosixMeta(mode=stat.S_IFREG | 0o755, uid=500, gid=501)
    assert decode({"permissions": "100600"}).mode == stat.S_IFREG | 0o600


def test_decode_yas3fs() -> None:
    attr = {
        "st_mode": 33188,
        "st_uid": 1000,
        "st_gid": 1000,
        "st_mtime": 1700000000.25,
        "st_ctime": 1700000001,
        "st_atime": 1700000002.1,
        "st_size": 12,
    }
    meta = decode({"attr": json.dumps(attr), "xattr": "{}"}, "text/plain")
    assert meta == PosixMeta(
        mode=REG_644,
        uid=1000,
        gid=1000,
        mtime_ns=1700000000 * S + 250_000_000,
        ctime_ns=1700000001 * S,
        atime_ns=1700000002 * S + 100_000_000,
    )


def test_decode_yas3fs_symlink_and_string_values() -> None:
    attr = '{"st_mode": "41471", "st_uid": "0", "st_gid": "0", "st_mtime": "1700000000"}'
    meta = decode({"attr": attr}, "application/x-symlink")
    assert meta.is_symlink_hint
    assert meta.mode == LNK_777
    assert (meta.uid, meta.gid, meta.mtime_ns) == (0, 0, 1700000000 * S)


def test_decode_yas3fs_url_encoded_attr() -> None:
    meta = decode({"attr": "%7B%22st_mode%22%3A%2016877%7D"})
    assert meta.mode == DIR_755


def test_decode_geesefs_symlink_target() -> None:
    meta = decode({"--symlink-target": "../target file"})
    assert meta.symlink_target == "../target file"
    assert meta.mode == LNK_777


def test_decode_geesefs_target_with_mode() -> None:
    assert decode({"--symlink-target": "t", "mode": "41471"}).mode == LNK_777
    assert decode({"--symlink-target": "t", "mode": "493"}).mode == stat.S_IFLNK | 0o755


def test_decode_s3cmd() -> None:
    attrs = (
        "atime:1700000002/ctime:1700000001/gid:20/gname:staff/md5:656c3fe292407ccfdc9b125b37cc1930"
        "/mode:33188/mtime:1700000000/uid:501/uname:someone"
    )
    meta = decode({"s3cmd-attrs": attrs})
    assert meta == PosixMeta(
        mode=REG_644,
        uid=501,
        gid=20,
        mtime_ns=1700000000 * S,
        ctime_ns=1700000001 * S,
        atime_ns=1700000002 * S,
    )


def test_decode_strips_whitespace_and_tolerates_key_case() -> None:
    meta = decode({"Mode": " 16877 ", "UID": "\t0", "gid": "0 ", "mtime": " 1700000000 "})
    assert meta == PosixMeta(mode=DIR_755, uid=0, gid=0, mtime_ns=1700000000 * S)


# ------------------------------------------------------------------ decode: precedence


def test_precedence_s3fs_over_everything() -> None:
    meta = decode(
        {
            "mode": "33188",
            "uid": "1",
            "gid": "2",
            "mtime": "100",
            "goog-reserved-posix-mode": "700",
            "goog-reserved-posix-uid": "3",
            "goog-reserved-file-mtime": "200",
            "permissions": "16877",
            "owner": "4",
            "group": "5",
            "attr": '{"st_mode": 41471, "st_uid": 6, "st_gid": 7, "st_mtime": 300}',
            "s3cmd-attrs": "mode:4516/uid:8/gid:9/mtime:400",
        }
    )
    assert (meta.mode, meta.uid, meta.gid, meta.mtime_ns) == (REG_644, 1, 2, 100 * S)


def test_precedence_falls_through_field_by_field() -> None:
    meta = decode(
        {
            "goog-reserved-posix-uid": "3",
            "permissions": "16877",
            "group": "5",
            "attr": '{"st_mode": 41471, "st_uid": 6, "st_gid": 7, "st_ctime": 300}',
            "s3cmd-attrs": "atime:400/gid:9",
        }
    )
    assert meta == PosixMeta(mode=DIR_755, uid=3, gid=5, ctime_ns=300 * S, atime_ns=400 * S)


def test_precedence_gcs_over_s3sync_and_yas3fs() -> None:
    meta = decode(
        {
            "goog-reserved-posix-mode": "600",
            "permissions": "33188",
            "attr": '{"st_mode": 16877, "st_mtime": 5}',
        }
    )
    assert meta.mode == 0o600
    assert meta.mtime_ns == 5 * S


def test_malformed_high_precedence_value_falls_through(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pys3fs.metadata"):
        meta = decode({"mode": "abc", "goog-reserved-posix-mode": "750"})
    assert meta.mode == 0o750
    assert any("x-amz-meta-mode" in m for m in warnings_in(caplog))


# ------------------------------------------------------------------ decode: malformed


@pytest.mark.parametrize(
    ("meta", "header"),
    [
        ({"mode": "abc"}, "mode"),
        ({"mode": "-33188"}, "mode"),
        ({"uid": "-1"}, "uid"),
        ({"gid": "4294967296"}, "gid"),
        ({"uid": "alice"}, "uid"),
        ({"mtime": "x"}, "mtime"),
        ({"ctime": ""}, "ctime"),
        ({"atime": "2023-13-01T00:00:00Z"}, "atime"),
        ({"goog-reserved-posix-mode": "rw-r--r--"}, "goog-reserved-posix-mode"),
        ({"goog-reserved-posix-mode": "999"}, "goog-reserved-posix-mode"),
        ({"goog-reserved-file-mtime": "yesterday"}, "goog-reserved-file-mtime"),
        ({"owner": "root"}, "owner"),
        ({"permissions": "rwxr-xr-x"}, "permissions"),
        ({"attr": "{not json"}, "attr"),
        ({"attr": "[1, 2]"}, "attr"),
        ({"--symlink-target": ""}, "--symlink-target"),
    ],
)
def test_malformed_value_is_absent_and_warned(
    caplog: pytest.LogCaptureFixture, meta: dict[str, str], header: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="pys3fs.metadata"):
        assert decode(meta) == PosixMeta()
    messages = warnings_in(caplog)
    assert len(messages) == 1
    assert f"x-amz-meta-{header}:" in messages[0]


@pytest.mark.parametrize(
    "attr",
    [
        '{"st_mode": "abc"}',
        '{"st_mode": 1048576}',
        '{"st_uid": -1}',
        '{"st_gid": true}',
        '{"st_mtime": "x"}',
        '{"st_mtime": NaN}',
        '{"st_atime": [1]}',
        '{"st_mode": 33188.5}',
    ],
)
def test_malformed_yas3fs_field(caplog: pytest.LogCaptureFixture, attr: str) -> None:
    with caplog.at_level(logging.WARNING, logger="pys3fs.metadata"):
        assert decode({"attr": attr}) == PosixMeta()
    assert len(warnings_in(caplog)) == 1


def test_malformed_fields_keep_the_good_ones(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pys3fs.metadata"):
        meta = decode({"mode": "33188", "uid": "-1", "gid": "7", "mtime": "x", "ctime": "9"})
    assert meta == PosixMeta(mode=REG_644, gid=7, ctime_ns=9 * S)
    messages = warnings_in(caplog)
    assert len(messages) == 2
    assert any("x-amz-meta-uid" in m for m in messages)
    assert any("x-amz-meta-mtime" in m for m in messages)


def test_one_warning_per_header_even_with_several_bad_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="pys3fs.metadata"):
        decode({"attr": '{"st_mode": "a", "st_uid": "b", "st_mtime": "c"}'})
    assert len(warnings_in(caplog)) == 1


def test_long_malformed_value_is_shortened_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pys3fs.metadata"):
        decode({"mode": "z" * 5000})
    assert len(warnings_in(caplog)[0]) < 300


def test_decode_never_raises_on_odd_input(caplog: pytest.LogCaptureFixture) -> None:
    odd: dict = {"mode": None, "uid": 5, 7: "x", "attr": "[" * 100000, "mtime": "1" * 5000}
    with caplog.at_level(logging.WARNING, logger="pys3fs.metadata"):
        assert decode(odd, 42) == PosixMeta()  # type: ignore[arg-type]
        assert decode(None) == PosixMeta()  # type: ignore[arg-type]


def test_huge_values_are_malformed_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    huge = "1" * 5000  # int() refuses more than 4300 digits
    with caplog.at_level(logging.WARNING, logger="pys3fs.metadata"):
        meta = decode({"mtime": huge, "mode": huge, "uid": huge, "gid": "5", "ctime": "1." + huge})
    assert meta == PosixMeta(gid=5)
    assert len(warnings_in(caplog)) == 4


def test_decode_survives_a_broken_mapping(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(dict):
        def items(self):  # type: ignore[override]
            raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING, logger="pys3fs.metadata"):
        assert decode(Broken(mode="1"), "application/x-directory") == PosixMeta(is_dir_hint=True)
    assert warnings_in(caplog)


# ------------------------------------------------------------------ content type


@pytest.mark.parametrize(
    ("content_type", "is_dir", "is_link"),
    [
        (None, False, False),
        ("", False, False),
        ("application/octet-stream", False, False),
        ("application/x-directory", True, False),
        ("application/x-directory; charset=UTF-8", True, False),
        ("Application/X-Directory", True, False),
        ("httpd/unix-directory", True, False),
        ("application/x-symlink", False, True),
        ("text/plain", False, False),
    ],
)
def test_content_type_hints(content_type: str | None, is_dir: bool, is_link: bool) -> None:
    meta = decode({}, content_type)
    assert (meta.is_dir_hint, meta.is_symlink_hint) == (is_dir, is_link)


def test_hints_do_not_invent_a_mode() -> None:
    assert decode({}, "application/x-directory").mode is None
    assert decode({"mode": "493"}, "httpd/unix-directory").mode == 0o755


@pytest.mark.parametrize(
    ("path", "mode", "expected"),
    [
        ("dir/", DIR_755, "application/x-directory"),
        ("a/b/dir", DIR_755, "application/x-directory"),
        ("notes.txt", REG_644, "text/plain"),
        ("a/b/page.HTML", REG_644, "text/html"),
        ("img.png", REG_644, "image/png"),
        ("data.json", REG_644, "application/json"),
        ("README", REG_644, "application/octet-stream"),
        ("a.d/noext", REG_644, "application/octet-stream"),
        (".bashrc", REG_644, "application/octet-stream"),
        ("file.no-such-extension-xyz", REG_644, "application/octet-stream"),
        ("link.txt", LNK_777, "application/octet-stream"),
        ("fifo.txt", stat.S_IFIFO | 0o644, "application/octet-stream"),
        ("data:text/html,x", REG_644, "application/octet-stream"),
        ("perm-only.txt", 0o644, "text/plain"),
    ],
)
def test_content_type_for(path: str, mode: int, expected: str) -> None:
    assert content_type_for(path, mode) == expected


def test_content_type_for_compressed_file_names_the_compression() -> None:
    # guess_type would say application/x-tar and lose the gzip layer.
    assert content_type_for("backup.tar.gz", REG_644) != "application/x-tar"


def test_symlink_target_key_matches_geesefs_header() -> None:
    assert "x-amz-meta-" + metadata.SYMLINK_TARGET_KEY == "x-amz-meta---symlink-target"


# -- other tools' metadata and s3fs-fuse's xattr header ------------------------------------
def test_foreign_metadata_is_everything_pys3fs_does_not_write():
    meta = {
        "mode": "33188",
        "uid": "0",
        "mtime": "1",
        "atime": "1",
        "App-Tag": "x",
        "xattr": "%7B%7D",
    }
    assert json.loads(metadata.foreign(meta)) == {"app-tag": "x", "xattr": "%7B%7D"}
    assert metadata.foreign({"mode": "33188"}) is None
    assert metadata.foreign(None) is None


def test_how_an_object_is_served_is_kept_beside_foreign_metadata():
    served = {"CacheControl": "max-age=60", "ContentLanguage": "en"}
    extra = metadata.foreign({"mode": "33188", "app-tag": "x"}, {**served, "Expires": "x"})
    assert metadata.kept_headers(extra) == served  # Expires is not kept
    own = {"mode": "33152"}
    assert metadata.with_foreign(own, extra) == {**own, "app-tag": "x"}  # not as metadata
    assert metadata.kept_headers(metadata.with_xattrs(extra, {"user.a": b"1"})) == served
    after_put = metadata.without_headers(extra)
    assert metadata.kept_headers(after_put) == {}
    assert json.loads(after_put) == {"app-tag": "x"}
    assert metadata.without_headers(metadata.foreign(None, served)) is None
    assert metadata.kept_headers(None) == {} and metadata.kept_headers("not json") == {}


def test_foreign_metadata_is_merged_under_pys3fs_own():
    own = {"mode": "33152", "uid": "0", "gid": "0", "mtime": "2", "ctime": "2"}
    extra = json.dumps({"mode": "1", "app-tag": "x", "md5chksum": "abc", "atime": "0"})
    assert metadata.with_foreign(own, extra) == {**own, "app-tag": "x", "md5chksum": "abc"}
    assert metadata.with_foreign(own, extra, new_data=True) == {**own, "app-tag": "x"}
    assert metadata.with_foreign(own, "not json") == own


def test_xattrs_round_trip_in_s3fs_fuse_format():
    extra = metadata.with_xattrs(
        json.dumps({"app-tag": "x"}), {"user.a": b"\x00\xff", "user.b": b""}
    )
    assert json.loads(extra)["app-tag"] == "x"
    assert metadata.xattrs_of(extra) == {"user.a": b"\x00\xff", "user.b": b""}
    # s3fs-fuse's own encoding of {"user.k": base64("v")}
    s3fs = json.dumps({"xattr": "%7B%22user.k%22%3A%22dg%3D%3D%22%7D"})
    assert metadata.xattrs_of(s3fs) == {"user.k": b"v"}
    assert metadata.with_xattrs(extra, {}) == json.dumps({"app-tag": "x"})
    assert metadata.with_xattrs(None, {}) is None


def test_an_unreadable_xattr_header_means_no_attributes(caplog):
    assert metadata.xattrs_of(json.dumps({"xattr": "%7Bnot json"})) == {}
    assert metadata.xattrs_of(None) == {}
