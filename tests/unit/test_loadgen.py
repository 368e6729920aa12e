"""The load generator stops at its duration even when the target cannot keep up."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mirrorsandbox import loadgen


class SlowHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(0.1)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


def test_a_saturated_target_does_not_stretch_the_run_past_its_duration() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/load"
        started = time.monotonic()
        # 2 workers x 10 answers/s at most, asked for 500/s: far behind schedule at once.
        summary = loadgen.run(url, rps=500, duration=1.0, max_requests=100_000, concurrency=2, post_ratio=0)
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert elapsed < 2.5, elapsed  # the duration, one request in flight per worker, a loaded machine
    assert 0 < summary.sent <= 30
