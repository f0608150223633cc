"""A small HTTP/1.1 client connection for the quick requests of :mod:`pys3fs.quickreq`.

``http.client`` costs about 150 µs of CPU per HEAD on a small machine: a new buffered
file object per response, a ``readline`` call per header line, and the ``email``
package's parser for the headers. A quick request needs far less: one ``sendall`` of
the request, then the status line and headers read out of one buffer. Anything this
reader does not expect (a malformed or oversized head, an interim 1xx answer, a cut-off
body) is an :class:`HTTPError`, and the request goes to boto3 as after any other failure.
"""

from __future__ import annotations

import functools
import os
import socket
import ssl

HEAD_MAX = 64 * 1024  # bytes of status line and headers
READ_SIZE = 64 * 1024


def tls_context(verify: bool | str = True) -> ssl.SSLContext:
    """The TLS context for ``verify`` (see :func:`ca_setting`), made once: building one
    loads the CA bundle, about 20 ms of CPU, which every new connection paid (a cold
    ``ls -l`` over HTTPS opens dozens). A change of ``SSL_CERT_FILE`` or
    ``SSL_CERT_DIR`` gets a new one."""
    return _context(verify, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=8)
def _context(verify: bool | str, cafile: str | None, capath: str | None) -> ssl.SSLContext:
    if verify is False:  # no_check_certificate
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return ssl.create_default_context()  # (it reads the same variables)


def ca_setting(check_certificate: bool = True) -> bool | str:
    """What both HTTP stacks of a mount (boto3's and the quick requests') trust: one
    CA bundle, so that a server is either trusted by both or by neither.

    As curl (and so s3fs-fuse) does, the system's store: ``AWS_CA_BUNDLE`` or
    ``SSL_CERT_FILE`` when set, else OpenSSL's default bundle (on Debian the one
    ``update-ca-certificates`` writes), where botocore alone would use certifi's copy
    of the public CAs and miss a private CA installed on the host. ``True`` (botocore's
    default) when there is no such file; ``False`` for ``no_check_certificate``."""
    if not check_certificate:
        return False
    for variable in ("AWS_CA_BUNDLE", "SSL_CERT_FILE"):
        path = os.environ.get(variable)
        if path:
            return path
    paths = ssl.get_default_verify_paths()
    return paths.cafile or True


class HTTPError(Exception):
    """An answer this client cannot read (the connection is closed)."""


class ConnectionDropped(HTTPError):
    """The server closed the connection before a single byte of the answer came (a kept
    connection the server closed while it was idle)."""


class Response:
    """One answer: status, headers in order (names as sent), body."""

    __slots__ = ("status", "headers", "body", "will_close")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, close: bool):
        self.status, self.headers, self.body, self.will_close = status, headers, body, close

    def getheader(self, name: str) -> str | None:
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)


class Connection:
    """One keep-alive connection to ``host:port`` (TLS for https), opened on first use."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        host_header: str,
        timeout: float,
        verify: bool | str = True,
    ):
        self.https = scheme == "https"
        self.verify = verify
        self.host, self.port, self.host_header = host, port, host_header
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._buf = b""

    def request(
        self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        """Send one request and read its answer. Header values are sent as given; a value
        HTTP cannot carry is a ValueError before anything is sent."""
        data = self.encode(method, target, headers or {}, body)
        if self.sock is None:
            self.connect()
        try:
            self.sock.sendall(data)
            return self._read(method)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock, self._buf = None, b""

    def encode(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
        # as http.client sends them (identity: no compressed answer to unpack)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines.append("Accept-Encoding: identity")
        sized = any(name.lower() == "content-length" for name in headers)
        if (method in ("PUT", "POST") or body) and not sized:
            lines.append(f"Content-Length: {len(body)}")
        for name, value in headers.items():
            if any(c in name or c in value for c in "\r\n\0") or ":" in name:
                raise ValueError(f"header {name!r} cannot be sent")
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")  # UnicodeError: ValueError
        return head + body

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.https:
            sock = tls_context(self.verify).wrap_socket(sock, server_hostname=self.host)
        self.sock = sock

    def _recv(self) -> bytes:
        chunk = self.sock.recv(READ_SIZE)
        if not chunk:
            raise HTTPError("connection closed by the server")
        return chunk

    def _read(self, method: str) -> Response:
        buf = self._buf
        while (answer := split_head_answer(buf)) is None:
            chunk = self.sock.recv(READ_SIZE)
            if not chunk:
                raise (HTTPError if buf else ConnectionDropped)("connection closed by the server")
            buf += chunk
        status, headers, close, buf = answer
        fields = {name.lower(): value for name, value in headers}
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            body, buf = self._chunked(buf)
        elif "content-length" in fields:
            length = _content_length(fields["content-length"])
            while len(buf) < length:
                buf += self._recv()
            body, buf = buf[:length], buf[length:]
        else:  # the body ends with the connection
            body, buf, close = buf + self._until_closed(), b"", True
        self._buf = buf
        if close:
            self.close()
        return Response(status, headers, body, close)

    def _chunked(self, buf: bytes) -> tuple[bytes, bytes]:
        """The body of a chunked answer, and what follows it in ``buf``."""
        parts = []
        while True:
            while (eol := buf.find(b"\r\n")) < 0:
                buf += self._recv()
            size_text = buf[:eol].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HTTPError("bad chunk size") from None
            buf = buf[eol + 2 :]
            if size == 0:
                while (end := buf.find(b"\r\n")) != 0:  # trailer lines, then an empty one
                    if end > 0:
                        buf = buf[end + 2 :]
                    else:
                        buf += self._recv()
                return b"".join(parts), buf[2:]
            while len(buf) < size + 2:
                buf += self._recv()
            if buf[size : size + 2] != b"\r\n":
                raise HTTPError("bad chunk end")
            parts.append(buf[:size])
            buf = buf[size + 2 :]

    def _until_closed(self) -> bytes:
        parts = []
        while chunk := self.sock.recv(READ_SIZE):
            parts.append(chunk)
        return b"".join(parts)


def split_head_answer(buf: bytes) -> tuple[int, list[tuple[str, str]], bool, bytes] | None:
    """The answer to a HEAD at the start of ``buf``: status, headers, whether the server
    closes the connection after it, and the bytes that follow; None while incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > HEAD_MAX:
            raise HTTPError("answer head too long")
        return None
    status, headers, close = _parse_head(buf[:end])
    return status, headers, close, buf[end + 4 :]


def _parse_head(head: bytes) -> tuple[int, list[tuple[str, str]], bool]:
    """Status, headers and whether the server closes the connection after this answer."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit() or code.startswith("1"):
        raise HTTPError(f"unexpected status line {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HTTPError("malformed header line")  # folded or broken: not ours to read
        headers.append((name, value.strip()))
    tokens = ",".join(v for n, v in headers if n.lower() == "connection").lower()
    close = "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)
    return int(code), headers, close


def _content_length(value: str) -> int:
    if not value.isdigit():
        raise HTTPError("bad Content-Length")
    return int(value)
