"""Presigned URLs for HEAD, LIST, PUT and COPY on one bucket, without boto3's request
pipeline.

``client.generate_presigned_url`` runs the whole request pipeline for every URL:
parameter validation, serialisation, endpoint rules, a dozen events, then botocore's
signer, which builds a request object and derives the signing key anew. For a HEAD that
is most of the daemon's CPU per entry of a cold ``ls -l``, and a third of it per file
of an untar, yet only a few parts of the URL ever change: the key (quoted into the
path), a LIST's query parameters, a write's headers.

So the client is asked once, with a presign of each operation for a probe key, what it
resolved: the URL of the bucket (scheme, host, path-style or virtual-host addressing),
the signature version, the signing region and name. Each request is then signed by
:func:`presign_v4`, the computation of botocore's query signer
(:class:`~botocore.auth.S3SigV4QueryAuth`, the one the presign uses) with the derived
key kept per day, using the client's current credentials, frozen per request so that
refreshed ones are picked up. A write's headers are serialised from the service model
as botocore's serialiser does. The result is the URL (and headers) the presign would
have made; tests compare the two with the clock frozen.

Whatever the probe cannot vouch for (another signature version, per-request credentials
or identity caches as for S3 Express, an endpoint that puts the key elsewhere, a
parameter this module does not serialise) leaves the caller on
``generate_presigned_url``: the methods of :class:`BucketSigner` return None.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import threading
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

import botocore
import botocore.auth
from botocore.auth import (
    SIGNED_HEADERS_BLACKLIST,
    SIGV4_TIMESTAMP,
    UNSIGNED_PAYLOAD,
    S3SigV4QueryAuth,
)
from botocore.awsrequest import AWSRequest
from botocore.utils import SAFE_CHARS, percent_encode, percent_encode_sequence

log = logging.getLogger("pys3fs.signing")

# the writes whose headers this module serialises (from the service model), by the
# client method name quickreq uses
WRITES = {"put_object": "PutObject", "copy_object": "CopyObject"}
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"  # botocore drops it
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
    # client method of a write -> {parameter: (location, header name or prefix)}
    write_headers: dict[str, dict[str, tuple[str, str]]]
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

    def write_request(self, operation: str, params: dict) -> tuple[str, dict[str, str]] | None:
        """The presigned URL of ``put_object``/``copy_object(**params)`` and the headers
        to send with it (the signature covers them), as the presign makes them; None
        when only the presign can (a parameter this signer does not serialise)."""
        resolved = self._get()
        if resolved is None or params.get("Bucket") != self.bucket or "Key" not in params:
            return None
        headers = _write_headers(resolved.write_headers[operation], params)
        if headers is None:
            return None
        path = resolved.key_path + quote(params["Key"], safe="/~")
        url = self._sign(resolved, "PUT", path, {}, headers)
        return (url, headers) if url is not None else None

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

    def _sign(
        self,
        resolved: Resolved,
        method: str,
        path: str,
        query: dict,
        headers: dict[str, str] | None = None,
    ) -> str | None:
        if not resolved.signed:
            return resolved.origin + path + ("?" + percent_encode_sequence(query) if query else "")
        # botocore keeps the client's (refreshing) credentials here and has no public
        # accessor; should that change, every URL is presigned by botocore instead
        signer = getattr(self.client, "_request_signer", None)
        credentials = getattr(signer, "_credentials", None)
        if credentials is None or not hasattr(credentials, "get_frozen_credentials"):
            return None  # (no credentials: the presign reports that, not this)
        return presign_v4(
            method,
            resolved.origin,
            path,
            query,
            {"host": resolved.host, **(headers or {})},
            credentials.get_frozen_credentials(),
            (resolved.region, resolved.signing_name),
            self.lifetime,
        )

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
            list_names={
                member: name
                for member, (_, name) in self._members("ListObjectsV2", "querystring").items()
            },
            write_headers={
                method: self._members(operation, "header", "headers")
                for method, operation in WRITES.items()
            },
            signed=head["version"] is not botocore.UNSIGNED,
            region=head["region"],
            signing_name=head["signing_name"],
        )

    def _members(self, operation: str, *locations: str) -> dict[str, tuple[str, str]]:
        """``operation``'s parameters serialised to ``locations`` (querystring, header,
        headers), as (location, name) from the service model as botocore's serialiser
        takes them; of single headers, only strings (others it formats)."""
        model = self.client.meta.service_model.operation_model(operation)
        found = {}
        for member, shape in model.input_shape.members.items():
            location = shape.serialization.get("location")
            if location in locations and (location != "header" or shape.type_name == "string"):
                found[member] = (location, shape.serialization["name"])
        return found

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


def _write_headers(members: dict[str, tuple[str, str]], params: dict) -> dict[str, str] | None:
    """The headers botocore serialises a write's ``params`` into (``members``: the
    operation's header members, CopySource quoted as its handler does); None for
    anything else."""
    headers: dict[str, str] = {}
    for name, value in params.items():
        if name in ("Bucket", "Key"):
            continue
        if name == "CopySource":
            value = _copy_source(value)
        where = members.get(name)
        if where is None or value is None:
            return None
        location, header = where
        if location == "header" and isinstance(value, str):
            headers[header] = value
        elif location == "headers" and isinstance(value, dict):
            for key, item in value.items():
                # botocore refuses non-ASCII metadata: the presign raises that
                if not (isinstance(key, str) and isinstance(item, str)):
                    return None
                if not (key.isascii() and item.isascii()):
                    return None
                headers[header + key] = item
        else:
            return None
    names = {name.lower() for name in headers}
    if len(names) < len(headers) or names & {"host", *SIGNED_HEADERS_BLACKLIST}:
        return None  # repeated or unsigned header names: the presign knows
    if headers.get("Content-Type") == FORM_CONTENT_TYPE:
        return None
    return headers


def _copy_source(source) -> str | None:
    """CopySource as botocore's handler quotes it, for the {Bucket, Key} form only."""
    if not isinstance(source, dict) or set(source) != {"Bucket", "Key"}:
        return None
    bucket, key = source["Bucket"], source["Key"]
    if not (isinstance(bucket, str) and isinstance(key, str)) or bucket.startswith("arn:"):
        return None
    return percent_encode(f"{bucket}/{key}", safe=SAFE_CHARS + "/")


@functools.lru_cache(maxsize=16)
def signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    """SigV4's derived key: four HMACs that only change with the day, so kept."""
    key = f"AWS4{secret}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


@functools.lru_cache(maxsize=8)
def _auth_query(
    access_key: str, token: str | None, scope: str, stamp: str, lifetime: int, signed: str
) -> tuple[str, str]:
    """The X-Amz-* query of a presigned URL, and its canonical (sorted) form: the same
    for every request of one second, and a HEAD has no other query (kept: a listing's
    ``ls -l`` signs thousands of HEADs a second)."""
    auth = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": stamp,
        "X-Amz-Expires": lifetime,
        "X-Amz-SignedHeaders": signed,
    }
    if token is not None:
        auth["X-Amz-Security-Token"] = token
    query_string = percent_encode_sequence(auth)
    return query_string, _canonical_query(query_string)


def _canonical_query(query_string: str) -> str:
    """SigV4's canonical query: the encoded pairs sorted by name, then value."""
    pairs = sorted(pair.partition("=")[::2] for pair in query_string.split("&"))
    return "&".join(f"{key}={value}" for key, value in pairs)


def presign_v4(
    method: str,
    origin: str,
    path: str,
    query: dict,
    headers: dict[str, str],
    credentials,
    scope: tuple[str, str],
    lifetime: int,
) -> str:
    """The URL :class:`~botocore.auth.S3SigV4QueryAuth` makes of a request to ``origin``
    (scheme://host[:port]) and ``path`` (quoted) with ``query`` and ``headers``
    (``host`` among them): the same canonical request, string to sign and signature,
    without a request object, and with the derived key kept. ``credentials`` are frozen
    ones; ``scope`` is (region, signing name). botocore's clock is read as its signer
    reads it."""
    region, service = scope
    stamp = botocore.auth.get_current_datetime().strftime(SIGV4_TIMESTAMP)
    day = stamp[:8]
    credential_scope = f"{day}/{region}/{service}/aws4_request"
    canonical = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    names = sorted(canonical)
    signed_headers = ";".join(names)
    query_string, canonical_query = _auth_query(
        credentials.access_key, credentials.token, credential_scope, stamp, lifetime, signed_headers
    )
    if query:
        query_string = percent_encode_sequence(query) + "&" + query_string
        canonical_query = _canonical_query(query_string)
    request = "\n".join(
        [
            method,
            path,
            canonical_query,
            "".join(f"{name}:{canonical[name]}\n" for name in names),
            signed_headers,
            UNSIGNED_PAYLOAD,
        ]
    )
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            stamp,
            credential_scope,
            hashlib.sha256(request.encode()).hexdigest(),
        ]
    )
    key = signing_key(credentials.secret_key, day, region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{origin}{path}?{query_string}&X-Amz-Signature={signature}"


def signed_host(origin: str) -> str:
    """The Host header botocore signs for ``scheme://netloc`` (no default port), which
    is the one to send."""
    return S3SigV4QueryAuth(None, "s3", "").headers_to_sign(AWSRequest(url=origin))["host"]
