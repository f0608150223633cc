"""s3fs-fuse options that change what a mount does, through real mounts: HTTPS with a
certificate of the host's own CA or none checked, server-side encryption, the cache
directory's placement and clearing, mime types, and the ``-o bucket=`` form.

(test_options pins down how each option is parsed; test_cli the refusals.)
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import ssl
import subprocess
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from conftest import PYS3FS, S3Server, force_unmount, is_mounted
from s3proxy import S3Proxy, self_signed

MiB = 1024 * 1024
NO_QUICK = "requests go through boto3 only"  # logged when the quick requests' TLS fails


def log_text(mnt) -> str:
    with open(mnt.logfile, errors="replace") as f:
        return f.read()


# -- HTTPS ---------------------------------------------------------------------------------
@pytest.fixture
def https(s3_server, tmp_path, monkeypatch):
    """The server behind HTTPS with a self-signed certificate (as a private MinIO or Ceph
    often is): (the proxy, the certificate's PEM file). No CA setting is inherited."""
    for variable in ("SSL_CERT_FILE", "SSL_CERT_DIR", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    proxy = S3Proxy(s3_server.url, tls=context).start()
    try:
        yield proxy, cert
    finally:
        proxy.stop()


def use_files(mnt, s3, bucket) -> None:
    """What a user does first: write, list with attributes, read back."""
    Path(mnt.path("f.txt")).write_bytes(b"over TLS")
    os.mkdir(mnt.path("d"))
    Path(mnt.path("d", "g")).write_bytes(b"g")
    listing = subprocess.run(
        ["ls", "-l", mnt.path("d")], capture_output=True, text=True, check=True
    ).stdout
    assert " g\n" in listing
    assert Path(mnt.path("f.txt")).read_bytes() == b"over TLS"
    assert s3.get_object(Bucket=bucket, Key="f.txt")["Body"].read() == b"over TLS"


def test_an_untrusted_certificate_stops_the_mount_with_one_line(https, mounter, bucket):
    proxy, _ = https
    with pytest.raises(RuntimeError) as info:
        mounter(bucket, server=proxy_server(proxy))
    assert "TLS certificate of https://127.0.0.1" in str(info.value)
    assert "not trusted" in str(info.value)


def test_no_check_certificate_mounts_a_self_signed_server(https, mounter, bucket, s3):
    proxy, _ = https
    mnt = mounter(
        bucket, "no_check_certificate", "ssl_verify_hostname=0", server=proxy_server(proxy)
    )
    use_files(mnt, s3, bucket)
    assert proxy.total["PUT"] >= 2 and proxy.total["HEAD"] >= 1
    assert NO_QUICK not in log_text(mnt)  # every request went over the checked-less TLS


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "AWS_CA_BUNDLE"])
def test_a_ca_of_the_host_is_trusted_by_every_request(https, mounter, bucket, s3, variable):
    # A private CA installed on the host (SSL_CERT_FILE here; update-ca-certificates on
    # a real one), or boto3's own AWS_CA_BUNDLE, is trusted by boto3 and by the quick
    # requests alike, as by curl.
    proxy, cert = https
    mnt = mounter(bucket, server=proxy_server(proxy), env={**os.environ, variable: cert})
    use_files(mnt, s3, bucket)
    assert NO_QUICK not in log_text(mnt)


def test_a_missing_ca_bundle_is_named(https, mounter, bucket, tmp_path):
    proxy, _ = https
    missing = str(tmp_path / "no-such-bundle.pem")
    with pytest.raises(RuntimeError) as info:
        mounter(bucket, server=proxy_server(proxy), env={**os.environ, "AWS_CA_BUNDLE": missing})
    assert f"pys3fs: CA bundle {missing} not found" in str(info.value)


def proxy_server(proxy) -> S3Server:
    return S3Server(url=proxy.url)


# -- what every write asks for: server-side encryption, canned ACLs ------------------------
WRITTEN = ("moved", "big", "dir/", "dir/chmodded", "link")  # the keys write_every_way leaves


def write_every_way(mnt) -> None:
    """Make objects by every kind of write a mount sends, then unmount: a PUT, a
    multipart upload and a multipart copy of it, a directory marker, a CopyObject with
    new metadata, a rename's copy, a symlink."""
    Path(mnt.path("small")).write_bytes(b"small")
    big = os.urandom(11 * MiB)  # three parts
    Path(mnt.path("big")).write_bytes(big)
    os.chmod(mnt.path("big"), 0o640)  # a multipart copy onto itself
    os.mkdir(mnt.path("dir"))
    Path(mnt.path("dir", "chmodded")).write_bytes(b"x")
    os.chmod(mnt.path("dir", "chmodded"), 0o600)  # a copy onto itself, new metadata
    os.rename(mnt.path("small"), mnt.path("moved"))  # a copy, then a delete
    os.symlink("moved", mnt.path("link"))
    assert Path(mnt.path("big")).read_bytes() == big
    assert Path(mnt.path("moved")).read_bytes() == b"small"
    mnt.unmount()  # the directory's marker object is written by then at the latest


@pytest.fixture
def sse_server(s3_server):
    if s3_server.kind != "moto":
        # (set up for it, RGW ignores SSE-S3 without Vault, and answers NotImplemented to
        # a copy of an SSE-KMS object, so a rename or chmod could not work either)
        pytest.skip("Ceph RGW refuses SSE over plain HTTP without a key management service")
    return s3_server


@pytest.mark.parametrize(
    "option, algorithm, key_id",
    [("use_sse", "AES256", None), ("use_sse=kmsid:pys3fs-test-key", "aws:kms", "pys3fs-test-key")],
    ids=["sse-s3", "sse-kms"],
)
def test_use_sse_encrypts_every_object_written(
    sse_server, mounter, bucket, s3, option, algorithm, key_id
):
    mnt = mounter(bucket, option, "multipart_size=5")
    write_every_way(mnt)
    for key in WRITTEN:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head.get("ServerSideEncryption") == algorithm, key
        if key_id:
            assert key_id in head.get("SSEKMSKeyId", ""), key


ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def public_reads(s3, bucket: str, key: str) -> bool:
    grants = s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
    return any(g["Grantee"].get("URI") == ALL_USERS and g["Permission"] == "READ" for g in grants)


def test_default_acl_is_given_to_every_object_written(mounter, bucket, s3):
    mnt = mounter(bucket, "default_acl=public-read", "multipart_size=5")
    write_every_way(mnt)
    for key in WRITTEN:
        assert public_reads(s3, bucket, key), key

    mnt = mounter(bucket, mountpoint=mnt.mountpoint)  # private, s3fs-fuse's default
    Path(mnt.path("own")).write_bytes(b"mine")
    os.rename(mnt.path("moved"), mnt.path("renamed"))  # the copy does not keep the ACL
    mnt.unmount()
    assert not public_reads(s3, bucket, "own")
    assert not public_reads(s3, bucket, "renamed")


# -- the cache directory -------------------------------------------------------------------
def data_files(cache: str, bucket: str) -> list[str]:
    data = os.path.join(cache, bucket, "data")
    if not os.path.isdir(data):
        return []
    return sorted(n for n in os.listdir(data) if not n.endswith((".json", ".tmp")))


def test_del_cache_drops_cached_data_at_unmount_and_at_mount(mounter, bucket, s3, tmp_path):
    cache = str(tmp_path / "shared-cache")
    s3.put_object(Bucket=bucket, Key="f", Body=b"cached bytes")

    mnt = mounter(bucket, f"use_cache={cache}")
    assert Path(mnt.path("f")).read_bytes() == b"cached bytes"
    mnt.unmount()
    assert len(data_files(cache, bucket)) == 1  # kept for the next mount, by default

    mnt = mounter(bucket, f"use_cache={cache}", "del_cache", mountpoint=mnt.mountpoint)
    assert data_files(cache, bucket) == []  # dropped at mount
    assert Path(mnt.path("f")).read_bytes() == b"cached bytes"
    Path(mnt.path("g")).write_bytes(b"written")
    assert len(data_files(cache, bucket)) == 2
    mnt.unmount()
    assert data_files(cache, bucket) == []  # and at unmount
    assert s3.get_object(Bucket=bucket, Key="g")["Body"].read() == b"written"


def test_tmpdir_places_the_default_cache(bucket, s3, tmp_path, s3_server):
    tmpdir = tmp_path / "elsewhere"
    tmpdir.mkdir()
    s3.put_object(Bucket=bucket, Key="f", Body=b"x" * 100)
    mp = tmp_path / "mnt"
    mp.mkdir()
    opts = f"url={s3_server.url},use_path_request_style,tmpdir={tmpdir}"  # no use_cache
    result = subprocess.run(
        [PYS3FS, bucket, str(mp), "-o", opts], capture_output=True, text=True, timeout=90
    )
    try:
        assert result.returncode == 0, result.stderr
        assert (mp / "f").read_bytes() == b"x" * 100
        assert len(data_files(str(tmpdir / f"pys3fs-{os.getuid()}"), bucket)) == 1
    finally:
        force_unmount(str(mp))


def test_check_cache_dir_exist_refuses_a_missing_cache_dir(bucket, tmp_path, s3_server):
    mp = tmp_path / "mnt"
    mp.mkdir()
    missing = tmp_path / "no-such-cache"
    opts = f"url={s3_server.url},use_path_request_style,use_cache={missing},check_cache_dir_exist"
    result = subprocess.run(
        [PYS3FS, bucket, str(mp), "-o", opts], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"pys3fs: cache directory {missing} does not exist (check_cache_dir_exist)"
    ]
    assert not is_mounted(str(mp)) and not missing.exists()


# -- names and types -----------------------------------------------------------------------
def test_mime_file_sets_content_types(mounter, bucket, s3, tmp_path):
    types = tmp_path / "mime.types"
    types.write_text("application/x-pys3fs-test\tpys3fstest\ntext/x-own-plain\ttxt\n")
    mnt = mounter(bucket, f"mime={types}")
    Path(mnt.path("a.pys3fstest")).write_bytes(b"a")
    Path(mnt.path("b.txt")).write_bytes(b"b")
    Path(mnt.path("c.html")).write_bytes(b"<p>")  # the system's types still apply
    names = ("a.pys3fstest", "b.txt", "c.html")
    content_type = {k: s3.head_object(Bucket=bucket, Key=k)["ContentType"] for k in names}
    assert content_type == {
        "a.pys3fstest": "application/x-pys3fs-test",
        "b.txt": "text/x-own-plain",
        "c.html": "text/html",
    }


def test_the_bucket_option_form_mounts(bucket, tmp_path, s3_server, s3):
    # s3fs-fuse's "s3fs MOUNTPOINT -o bucket=NAME" (and so an fstab line written that way)
    s3.put_object(Bucket=bucket, Key="p/f", Body=b"in the prefix")
    mp = tmp_path / "mnt"
    mp.mkdir()
    opts = (
        f"bucket={bucket}:/p,url={s3_server.url},use_path_request_style,"
        f"use_cache={tmp_path / 'cache'}"
    )
    result = subprocess.run(
        [PYS3FS, str(mp), "-o", opts], capture_output=True, text=True, timeout=90
    )
    try:
        assert result.returncode == 0, result.stderr
        assert os.listdir(mp) == ["f"]
        assert (mp / "f").read_bytes() == b"in the prefix"
    finally:
        force_unmount(str(mp))


# -- what every write carries --------------------------------------------------------------
def test_enable_content_md5_sends_the_md5_of_every_upload(proxy, mounter, bucket, s3):
    mnt = mounter(bucket, "enable_content_md5", "multipart_size=5", server=proxy_server(proxy))
    small, big = b"checked on arrival", os.urandom(11 * MiB)  # big: three parts
    Path(mnt.path("small")).write_bytes(small)
    Path(mnt.path("big")).write_bytes(big)
    mnt.unmount()
    uploads = [
        headers
        for _, headers in proxy.puts
        if "x-amz-copy-source" not in headers and int(headers.get("content-length", 0)) > 0
    ]
    sizes = sorted(int(h["content-length"]) for h in uploads)
    assert sizes == [len(small), 1 * MiB, 5 * MiB, 5 * MiB]
    digests = {base64.b64decode(h["content-md5"]) for h in uploads}
    pieces = [small, big[: 5 * MiB], big[5 * MiB : 10 * MiB], big[10 * MiB :]]
    assert digests == {hashlib.md5(piece).digest() for piece in pieces}
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == big


# -- extended attributes -------------------------------------------------------------------
def test_use_xattr_keeps_user_attributes_in_s3fs_fuse_format(mounter, bucket, s3, tmp_path):
    mnt = mounter(bucket, "use_xattr")
    path = mnt.path("f")
    Path(path).write_bytes(b"data")
    os.setxattr(path, "user.colour", b"blue")
    os.setxattr(path, "user.bin", bytes(range(256)))
    with pytest.raises(OSError) as info:
        os.setxattr(path, "user.colour", b"red", os.XATTR_CREATE)
    assert info.value.errno == errno.EEXIST
    with pytest.raises(OSError) as info:
        os.setxattr(path, "user.shape", b"round", os.XATTR_REPLACE)
    assert info.value.errno == errno.ENODATA
    os.setxattr(path, "user.colour", b"red", os.XATTR_REPLACE)
    assert sorted(os.listxattr(path)) == ["user.bin", "user.colour"]
    assert os.getxattr(path, "user.colour") == b"red"
    os.removexattr(path, "user.bin")
    with pytest.raises(OSError) as info:
        os.getxattr(path, "user.bin")
    assert info.value.errno == errno.ENODATA
    # as s3fs-fuse stores them: URL-encoded JSON of base64 values, in x-amz-meta-xattr
    stored = s3.head_object(Bucket=bucket, Key="f")["Metadata"]["xattr"]
    assert json.loads(unquote(stored)) == {"user.colour": base64.b64encode(b"red").decode()}
    assert Path(path).read_bytes() == b"data"

    # cp --preserve=xattr from a local file, and a directory's attributes
    local = tmp_path / "local"
    local.write_bytes(b"local")
    os.setxattr(local, "user.from", b"disk")
    subprocess.run(["cp", "--preserve=xattr", str(local), mnt.path("copied")], check=True)
    os.mkdir(mnt.path("d"))
    subprocess.run(["setfattr", "-n", "user.dir", "-v", "yes", mnt.path("d")], check=True)
    mnt.unmount()
    mnt = mounter(bucket, "use_xattr", mountpoint=mnt.mountpoint)
    assert os.getxattr(mnt.path("copied"), "user.from") == b"disk"
    shown = ["getfattr", "--only-values", "-n", "user.dir", mnt.path("d")]
    assert subprocess.run(shown, capture_output=True, check=True).stdout == b"yes"
    assert os.getxattr(mnt.path("f"), "user.colour") == b"red"


def test_user_attributes_written_by_s3fs_fuse_are_read(mounter, bucket, s3):
    table = {"user.mime_type": base64.b64encode(b"text/plain").decode()}
    header = quote(json.dumps(table), safe="")
    s3.put_object(Bucket=bucket, Key="f", Body=b"x", Metadata={"mode": "33188", "xattr": header})
    mnt = mounter(bucket, "use_xattr")
    assert os.listxattr(mnt.path("f")) == ["user.mime_type"]
    assert os.getxattr(mnt.path("f"), "user.mime_type") == b"text/plain"


def test_without_use_xattr_user_attributes_cannot_be_set(mnt):
    Path(mnt.path("f")).write_bytes(b"x")
    with pytest.raises(OSError) as info:
        os.setxattr(mnt.path("f"), "user.colour", b"blue")
    assert info.value.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)
    assert os.listxattr(mnt.path("f")) == []
