"""An HTTP proxy on 127.0.0.1 that holds every answer back: a Prometheus slower than the client's timeout.

    proxy = SlowProxy(prometheus.url, delay=2.0).start()
    client = PrometheusClient(proxy.url, timeout=0.5)   # every query times out
    proxy.delay = 0                                     # and now answers at once
    proxy.stop()

Bounded: a delay is at most MAX_DELAY seconds and is cut short by stop(); the upstream request
has its own timeout; handler threads are daemons. GET only (all the Prometheus client sends).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

MAX_DELAY = 30.0
UPSTREAM_TIMEOUT = 10.0


class SlowProxy:
    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.requests = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def delay(self) -> float:
        return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        if not 0 <= seconds <= MAX_DELAY:
            raise ValueError(f"delay {seconds!r} outside 0..{MAX_DELAY:g} s")
        self._delay = float(seconds)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> SlowProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes every held answer
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with proxy._lock:
                    proxy.requests += 1
                if proxy._stopping.wait(proxy.delay):
                    return  # stopping: drop the connection unanswered
                try:
                    upstream = requests.get(proxy.upstream + self.path, timeout=UPSTREAM_TIMEOUT)
                    status, body = upstream.status_code, upstream.content
                    content_type = upstream.headers.get("Content-Type", "application/octet-stream")
                except requests.RequestException as e:
                    status, body, content_type = 502, f"slow proxy: upstream failed: {e}".encode(), "text/plain"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: that is the point

            def log_message(self, format: str, *args) -> None:
                pass

        return Handler
