"""The data-plane benchmark's client: paced, open loop, every failure counted (mirrorsandbox.paced_client)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from mirrorsandbox import paced_client


class Handler(BaseHTTPRequestHandler):
    """GET /ok/<n>: 200; /slow/<n>: 200 after 0.2 s; /no-length/<n>: an answer without Content-Length;
    /hang/<n>: no answer for 3 s; /close/<n>: the connection closed unanswered; /garbage/<n>: no status line."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the body's write would wait for the ACK of the headers' (40 ms)
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Handler.seen.append(self.path)
        kind = self.path.split("/")[1]
        if kind == "close":
            self.close_connection = True
            return
        if kind == "garbage":
            self.wfile.write(b"garbage\r\n\r\n")
            return
        if kind == "hang":
            time.sleep(3)
        if kind == "slow":
            time.sleep(0.2)
        self.send_response(200)
        if kind != "no-length":
            self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
        if kind == "no-length":
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@contextmanager
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.seen = []
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_it_sends_rate_times_seconds_requests_paced_and_numbered() -> None:
    with server() as base:
        started = time.monotonic()
        summary = paced_client.run(f"{base}/ok", rate=100, seconds=0.5, connections=4)
        elapsed = time.monotonic() - started
    assert summary.sent == 50 and summary.errors == 0
    assert summary.statuses == {200: 50} and len(summary.latencies_ms) == 50
    assert sorted(Handler.seen, key=lambda path: int(path.rsplit("/", 1)[1])) == [f"/ok/{n}" for n in range(50)]
    assert 0.45 <= elapsed < 2.0, elapsed  # paced: the last request is due at 0.49 s
    assert summary.connections == 4  # fast answers: the keep-alive connections were enough


def test_a_stall_opens_connections_rather_than_delaying_the_requests() -> None:
    """Open loop: with one connection and 0.2 s answers, 20 requests at 100/s still go out on
    time, each on a connection of its own, and each latency is its own 0.2 s, not a queue's."""
    with server() as base:
        started = time.monotonic()
        summary = paced_client.run(f"{base}/slow", rate=100, seconds=0.2, connections=1)
        elapsed = time.monotonic() - started
    assert summary.sent == 20 and summary.errors == 0
    assert summary.connections >= 10
    assert max(summary.latencies_ms) < 1000, summary.latencies_ms
    assert elapsed < 1.5, elapsed


@pytest.mark.parametrize(
    "kind",
    ["close", "no-length", "hang", "garbage"],
    ids=[
        "connection closed unanswered",
        "answer without Content-Length",
        "no answer within the timeout",
        "no status line",
    ],
)
def test_a_request_without_a_readable_answer_is_an_error(kind: str) -> None:
    with server() as base:
        started = time.monotonic()
        summary = paced_client.run(f"{base}/{kind}", rate=20, seconds=0.1, connections=2, timeout=1.0)
        elapsed = time.monotonic() - started
    assert summary.sent == 2
    assert summary.errors == 2 and summary.latencies_ms == [] and not summary.statuses
    assert elapsed < 2.5, elapsed


def test_a_refused_connection_is_an_error_for_each_request() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        summary = paced_client.run(f"http://127.0.0.1:{port}/x", rate=50, seconds=0.1)
    assert summary.sent == 5 and summary.errors == 5 and summary.connections == 0


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("http://10.0.0.1:80/x", {}, "only sends to loopback"),
        ("http://127.0.0.1:80/x", {"rate": 0}, "rate 0 out of range"),
        ("http://127.0.0.1:80/x", {"rate": 5000}, "rate 5000 out of range"),
        ("http://127.0.0.1:80/x", {"seconds": 0}, "seconds 0 out of range"),
        ("http://127.0.0.1:80/x", {"connections": 0}, "connections 0 out of range"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_sent(url: str, options: dict, message: str) -> None:
    arguments = {"rate": 10, "seconds": 1.0} | options
    with pytest.raises(ValueError, match=message):
        paced_client.run(url, arguments.pop("rate"), arguments.pop("seconds"), **arguments)
