"""Many HEADs at once from one thread: the attributes of a listing's files.

``ls -l`` of a directory never seen HEADs every file (a listing carries no user
metadata). Made from a pool of threads, each HEAD cost two thread wake-ups, a GIL
hand-over and a blocking ``recv``: about 150 µs of CPU per HEAD with 32 in flight, and
on a small machine shared with the S3 server, CPU is what a cold ``ls -l`` waits for.
Here one thread keeps up to ``connections`` kept-alive connections busy through a
selector (as curl's multi interface does for s3fs-fuse): half the CPU per HEAD.

The requests are :mod:`pys3fs.quickreq`'s (presigned URLs; only a 200 or a 404 is
taken). Anything else (another status, a timeout, a reset, an unreadable answer) fails
the request's future with :class:`~pys3fs.quickreq.Declined`, and the caller asks boto3,
with its retries and error mapping.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import Future

from .httpconn import READ_SIZE, Connection, HTTPError, split_head_answer
from .quickreq import Declined, QuickRequests, head_answer

log = logging.getLogger("pys3fs.headloop")


class _Job:
    __slots__ = ("key", "future", "retried")

    def __init__(self, key: str, future: Future) -> None:
        self.key, self.future, self.retried = key, future, False


class _Slot:
    """One connection and the request it waits for the answer to."""

    __slots__ = ("conn", "buf", "job", "target", "deadline", "answered", "opening")

    def __init__(self) -> None:
        self.conn: Connection | None = None  # made at the first request
        self.buf = b""
        self.job: _Job | None = None
        self.target = ""  # the job's request target, while its connection is opened
        self.deadline = 0.0
        self.answered = 0  # answers read on this connection since it was opened
        self.opening = False  # a thread of its own is connecting it


class HeadLoop:
    """HEADs of keys, at most ``connections`` at a time, from one thread (started at
    the first request)."""

    def __init__(self, quick: QuickRequests, connections: int) -> None:
        self.quick = quick
        self.connections = max(1, connections)
        self._lock = threading.Lock()
        self._queue: collections.deque[_Job] = collections.deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._slots: list[_Slot] = []
        self._opened: collections.deque[tuple[_Slot, Connection, Exception | None]]
        self._opened = collections.deque()  # connections made since the loop last looked

    def submit(self, key: str) -> Future:
        """A future of the HEAD's headers (names in lower case), None for a 404; it
        fails with :class:`Declined` when boto3 should ask instead."""
        job = _Job(key, Future())
        with self._lock:
            if self._stopping:
                job.future.set_exception(Declined(retryable=False))
                return job.future
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pys3fs-heads", daemon=True)
                self._thread.start()
        self._wake()
        return job.future

    def close(self) -> None:
        """Stop the thread; requests not answered yet are declined."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a wake-up is pending already (buffer full)
            self._wake_w.send(b"\0")

    # -- the loop ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                self._start_queued()
                busy = [s.deadline for s in self._slots if s.job is not None]
                timeout = max(0.0, min(busy) - time.monotonic()) if busy else None
                for key, _ in self._selector.select(timeout):
                    if key.data is None:
                        self._drain_wake()
                    else:
                        self._readable(key.data)
                self._take_opened()
                self._expire()
        except Exception:  # never leave a caller waiting on a loop that died
            log.exception("HEAD loop failed; HEADs go through boto3")
        finally:
            with self._lock:
                self._stopping = True
                left = list(self._queue)
                self._queue.clear()
                opened = list(self._opened)
                self._opened.clear()
            for _, conn, _ in opened:
                conn.close()
            left += [s.job for s in self._slots if s.job is not None]
            for slot in self._slots:
                self._drop(slot)
            for job in left:
                job.future.set_exception(Declined(retryable=False))

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass

    def _start_queued(self) -> None:
        while True:
            slot = self._idle_slot()
            if slot is None:
                return
            with self._lock:
                if not self._queue:
                    return
                job = self._queue.popleft()
            if job.retried or job.future.set_running_or_notify_cancel():
                self._send(slot, job)

    def _idle_slot(self) -> _Slot | None:
        """An idle connection, an open one first; a new one while under the limit."""
        idle = [s for s in self._slots if s.job is None and not s.opening]
        for slot in idle:
            if slot.conn is not None and slot.conn.sock is not None:
                return slot
        if idle:
            return idle[0]
        if len(self._slots) < self.connections:
            self._slots.append(_Slot())
            return self._slots[-1]
        return None

    def _send(self, slot: _Slot, job: _Job) -> None:
        try:
            origin, target = self.quick.head_target(job.key)
            if slot.conn is None or slot.conn.sock is None:
                self._open(slot, job, origin, target)
                return
            self._write(slot, job, target)
        except Exception as exc:  # (signing included: this request only, not the loop)
            self._fail(slot, job, exc)

    def _write(self, slot: _Slot, job: _Job, target: str) -> None:
        request = slot.conn.encode("HEAD", target, {}, b"")
        sent = slot.conn.sock.send(request)  # a few hundred bytes: whole, or broken
        if sent != len(request):
            raise HTTPError("request not sent whole")
        slot.job = job
        slot.deadline = time.monotonic() + self.quick.timeout

    def _open(self, slot: _Slot, job: _Job, origin: str, target: str) -> None:
        """Connect ``slot`` on a thread of its own, then send ``job``: a name lookup, a
        connect or a TLS handshake (one or more round trips, and CPU) must not hold up
        the answers on the other connections. The job may time out meanwhile; the
        connection is kept all the same."""
        conn = self.quick.new_connection(origin)
        slot.job, slot.target, slot.opening = job, target, True
        slot.deadline = time.monotonic() + 2 * self.quick.timeout  # connect, then answer

        def connect() -> None:
            error = None
            try:
                conn.connect()  # blocking, with the timeout (the TLS handshake too)
            except Exception as exc:
                error = exc
            with self._lock:
                if self._stopping:
                    conn.close()
                    return
                self._opened.append((slot, conn, error))
            self._wake()

        threading.Thread(target=connect, name="pys3fs-heads-connect", daemon=True).start()

    def _take_opened(self) -> None:
        """Put the connections made since the last look to work."""
        while True:
            with self._lock:
                if not self._opened:
                    return
                slot, conn, error = self._opened.popleft()
            slot.opening, slot.conn, job = False, conn, slot.job
            if error is not None:
                if job is not None:
                    self._fail(slot, job, error)
                else:
                    self.quick.failed(conn, error)
                continue
            conn.sock.setblocking(False)
            slot.buf, slot.answered = b"", 0
            self._selector.register(conn.sock, selectors.EVENT_READ, slot)
            if job is not None:
                slot.job = None
                try:
                    self._write(slot, job, slot.target)
                except Exception as exc:
                    self._fail(slot, job, exc)

    def _readable(self, slot: _Slot) -> None:
        sock = slot.conn.sock if slot.conn is not None else None
        if sock is None:
            return
        try:
            chunk = sock.recv(READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError):
            return  # (TLS: a record that carried no data, such as a session ticket)
        except OSError as exc:
            self._broken(slot, exc)
            return
        if not chunk:
            self._broken(slot, HTTPError("connection closed by the server"))
            return
        if isinstance(sock, ssl.SSLSocket):
            chunk += _decrypted_rest(sock)
        job = slot.job
        if job is None:  # nothing comes unasked: the server is closing an idle connection
            self._drop(slot)
            return
        slot.buf += chunk
        try:
            answer = split_head_answer(slot.buf)
        except HTTPError as exc:
            self._broken(slot, exc)
            return
        if answer is None:
            return
        status, headers, close, rest = answer
        slot.job, slot.buf = None, b""
        slot.answered += 1
        if close or rest:
            self._drop(slot)
        try:
            result = head_answer(status, headers)
        except Declined as declined:
            job.future.set_exception(declined)
            return
        job.future.set_result(result)

    def _broken(self, slot: _Slot, exc: Exception) -> None:
        """No answer on this connection. A kept connection the server closed while it
        was idle fails at its next request: that one is made once more, anew."""
        job = slot.job
        idle_closed = slot.answered > 0 and not slot.buf
        self._drop(slot)
        if job is None:
            return
        if idle_closed and not job.retried:
            job.retried = True
            with self._lock:
                self._queue.appendleft(job)
            return
        self._fail(slot, job, exc)

    def _fail(self, slot: _Slot, job: _Job, exc: Exception) -> None:
        log.debug("HEAD %s failed (%s): boto3 asks again", job.key, exc)
        self._drop(slot)
        if slot.conn is not None and not isinstance(exc, ssl.SSLWantWriteError):
            self.quick.failed(slot.conn, exc)  # a TLS failure leaves all to boto3
        job.future.set_exception(Declined(retryable=isinstance(exc, (OSError, HTTPError))))

    def _expire(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.job is not None and slot.deadline <= now:
                job, slot.job = slot.job, None
                self._fail(slot, job, TimeoutError("no answer in time"))

    def _drop(self, slot: _Slot) -> None:
        if slot.conn is not None and slot.conn.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(slot.conn.sock)
            slot.conn.close()
        slot.buf, slot.answered, slot.job = b"", 0, None


def _decrypted_rest(sock: ssl.SSLSocket) -> bytes:
    """What TLS decrypted beyond one ``recv``: the selector does not see it (it is no
    longer in the socket), so it is read now. An error shows at the next ``recv``."""
    parts = []
    with contextlib.suppress(OSError):  # (the SSL "want" errors included)
        while sock.pending():
            more = sock.recv(READ_SIZE)
            if not more:
                break
            parts.append(more)
    return b"".join(parts)
