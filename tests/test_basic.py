"""Smoke test: a mount shows what another tool wrote and takes new files."""

import os


def test_read_and_write(mnt, s3, bucket):
    s3.put_object(Bucket=bucket, Key="dir/hello.txt", Body=b"hello")
    assert os.listdir(mnt.mountpoint) == ["dir"]
    with open(mnt.path("dir/hello.txt"), "rb") as f:
        assert f.read() == b"hello"
    with open(mnt.path("new.txt"), "wb") as f:
        f.write(b"data")
    assert s3.get_object(Bucket=bucket, Key="new.txt")["Body"].read() == b"data"
