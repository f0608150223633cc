"""The HEAD loop (pys3fs.headloop) against a real server, through the fault proxy: every
request gets its own answer, and whatever the loop cannot take is declined (the mount
then asks boto3), never taken for "not found". Listings through a mount use it for
every file they HEAD (test_listing_attrs, test_faults)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from s3proxy import ERROR_500, SILENCE, S3Proxy

from pys3fs.headloop import HeadLoop
from pys3fs.quickreq import Declined, QuickRequests, head_answer


@pytest.fixture
def proxy(s3_server):
    proxy = S3Proxy(s3_server.url, seed=7).start()
    try:
        yield proxy
    finally:
        proxy.clear()
        proxy.stop()


@pytest.fixture
def loop(proxy, s3_server, bucket):
    """A HEAD loop of 4 connections to the bucket, through the proxy."""
    server = replace(s3_server, url=proxy.url)
    loop = HeadLoop(QuickRequests(server.client(), bucket, 1.0, 1.0), connections=4)
    try:
        yield loop
    finally:
        loop.close()


def test_many_heads_each_get_their_own_answer(s3, bucket, proxy, loop):
    for i in range(40):
        s3.put_object(Bucket=bucket, Key=f"d/f{i}", Body=b"x" * i, Metadata={"mode": str(i)})
    futures = {f"d/f{i}": loop.submit(f"d/f{i}") for i in range(40)}
    missing = loop.submit("d/nothing")
    for i in range(40):
        headers = futures[f"d/f{i}"].result(30)
        assert headers["content-length"] == str(i)
        assert headers["x-amz-meta-mode"] == str(i)
    assert missing.result(30) is None
    assert proxy.max_in_flight["HEAD"] <= 4
    assert proxy.total["HEAD"] == 41


def test_a_connection_closed_while_idle_is_opened_again(s3, bucket, proxy, loop):
    s3.put_object(Bucket=bucket, Key="f", Body=b"f")
    proxy.idle_timeout = 0.3  # for connections opened after this
    assert loop.submit("f").result(30)["content-length"] == "1"
    time.sleep(1)  # the proxy has closed the loop's connection by now
    assert loop.submit("f").result(30)["content-length"] == "1"


@pytest.mark.parametrize("kind", [ERROR_500, SILENCE])
def test_what_the_loop_cannot_take_is_declined_not_missing(s3, bucket, proxy, loop, kind):
    s3.put_object(Bucket=bucket, Key="f", Body=b"f")
    proxy.inject(1.0, [kind], methods=["HEAD"])
    futures = [loop.submit("f") for _ in range(6)]
    for future in futures:
        with pytest.raises(Declined) as info:
            future.result(30)
        assert info.value.retryable  # a 5xx or a timeout: boto3 retries it
    proxy.clear()
    assert loop.submit("f").result(30)["content-length"] == "1"  # and the loop goes on


def test_answers_are_read_by_status():
    assert head_answer(404, [("X", "y")]) is None
    assert head_answer(200, [("Content-Length", "3")]) == {"content-length": "3"}
    for status, retryable in ((403, False), (412, False), (500, True), (503, True), (429, True)):
        with pytest.raises(Declined) as info:
            head_answer(status, [])
        assert info.value.retryable is retryable, status


def test_closing_declines_what_is_left(s3, bucket, proxy, loop):
    s3.put_object(Bucket=bucket, Key="f", Body=b"f")
    proxy.inject(1.0, [SILENCE], methods=["HEAD"])
    future = loop.submit("f")
    loop.close()
    with pytest.raises(Declined):
        future.result(30)
    with pytest.raises(Declined):
        loop.submit("f").result(30)
