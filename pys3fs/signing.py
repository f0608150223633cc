"""Presigned URLs for HEAD and LIST on one bucket, without boto3's request pipeline.

``client.generate_presigned_url`` runs the whole request pipeline for every URL:
parameter validation, serialisation, endpoint rules, a dozen events. For a HEAD that is
most of the daemon's CPU per entry of a cold ``ls -l``, yet only two parts of the URL
ever change: the key (quoted into the path) and, for a LIST, a few query parameters.

So the client is asked once, with a presign of each operation for a probe key, what it
resolved: the URL of the bucket (scheme, host, path-style or virtual-host addressing),
the signature version, the signing region and name. Each request then builds a botocore
:class:`~botocore.awsrequest.AWSRequest` on that URL and signs it with botocore's own
query signer (:class:`~botocore.auth.S3SigV4QueryAuth`, which the presign would have
used) and the client's current credentials, frozen per request so that refreshed ones
are picked up. The result is the URL the presign would have made.

Whatever the probe cannot vouch for (another signature version, per-request credentials
or identity caches as for S3 Express, an endpoint that puts the key elsewhere) leaves the
caller on ``generate_presigned_url``: :meth:`BucketSigner.head_url` returns None.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

import botocore
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.utils import percent_encode_sequence

log = logging.getLogger("pys3fs.signing")

PROBE_KEY = "pys3fs-probe/key"  # a key with a slash: the probe shows how paths are joined
QUERY_SIGNER = "s3v4-query"  # the signature version botocore presigns S3 with (SigV4)


@dataclass(frozen=True)
class Resolved:
    """What the client resolved for this bucket, learnt from one presign per operation."""

    origin: str  # scheme://host[:port]
    host: str  # the Host header the signature covers
    key_path: str  # path before the quoted key ("/bucket/" or "/")
    list_path: str  # path of a bucket listing ("/bucket" or "/")
    list_query: tuple[tuple[str, str], ...]  # fixed query of a listing (list-type=2, ...)
    list_names: dict[str, str]  # ListObjectsV2 parameter -> query parameter name
    signed: bool  # False for an unsigned client (public buckets)
    region: str
    signing_name: str


class BucketSigner:
    """Builds signed HEAD and LIST URLs for one bucket; thread-safe."""

    def __init__(self, client, bucket: str, lifetime: int) -> None:
        self.client, self.bucket, self.lifetime = client, bucket, lifetime
        self._lock = threading.Lock()
        self._local = threading.local()
        self._resolved: Resolved | None = None
        self._tried = False
        client.meta.events.register("before-sign.s3.HeadObject", self._observe)
        client.meta.events.register("before-sign.s3.ListObjectsV2", self._observe)

    def head_url(self, key: str) -> str | None:
        """The presigned URL of a HEAD of ``key``; None when only the presign can make it."""
        resolved = self._get()
        if resolved is None:
            return None
        return self._sign(resolved, "HEAD", resolved.key_path + quote(key, safe="/~"), {})

    def list_url(self, params: dict) -> str | None:
        """The presigned URL of ``list_objects_v2(**params)``; None when only the presign
        can make it (a parameter this signer does not know how to put in the query)."""
        resolved = self._get()
        if resolved is None or params.get("Bucket") != self.bucket:
            return None
        query = dict(resolved.list_query)
        for name, value in params.items():
            if name == "Bucket":
                continue
            field = resolved.list_names.get(name)
            if field is None or not isinstance(value, (str, int)) or isinstance(value, bool):
                return None
            query[field] = str(value)
        return self._sign(resolved, "GET", resolved.list_path, query)

    def _sign(self, resolved: Resolved, method: str, path: str, query: dict) -> str | None:
        url = resolved.origin + path
        if not resolved.signed:
            return url + ("?" + percent_encode_sequence(query) if query else "")
        credentials = self.client._request_signer._credentials
        if credentials is None:
            return None  # the presign reports that, not this
        request = AWSRequest(method=method, url=url, headers={"host": resolved.host}, params=query)
        auth = S3SigV4QueryAuth(
            credentials.get_frozen_credentials(),
            resolved.signing_name,
            resolved.region,
            expires=self.lifetime,
        )
        auth.add_auth(request)
        return request.url

    # -- learning what the client resolved ------------------------------------------------
    def _get(self) -> Resolved | None:
        if self._tried:
            return self._resolved
        with self._lock:
            if not self._tried:
                try:
                    self._resolved = self._learn()
                except Exception as exc:  # never worse than before: presign each URL
                    log.info("requests are presigned one by one (%s)", exc)
                    self._resolved = None
                self._tried = True
        return self._resolved

    def _learn(self) -> Resolved | None:
        head = self._probe("head_object", {"Bucket": self.bucket, "Key": PROBE_KEY})
        listing = self._probe("list_objects_v2", {"Bucket": self.bucket})
        if head is None or listing is None:
            return None
        head_url, list_url = urlsplit(head.pop("url")), urlsplit(listing.pop("url"))
        tail = "/" + quote(PROBE_KEY, safe="/~")
        if (
            head != listing  # signed alike, with no header of their own
            or head["headers"]
            or (head_url.scheme, head_url.netloc) != (list_url.scheme, list_url.netloc)
            or not head_url.path.endswith(tail)
            or head_url.query
        ):
            log.info("requests are presigned one by one (endpoint %s)", head_url.geturl())
            return None
        origin = f"{head_url.scheme}://{head_url.netloc}"
        return Resolved(
            origin=origin,
            host=signed_host(origin),
            key_path=head_url.path[: -len(tail) + 1],
            list_path=list_url.path,
            list_query=tuple(parse_qsl(list_url.query, keep_blank_values=True)),
            list_names=self._list_query_names(),
            signed=head["version"] is not botocore.UNSIGNED,
            region=head["region"],
            signing_name=head["signing_name"],
        )

    def _list_query_names(self) -> dict[str, str]:
        """ListObjectsV2 parameters that go in the query, by their query names (from the
        service model, as botocore's serialiser takes them)."""
        model = self.client.meta.service_model.operation_model("ListObjectsV2")
        return {
            member: shape.serialization["name"]
            for member, shape in model.input_shape.members.items()
            if shape.serialization.get("location") == "querystring"
        }

    def _probe(self, operation: str, params: dict) -> dict | None:
        """What the client's signing step saw when presigning ``operation`` (no request
        is sent); None when it is not what :meth:`_sign` reproduces."""
        self._local.seen = None
        self._local.observing = True
        try:
            self.client.generate_presigned_url(operation, Params=params, ExpiresIn=self.lifetime)
        finally:
            self._local.observing = False
        seen, self._local.seen = self._local.seen, None
        if seen is None:
            return None
        version = seen["version"]
        if version is not botocore.UNSIGNED and version != QUERY_SIGNER:
            log.info("requests are presigned one by one (signature version %s)", version)
            return None
        return seen

    def _observe(self, request=None, signature_version=None, region_name=None, **kwargs):
        """before-sign: what the request signer is about to sign with, as its ``sign``
        will decide it (the request's signing context first, then the client's)."""
        if not getattr(self._local, "observing", False):
            return
        signing = request.context.get("signing") or {}
        if signing.get("request_credentials") or signing.get("identity_cache") is not None:
            self._local.seen = None  # per-request credentials: only the presign knows them
            return
        self._local.seen = {
            "url": request.url,
            "version": signature_version,
            "region": signing.get("region") or region_name,
            "signing_name": signing.get("signing_name") or kwargs.get("signing_name"),
            "headers": tuple(sorted((k.lower(), v) for k, v in request.headers.items())),
        }


def signed_host(origin: str) -> str:
    """The Host header botocore signs for ``scheme://netloc`` (no default port), which
    is the one to send."""
    return S3SigV4QueryAuth(None, "s3", "").headers_to_sign(AWSRequest(url=origin))["host"]
