"""Unit tests of pys3fs.signing: its URLs are the ones botocore's presign makes.

No server is needed: a presigned URL is computed locally. The clock botocore signs with
is frozen so that both URLs carry the same date, and so the same signature.
"""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass
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


@dataclass
class Signing:
    client: object
    signer: BucketSigner
    bucket: str
    token: str | None


@pytest.fixture(
    params=[(*c, token) for c in CLIENTS for token in (None, "session/token+=")],
    ids=lambda p: "-".join(str(x) for x in p),
)
def signing(request) -> Signing:
    """A client of each addressing style and endpoint, with and without a session
    token, and a signer on its bucket."""
    style, endpoint, bucket, token = request.param
    client = make_client(style, endpoint, token=token)
    return Signing(client, BucketSigner(client, bucket, 900), bucket, token)


def test_head_urls_are_the_presigned_ones(signing):
    client, signer, bucket, token = signing.client, signing.signer, signing.bucket, signing.token
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


def test_credentials_botocore_no_longer_keeps_where_expected_leave_it_to_the_presign():
    # signing reads the client's credentials where botocore keeps them (no public
    # accessor); a botocore that keeps them elsewhere must not break requests
    client = make_client("path", "http://127.0.0.1:9000")
    signer = BucketSigner(client, "bucket", 900)
    assert signer.head_url("k") is not None
    del client._request_signer._credentials
    assert signer.head_url("k") is None


def presigned_write(client, operation: str, params: dict) -> tuple[str, dict[str, str]]:
    """The presign's URL and the headers botocore signed with it."""
    seen = {}

    def take(request=None, **_kwargs):
        seen["headers"] = {k: v for k, v in request.headers.items() if k.lower() != "host"}

    event = f"before-sign.s3.{'PutObject' if operation == 'put_object' else 'CopyObject'}"
    client.meta.events.register(event, take)
    try:
        url = client.generate_presigned_url(operation, Params=dict(params), ExpiresIn=900)
    finally:
        client.meta.events.unregister(event, take)
    return url, seen["headers"]


def write_params(bucket: str, key: str) -> list[tuple[str, dict]]:
    meta = {"mode": "33188", "uid": "0", "gid": "1000", "mtime": "1700000000.5", "x": " a  b "}
    return [
        ("put_object", {"Bucket": bucket, "Key": key}),
        ("put_object", {"Bucket": bucket, "Key": key, "Metadata": meta, "ContentType": "text/x"}),
        ("put_object", {"Bucket": bucket, "Key": key, "Metadata": {}, "IfNoneMatch": "*"}),
        (
            "put_object",
            {"Bucket": bucket, "Key": key, "IfMatch": '"0a1b"', "StorageClass": "STANDARD_IA"},
        ),
        (
            "copy_object",
            {
                "Bucket": bucket,
                "Key": key,
                "CopySource": {"Bucket": bucket, "Key": KEYS[2] + key},
                "MetadataDirective": "REPLACE",
                "Metadata": meta,
                "ContentType": "application/x-directory",
                "CopySourceIfMatch": '"0a1b"',
            },
        ),
        (
            "copy_object",
            {
                "Bucket": bucket,
                "Key": key,
                "CopySource": {"Bucket": bucket, "Key": key},
                "MetadataDirective": "COPY",
            },
        ),
    ]


def test_write_requests_are_the_presigned_ones(signing):
    """PUT and COPY: the same URL, and the same headers to send with it."""
    client, signer = signing.client, signing.signer
    for key in KEYS:
        for operation, params in write_params(signing.bucket, key):
            url, headers = presigned_write(client, operation, params)
            ours = signer.write_request(operation, params)
            assert ours is not None, (operation, params)
            assert same_url(ours[0], url), (params, ours[0], url)
            assert ours[1] == headers, params


def test_writes_it_cannot_serialise_are_left_to_the_presign():
    client = make_client("path", "http://127.0.0.1:9000")
    signer = BucketSigner(client, "bucket", 900)
    base = {"Bucket": "bucket", "Key": "k"}
    for operation, extra in [
        ("put_object", {"Body": b"data"}),  # not a header
        ("put_object", {"ContentLength": 4}),  # not a string
        ("put_object", {"Metadata": {"name": "é"}}),  # botocore refuses non-ASCII
        ("put_object", {"Metadata": {"A": "1", "a": "2"}}),  # one header twice
        ("put_object", {"ContentType": "application/x-www-form-urlencoded; charset=utf-8"}),
        ("copy_object", {"CopySource": "bucket/k"}),  # the string form
        ("copy_object", {"CopySource": {"Bucket": "bucket", "Key": "k", "VersionId": "1"}}),
    ]:
        assert signer.write_request(operation, {**base, **extra}) is None, extra
    assert signer.write_request("put_object", {"Bucket": "other", "Key": "k"}) is None


def test_the_derived_key_follows_the_day():
    """The kept signing key is per day: a URL signed on the next day still matches."""
    client = make_client("path", "http://127.0.0.1:9000")
    signer = BucketSigner(client, "bucket", 900)
    for day in (NOW, NOW + datetime.timedelta(days=1)):
        with mock.patch("botocore.auth.get_current_datetime", return_value=day):
            presigned = client.generate_presigned_url(
                "head_object", Params={"Bucket": "bucket", "Key": "k"}, ExpiresIn=900
            )
            assert same_url(signer.head_url("k"), presigned)
