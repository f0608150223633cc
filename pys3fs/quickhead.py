"""HEAD requests at a fifth of boto3's CPU cost, for ``ls -l`` of directories never seen.

A listing carries no user metadata, so the first ``ls -l`` of a directory HEADs every
file. Through boto3 each HEAD costs about 1.5 ms of CPU (parameter checks, events,
serialisation, signing, response parsing), which on a small machine limits a cold
``ls -l`` more than the server does. Here botocore still builds and signs the request,
as a presigned URL (so endpoints, addressing styles, credentials and their refresh stay
botocore's), and the HEAD itself goes out on a plain keep-alive connection of this
thread. Only the two answers that need no interpretation are taken here: 200 and 404.
Anything else (an error status, a timeout, a reset) is left to boto3's ``head_object``,
with its retries and error mapping.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

log = logging.getLogger("pys3fs.quickhead")

META = "x-amz-meta-"
URL_LIFETIME = 900  # seconds; a URL is used at once


class Declined(Exception):
    """This HEAD is for boto3 to make (with its retries and error mapping)."""

    def __init__(self, retryable: bool) -> None:
        super().__init__()
        self.retryable = retryable  # a 5xx, 429, timeout or broken connection


class QuickHead:
    """HEAD through presigned URLs on per-thread keep-alive connections."""

    def __init__(self, client, bucket: str, connect_timeout: float, read_timeout: float):
        self.client, self.bucket = client, bucket
        self.timeout = max(connect_timeout, read_timeout)
        self._local = threading.local()
        self.enabled = True

    def head(self, key: str) -> dict[str, str] | None:
        """The response headers (names in lower case), None for a 404; raises
        :class:`Declined` for anything else."""
        url = self.client.generate_presigned_url(
            "head_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=URL_LIFETIME
        )
        parts = urlsplit(url)
        target = parts.path + ("?" + parts.query if parts.query else "")
        conn = self._connection(parts.scheme, parts.netloc)
        try:
            try:
                reused = conn.sock is not None
                conn.request("HEAD", target)
                resp = conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected):
                if not reused:
                    raise
                conn.close()  # the server closed a connection idle here: once more, anew
                conn.request("HEAD", target)
                resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if isinstance(exc, ssl.SSLError):  # botocore's CA bundle differs: leave HEADs to it
                log.info("HEAD requests go through boto3 only (TLS: %s)", exc)
                self.enabled = False
            log.debug("quick HEAD %s failed (%s): boto3 asks again", key, exc)
            raise Declined(retryable=True) from exc
        if resp.will_close:
            conn.close()
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise Declined(retryable=resp.status >= 500 or resp.status == 429)
        return {name.lower(): value for name, value in resp.getheaders()}

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get((scheme, netloc))
        if conn is None:
            kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = conns[(scheme, netloc)] = kind(netloc, timeout=self.timeout)
        return conn


def object_fields(headers: dict[str, str]) -> dict:
    """What :class:`~pys3fs.s3client.ObjectInfo` needs, from HEAD response headers."""
    modified = headers.get("last-modified")
    return {
        "size": int(headers.get("content-length") or 0),
        "etag": headers.get("etag"),
        "last_modified": parsedate_to_datetime(modified) if modified else None,
        "metadata": {k[len(META) :]: v for k, v in headers.items() if k.startswith(META)},
        "content_type": headers.get("content-type"),
    }
