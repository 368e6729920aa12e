"""mirror_forwarder: the proxy's log lines become requests to the candidate, bounded, timed out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mirrorramp.mirror_forwarder import (
    RECEIVE_BUFFER,
    BadLine,
    Copy,
    Forwarder,
    kernel_drops,
    parse_args,
    parse_line,
    widen_receive_buffer,
)


def line(**fields: object) -> bytes:
    """What nginx sends: a syslog header (nohostname, tag=mirror), then the JSON object."""
    body = {"method": "GET", "uri": "/a/b?c=1", "id": "f00d", "host": "demo.sandbox"} | fields
    return b"<190>Nov 26 11:20:00 mirror: " + json.dumps(body).encode()


def test_a_line_is_read_into_the_copy_it_names() -> None:
    copy = parse_line(line())
    assert copy == Copy(method="GET", uri="/a/b?c=1", request_id="f00d", host="demo.sandbox")
    assert copy.request() == (
        b"GET /a/b?c=1 HTTP/1.1\r\nHost: demo.sandbox\r\nX-Request-Id: f00d\r\nConnection: close\r\n\r\n"
    )


def test_bytes_nginx_left_unescaped_come_back_as_they_were() -> None:
    # escape=json escapes quotes and control characters, not bytes >= 0x80 (a raw UTF-8 path).
    raw = b'<190>Nov 26 11:20:00 mirror: {"method":"GET","uri":"/caf\xc3\xa9","id":"1","host":"h"}'
    assert parse_line(raw).request().startswith(b"GET /caf\xc3\xa9 HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("datagram", "why"),
    [
        (b"<190>Nov 26 11:20:00 mirror: not json", "no JSON object"),
        (b'<190>Nov 26 mirror: {"method": "GET", "uri": ', "not JSON"),
        (b"<190>Nov 26 mirror: {}", "method"),
        (line(method="POST"), "only"),
        (line(method=""), "method"),
        (line(uri="http://elsewhere/"), "origin-form"),
        (line(uri="/a b"), "origin-form"),
        (line(uri="/a\r\nX-Injected: 1"), "single-line"),
        (line(host="h\r\nX-Injected: 1"), "single-line"),
        (line(id=7), "id"),
        (line(host=None), "host"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_line_that_is_not_a_copy_is_refused_with_its_reason(datagram: bytes, why: str) -> None:
    with pytest.raises(BadLine, match=why):
        parse_line(datagram)


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "0", "--candidate-port", "2"],
        ["--port", "1", "--candidate-port", "70000"],
        ["--port", "1", "--candidate-port", "2", "--max-open", "0"],
        ["--port", "1", "--candidate-port", "2", "--max-open", "20000"],
        ["--port", "1", "--candidate-port", "2", "--timeout", "lots"],
        ["--port", "1", "--candidate-port", "2", "--host", "0.0.0.0"],
    ],
)
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_the_timeout_takes_the_routes_duration() -> None:
    assert parse_args(["--port", "1", "--candidate-port", "2", "--timeout", "500ms"]).timeout == 0.5


# -- forwarding, against a real HTTP server ------------------------------------------------------


class Candidate:
    """A threaded HTTP server on 127.0.0.1 that records what it serves, after `delay_s`."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.seen: list[tuple[str, str, str | None, str | None]] = []
        candidate = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                time.sleep(delay_s)
                candidate.seen.append((self.command, self.path, self.headers["Host"], self.headers["X-Request-Id"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _with_forwarder(candidate_port: int, max_open: int, timeout: float, scenario) -> Forwarder:
    loop = asyncio.get_running_loop()
    forwarder = Forwarder(("127.0.0.1", candidate_port), max_open, timeout)
    transport, _ = await loop.create_datagram_endpoint(lambda: forwarder, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await scenario(forwarder, lambda datagram: sender.sendto(datagram, ("127.0.0.1", port)))
    finally:
        sender.close()
        transport.close()
        await forwarder.drain()
    return forwarder


def test_each_line_reaches_the_candidate_with_its_path_host_and_request_id() -> None:
    candidate = Candidate()

    async def scenario(forwarder: Forwarder, send) -> None:
        for i in range(20):
            send(line(uri=f"/copy/{i}", id=f"id-{i}", method="HEAD" if i == 0 else "GET"))
        send(b"garbage")
        await _until(lambda: forwarder.counts["forwarded"] == 20)

    try:
        forwarder = asyncio.run(_with_forwarder(candidate.port, 1024, 5.0, scenario))
    finally:
        candidate.close()
    assert sorted(candidate.seen) == sorted(
        [("HEAD" if i == 0 else "GET", f"/copy/{i}", "demo.sandbox", f"id-{i}") for i in range(20)]
    )
    assert forwarder.counts == {"forwarded": 20, "dropped over the bound": 0, "failed or timed out": 0, "bad lines": 1}
    assert forwarder.open == 0


def test_copies_over_the_bound_are_dropped_and_get_through_again_once_the_open_ones_end() -> None:
    candidate = Candidate(delay_s=0.5)

    async def scenario(forwarder: Forwarder, send) -> None:
        for i in range(5):
            send(line(uri=f"/held/{i}"))
        await _until(lambda: forwarder.counts["dropped over the bound"] == 3)
        assert forwarder.open == 2
        await _until(lambda: forwarder.counts["forwarded"] == 2)
        send(line(uri="/after"))
        await _until(lambda: forwarder.counts["forwarded"] == 3)

    try:
        forwarder = asyncio.run(_with_forwarder(candidate.port, 2, 5.0, scenario))
    finally:
        candidate.close()
    assert len(candidate.seen) == 3 and candidate.seen[-1][1] == "/after"
    assert forwarder.counts["dropped over the bound"] == 3


def test_a_candidate_that_never_answers_costs_one_timeout_and_frees_the_slot() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)

        async def scenario(forwarder: Forwarder, send) -> None:
            send(line())
            await _until(lambda: forwarder.counts["failed or timed out"] == 1)

        forwarder = asyncio.run(_with_forwarder(silent.getsockname()[1], 1, 0.2, scenario))
    assert forwarder.open == 0 and forwarder.counts["forwarded"] == 0


def test_a_candidate_that_is_down_is_counted_as_failed() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused

        async def scenario(forwarder: Forwarder, send) -> None:
            send(line())
            await _until(lambda: forwarder.counts["failed or timed out"] == 1)

        forwarder = asyncio.run(_with_forwarder(port, 4, 5.0, scenario))
    assert forwarder.open == 0


def test_the_lines_socket_asks_for_a_receive_buffer_wider_than_the_default() -> None:
    # A burst of lines while the forwarder is busy waits in this buffer instead of being dropped.
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as lines:
        granted = widen_receive_buffer(lines)
    # Linux doubles the size asked for (bookkeeping), up to twice net.core.rmem_max.
    assert granted == 2 * min(RECEIVE_BUFFER, rmem_max)


def test_lines_the_kernel_dropped_are_counted() -> None:
    """A socket nobody reads, with the smallest buffer: the kernel drops most of a burst, and
    kernel_drops reads how many from /proc/net/udp (the forwarder prints it when it stops)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as lines,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        lines.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
        lines.bind(("127.0.0.1", 0))
        assert kernel_drops(lines) == 0
        for _ in range(200):
            sender.sendto(line(), lines.getsockname())
        dropped = kernel_drops(lines)
        received = 0
        lines.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while lines.recv(65536):
                received += 1
    assert dropped > 0 and dropped + received == 200, (dropped, received)
