"""The data-plane benchmark's client: GETs at a fixed rate over keep-alive connections, from one thread.

    summary = paced_client.run("http://127.0.0.1:8080/off/r00", rate=485, seconds=2)
    summary.percentile(0.99)

Why not mirrorsandbox.loadgen (the sandbox's load, and the capacity measurement): it runs a thread
per connection, and on the 2-core machine of docs/benchmarks.md its 16 threads took 0.43 ms of
CPU per request on the primary's core (as much as the primary itself), and a thread woken by its
answer waits for the GIL behind the others: the client's own scheduling was in every p99 it
measured. This one sends from a single thread with an epoll loop: no GIL to wait for, and the
requests prebuilt.

Open loop: request n is due at start + n/rate whatever the answers do; when every connection is
waiting for an answer, a new one is opened (up to MAX_CONNECTIONS) rather than the request made
to wait, so a stall is measured, not hidden (coordinated omission). A request's latency runs
from just before its send (or its connect, on a new connection) to the last byte of its answer.
Answers must carry Content-Length (Envoy and the sandbox backends send it); anything else is an
error, as are a closed connection, a read past `timeout` and a connect that fails. Loopback only,
and bounded: ceil(rate x seconds) requests at most, each failed once `timeout` passes unanswered.
"""

from __future__ import annotations

import math
import selectors
import socket
import time
from dataclasses import dataclass

from mirrorsandbox import loadgen

MAX_RATE = 2000.0
MAX_CONNECTIONS = 64
HEADER_END = b"\r\n\r\n"


@dataclass
class Summary(loadgen.Summary):
    """mirrorsandbox.loadgen's summary (the fields and percentile the benchmark reads), and the
    connections this client opened."""

    connections: int = 0


class _Connection:
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=1.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = bytearray()
        self.started_ns = 0  # 0: idle

    def send(self, request: bytes, started_ns: int) -> None:
        self.started_ns = started_ns
        self.buffer.clear()
        if self.sock.send(request) != len(request):  # a few hundred bytes into an empty socket buffer
            raise OSError("request not sent whole")

    def answer(self) -> tuple[int, bool] | None:
        """(status, keep the connection) once the whole answer is in; None while it is not.
        ValueError: not an answer this client reads."""
        end = self.buffer.find(HEADER_END)
        if end < 0:
            return None
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        parts = lines[0].split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"not a status line: {lines[0][:80]!r}")
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if b"content-length" not in headers:
            raise ValueError(f"status {status} answer without Content-Length")
        if len(self.buffer) < end + len(HEADER_END) + int(headers[b"content-length"]):
            return None
        return status, headers.get(b"connection") != b"close"


def run(url: str, rate: float, seconds: float, *, connections: int = 16, timeout: float = 5.0) -> Summary:
    """GET url/<n> at `rate` for `seconds` (ceil(rate x seconds) requests), `connections` opened
    first; returns when every request is answered, failed or past `timeout`."""
    host, port, path = loadgen.check_loopback_url(url)
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate {rate} out of range (0, {MAX_RATE:g}]")
    if not 0 < seconds <= 3600:
        raise ValueError(f"seconds {seconds} out of range (0, 3600]")
    if not 1 <= connections <= MAX_CONNECTIONS:
        raise ValueError(f"connections {connections} out of range [1, {MAX_CONNECTIONS}]")
    total = math.ceil(rate * seconds)
    requests = [f"GET {path}/{n} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() for n in range(total)]
    summary = Summary()
    selector = selectors.DefaultSelector()
    idle: list[_Connection] = []
    busy: set[_Connection] = set()

    def open_connection() -> _Connection | None:
        try:
            connection = _Connection((host, port))
        except OSError:
            return None
        summary.connections += 1
        selector.register(connection.sock, selectors.EVENT_READ, connection)
        return connection

    def close(connection: _Connection) -> None:
        busy.discard(connection)
        selector.unregister(connection.sock)
        connection.sock.close()

    def fail(connection: _Connection) -> None:
        summary.errors += 1
        close(connection)

    for _ in range(connections):
        if (connection := open_connection()) is not None:
            idle.append(connection)
    started = time.monotonic()
    n = 0
    try:
        while n < total or busy:
            now = time.monotonic()
            while n < total and started + n / rate <= now:
                begun = time.perf_counter_ns()
                connection = idle.pop() if idle else None
                if connection is None and len(busy) < MAX_CONNECTIONS:
                    connection = open_connection()
                summary.sent += 1
                n += 1
                if connection is None:
                    summary.errors += 1
                    continue
                try:
                    connection.send(requests[n - 1], begun)
                    busy.add(connection)
                except OSError:
                    fail(connection)
            # The next request's due time, or (all sent) a tenth of a second to check for timeouts.
            wait = started + n / rate - time.monotonic() if n < total else 0.1
            for selected, _ in selector.select(max(0.0, wait)):
                connection = selected.data
                try:
                    chunk = connection.sock.recv(65536)
                except OSError:
                    chunk = b""
                if connection not in busy:  # an idle connection closed by the server (its idle timeout, a restart)
                    idle.remove(connection)
                    close(connection)
                    continue
                if not chunk:
                    fail(connection)
                    continue
                connection.buffer += chunk
                try:
                    answer = connection.answer()
                except ValueError:
                    fail(connection)
                    continue
                if answer is None:
                    continue
                status, keep = answer
                summary.latencies_ms.append((time.perf_counter_ns() - connection.started_ns) / 1e6)
                summary.statuses[status] += 1
                busy.discard(connection)
                connection.started_ns = 0
                if keep:
                    idle.append(connection)
                else:
                    close(connection)
            expired = time.perf_counter_ns() - int(timeout * 1e9)
            for connection in [c for c in busy if c.started_ns < expired]:
                fail(connection)
    finally:
        for connection in idle + list(busy):
            connection.sock.close()
        selector.close()
    summary.elapsed_s = time.monotonic() - started
    return summary
