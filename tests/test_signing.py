"""Unit tests of pys3fs.signing: its URLs are the ones botocore's presign makes.

No server is needed: a presigned URL is computed locally. The clock botocore signs with
is frozen so that both URLs carry the same date, and so the same signature.
"""

from __future__ import annotations

import datetime
import itertools
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import boto3
import botocore
import pytest
from botocore.config import Config
from botocore.credentials import RefreshableCredentials

from pys3fs.signing import BucketSigner

KEYS = [
    "plain.txt",
    "dir/sub/file 0001.txt",
    "100%+?#&=;:@,$!'()*[]{}|^`\"<>\\.txt",
    "tab\tnl\ncr\r",
    "ünïcode/NFD-é/日本語",
    "/lead//double/./dot/../x",
    "~tilde-_.",
]
NOW = datetime.datetime(2030, 1, 2, 3, 4, 5)


def make_client(style: str, endpoint: str | None, signed: bool = True, token: str | None = None):
    config = Config(
        signature_version="s3v4" if signed else botocore.UNSIGNED, s3={"addressing_style": style}
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        aws_session_token=token,
        config=config,
    )


def same_url(ours: str, presigned: str) -> bool:
    """The same URL, query parameters in any order (the signature covers them sorted)."""
    a, b = urlsplit(ours), urlsplit(presigned)
    return (a.scheme, a.netloc, a.path) == (b.scheme, b.netloc, b.path) and sorted(
        parse_qsl(a.query, keep_blank_values=True)
    ) == sorted(parse_qsl(b.query, keep_blank_values=True))


@pytest.fixture(autouse=True)
def frozen_clock():
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW):
        yield


CLIENTS = [
    ("path", "http://127.0.0.1:9000", "bucket"),
    ("virtual", "http://s3.example.com:8080", "bucket"),
    ("auto", None, "bucket"),
    ("virtual", None, "dotted.bucket"),  # dots: path style over https
    ("path", "https://s3.example.com", "bucket"),
]


@pytest.mark.parametrize(("style", "endpoint", "bucket"), CLIENTS)
@pytest.mark.parametrize("token", [None, "session/token+="])
def test_head_urls_are_the_presigned_ones(style, endpoint, bucket, token):
    client = make_client(style, endpoint, token=token)
    signer = BucketSigner(client, bucket, 900)
    for key in KEYS:
        presigned = client.generate_presigned_url(
            "head_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=900
        )
        ours = signer.head_url(key)
        assert ours is not None and same_url(ours, presigned), (key, ours, presigned)
        if token:
            assert ("X-Amz-Security-Token", token) in parse_qsl(urlsplit(ours).query)


@pytest.mark.parametrize(("style", "endpoint", "bucket"), CLIENTS)
def test_list_urls_are_the_presigned_ones(style, endpoint, bucket):
    client = make_client(style, endpoint)
    signer = BucketSigner(client, bucket, 900)
    for key in KEYS:
        for params in (
            {"Prefix": key, "Delimiter": "/", "MaxKeys": 3},
            {"Prefix": key, "MaxKeys": 1},
            {"Prefix": key, "ContinuationToken": "tok/+=", "StartAfter": key},
        ):
            params = {"Bucket": bucket, **params}
            presigned = client.generate_presigned_url(
                "list_objects_v2", Params=dict(params), ExpiresIn=900
            )
            ours = signer.list_url(params)
            assert ours is not None and same_url(ours, presigned), (params, ours, presigned)


def test_unsigned_client_gets_plain_urls():
    client = make_client("path", "http://127.0.0.1:9000", signed=False)
    signer = BucketSigner(client, "bucket", 900)
    for key in KEYS:
        presigned = client.generate_presigned_url(
            "head_object", Params={"Bucket": "bucket", "Key": key}
        )
        assert signer.head_url(key) == presigned
    params = {"Bucket": "bucket", "Prefix": KEYS[2], "MaxKeys": 2}
    presigned = client.generate_presigned_url("list_objects_v2", Params=dict(params))
    assert same_url(signer.list_url(params), presigned)


def test_refreshed_credentials_are_used():
    """Credentials are frozen per URL: a refresh between two requests is picked up."""
    client = make_client("path", "http://127.0.0.1:9000")
    signer = BucketSigner(client, "bucket", 900)
    first = signer.head_url("k")
    keys = (f"REFRESHED{n}" for n in itertools.count())
    now = datetime.datetime.now(datetime.UTC)  # botocore's refresh uses the real clock

    def fetch() -> dict:
        return {
            "access_key": next(keys),
            "secret_key": "s2",
            "token": "t2",
            # within botocore's mandatory refresh window: refreshed at every use
            "expiry_time": (now + datetime.timedelta(minutes=5)).isoformat(),
        }

    client._request_signer._credentials = RefreshableCredentials.create_from_metadata(
        fetch(), fetch, "test"
    )
    second = signer.head_url("k")
    presigned = client.generate_presigned_url(
        "head_object", Params={"Bucket": "bucket", "Key": "k"}
    )
    assert access_key(first) == "AKIDEXAMPLE"
    assert access_key(second).startswith("REFRESHED") and access_key(second) != "REFRESHED0"
    assert access_key(presigned) != access_key(second)  # refreshed again, as the presign is


def access_key(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))["X-Amz-Credential"].split("/")[0]


def test_unknown_list_parameter_is_left_to_the_presign():
    client = make_client("path", "http://127.0.0.1:9000")
    signer = BucketSigner(client, "bucket", 900)
    assert signer.list_url({"Bucket": "bucket", "FetchOwner": True}) is None
    assert signer.list_url({"Bucket": "other", "Prefix": "a"}) is None


def test_other_signature_versions_are_left_to_the_presign():
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9000",
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
        config=Config(signature_version="s3", s3={"addressing_style": "path"}),
    )
    signer = BucketSigner(client, "bucket", 900)
    assert signer.head_url("k") is None
    assert signer.list_url({"Bucket": "bucket", "Prefix": "a"}) is None
