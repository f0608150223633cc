"""The HEAD loop (pys3fs.headloop) against a real server, through the fault proxy: every
request gets its own answer, and whatever the loop cannot take is declined (the mount
then asks boto3), never taken for "not found". Listings through a mount use it for
every file they HEAD (test_listing_attrs, test_faults)."""

from __future__ import annotations

import ssl
import time
from dataclasses import replace

import pytest
from s3proxy import DELAY, ERROR_500, SILENCE, S3Proxy, self_signed

from pys3fs.headloop import HeadLoop
from pys3fs.httpconn import ca_setting, tls_context
from pys3fs.quickreq import Declined, QuickRequests, head_answer, object_fields


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


def test_an_unreadable_last_modified_reads_as_absent():
    fields = object_fields({"content-length": "3", "last-modified": "yesterday-ish"})
    assert fields["size"] == 3 and fields["last_modified"] is None
    fields = object_fields({"last-modified": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert fields["last_modified"].timestamp() == 1445412480


def test_closing_declines_what_is_left(s3, bucket, proxy, loop):
    s3.put_object(Bucket=bucket, Key="f", Body=b"f")
    proxy.inject(1.0, [SILENCE], methods=["HEAD"])
    future = loop.submit("f")
    loop.close()
    with pytest.raises(Declined):
        future.result(30)
    with pytest.raises(Declined):
        loop.submit("f").result(30)


@pytest.fixture
def tls_proxy(s3_server, tmp_path, monkeypatch):
    """The proxy speaking HTTPS with a self-signed certificate that the loop's
    connections trust."""
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # trusted by the connections' default context
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    proxy = S3Proxy(s3_server.url, tls=context).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_heads_over_tls(s3, s3_server, bucket, tls_proxy):
    # An https endpoint (as AWS is): the loop reads TLS records off non-blocking sockets.
    proxy = tls_proxy
    for i in range(20):
        s3.put_object(Bucket=bucket, Key=f"f{i}", Body=b"x" * i)
    client = replace(s3_server, url=proxy.url).client()
    quick = QuickRequests(client, bucket, 2.0, 2.0)
    loop = HeadLoop(quick, connections=4)
    try:
        futures = [loop.submit(f"f{i}") for i in range(20)]
        assert [f.result(30)["content-length"] for f in futures] == [str(i) for i in range(20)]
        assert loop.submit("nothing").result(30) is None
        assert quick.enabled  # no TLS failure made the mount give up its quick requests
        assert proxy.total["HEAD"] == 21
    finally:
        loop.close()


def test_a_slow_new_connection_holds_up_no_other_head(s3, s3_server, bucket, tls_proxy):
    # Connecting (name lookup, TLS handshake) takes round trips; the answers that arrive
    # on open connections meanwhile are read all the same.
    for i in range(4):
        s3.put_object(Bucket=bucket, Key=f"f{i}", Body=b"x" * i)
    client = replace(s3_server, url=tls_proxy.url).client()
    loop = HeadLoop(QuickRequests(client, bucket, 20.0, 20.0), connections=2)
    try:
        assert loop.submit("f0").result(30)["content-length"] == "0"  # one connection open
        tls_proxy.inject(1.0, [DELAY], methods=["HEAD"], delay=0.5, limit=1)
        tls_proxy.hold_connections()  # the second connection's handshake waits
        first, second, third = (loop.submit(f"f{i}") for i in (1, 2, 3))
        # first is on the open connection (delayed), second waits for a new one, third
        # goes out on the open connection once first's answer is in
        assert first.result(10)["content-length"] == "1"
        assert third.result(10)["content-length"] == "3"
        assert not second.done()
        tls_proxy.release_connections()
        assert second.result(30)["content-length"] == "2"
    finally:
        tls_proxy.release_connections()
        loop.close()


def test_the_tls_context_is_made_once_per_ca_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    system = tls_context()
    assert tls_context() is system  # not built again for every connection
    cert, _ = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    trusted = tls_context()
    assert trusted is not system and tls_context() is trusted
    subjects = [c["subject"] for c in trusted.get_ca_certs()]
    assert ((("commonName", "127.0.0.1"),),) in subjects


def test_one_ca_setting_for_boto3_and_the_quick_requests(tmp_path, monkeypatch):
    for variable in ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(variable, raising=False)
    system = ssl.get_default_verify_paths().cafile
    assert ca_setting() == (system or True)  # the system's store, not certifi's copy
    assert ca_setting(check_certificate=False) is False
    cert, _ = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    assert ca_setting() == cert
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "bundle.pem"))  # boto3's own variable
    assert ca_setting() == str(tmp_path / "bundle.pem")
    unchecked = tls_context(False)
    assert unchecked.verify_mode == ssl.CERT_NONE and not unchecked.check_hostname
    assert tls_context(cert).verify_mode == ssl.CERT_REQUIRED
    assert tls_context(cert) is tls_context(cert)
