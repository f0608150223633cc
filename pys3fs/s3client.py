"""The S3 client layer: every request pys3fs makes goes through :class:`Backend`.

It hides boto3's shapes behind a few verbs (head, list, get, put, copy, delete), turns
S3 errors into errnos in one place, and hands large transfers to s3transfer so parallel
multipart uploads and copies need no thread code here.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import io
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.parse import unquote_plus
from xml.etree import ElementTree

import boto3
import botocore.exceptions
import botocore.handlers
import botocore.session
import botocore.utils
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config
from fuse import FuseOSError

from .credentials import Credentials
from .headloop import HeadLoop
from .metadata import KEPT_HEADERS
from .quickreq import PUT_MAX, Declined, QuickRequests, http_date, object_fields
from .stats import RequestStats

log = logging.getLogger("pys3fs.s3")
T = TypeVar("T")

NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
DENIED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


@dataclass
class ObjectInfo:
    """What a HEAD (or a listing, with empty metadata) says about one object."""

    key: str
    size: int
    etag: str | None
    last_modified: datetime | None
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    answered: datetime | None = None  # the server's Date on the answer that said this
    headers: dict[str, str] = field(default_factory=dict)  # metadata.KEPT_HEADERS given

    @property
    def mtime_ns(self) -> int:
        if self.last_modified is None:
            return 0
        return int(self.last_modified.timestamp() * 1_000_000_000)


class ConflictError(Exception):
    """The object changed on S3 since this host opened it: a write would overwrite
    another writer's data, so it is refused."""


@dataclass(frozen=True)
class Precondition:
    """What the object on S3 must be for a write to go ahead (S3 conditional writes)."""

    etag: str | None = None  # If-Match: still the version this host opened
    absent: bool = False  # If-None-Match: *: nobody created it meanwhile


@dataclass
class ListPage:
    """One ListObjectsV2 page: sub-prefixes and objects directly below a prefix."""

    prefixes: list[str]
    objects: list[ObjectInfo]
    truncated: bool = False  # more keys follow (with or without a continuation token)


@dataclass
class ClientSettings:
    """Connection settings taken from the mount options."""

    bucket: str
    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False
    credentials: Credentials | None = None
    unsigned: bool = False
    profile: str | None = None
    retries: int = 5
    # "adaptive": standard retries with backoff, plus a client-side rate limit that kicks
    # in after throttling answers (503 SlowDown) and eases off as requests succeed.
    retry_mode: str = "adaptive"
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_pool: int = 32
    multipart_size: int = 16 * 1024 * 1024
    max_concurrency: int = 8
    storage_class: str | None = None
    acl: str | None = None  # default_acl: a canned ACL (None: private, no header)
    # CA setting of every connection (httpconn.ca_setting): True, a bundle, False
    verify: bool | str = True
    sse: str | None = None  # use_sse: "AES256" (SSE-S3) or "aws:kms"
    sse_kms_key: str | None = None  # use_sse=kmsid:ID
    content_md5: bool = False  # enable_content_md5: every PUT and part carries its MD5


def norm_etag(etag: str | None) -> str | None:
    """One spelling for ETags: servers differ in quoting them (Ceph's CopyObject result
    has none), and conditional writes compare them."""
    if not etag:
        return None
    return '"' + etag.strip('"') + '"'


def listed_object(entry: dict) -> ObjectInfo:
    """An object of a ListObjectsV2 result as botocore parsed it (no metadata)."""
    return ObjectInfo(
        key=entry["Key"],
        size=entry.get("Size", 0),
        etag=norm_etag(entry.get("ETag")),
        last_modified=entry.get("LastModified"),
    )


def error_code(exc: BaseException) -> str:
    """The S3 error code of a ClientError ('' for anything else)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return str(
            err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        )
    return ""


def is_not_found(exc: BaseException) -> bool:
    """Only a real 404 means "not found": 5xx, resets and timeouts never do."""
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or error_code(exc) in NOT_FOUND_CODES


def is_precondition_failure(exc: BaseException) -> bool:
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status in (409, 412) or error_code(exc) in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
    )


def errno_for(exc: BaseException) -> int:
    """Map an exception from boto3 to the errno a POSIX caller should see."""
    if is_not_found(exc):
        return errno.ENOENT
    if error_code(exc) in DENIED_CODES:
        return errno.EACCES
    if error_code(exc) in ("EntityTooLarge",):
        return errno.EFBIG
    return errno.EIO


def read_into(body, view: memoryview) -> int:
    """Fill ``view`` from a GetObject body; 0 only at its end.

    Reads straight from the HTTP response under botocore's StreamingBody when there is
    one (the bytes go from the socket into ``view``, with no intermediate objects);
    otherwise through ``body.read``. A body cut short raises (IncompleteRead)."""
    raw = getattr(body, "_raw_stream", None)
    fp = getattr(raw, "_fp", None)
    if not isinstance(fp, http.client.HTTPResponse):
        data = body.read(len(view))
        view[: len(data)] = data
        return len(data)
    done = 0
    while done < len(view):
        n = fp.readinto(view[done:])
        if not n:
            break
        done += n
    if fp.isclosed():  # all of it read: the connection goes back to the pool
        raw.release_conn()
    return done


def parse_timestamp(value):
    """Dates as S3 sends them (ISO 8601 in listings, RFC 1123 in headers), parsed without
    dateutil, which takes a third of the time of reading a listing page; anything else
    goes to botocore's own parser."""
    if isinstance(value, str):
        try:
            if value.endswith("Z"):
                return datetime.fromisoformat(value)
            if value.endswith(" GMT"):
                return parsedate_to_datetime(value)
        except ValueError:
            pass
    return botocore.utils.parse_timestamp(value)


EMPTY_LISTING = b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult></ListBucketResult>'


def url_decode(text: str) -> str:
    """A key as ListObjectsV2 sends it with EncodingType=url (most need no decoding)."""
    return unquote_plus(text) if "%" in text or "+" in text else text


def parse_listing(body: bytes) -> tuple[ListPage, str | None]:
    """A ListObjectsV2 response body: its page, and the token of the next one if any."""
    root = ElementTree.fromstring(body)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    # botocore asks for url-encoded keys (EncodingType=url): decoded as botocore does
    decode = url_decode if root.findtext(ns + "EncodingType") == "url" else str
    key, size, etag, modified = ns + "Key", ns + "Size", ns + "ETag", ns + "LastModified"
    objects = []
    for item in root.iterfind(ns + "Contents"):
        date = item.findtext(modified)
        objects.append(
            ObjectInfo(
                key=decode(item.findtext(key) or ""),
                size=int(item.findtext(size) or 0),
                etag=norm_etag(item.findtext(etag)),
                last_modified=parse_timestamp(date) if date else None,
            )
        )
    prefixes = [
        decode(p.findtext(ns + "Prefix") or "") for p in root.iterfind(ns + "CommonPrefixes")
    ]
    truncated = (root.findtext(ns + "IsTruncated") or "").strip().lower() == "true"
    token = root.findtext(ns + "NextContinuationToken") if truncated else None
    return ListPage(prefixes=prefixes, objects=objects, truncated=truncated), token


def _listing_200_error(operation_model, response_dict, **kwargs):
    """botocore parses every XML response body twice: once to see whether a 200 is an
    error in disguise (or a cut-off body), once for real. A listing that ends with its
    closing tag is neither, which spares the first parse of every page."""
    if operation_model.name == "ListObjectsV2":
        body = response_dict.get("body") or b""
        if response_dict.get("status_code") == 200 and body.rstrip().endswith(
            b"</ListBucketResult>"
        ):
            return
    botocore.handlers._handle_200_error(operation_model, response_dict, **kwargs)


def _speed_up_listings(client) -> None:
    """Use :func:`_listing_200_error` instead of botocore's check, where it has one."""
    original = getattr(botocore.handlers, "_handle_200_error", None)
    if original is None:
        return
    client.meta.events.unregister("before-parse.s3.*", original)
    client.meta.events.register_first("before-parse.s3.*", _listing_200_error)


def make_client(settings: ClientSettings):
    """A thread-safe boto3 S3 client built from the mount settings."""
    config = Config(
        # total_max_attempts counts the first try (botocore's max_attempts does not)
        retries={"total_max_attempts": settings.retries + 1, "mode": settings.retry_mode},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=settings.max_pool,
        s3={"addressing_style": "path" if settings.path_style else "auto"},
        # SigV4 for presigned URLs too (botocore presigns with SigV2 unless told)
        signature_version=UNSIGNED if settings.unsigned else "s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    kwargs = {}
    if settings.credentials is not None:
        kwargs = {
            "aws_access_key_id": settings.credentials.access_key,
            "aws_secret_access_key": settings.credentials.secret_key,
            "aws_session_token": settings.credentials.session_token,
        }
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parse_timestamp
    )
    session = boto3.session.Session(
        botocore_session=core,
        profile_name=settings.profile if settings.credentials is None else None,
    )
    client = session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        verify=settings.verify,
        region_name=settings.region or "us-east-1",
        config=config,
        **kwargs,
    )
    _speed_up_listings(client)
    return client


def content_md5(body) -> str:
    """Content-MD5 of a seekable body (read a megabyte at a time, then rewound), so the
    server refuses bytes that changed on the way (enable_content_md5)."""
    body.seek(0)
    digest = hashlib.file_digest(body, lambda: hashlib.md5(usedforsecurity=False))
    body.seek(0)
    return base64.b64encode(digest.digest()).decode()


def _head_info(key: str, headers: dict[str, str] | None) -> ObjectInfo | None:
    if headers is None:
        return None
    fields = object_fields(headers)
    return ObjectInfo(key=key, **fields | {"etag": norm_etag(fields["etag"])})


def _settle(future: Future, call: Callable, *args) -> None:
    """Complete ``future`` with what ``call(*args)`` returns or raises."""
    try:
        future.set_result(call(*args))
    except Exception as exc:
        future.set_exception(exc)


class Backend:
    """Object operations on one bucket; all methods are safe to call from many threads."""

    def __init__(self, settings: ClientSettings, client=None) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.client = client or make_client(settings)
        self._unquoted_if_match = False
        self.stats = RequestStats()
        self.stats.attach(self.client)
        self._lock = threading.Lock()
        self._retrying = None
        self._quick = QuickRequests(
            self.client,
            self.bucket,
            settings.connect_timeout,
            settings.read_timeout,
            settings.verify,
        )
        self._heads = HeadLoop(self._quick, settings.max_pool)
        self._listing = threading.local()  # the body of this thread's last listing page
        self.client.meta.events.register("before-parse.s3.ListObjectsV2", self._take_listing)
        self.transfer_config = TransferConfig(
            multipart_threshold=settings.multipart_size,
            multipart_chunksize=settings.multipart_size,
            max_concurrency=settings.max_concurrency,
            use_threads=True,
        )

    # -- reads ---------------------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo | None:
        """HEAD one key; None only for a 404, any other failure raises."""
        headers, client = self._try_quick("HEAD", lambda: self._quick.head(key))
        if client is None:
            return _head_info(key, headers)
        return self._head_boto(client, key)

    def head_soon(self, key: str, pool: ThreadPoolExecutor) -> Future:
        """:meth:`head` as a future, made by the HEAD loop (:mod:`pys3fs.headloop`)
        alongside many others; what the loop declines, boto3 asks on ``pool``."""
        if not self._quick.enabled:
            return pool.submit(self.head, key)
        answer: Future = Future()

        def arrived(quick: Future) -> None:
            declined = quick.exception()
            if isinstance(declined, Declined):
                try:
                    pool.submit(_settle, answer, self._head_declined, key, declined)
                except RuntimeError as exc:  # the pool is shut down: unmounting
                    answer.set_exception(exc)
                return
            self.stats.count("HEAD")
            _settle(answer, _head_info, key, quick.result())

        self._heads.submit(key).add_done_callback(arrived)
        return answer

    def _head_declined(self, key: str, declined: Declined) -> ObjectInfo | None:
        return self._head_boto(self._client_after(declined, "HEAD"), key)

    def _head_boto(self, client, key: str) -> ObjectInfo | None:
        try:
            resp = client.head_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        return ObjectInfo(
            key=key,
            size=resp.get("ContentLength", 0),
            etag=norm_etag(resp.get("ETag")),
            last_modified=resp.get("LastModified"),
            metadata=dict(resp.get("Metadata") or {}),
            content_type=resp.get("ContentType"),
            answered=http_date(resp["ResponseMetadata"].get("HTTPHeaders", {}).get("date")),
            headers={k: resp[k] for k in KEPT_HEADERS if resp.get(k)},
        )

    def _retry_client(self):
        """A client that makes one attempt fewer: for a request whose first attempt was
        made without boto3, so that ``retries=N`` still means N retries."""
        with self._lock:
            if self._retrying is None:
                settings = replace(self.settings, retries=self.settings.retries - 1)
                self._retrying = make_client(settings)
                self.stats.attach(self._retrying)
            return self._retrying

    def list_pages(self, prefix: str, delimiter: str | None = "/") -> Iterator[ListPage]:
        """Every ListObjectsV2 page below ``prefix`` (a directory of 100k keys lists whole).

        The next page is requested while the caller works on this one."""
        pages = self._list_pages(prefix, delimiter)
        with ThreadPoolExecutor(1, thread_name_prefix="pys3fs-list") as ahead:
            coming = ahead.submit(next, pages, None)
            while (page := coming.result()) is not None:
                coming = ahead.submit(next, pages, None)
                yield page

    def _list_pages(self, prefix: str, delimiter: str | None) -> Iterator[ListPage]:
        kwargs = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        while True:
            self._listing.body, self._listing.take = None, True
            try:
                resp = self.client.list_objects_v2(**kwargs)
            finally:
                self._listing.take = False
            if self._listing.body is not None:  # taken before botocore's parser saw it
                page, token = parse_listing(self._listing.body)
            else:
                page = ListPage(
                    prefixes=[p["Prefix"] for p in resp.get("CommonPrefixes", [])],
                    objects=[listed_object(o) for o in resp.get("Contents", [])],
                )
                token = resp.get("NextContinuationToken") if resp.get("IsTruncated") else None
            yield page
            if not token:
                return
            kwargs["ContinuationToken"] = token

    def _take_listing(self, response_dict, **kwargs) -> None:
        """A complete ListObjectsV2 page is read by :func:`parse_listing`, 3 times faster
        than botocore's parser: botocore is handed an empty listing instead."""
        if not getattr(self._listing, "take", False):
            return  # a listing of another kind (first_keys) wants botocore's result
        body = response_dict.get("body") or b""
        if response_dict.get("status_code") == 200 and body.rstrip().endswith(
            b"</ListBucketResult>"
        ):
            self._listing.body = body
            response_dict["body"] = EMPTY_LISTING

    def first_keys(self, prefix: str, count: int = 2) -> list[str]:
        """Up to ``count`` keys below ``prefix``: enough to tell empty from not empty."""
        return [o.key for o in self.first_objects(prefix, count)]

    def first_objects(self, prefix: str, count: int = 2) -> list[ObjectInfo]:
        """Up to ``count`` objects below ``prefix``, with their sizes (no metadata)."""
        return self._small_listing(Prefix=prefix, MaxKeys=count).objects

    def probe(self, key: str) -> tuple[bool, bool] | None:
        """One LIST that tells whether ``key`` is an object and whether keys exist below
        ``key/`` (a directory): (is_file, is_dir). None when the page ran out before
        ``key/`` could show up (many siblings such as ``key!x``): ask another way."""
        page = self._small_listing(Prefix=key, Delimiter="/", MaxKeys=3)
        names, prefixes = [o.key for o in page.objects], page.prefixes
        is_file, is_dir = key in names, key + "/" in prefixes
        if is_dir or not page.truncated:
            return is_file, is_dir
        seen = names + prefixes
        return (is_file, False) if seen and max(seen) > key + "/" else None

    def _small_listing(self, **params) -> ListPage:
        """One ListObjectsV2 page of a few keys, made without boto3 when it can be (see
        :mod:`pys3fs.quickreq`): every new name is probed with one."""
        params["Bucket"] = self.bucket

        def quick() -> ListPage:
            body = self._quick.list(params)
            if not body.rstrip().endswith(b"</ListBucketResult>"):
                raise Declined(retryable=True)  # cut off, or an error in disguise
            try:
                return parse_listing(body)[0]
            except ElementTree.ParseError as exc:
                raise Declined(retryable=True) from exc

        page, client = self._try_quick("LIST", quick)
        if client is None:
            return page
        resp = client.list_objects_v2(**params)
        return ListPage(
            prefixes=[p["Prefix"] for p in resp.get("CommonPrefixes", [])],
            objects=[listed_object(o) for o in resp.get("Contents", [])],
            truncated=bool(resp.get("IsTruncated")),
        )

    def _try_quick(self, kind: str, attempt: Callable[[], T]) -> tuple[T | None, object]:
        """Make a request without boto3 first (see :mod:`pys3fs.quickreq`): (its answer,
        None) when that took; else (None, the client that must ask again: the one with
        the retries left after a retryable failure)."""
        if not self._quick.enabled:
            return None, self.client
        try:
            answer = attempt()
        except Declined as declined:
            # boto3 counts the request when it asks again: a retried request counts once
            return None, self._client_after(declined, kind)
        self.stats.count(kind)
        return answer, None

    def _client_after(self, declined: Declined, what: str):
        """The client that makes a request again after a quick attempt: with the retries
        left after a retryable failure (EIO when none are), else the usual one (a 403 or
        a 412 is boto3's to map)."""
        if not declined.retryable:
            return self.client
        if self.settings.retries == 0:
            log.debug("%s failed, no retries left", what)
            self.stats.count(what)
            raise FuseOSError(errno.EIO)
        return self._retry_client()

    def all_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object below ``prefix``, recursively (with sizes, without metadata)."""
        found: list[ObjectInfo] = []
        for page in self.list_pages(prefix, delimiter=None):
            found.extend(page.objects)
        return found

    def get_stream(self, key: str, start: int, length: int, etag: str | None = None):
        """A streaming body of bytes ``[start, start+length)``: read it in pieces.

        With ``etag`` the GET is conditional (If-Match): when the object was replaced
        since, ConflictError is raised instead of handing out bytes of another version."""
        kwargs = {"Bucket": self.bucket, "Key": key, "Range": f"bytes={start}-{start + length - 1}"}
        if etag:
            kwargs["IfMatch"] = etag
        try:
            resp = self.client.get_object(**kwargs)
        except botocore.exceptions.ClientError as exc:
            if etag and is_precondition_failure(exc):
                raise ConflictError(key) from exc
            raise
        return resp["Body"]

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    # -- writes --------------------------------------------------------------------------
    def _extra(self, metadata: dict[str, str], content_type: str) -> dict:
        return {"Metadata": metadata, "ContentType": content_type, **self._placement()}

    def _placement(self) -> dict:
        """What every write asks for, a copy keeping its metadata too: the storage class,
        default_acl's canned ACL, and with use_sse server-side encryption (S3 carries
        neither the source's ACL nor its encryption over, and bucket policies may refuse
        writes without them)."""
        extra = {}
        if self.settings.storage_class:
            extra["StorageClass"] = self.settings.storage_class
        if self.settings.acl:
            extra["ACL"] = self.settings.acl
        if self.settings.sse:
            extra["ServerSideEncryption"] = self.settings.sse
        if self.settings.sse_kms_key:
            extra["SSEKMSKeyId"] = self.settings.sse_kms_key
        return extra

    def put(self, key: str, body: bytes, metadata: dict[str, str], content_type: str) -> None:
        self.put_stream(key, io.BytesIO(body), metadata, content_type)

    def put_stream(
        self,
        key: str,
        body,
        metadata: dict[str, str],
        content_type: str,
        cond: Precondition | None = None,
    ) -> str:
        """PUT a file-like body (streamed, never held in memory); returns the ETag.

        With ``cond`` the PUT is conditional; a refusal raises ConflictError. Servers
        differ in how they want the ETag of If-Match (Ceph RGW only takes it without
        quotes), so a refusal while HEAD still shows the expected ETag retries once
        with the other form and remembers it."""
        kwargs = dict(Bucket=self.bucket, Key=key, **self._extra(metadata, content_type))
        if self.settings.content_md5:
            kwargs["ContentMD5"] = content_md5(body)
        if cond is not None and cond.absent:
            kwargs["IfNoneMatch"] = "*"
        elif cond is not None and cond.etag:
            kwargs["IfMatch"] = self._etag_form(cond.etag)
        etag, client = self._quick_put(kwargs, body)
        if client is None:
            return norm_etag(etag)
        kwargs["Body"] = body
        for attempt in range(2):
            try:
                return norm_etag(client.put_object(**kwargs).get("ETag"))
            except botocore.exceptions.ClientError as exc:
                if not is_precondition_failure(exc):
                    raise
                if attempt or "IfMatch" not in kwargs or not self._same_etag(key, cond.etag):
                    raise ConflictError(key) from exc
                # The other form than the one just refused (not a flip of the shared
                # setting: concurrent writers refused at once must all land on it).
                self._unquoted_if_match = kwargs["IfMatch"].startswith('"')
                kwargs["IfMatch"] = self._etag_form(cond.etag)
                client = self.client
                body.seek(0)
        raise ConflictError(key)

    def _quick_put(self, params: dict, body) -> tuple[str | None, object]:
        """A small body PUT without boto3 (see :mod:`pys3fs.quickreq`): (its ETag,
        None) when it took, else (None, the client that asks again, with the retries
        left when this attempt was a retryable failure). The body is rewound."""
        size = body.seek(0, io.SEEK_END)
        body.seek(0)
        if size > PUT_MAX:
            return None, self.client
        etag, client = self._try_quick("PUT", lambda: self._quick.put(params, body.read(size)))
        body.seek(0)
        return etag, client

    def _etag_form(self, etag: str) -> str:
        bare = etag.strip('"')
        return bare if self._unquoted_if_match else f'"{bare}"'

    def _same_etag(self, key: str, etag: str | None) -> bool:
        info = self.head(key)
        return info is not None and etag is not None and info.etag == etag

    def check_precondition(self, key: str, cond: Precondition | None) -> None:
        """HEAD-based check, for writes (CompleteMultipartUpload) that servers may not
        make conditional themselves; raises ConflictError."""
        if cond is None or (cond.etag is None and not cond.absent):
            return
        info = self.head(key)
        if cond.absent and info is not None:
            raise ConflictError(key)
        if cond.etag is not None and (info is None or info.etag != cond.etag):
            raise ConflictError(key)

    def create_multipart(self, key: str, metadata: dict[str, str], content_type: str) -> str:
        resp = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, **self._extra(metadata, content_type)
        )
        return resp["UploadId"]

    def upload_part(self, key: str, upload_id: str, number: int, body) -> str:
        extra = {"ContentMD5": content_md5(body)} if self.settings.content_md5 else {}
        resp = self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body, **extra
        )
        return resp["ETag"]

    def upload_part_copy(self, key: str, upload_id: str, number: int, start: int, end: int) -> str:
        """Copy bytes ``[start, end)`` of the current object into a part, server-side."""
        resp = self.client.upload_part_copy(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": self.bucket, "Key": key},
            CopySourceRange=f"bytes={start}-{end - 1}",
        )
        return resp["CopyPartResult"]["ETag"]

    def complete_multipart(self, key: str, upload_id: str, etags: dict[int, str]) -> str:
        parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
        resp = self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        return norm_etag(resp.get("ETag"))

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]] | None:
        """The parts already uploaded (number -> size, ETag); None when the upload is
        gone (completed, aborted or expired)."""
        parts: dict[int, tuple[int, str]] = {}
        kwargs = dict(Bucket=self.bucket, Key=key, UploadId=upload_id)
        try:
            for page in self.client.get_paginator("list_parts").paginate(**kwargs):
                for part in page.get("Parts", []):
                    parts[part["PartNumber"]] = (part["Size"], norm_etag(part["ETag"]))
        except botocore.exceptions.ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        return parts

    def copy(
        self,
        src: str,
        dst: str,
        size: int,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> str | None:
        """Server-side copy, returning the new ETag; with ``metadata`` the copy's
        metadata is replaced, ``headers`` (metadata.KEPT_HEADERS) given again.

        Objects below the multipart size take one CopyObject. Bigger ones go through
        s3transfer as parallel UploadPartCopy calls (CopyObject stops at 5 GiB); a
        multipart copy does not carry metadata over by itself, so it is passed along.
        """
        small = size < self.transfer_config.multipart_threshold
        source = {"Bucket": self.bucket, "Key": src}
        if small and metadata is None:
            extra = {"MetadataDirective": "COPY", **self._placement()}
        else:
            if metadata is None:
                info = self.head(src)
                if info is None:
                    raise FuseOSError(errno.ENOENT)
                metadata, content_type, headers = info.metadata, info.content_type, info.headers
            extra = {
                **self._extra(metadata, content_type or "application/octet-stream"),
                **(headers or {}),
                # (a multipart copy too: recent s3transfer otherwise drops what ExtraArgs
                # say and carries the source's metadata over: a chmod would not take)
                "MetadataDirective": "REPLACE",
            }
        if small:
            return self._copy_object(dict(Bucket=self.bucket, Key=dst, CopySource=source, **extra))
        self.client.copy(source, self.bucket, dst, ExtraArgs=extra, Config=self.transfer_config)
        info = self.head(dst)
        return info.etag if info else None

    def _copy_object(self, params: dict) -> str | None:
        """One CopyObject, made without boto3 when it can be (see :mod:`pys3fs.quickreq`)."""
        etag, client = self._try_quick("COPY", lambda: self._quick.copy(params))
        if client is None:
            return norm_etag(etag)
        resp = client.copy_object(**params)
        return norm_etag(resp.get("CopyObjectResult", {}).get("ETag"))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_many(self, keys: list[str]) -> None:
        """DeleteObjects in batches of 1000; any per-key error raises EIO."""
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            resp = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            errors = resp.get("Errors") or []
            if errors:
                log.error("delete of %d keys failed, first: %s", len(errors), errors[0])
                raise FuseOSError(errno.EIO)
