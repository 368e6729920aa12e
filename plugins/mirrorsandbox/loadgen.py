"""A bounded load generator for the sandbox: loopback URLs only, limited in rate, time and count.

    python -m mirrorsandbox.loadgen --url http://127.0.0.1:18080/load --rps 20 --duration 600 \\
        --max-requests 12000 [--post-ratio 0.1] [--concurrency 4]

Sends GETs (and a share of POSTs with a small JSON body) to URL/<n>, paced at --rps, and stops
at --duration seconds or --max-requests requests, whichever comes first, or on SIGTERM. Prints
one JSON summary line at the end (sent, per status, errors, p50/p99 ms).
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_RPS = 2000.0
MAX_DURATION = 24 * 3600.0
MAX_CONCURRENCY = 64


def check_loopback_url(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an http:// URL on loopback; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url!r}: expected an http:// URL")
    host = parts.hostname
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"{url!r}: the load generator only sends to loopback (127.0.0.0/8, ::1, localhost)")
    return host, parts.port or 80, (parts.path.rstrip("/") or "")


@dataclass
class Summary:
    sent: int = 0
    errors: int = 0
    statuses: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    def as_dict(self) -> dict:
        return {
            "sent": self.sent,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p50_ms": self.percentile(0.50),
            "p99_ms": self.percentile(0.99),
            "elapsed_s": round(self.elapsed_s, 2),
        }


def run(
    url: str,
    rps: float,
    duration: float,
    max_requests: int,
    *,
    post_ratio: float = 0.1,
    concurrency: int = 4,
    timeout: float = 5.0,
    stop: threading.Event | None = None,
) -> Summary:
    """Send the load; returns when a limit is reached or `stop` is set."""
    host, port, base = check_loopback_url(url)
    if not 0 < rps <= MAX_RPS:
        raise ValueError(f"rps {rps} out of range (0, {MAX_RPS:g}]")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration {duration} out of range (0, {MAX_DURATION:g}] seconds")
    if max_requests <= 0:
        raise ValueError(f"max_requests {max_requests} must be > 0")
    if not 0 <= post_ratio <= 1:
        raise ValueError(f"post_ratio {post_ratio} out of range [0, 1]")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency {concurrency} out of range [1, {MAX_CONCURRENCY}]")
    stop = stop or threading.Event()
    summary = Summary()
    lock = threading.Lock()
    tickets = iter(range(max_requests))
    started = time.monotonic()
    deadline = started + duration
    post_every = round(1 / post_ratio) if post_ratio else 0

    def take() -> int | None:
        with lock:
            n = next(tickets, None)
        if n is None:
            return None
        due = started + n / rps
        wait = due - time.monotonic()
        # Behind schedule (the target is saturated), `due` is in the past: the clock still ends it.
        late = time.monotonic() >= deadline
        if late or due >= deadline or (wait > 0 and stop.wait(wait)) or stop.is_set():
            return None
        return n

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        while (n := take()) is not None:
            path = f"{base}/{n}"
            is_post = bool(post_every) and n % post_every == 0
            body = json.dumps({"n": n, "payload": "x" * (n % 64)}).encode() if is_post else None
            headers = {"Content-Type": "application/json"} if is_post else {}
            t0 = time.monotonic()
            status: int | None = None
            for attempt in range(2):  # one retry: a keep-alive connection can be closed by a reload
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(host, port, timeout=timeout)
                    conn.request("POST" if is_post else "GET", path, body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                    break
                except (OSError, http.client.HTTPException):
                    if conn is not None:
                        conn.close()
                    conn = None
                    if attempt:
                        status = None
            elapsed = (time.monotonic() - t0) * 1000
            with lock:
                summary.sent += 1
                if status is None:
                    summary.errors += 1
                else:
                    summary.statuses[status] += 1
                    summary.latencies_ms.append(elapsed)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary.elapsed_s = time.monotonic() - started
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mirrorsandbox.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/PATH (loopback only)")
    parser.add_argument("--rps", type=float, required=True, help=f"requests per second (max {MAX_RPS:g})")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--max-requests", type=int, required=True)
    parser.add_argument("--post-ratio", type=float, default=0.1, help="share of POSTs, 0..1")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        summary = run(
            args.url,
            args.rps,
            args.duration,
            args.max_requests,
            post_ratio=args.post_ratio,
            concurrency=args.concurrency,
            timeout=args.timeout,
            stop=stop,
        )
    except ValueError as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary.as_dict(), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
