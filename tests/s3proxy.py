"""An HTTP proxy on 127.0.0.1 between pys3fs and the S3 server, for tests that need to
see or slow down the requests themselves: it counts requests in flight by method, and can
hold every GET for a while (so that reads overlap deterministically)."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class S3Proxy:
    """Forwards every request to ``target`` and records how many ran at once."""

    def __init__(
        self, target: str, get_delay: float = 0.0, unquoted_if_match: bool = False
    ) -> None:
        parts = urlsplit(target)
        self.get_delay = get_delay  # seconds each GET waits before it is forwarded
        # Answer a PUT whose If-Match ETag is quoted with 412 after a moment, as Ceph RGW
        # does (it only matches the bare ETag).
        self.unquoted_if_match = unquoted_if_match
        self.target_host, self.target_port = parts.hostname, parts.port or 80
        self._lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _forward(self) -> None:
                proxy._enter(self.command)
                try:
                    if self.command == "GET" and proxy.get_delay:
                        time.sleep(proxy.get_delay)
                    if_match = self.headers.get("If-Match", "")
                    if proxy.unquoted_if_match and self.command == "PUT" and '"' in if_match:
                        self._refuse()
                        return
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else None
                    conn = http.client.HTTPConnection(proxy.target_host, proxy.target_port, 60)
                    # Headers go on unchanged, Host included: it is part of the signature.
                    headers = dict(self.headers.items())
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for key, value in resp.getheaders():
                        if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(key, value)
                    # a HEAD has no body but announces the object's length
                    length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length or str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    conn.close()
                finally:
                    proxy._leave(self.command)

            def _refuse(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                time.sleep(0.3)  # long enough for concurrent writers to all be refused
                body = b"<Error><Code>PreconditionFailed</Code></Error>"
                self.send_response(412, "Precondition Failed")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _enter(self, method: str) -> None:
        with self._lock:
            self.in_flight[method] += 1
            self.total[method] += 1
            self.max_in_flight[method] = max(self.max_in_flight[method], self.in_flight[method])

    def _leave(self, method: str) -> None:
        with self._lock:
            self.in_flight[method] -= 1

    def start(self) -> S3Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
