"""Names through a real mount: unusual characters, length limits, and keys other tools
wrote that cannot be paths.

test_paths.py tests the path <-> key mapping as a unit; test_dirs.py checks that unusable
keys are hidden from listings. Here every name goes both ways through a live mount: made
through the mount it must land in S3 under exactly the expected key, and made with boto3
it must show in the listing under exactly that name. Keys that cannot be paths get the
results the README lists, and the daemon keeps answering after each of them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import unicodedata

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from test_dirs import fsync_dir, requests

DIR_TYPE = "application/x-directory"

# Names a Linux directory entry can hold, each of which trips up some S3 tool: URL
# escapes, form encoding, query and fragment characters, control characters, both
# Unicode normal forms of one word, and lookalikes of escapes ("a%2Fb" is not "a/b").
NAMES = {
    "space": "with space",
    "leading_space": " lead",
    "trailing_space": "trail ",
    "newline": "new\nline",
    "carriage_return": "cr\rx",
    "tab": "tab\tx",
    "control_01": "ctl\x01x",
    "escape": "esc\x1b[0m",
    "delete": "del\x7fx",
    "nfc": unicodedata.normalize("NFC", "caf\u00e9"),
    "nfd": unicodedata.normalize("NFD", "caf\u00e9"),
    "cjk": "\u6587\u4ef6",
    "emoji": "smile\U0001f600",
    "percent": "100%",
    "percent_20": "a%20b",
    "percent_2f": "a%2Fb",
    "plus": "a+b",
    "question": "q?x=1",
    "hash": "h#frag",
    "backslash": "back\\slash",
    "ampersand_xml": "&amp;<x>'\"",
    "three_dots": "...",
    "dotfile": ".hidden",
    "dash": "-rf",
    "tilde": "~user",
    "star": "*",
}


def keys_under(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every key below ``prefix`` with its body."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            found[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return found


def put(s3, bucket: str, key: str, body: bytes = b"x", **kw) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, **kw)


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write(path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def assert_errno(code: int, func, *args) -> None:
    with pytest.raises(OSError) as info:
        func(*args)
    assert info.value.errno == code, (
        f"{func.__name__}: {errno.errorcode.get(info.value.errno)}, "
        f"expected {errno.errorcode[code]}"
    )


def assert_alive(fs) -> None:
    """The daemon still answers: the mount is listed, its root reads, its pids live."""
    with open("/proc/self/mounts") as f:
        assert any(line.split()[1] == fs.mountpoint for line in f)
    os.listdir(fs.mountpoint)
    write(fs.path(".alive"), b"ok")
    assert read(fs.path(".alive")) == b"ok"
    os.unlink(fs.path(".alive"))
    assert all(os.path.exists(f"/proc/{pid}") for pid in fs.pids)


def find_names(mountpoint: str) -> list[str]:
    """Names below ``mountpoint`` as find(1) prints them (NUL-separated, so any byte fits)."""
    out = subprocess.run(
        ["find", mountpoint, "-mindepth", "1", "-print0"], capture_output=True, check=True
    ).stdout
    return sorted(os.path.relpath(p.decode(), mountpoint) for p in out.split(b"\0") if p)


def storable(server, bucket: str, names: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The names this S3 server can hold as keys and list as prefixes, and the others.

    moto cannot store a key with a newline; Ceph RGW answers 500 to a listing whose prefix
    holds a control character XML cannot carry (other than tab, LF and CR). Through the
    mount such names fail with EIO, the server's refusal."""
    s3 = boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    kept, refused = {}, []
    for ident, name in names.items():
        key = "probe-" + name
        try:
            put(s3, bucket, key)
            s3.list_objects_v2(Bucket=bucket, Prefix=key + "/", Delimiter="/")
            kept[ident] = name
        except ClientError:
            refused.append(name)
        with contextlib.suppress(ClientError):
            s3.delete_object(Bucket=bucket, Key=key)
    return kept, refused


def assert_refused_names_leave_the_mount_alive(mnt, refused: list[str]) -> None:
    for name in refused:
        for call in (os.stat, os.mkdir, os.listdir):
            with contextlib.suppress(OSError):
                call(mnt.path(name))
    assert_alive(mnt)


# ----------------------------------------------------------------- unusual characters


def test_names_made_through_the_mount_land_under_the_exact_key(mnt, s3_server, s3, bucket):
    names, refused = storable(s3_server, bucket, NAMES)
    assert "nfc" in names and "percent_2f" in names  # the probe itself works
    os.mkdir(mnt.path("d"))
    for ident, name in names.items():
        write(mnt.path("d", name), ident.encode())
        os.mkdir(mnt.path(name))
        write(mnt.path(name, "inside"), ident.encode())

    expected = {"d/": b""}
    for ident, name in names.items():
        expected[f"d/{name}"] = ident.encode()
        expected[f"{name}/"] = b""
        expected[f"{name}/inside"] = ident.encode()
    fsync_dir(mnt.mountpoint)  # the queued directory markers
    assert keys_under(s3, bucket) == expected
    assert sorted(os.listdir(mnt.path("d"))) == sorted(names.values())
    for ident, name in names.items():
        assert read(mnt.path("d", name)) == ident.encode(), ident
    assert_refused_names_leave_the_mount_alive(mnt, refused)


def test_unusual_names_are_headed_once_each_by_the_quick_signer(mnt, s3_server, s3, bucket):
    """``ls -l`` of unusual names: each file's metadata comes from one HEAD, signed by
    pys3fs.signing (keys quoted into the URL as botocore would). A signature the server
    refused would be made again by boto3 and counted twice."""
    names, _ = storable(s3_server, bucket, NAMES)
    for ident, name in names.items():
        put(s3, bucket, f"ls/{name}", ident.encode(), Metadata={"mode": "33152", "uid": "7"})
    os.stat(mnt.path("ls"))  # its own lookup (a LIST, the HEAD of a marker) comes first
    before = requests(mnt)
    listed = os.listdir(mnt.path("ls"))
    modes = {name: os.lstat(mnt.path("ls", name)) for name in listed}
    assert sorted(listed) == sorted(names.values())
    assert {(stat.S_IMODE(st.st_mode), st.st_uid) for st in modes.values()} == {(0o600, 7)}
    assert requests(mnt).get("HEAD", 0) - before.get("HEAD", 0) == len(names)
    for ident, name in names.items():
        assert read(mnt.path("ls", name)) == ident.encode(), ident


def test_names_made_by_another_tool_show_under_the_exact_name(mnt, s3_server, s3, bucket, run):
    names, refused = storable(s3_server, bucket, NAMES)
    for ident, name in names.items():
        put(s3, bucket, f"files/{name}", ident.encode())
        put(s3, bucket, f"{name}/inside", ident.encode())

    assert sorted(os.listdir(mnt.path("files"))) == sorted(names.values())
    expected = ["files"] + [f"files/{n}" for n in names.values()]
    expected += [n for n in names.values()] + [f"{n}/inside" for n in names.values()]
    assert find_names(mnt.mountpoint) == sorted(expected)
    for ident, name in names.items():
        assert read(mnt.path("files", name)) == ident.encode(), ident
        assert stat.S_ISDIR(os.stat(mnt.path(name)).st_mode), ident
        assert read(mnt.path(name, "inside")) == ident.encode(), ident
    # ls shows them too (-b escapes the control characters, one name per line)
    shown = run("ls", "-1bA", mnt.path("files")).stdout.splitlines()
    assert len(shown) == len(names)
    assert_refused_names_leave_the_mount_alive(mnt, refused)


def test_renames_keep_unusual_names_exact(mnt, s3_server, s3, bucket):
    names, refused = storable(s3_server, bucket, NAMES)
    for ident, name in names.items():
        write(mnt.path(ident), name.encode())
        os.rename(mnt.path(ident), mnt.path(name))
    os.mkdir(mnt.path("a%2Fb c+d"))
    write(mnt.path("a%2Fb c+d", "q?#"), b"deep")
    os.rename(mnt.path("a%2Fb c+d"), mnt.path("e\u0301%25"))

    expected = {name: name.encode() for name in names.values()}
    expected["e\u0301%25/"] = b""
    expected["e\u0301%25/q?#"] = b"deep"
    assert keys_under(s3, bucket) == expected
    assert read(mnt.path("e\u0301%25", "q?#")) == b"deep"
    assert_errno(errno.ENOENT, os.stat, mnt.path("\u00e9%25"))  # NFC is another name
    assert_refused_names_leave_the_mount_alive(mnt, refused)


def test_nfc_and_nfd_spellings_are_two_files(mnt, s3, bucket):
    nfc, nfd = NAMES["nfc"], NAMES["nfd"]
    assert nfc != nfd
    write(mnt.path(nfc), b"composed")
    assert_errno(errno.ENOENT, os.stat, mnt.path(nfd))
    put(s3, bucket, nfd, b"decomposed")
    assert sorted(os.listdir(mnt.mountpoint)) == sorted([nfc, nfd])
    assert read(mnt.path(nfd)) == b"decomposed"
    assert read(mnt.path(nfc)) == b"composed"
    os.unlink(mnt.path(nfc))
    assert keys_under(s3, bucket) == {nfd: b"decomposed"}


def test_names_that_are_not_utf8_are_einval(mounter, s3, bucket, tmp_path):
    """S3 keys are UTF-8: a name that is not cannot be stored and is refused (as ext4
    refuses such names with its strict encoding option), as an ordinary error, not as an
    exception that escaped the filesystem (which fusepy logs with a traceback)."""
    log = tmp_path / "pys3fs.log"
    mnt = mounter(bucket, f"logfile={log}")
    bad = os.fsencode(mnt.mountpoint) + b"/bad\xffname"
    assert_errno(errno.EINVAL, os.open, bad, os.O_CREAT | os.O_WRONLY, 0o644)
    assert_errno(errno.EINVAL, os.mkdir, bad)
    assert_errno(errno.EINVAL, os.stat, bad)
    write(mnt.path("good"), b"x")
    assert_errno(errno.EINVAL, os.rename, mnt.path("good").encode(), bad)
    assert keys_under(s3, bucket) == {"good": b"x"}
    assert_alive(mnt)
    text = log.read_text()
    assert "Uncaught exception" not in text and "Traceback" not in text, text[-2000:]


# ----------------------------------------------------------------- lengths


def test_name_of_255_bytes_of_multibyte_characters(mnt, s3, bucket):
    two = "\u00e9" * 127 + "x"  # 255 bytes in UTF-8, 128 characters
    four = "\U0001f600" * 63 + "xyz"  # 255 bytes, 66 characters
    assert len(two.encode()) == len(four.encode()) == 255
    write(mnt.path(two), b"two")
    os.mkdir(mnt.path(four))
    os.symlink(two, mnt.path(four, two))
    write(mnt.path("src"), b"moved")
    os.rename(mnt.path("src"), mnt.path(four, four))
    assert sorted(os.listdir(mnt.path(four))) == sorted([two, four])
    assert os.readlink(mnt.path(four, two)) == two
    assert read(mnt.path(four, four)) == b"moved"
    fsync_dir(mnt.mountpoint)  # the queued directory marker
    assert set(keys_under(s3, bucket)) == {two, f"{four}/", f"{four}/{two}", f"{four}/{four}"}


def test_name_of_256_bytes_is_enametoolong_for_every_call(mnt, s3, bucket):
    long = "\u00e9" * 128  # 256 bytes, 128 characters
    write(mnt.path("keep"), b"kept")
    os.mkdir(mnt.path("dir"))
    for call, args in [
        (write, (mnt.path(long), b"x")),
        (os.mkdir, (mnt.path(long),)),
        (os.symlink, ("keep", mnt.path(long))),
        (os.stat, (mnt.path(long),)),
        (os.rename, (mnt.path("keep"), mnt.path(long))),
        (os.rename, (mnt.path("dir"), mnt.path("dir", long))),
        (os.rename, (mnt.path("dir"), mnt.path(long))),
        (os.unlink, (mnt.path(long),)),
    ]:
        assert_errno(errno.ENAMETOOLONG, call, *args)
    fsync_dir(mnt.mountpoint)  # the queued directory marker
    assert keys_under(s3, bucket) == {"keep": b"kept", "dir/": b""}
    assert_alive(mnt)


def deep_dirs(root: str) -> tuple[str, str]:
    """Four directories of 250 bytes: the path and key ``d0/d1/d2/d3/`` take 1004 bytes."""
    parts = [str(i) * 250 for i in range(4)]
    os.makedirs(os.path.join(root, *parts))
    return os.path.join(root, *parts), "/".join(parts) + "/"


def test_rename_to_a_key_over_1024_bytes_is_enametoolong(mnt, s3, bucket):
    deep, key = deep_dirs(mnt.mountpoint)
    write(mnt.path("f"), b"data")
    os.rename(mnt.path("f"), os.path.join(deep, "n" * 20))  # key of exactly 1024 bytes
    assert len((key + "n" * 20).encode()) == 1024
    assert_errno(
        errno.ENAMETOOLONG, os.rename, os.path.join(deep, "n" * 20), os.path.join(deep, "n" * 21)
    )
    assert read(os.path.join(deep, "n" * 20)) == b"data"
    assert keys_under(s3, bucket)[key + "n" * 20] == b"data"


def test_rename_of_a_directory_whose_keys_would_exceed_1024_bytes(mnt, s3, bucket):
    """Renaming a directory moves every key below it: if one of them would not fit under
    the new name, nothing is copied or removed (before: S3 refused the copies midway, or
    a server that accepts longer keys made objects no lookup could reach)."""
    deep, key = deep_dirs(mnt.path("s"))
    write(os.path.join(deep, "f" * 18), b"deep data")  # "s/" + 1004 + 18 = 1024 bytes
    fsync_dir(mnt.mountpoint)  # the queued directory markers
    before = keys_under(s3, bucket)
    assert before["s/" + key + "f" * 18] == b"deep data"

    assert_errno(errno.ENAMETOOLONG, os.rename, mnt.path("s"), mnt.path("longer"))
    assert keys_under(s3, bucket) == before
    assert read(os.path.join(deep, "f" * 18)) == b"deep data"
    assert_errno(errno.ENOENT, os.stat, mnt.path("longer"))
    os.rename(mnt.path("s"), mnt.path("t"))  # same length: fine
    assert keys_under(s3, bucket) == {"t/" + k[2:]: v for k, v in before.items()}
    assert_alive(mnt)


def test_keys_over_1024_bytes_from_a_lenient_server_are_hidden(mnt, s3_server, s3, bucket):
    """AWS refuses keys over 1024 bytes; a server that stores them (moto does) gets them
    hidden, since no lookup could reach them."""
    parts = [str(i) * 250 for i in range(4)]
    long_file = "/".join(parts) + "/" + "f" * 30
    long_dir = "/".join(parts) + "/" + "g" * 30 + "/x"
    try:
        put(s3, bucket, long_file)
        put(s3, bucket, long_dir)
    except ClientError:
        pytest.skip(f"{s3_server.kind} refuses keys over 1024 bytes")
    put(s3, bucket, "/".join(parts) + "/ok", b"ok")
    deep = mnt.path(*parts)
    assert os.listdir(deep) == ["ok"]
    assert_errno(errno.ENAMETOOLONG, os.stat, os.path.join(deep, "f" * 30))
    assert_errno(errno.ENAMETOOLONG, os.stat, os.path.join(deep, "g" * 30))
    assert read(os.path.join(deep, "ok")) == b"ok"
    assert_alive(mnt)


# ----------------------------------------------------------------- keys that are not paths

# key -> (directory that holds it, name it would have, errno of that name's lookup)
UNUSABLE = {
    "k//b": ("k", "b", errno.ENOENT),
    "/lead": ("", "lead", errno.ENOENT),
    "./x": ("", "x", errno.ENOENT),
    "u/../y": ("u", "y", errno.ENOENT),
    "v/./y": ("v", "y", errno.ENOENT),
    "w/" + "n" * 256: ("w", "n" * 256, errno.ENAMETOOLONG),
}


def test_keys_that_cannot_be_paths_get_defined_results(mnt, s3_server, s3, bucket):
    stored = {}
    for key in UNUSABLE:
        try:
            put(s3, bucket, key, b"hidden " + key.encode())
        except ClientError:  # a stricter server may refuse some
            continue
        stored[key] = b"hidden " + key.encode()
    if s3_server.kind == "moto":
        assert set(stored) == set(UNUSABLE)
    put(s3, bucket, "visible", b"v")
    dirs = {UNUSABLE[k][0] for k in stored if UNUSABLE[k][0]}

    assert sorted(os.listdir(mnt.mountpoint)) == sorted(dirs | {"visible"})
    for key in list(stored):
        directory, name, code = UNUSABLE[key]
        assert_errno(code, os.stat, mnt.path(directory, name))
        if directory:
            assert stat.S_ISDIR(os.stat(mnt.path(directory)).st_mode)
            assert os.listdir(mnt.path(directory)) == []
            # the directory looks empty but holds bytes: never removed by rmdir
            assert_errno(errno.ENOTEMPTY, os.rmdir, mnt.path(directory))
            assert_errno(errno.ENOTEMPTY, subprocess_rm_rf, mnt.path(directory))
            # a rename carries the hidden keys along
            os.rename(mnt.path(directory), mnt.path(directory + "2"))
            moved = directory + "2" + key[len(directory) :]
            stored[moved] = stored.pop(key)
    stored["visible"] = b"v"
    assert keys_under(s3, bucket) == stored
    assert_alive(mnt)


def subprocess_rm_rf(path: str) -> None:
    """``rm -rf PATH``; raises ENOTEMPTY when rm says the directory is not empty."""
    result = subprocess.run(["rm", "-rf", path], capture_output=True, text=True)
    if result.returncode:
        assert "not empty" in result.stderr, result.stderr
        raise OSError(errno.ENOTEMPTY, result.stderr)


def test_key_with_a_control_character_is_an_ordinary_name(mnt, s3, bucket, run):
    """Only '/' and NUL cannot be in a Linux name: a key with a control character is
    shown, read, renamed and deleted like any other."""
    name = "bell\x07\x01end"
    put(s3, bucket, f"c/{name}", b"ding")
    assert os.listdir(mnt.path("c")) == [name]
    assert read(mnt.path("c", name)) == b"ding"
    assert run("ls", "-b", mnt.path("c")).stdout.strip() == "bell\\a\\001end"
    os.rename(mnt.path("c", name), mnt.path("c", name + "\x02"))
    assert keys_under(s3, bucket) == {f"c/{name}\x02": b"ding"}
    os.unlink(mnt.path("c", name + "\x02"))
    assert keys_under(s3, bucket) == {}


def test_directory_marker_with_content_keeps_its_bytes(mnt, s3, bucket):
    """A ``dir/`` object that has a body (some tools write one) is an empty directory;
    its bytes survive chmod and rename, and rmdir refuses to delete them."""
    put(s3, bucket, "m/", b"marker body", ContentType=DIR_TYPE)
    put(s3, bucket, "plain/", b"other body")  # no directory content type: a marker too
    assert sorted(os.listdir(mnt.mountpoint)) == ["m", "plain"]
    for name in ("m", "plain"):
        assert stat.S_ISDIR(os.stat(mnt.path(name)).st_mode)
        assert os.listdir(mnt.path(name)) == []
        assert_errno(errno.EISDIR, read, mnt.path(name))
    os.chmod(mnt.path("m"), 0o700)
    assert stat.S_IMODE(os.stat(mnt.path("m")).st_mode) == 0o700
    assert keys_under(s3, bucket) == {"m/": b"marker body", "plain/": b"other body"}
    assert s3.head_object(Bucket=bucket, Key="m/")["Metadata"]["mode"] == str(stat.S_IFDIR | 0o700)
    os.rename(mnt.path("m"), mnt.path("n"))
    assert keys_under(s3, bucket) == {"n/": b"marker body", "plain/": b"other body"}
    assert_errno(errno.ENOTEMPTY, os.rmdir, mnt.path("n"))
    os.mkdir(mnt.path("empty"))
    assert_errno(errno.ENOTEMPTY, os.rename, mnt.path("empty"), mnt.path("plain"))
    fsync_dir(mnt.path("empty"))
    assert keys_under(s3, bucket) == {
        "n/": b"marker body",
        "plain/": b"other body",
        "empty/": b"",
    }
    assert_alive(mnt)


def test_file_shadowed_by_a_directory_of_the_same_name_is_never_touched(mnt, s3, bucket, run):
    """A file ``a`` and keys below ``a/``: the directory is shown, every call on ``a``
    acts on the directory or fails, and the file's bytes stay until the directory is gone."""
    put(s3, bucket, "a", b"file body")
    put(s3, bucket, "a/in.txt", b"inside")
    assert stat.S_ISDIR(os.stat(mnt.path("a")).st_mode)
    assert_errno(errno.EISDIR, read, mnt.path("a"))
    assert_errno(errno.EISDIR, write, mnt.path("a"), b"over")
    assert_errno(errno.EISDIR, os.unlink, mnt.path("a"))
    assert_errno(errno.ENOTEMPTY, os.rmdir, mnt.path("a"))
    assert_errno(errno.EEXIST, os.open, mnt.path("a"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    assert_errno(errno.EEXIST, os.mkdir, mnt.path("a"))
    assert keys_under(s3, bucket) == {"a": b"file body", "a/in.txt": b"inside"}

    os.rename(mnt.path("a"), mnt.path("b"))  # moves the directory only
    assert keys_under(s3, bucket) == {"a": b"file body", "b/in.txt": b"inside"}
    run("rm", "-r", mnt.path("b"))
    assert keys_under(s3, bucket) == {"a": b"file body"}
    os.listdir(mnt.mountpoint)
    assert read(mnt.path("a")) == b"file body"  # no directory left: the file shows
    assert_alive(mnt)
