"""The sandbox's forwarder of bodiless copies: log lines from the proxy, requests to the candidate.

    python -m mirrorramp.mirror_forwarder --port 18079 --candidate-port 18082 --max-open 1024 --timeout 5

The sandbox proxy (nginx) sends each mirrored request without a body (GET and HEAD, what the
sandbox mirrors unless mirror_all_methods) as an access-log line over UDP, in its log phase,
after the primary's answer: one datagram, waiting for nothing, as Envoy's shadowing waits for
nothing. This process turns each line back into a request to the candidate. (Requests with
bodies go through the relay, an nginx: a datagram cannot hold a body of up to 1 MiB.)

Why not the relay for these too: nginx's mirror reads the next request on a client's connection
only once the relay has answered the copy. Measured (scripts/bench/relay_hop.py): that hand-off
cost the primary's p50 about 0.13 ms mirroring 100%; the log line about 0.01 ms.

A line is the syslog header nginx writes, then a JSON object (log_format ... escape=json):
{"method": "GET", "uri": "/path?q", "id": "<request id>", "host": "<Host>"}.

Bounded as Envoy's circuit breaker bounds the mirror's cluster: at most --max-open copies are
forwarded at once; beyond, a copy is dropped. Each forward is bounded by --timeout (the route's).
When this process falls behind, lines wait in the socket's buffer (4 MiB asked for) or, beyond
it, the kernel drops them: the copies suffer, never the primary. Counts are printed when it stops
(SIGTERM), the kernel's drops among them (from /proc/net/udp).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from mirrorramp.durations import parse_duration
from mirrorramp.errors import ConfigError
from mirrorramp.loopback import loopback_host

METHODS = frozenset({"GET", "HEAD"})  # the proxy sends only these as lines


@dataclass(frozen=True)
class Copy:
    method: str
    uri: str
    request_id: str
    host: str

    def request(self) -> bytes:
        return (
            f"{self.method} {self.uri} HTTP/1.1\r\nHost: {self.host}\r\nX-Request-Id: {self.request_id}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")


class BadLine(ValueError):
    """A datagram that is not a copy this forwarder can send; counted and dropped."""


def _field(fields: dict, name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
        raise BadLine(f"{name}: {value!r} is not a non-empty single-line string")
    return value


def parse_line(datagram: bytes) -> Copy:
    """The copy in one datagram: a syslog header, then the JSON object of log_format mirror_copy."""
    start = datagram.find(b"{")
    if start < 0:
        raise BadLine(f"no JSON object in {datagram[:80]!r}")
    try:
        # latin-1: nginx's escape=json leaves bytes >= 0x80 as they came; each maps to itself.
        fields = json.loads(datagram[start:].decode("latin-1"))
    except ValueError as e:
        raise BadLine(f"not JSON: {e}") from e
    if not isinstance(fields, dict):
        raise BadLine("not a JSON object")
    method, uri = _field(fields, "method"), _field(fields, "uri")
    if method not in METHODS:
        raise BadLine(f"method {method!r}: only {sorted(METHODS)} come as lines")
    if not uri.startswith("/") or " " in uri:
        raise BadLine(f"uri {uri[:80]!r} is not an origin-form path")
    return Copy(method=method, uri=uri, request_id=_field(fields, "id"), host=_field(fields, "host"))


class Forwarder(asyncio.DatagramProtocol):
    """Forwards each line's copy to the candidate, at most `max_open` at a time."""

    def __init__(self, candidate: tuple[str, int], max_open: int, timeout: float) -> None:
        self.candidate = candidate
        self.max_open = max_open
        self.timeout = timeout
        self.open = 0
        self.counts = {"forwarded": 0, "dropped over the bound": 0, "failed or timed out": 0, "bad lines": 0}
        self._tasks: set[asyncio.Task] = set()  # a task without a reference may be collected mid-forward

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            copy = parse_line(data)
        except BadLine as e:
            self.counts["bad lines"] += 1
            if self.counts["bad lines"] <= 10:  # enough to see the cause, not a flood
                print(f"mirror_forwarder: dropped a line: {e}", file=sys.stderr, flush=True)
            return
        if self.open >= self.max_open:
            self.counts["dropped over the bound"] += 1
            return
        self.open += 1
        task = asyncio.get_running_loop().create_task(self.forward(copy))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def forward(self, copy: Copy) -> None:
        writer = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(*self.candidate)
                writer.write(copy.request())
                while await reader.read(65536):  # the answer, read to its end and thrown away
                    pass
            self.counts["forwarded"] += 1
        except (OSError, TimeoutError):
            self.counts["failed or timed out"] += 1
        finally:
            self.open -= 1
            if writer is not None:
                writer.close()

    async def drain(self) -> None:
        """Cancel the forwards still open (a stop does not wait for a hung candidate)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# The kernel's default UDP receive buffer (net.core.rmem_default, 208 KiB) holds about 270 lines; a
# burst of copies while this process is busy overflowed it and the kernel dropped lines: 882 of
# 2,000 copies at 50% arrived in one run of test_sandbox under the parallel test suite. 4 MiB holds
# about 5,000 (the kernel grants at most net.core.rmem_max).
RECEIVE_BUFFER = 4 * 1024 * 1024


def widen_receive_buffer(sock) -> int:
    """Ask for RECEIVE_BUFFER on the lines' socket; the size the kernel granted."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def kernel_drops(sock) -> int | None:
    """The datagrams the kernel dropped for `sock` (its receive buffer full), from the drops column
    of /proc/net/udp (udp6): the lines this process never saw. None where that file is missing
    (not Linux) or does not list the socket."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) >= 13 and fields[9] == inode:
                return int(fields[12])
    return None


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    forwarder = Forwarder((args.candidate_host, args.candidate_port), args.max_open, args.timeout)
    transport, _ = await loop.create_datagram_endpoint(lambda: forwarder, local_addr=(args.host, args.port))
    buffer = widen_receive_buffer(transport.get_extra_info("socket"))
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(
        f"mirror_forwarder: lines on udp://{args.host}:{args.port}, copies to http://{args.candidate_host}:"
        f"{args.candidate_port}/, at most {args.max_open} open, {args.timeout:g} s each; "
        f"a receive buffer of {buffer} bytes",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        dropped = kernel_drops(transport.get_extra_info("socket"))
        transport.close()
        await forwarder.drain()
        if dropped is not None:
            forwarder.counts["dropped by the kernel (receive buffer full)"] = dropped
        counts = ", ".join(f"{count} {what}" for what, count in forwarder.counts.items())
        print(f"mirror_forwarder: stopped; {counts}", flush=True)


def _bounded(low: float, high: float, kind: type):
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text}: allowed {low:g}..{high:g}")
        return value

    return parse


def _timeout(text: str) -> float:
    try:
        return parse_duration(text, name="--timeout")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mirrorramp.mirror_forwarder", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=_bounded(1, 65535, int), required=True, help="UDP port of the proxy's lines")
    parser.add_argument("--candidate-port", type=_bounded(1, 65535, int), required=True, help="the candidate's port")
    parser.add_argument("--host", type=loopback_host, default="127.0.0.1")
    parser.add_argument("--candidate-host", type=loopback_host, default="127.0.0.1")
    parser.add_argument("--max-open", type=_bounded(1, 16384, int), default=1024, help="copies open at once")
    parser.add_argument(
        "--timeout", type=_timeout, default=5.0, help="how long a forward may take: the route's timeout (5s, 500ms, 2)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
