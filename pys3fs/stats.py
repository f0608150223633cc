"""Request accounting: how many S3 requests of each kind a mount made.

Counts come from a botocore event hook on the client, so every call is seen whether
it comes from our code or from s3transfer, and they are read through a virtual
extended attribute of the mount root (``pys3fs stats MOUNTPOINT``).
"""

from __future__ import annotations

import json
import threading
from collections import Counter

STATS_XATTR = "user.pys3fs.stats"
INVALIDATE_XATTR = "user.pys3fs.invalidate"
PENDING_XATTR = "user.pys3fs.pending"

KINDS = {
    "ListObjectsV2": "LIST",
    "ListObjects": "LIST",
    "HeadObject": "HEAD",
    "HeadBucket": "HEAD",
    "GetObject": "GET",
    "PutObject": "PUT",
    "CopyObject": "COPY",
    "UploadPartCopy": "COPY",
    "DeleteObject": "DELETE",
    "DeleteObjects": "DELETE",
    "CreateMultipartUpload": "MULTIPART",
    "UploadPart": "MULTIPART",
    "CompleteMultipartUpload": "MULTIPART",
    "AbortMultipartUpload": "MULTIPART",
    "ListParts": "MULTIPART",
}


class RequestStats:
    """Thread-safe counters of S3 requests by kind, plus cache hits and misses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.cache: Counter[str] = Counter()

    def attach(self, client) -> None:
        """Count every API call the client makes (retries of one call count once)."""
        client.meta.events.register("before-call.s3", self._on_call)

    def _on_call(self, model=None, **_kwargs) -> None:
        name = getattr(model, "name", "")
        with self._lock:
            self.requests[KINDS.get(name, "OTHER")] += 1

    def count(self, kind: str) -> None:
        """A request made without boto3 (see :mod:`pys3fs.quickreq`)."""
        with self._lock:
            self.requests[kind] += 1

    def hit(self, cache: str, hit: bool, count: int = 1) -> None:
        with self._lock:
            self.cache[f"{cache}_{'hits' if hit else 'misses'}"] += count

    def snapshot(self) -> dict:
        with self._lock:
            return {"requests": dict(self.requests), "cache": dict(self.cache)}

    def to_json(self) -> bytes:
        return json.dumps(self.snapshot(), sort_keys=True).encode()


def format_stats(data: dict) -> str:
    """Human-readable table for ``pys3fs stats``."""
    lines = ["requests:"]
    requests = data.get("requests", {})
    for kind in sorted(requests):
        lines.append(f"  {kind:<10} {requests[kind]:>10}")
    lines.append(f"  {'total':<10} {sum(requests.values()):>10}")
    cache = data.get("cache", {})
    names = sorted({k.rsplit("_", 1)[0] for k in cache})
    if names:
        lines.append("caches:")
    for name in names:
        hits, misses = cache.get(f"{name}_hits", 0), cache.get(f"{name}_misses", 0)
        rate = 100.0 * hits / (hits + misses) if hits + misses else 0.0
        lines.append(f"  {name:<10} {hits:>8} hits {misses:>8} misses {rate:5.1f}%")
    return "\n".join(lines)
