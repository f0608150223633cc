"""HEAD, small LIST, PUT and COPY requests at a fraction of boto3's CPU cost.

HEAD, for ``ls -l`` of directories never seen:
A listing carries no user metadata, so the first ``ls -l`` of a directory HEADs every
file. Through boto3 each HEAD costs about 1.5 ms of CPU (parameter checks, events,
serialisation, signing, response parsing), which on a small machine limits a cold
``ls -l`` more than the server does. Here botocore still signs the request, as a
presigned URL: :mod:`pys3fs.signing` builds it on the bucket URL the client resolved and
signs it with botocore's query signer and the client's credentials (so endpoints,
addressing styles, credentials and their refresh stay botocore's), and the HEAD itself
goes out on a plain keep-alive connection of this thread (:mod:`pys3fs.httpconn`).
Only the two answers that need no interpretation are taken here: 200 and 404.
Anything else (an error status, a timeout, a reset) is left to boto3's ``head_object``,
with its retries and error mapping.

LIST of a few keys, the probe of a name nobody has seen (each ``create`` makes one):
the same, and the page is parsed by :func:`pys3fs.s3client.parse_listing`.

PUT, for small files (each costs about 2 ms of boto3 CPU, more than the rest of a
file's create, write and close in the daemon): botocore presigns ``put_object`` with
the very parameters the boto3 call would have (metadata, content type, conditional
headers, storage class); the headers it signed are sent with exactly the signed values,
the body follows. Only a 200 is taken; a 412, any other status, a timeout or a reset
goes to boto3's ``put_object``, which maps errors, treats 412 as a conflict and retries.
CopyObject of small objects (the metadata rewrite of ``chmod`` or ``utime`` after a
close, as ``tar`` does for every file) goes the same way; its 200 must carry a result.
"""

from __future__ import annotations

import logging
import select
import ssl
import threading
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit
from xml.etree import ElementTree

from .httpconn import Connection, ConnectionDropped, HTTPError, Response
from .metadata import KEPT_HEADERS
from .signing import BucketSigner, signed_host

log = logging.getLogger("pys3fs.quickreq")

META = "x-amz-meta-"
URL_LIFETIME = 900  # seconds; a URL is used at once
PUT_MAX = 1024 * 1024  # bigger bodies go through boto3 (its streaming costs little per byte)


class Declined(Exception):
    """This request is for boto3 to make (with its retries and error mapping)."""

    def __init__(self, retryable: bool) -> None:
        super().__init__()
        self.retryable = retryable  # a 5xx, 429, timeout or broken connection


class QuickRequests:
    """HEAD, small LIST, PUT and COPY through presigned URLs on per-thread keep-alive
    connections."""

    def __init__(
        self,
        client,
        bucket: str,
        connect_timeout: float,
        read_timeout: float,
        verify: bool | str = True,
    ):
        self.client, self.bucket = client, bucket
        self.verify = verify  # the CA setting of the client's own connections
        self.timeout = max(connect_timeout, read_timeout)
        self._local = threading.local()
        self.enabled = True
        self.signer = BucketSigner(client, bucket, URL_LIFETIME)
        # The request botocore signs while presigning holds the headers it signed.
        for operation in ("PutObject", "CopyObject"):
            client.meta.events.register(f"before-sign.s3.{operation}", self._take_request)

    def _take_request(self, request=None, **_kwargs) -> None:
        if getattr(self._local, "presigning", False):  # not boto3's own requests
            self._local.request = request

    def head(self, key: str) -> dict[str, str] | None:
        """The response headers (names in lower case), None for a 404; raises
        :class:`Declined` for anything else."""
        resp = self._fetch("HEAD", "head_object", {"Bucket": self.bucket, "Key": key})
        return head_answer(resp.status, resp.headers)

    def list(self, params: dict) -> bytes:
        """The body of a 200 answer to ``list_objects_v2(**params)``; raises
        :class:`Declined` for anything else."""
        resp = self._fetch("GET", "list_objects_v2", params)
        _require_status(resp.status)
        return resp.body

    def _fetch(self, method: str, operation: str, params: dict) -> Response:
        """The answer to a request that may be repeated (a HEAD, a GET)."""
        conn, target = self._connection(self._url(operation, params))
        try:
            try:
                reused = conn.sock is not None
                return conn.request(method, target)
            except (ConnectionError, ConnectionDropped):
                if not reused:
                    raise
                # the server closed a connection idle here: once more, anew
                return conn.request(method, target)
        except (OSError, HTTPError) as exc:
            self.failed(conn, exc)
            log.debug("quick %s %s failed (%s): boto3 asks again", method, params, exc)
            raise Declined(retryable=True) from exc

    def _url(self, operation: str, params: dict) -> str:
        """The presigned URL: from :class:`~pys3fs.signing.BucketSigner` where it can make
        it (a fraction of the presign's CPU), else from the client's presign."""
        if operation == "head_object":
            url = self.signer.head_url(params["Key"])
        else:
            url = self.signer.list_url(params)
        if url is None:
            url = self.client.generate_presigned_url(
                operation, Params=dict(params), ExpiresIn=URL_LIFETIME
            )
        return url

    def put(self, params: dict, body: bytes) -> str | None:
        """PUT ``body`` as ``put_object(Body=body, **params)`` would; the ETag of a 200.
        Raises :class:`Declined` for anything else (a 412 included)."""
        return self._send_signed("put_object", params, body).getheader("ETag")

    def copy(self, params: dict) -> str:
        """``copy_object(**params)``; the new ETag. A 200 whose body is no copy result
        (S3 reports some failures that way) is :class:`Declined` like any error."""
        body = self._send_signed("copy_object", params, b"").body
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError as exc:
            raise Declined(retryable=True) from exc
        namespace = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        etag = root.findtext(namespace + "ETag")
        if not root.tag.endswith("CopyObjectResult") or not etag:
            raise Declined(retryable=True)
        return etag

    def _send_signed(self, operation: str, params: dict, body: bytes) -> Response:
        """The 200 answer to a write whose signed headers botocore chose; the request is
        made once (a write is not repeated here)."""
        made = self.signer.write_request(operation, params)
        url, headers = made if made is not None else self._presign_write(operation, params)
        conn, target = self._connection(url)
        if conn.sock is not None and _closed_while_idle(conn.sock):
            conn.close()  # reopened before sending, since a failed write is not repeated
        try:
            resp = conn.request("PUT", target, headers, body)
        except (OSError, HTTPError, ValueError) as exc:
            self.failed(conn, exc)
            log.debug("quick %s %s failed (%s): boto3 tries again", operation, params["Key"], exc)
            # a header value HTTP cannot carry is boto3's to send (or refuse)
            raise Declined(retryable=not isinstance(exc, ValueError)) from exc
        _require_status(resp.status)
        return resp

    def _presign_write(self, operation: str, params: dict) -> tuple[str, dict[str, str]]:
        """The presigned URL of a write and the headers botocore signed with it."""
        self._local.request, self._local.presigning = None, True
        try:
            url = self.client.generate_presigned_url(
                operation, Params=dict(params), ExpiresIn=URL_LIFETIME
            )
        finally:
            self._local.presigning = False
        signed, self._local.request = self._local.request, None
        if signed is None:  # botocore signed elsewhere than expected: let boto3 do it
            raise Declined(retryable=False)
        headers = {name: _text(value) for name, value in signed.headers.items()}
        headers.pop("Host", None)
        return url, headers

    def head_target(self, key: str) -> tuple[str, str]:
        """The origin (scheme, host, port) and request target of a HEAD of ``key``."""
        return _split_url(self._url("head_object", {"Bucket": self.bucket, "Key": key}))

    def new_connection(self, origin: str) -> Connection:
        """A connection to ``origin`` (opened at its first request)."""
        parts = urlsplit(origin)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = signed_host(origin)
        return Connection(parts.scheme, parts.hostname, port, host, self.timeout, self.verify)

    def _connection(self, url: str) -> tuple[Connection, str]:
        """This thread's kept-alive connection to ``url``'s server, and the request
        target (path and query)."""
        origin, target = _split_url(url)
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(origin)
        if conn is None:
            conn = conns[origin] = self.new_connection(origin)
        return conn, target

    def failed(self, conn: Connection, exc: Exception) -> None:
        """A request that got no answer: its connection is dropped, and a TLS failure
        (both stacks trust the same CAs, see httpconn.ca_setting, but TLS libraries may
        still differ) leaves all requests to boto3."""
        conn.close()
        if isinstance(exc, ssl.SSLError):
            log.info("requests go through boto3 only (TLS: %s)", exc)
            self.enabled = False


def _split_url(url: str) -> tuple[str, str]:
    """A URL's origin and its request target (path and query)."""
    start = url.index("://") + 3
    ends = [i for i in (url.find("/", start), url.find("?", start)) if i >= 0]
    cut = min(ends, default=len(url))
    origin, target = url[:cut], url[cut:]
    return origin, target if target.startswith("/") else "/" + target


def head_answer(status: int, headers: list[tuple[str, str]]) -> dict[str, str] | None:
    """A HEAD's headers (names in lower case), None for a 404; :class:`Declined` for
    anything else."""
    if status == 404:
        return None
    _require_status(status)
    return {name.lower(): value for name, value in headers}


def _require_status(status: int) -> None:
    """Anything but a 200 is boto3's to make again: with retries for a 5xx or 429."""
    if status != 200:
        raise Declined(retryable=status >= 500 or status == 429)


def _text(value) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _closed_while_idle(sock) -> bool:
    """An idle keep-alive connection that has something to read was closed by the
    server (or is broken): nothing else arrives unasked."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def object_fields(headers: dict[str, str]) -> dict:
    """What :class:`~pys3fs.s3client.ObjectInfo` needs, from HEAD response headers."""
    return {
        "size": int(headers.get("content-length") or 0),
        "etag": headers.get("etag"),
        "last_modified": http_date(headers.get("last-modified")),  # unreadable: as absent
        "metadata": {k[len(META) :]: v for k, v in headers.items() if k.startswith(META)},
        "content_type": headers.get("content-type"),
        "answered": http_date(headers.get("date")),
        "headers": {k: headers[h] for k, h in KEPT_HEADERS.items() if headers.get(h)},
    }


def http_date(value: str | None) -> datetime | None:
    """An HTTP date header as a datetime; None when absent or unreadable."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
