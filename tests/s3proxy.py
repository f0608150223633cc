"""An HTTP proxy on 127.0.0.1 between pys3fs and the S3 server, for tests that need to
see or disturb the requests themselves.

It counts requests (in flight, at most at once, in total, by method), and it injects the
faults a real S3 endpoint and the network in front of it produce, so the tests can show
that pys3fs never takes a failure for "not found", never loses data and never returns
wrong bytes:

- ``inject(rate, kinds, methods)``: a seeded random share of requests (optionally only
  some HTTP methods) get one of the fault kinds below, picked at random;
- ``cut_off(refuse=...)`` / ``restore()``: the server is gone entirely (every request
  reset, or the port closed so connections are refused), then back.

The request is read whole before a fault is decided, and a faulted request never
reaches the server: the fault is what the server would have said, not a lost answer.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import random
import select
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# What each fault kind does (see Handler.fault).
ERROR_500 = "500"  # 500 InternalError, as S3 says "we encountered an internal error"
ERROR_503 = "503"  # 503 SlowDown, S3's throttling answer: clients must slow down
RESET = "reset"  # the connection is reset (RST) before any answer
DELAY = "delay"  # the answer comes, but only after ``delay`` seconds
SILENCE = "silence"  # no answer at all, until the client gives up and closes
LOST = "lost"  # the server does the request, but its answer is lost (a reset instead)
KINDS = (ERROR_500, ERROR_503, RESET, DELAY, SILENCE, LOST)

_ERRORS = {
    ERROR_500: (500, "Internal Server Error", "InternalError", "We encountered an internal "
                "error. Please try again."),
    ERROR_503: (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}  # fmt: skip


class S3Proxy:
    """Forwards every request to ``target`` unless told to fail it.

    ``seed`` makes the choice of faulted requests repeatable in one test run (threads
    still interleave as they like, so only the share of faults is repeatable)."""

    def __init__(
        self,
        target: str,
        seed: int = 0,
        unquoted_if_match: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(target)
        # Answer a PUT whose If-Match ETag is quoted with 412 after a moment, as Ceph RGW
        # does (it only matches the bare ETag).
        self.unquoted_if_match = unquoted_if_match
        self.target_host, self.target_port = parts.hostname, parts.port or 80
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.puts: list[tuple[str, dict[str, str]]] = []  # every PUT's path and headers
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()  # faults injected, by kind
        self._random = random.Random(seed)
        self._rate = 0.0
        self._kinds: tuple[str, ...] = ()
        self._methods: frozenset[str] | None = None
        self._left: int | None = None  # faults still to inject (None: no limit)
        self.delay = 1.0
        # seconds a kept-alive connection may stay idle before the proxy closes it, as
        # servers and load balancers do (None: never); for connections opened after
        self.idle_timeout: float | None = None
        self._cut = False
        self._stopping = threading.Event()
        self.tls = tls  # clients then speak HTTPS to the proxy (it forwards plain HTTP)
        self._accepting = threading.Event()  # cleared: new connections wait to be accepted
        self._accepting.set()
        self.server = self._listen(0)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    # -- what to do ----------------------------------------------------------------------
    def inject(
        self,
        rate: float,
        kinds: Iterable[str] = (ERROR_500,),
        methods: Iterable[str] | None = None,
        delay: float = 1.0,
        limit: int | None = None,
    ) -> None:
        """Fail a share ``rate`` (0..1) of the requests of ``methods`` (all if None)
        with one of ``kinds``; DELAY waits ``delay`` seconds; ``limit`` faults at most."""
        kinds = tuple(kinds)
        assert kinds and all(k in KINDS for k in kinds), kinds
        with self._lock:
            self._rate, self._kinds, self.delay, self._left = rate, kinds, delay, limit
            self._methods = frozenset(m.upper() for m in methods) if methods else None

    def clear(self) -> None:
        """No more faults (requests already delayed or silenced stay so)."""
        with self._lock:
            self._rate = 0.0

    def cut_off(self, refuse: bool = False) -> None:
        """The server is unreachable: every request is reset; with ``refuse`` the port
        is closed as well, so new connections are refused."""
        with self._lock:
            self._cut = True
        if refuse:
            self._close_listener()

    def hold_connections(self) -> None:
        """New connections wait to be accepted (over TLS, their handshake waits too)."""
        self._accepting.clear()

    def release_connections(self) -> None:
        self._accepting.set()

    def restore(self) -> None:
        """The server is back, on the same port."""
        if self.server is None:
            self.server = self._listen(self.port)
            self._serve()
        with self._lock:
            self._cut = False

    def _choose(self, method: str) -> str | None:
        """The fault for one request, or None to forward it."""
        with self._lock:
            self._enter(method)
            if self._cut:
                return RESET
            if self._methods is not None and method not in self._methods:
                return None
            if not self._rate or self._random.random() >= self._rate or self._left == 0:
                return None
            if self._left is not None:
                self._left -= 1
            kind = self._random.choice(self._kinds)
            self.injected[kind] += 1
            return kind

    # -- counting ------------------------------------------------------------------------
    def _enter(self, method: str) -> None:
        self.in_flight[method] += 1
        self.total[method] += 1
        self.max_in_flight[method] = max(self.max_in_flight[method], self.in_flight[method])

    def _leave(self, method: str) -> None:
        with self._lock:
            self.in_flight[method] -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until no request is in the proxy, so that requests faulted earlier
        (silenced until the client's timeout, delayed) are over on both sides."""
        with self._idle:
            if not self._idle.wait_for(lambda: not +self.in_flight, timeout):
                raise TimeoutError(f"requests still in the proxy: {+self.in_flight}")

    # -- serving -------------------------------------------------------------------------
    def _listen(self, port: int) -> ThreadingHTTPServer:
        accepting = self._accepting

        class Server(ThreadingHTTPServer):
            def get_request(self):
                accepting.wait()
                return super().get_request()

        server = Server(("127.0.0.1", port), _handler(self))
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        return server

    def _serve(self) -> None:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _close_listener(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def start(self) -> S3Proxy:
        self._serve()
        return self

    def stop(self) -> None:
        """Stop serving; silenced requests end too (their connections are closed)."""
        self._stopping.set()
        self._accepting.set()
        self._close_listener()

    def forward(self, method: str, path: str, headers, body: bytes | None):
        """Send one request on to the server: (status, reason, headers, body)."""
        conn = http.client.HTTPConnection(self.target_host, self.target_port, timeout=60)
        try:
            # Headers go on unchanged, Host included: it is part of the signature.
            conn.request(method, path, body=body, headers=dict(headers.items()))
            resp = conn.getresponse()
            return resp.status, resp.reason, resp.getheaders(), resp.read()
        finally:
            conn.close()


def _handler(proxy: S3Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            self.timeout = proxy.idle_timeout
            super().setup()

        def log_message(self, *args) -> None:  # quiet
            pass

        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            fault = proxy._choose(self.command)
            if self.command == "PUT":
                with proxy._lock:
                    proxy.puts.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            try:
                quoted = '"' in self.headers.get("If-Match", "")
                if proxy.unquoted_if_match and self.command == "PUT" and quoted:
                    time.sleep(0.3)  # long enough for concurrent writers to all be refused
                    xml = b"<Error><Code>PreconditionFailed</Code></Error>"
                    xml_type = [("Content-Type", "application/xml")]
                    self.answer(412, "Precondition Failed", xml_type, xml)
                    return
                if fault == LOST:
                    proxy.forward(self.command, self.path, self.headers, body)
                    self.reset()
                    return
                if fault is not None and fault != DELAY:
                    self.fault(fault)
                    return
                if fault == DELAY and proxy._stopping.wait(proxy.delay):
                    return
                self.answer(*proxy.forward(self.command, self.path, self.headers, body))
            finally:
                proxy._leave(self.command)

        def answer(self, status: int, reason: str, headers, data: bytes) -> None:
            self.send_response(status, reason)
            length = str(len(data))
            for key, value in headers:
                if key.lower() == "content-length" and self.command == "HEAD":
                    length = value  # the size of the object, whose body is not sent
                elif key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def fault(self, kind: str) -> None:
            if kind == RESET:
                self.reset()
            elif kind == SILENCE:
                self.silence()
            else:
                status, reason, code, message = _ERRORS[kind]
                xml = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{code}</Code><Message>{message}</Message>"
                    f"<Resource>{self.path.split('?')[0]}</Resource>"
                    "<RequestId>pys3fs-test-fault</RequestId></Error>"
                ).encode()
                self.answer(status, reason, [("Content-Type", "application/xml")], xml)

        def reset(self) -> None:
            """Close with SO_LINGER 0: the kernel sends RST, the client sees "connection
            reset by peer", as when a load balancer or the server process dies."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # its reference would keep the socket open
            self.connection.close()
            self.close_connection = True

        def silence(self) -> None:
            """Answer nothing until the client closes the connection (its read timeout)
            or the proxy stops: a server that hangs, or a network that drops packets."""
            while not proxy._stopping.is_set():
                readable, _, _ = select.select([self.connection], [], [], 0.1)
                if readable:
                    break  # the client closed the connection (or spoke out of turn)
            self.close_connection = True

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

    return Handler


def self_signed(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key (PEM files), its own issuer."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)
