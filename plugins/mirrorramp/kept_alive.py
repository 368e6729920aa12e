"""GETs on kept-alive http.client connections to one server, shared by the engine's clients of
Prometheus and of Envoy's admin.

A new connection per request cost a pass more than its queries (the TCP handshake, and
`requests`/`urllib` scanning the environment for proxies every time): the connections stay open
between requests, up to `max_idle` idle ones. A reused connection the server had already closed
fails at once; the GET (safe to send again) then goes out once more on a new connection.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# What a reused connection that the server closed meanwhile raises on its first use.
STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, read whole (its connection is then free for the next request)."""

    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class KeptAliveConnections:
    """Idle connections made by `connect`, reused by `get`; thread-safe."""

    def __init__(self, connect: Callable[[], http.client.HTTPConnection], max_idle: int) -> None:
        self._connect = connect
        self._max_idle = max_idle
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def get(self, target: str, headers: Mapping[str, str], timeout: float) -> Answer:
        """GET `target` (`timeout` for the connection and for each read), the answer read whole.
        Raises OSError (refused, timed out, TLS) or http.client.HTTPException."""
        while True:
            connection, reused = self._connection()
            connection.timeout = timeout
            try:
                if connection.sock is not None:
                    connection.sock.settimeout(timeout)
                connection.request("GET", target, headers=dict(headers))
                response = connection.getresponse()
                answer = Answer(response.status, response.reason, response.headers, response.read())
            except STALE_CONNECTION_ERRORS:
                connection.close()
                if reused:
                    continue
                raise
            except BaseException:
                connection.close()  # in an unknown state (a timeout mid-answer): never reused
                raise
            if response.will_close:
                connection.close()
            else:
                self._release(connection)
            return answer

    def close(self) -> None:
        """Close the idle connections (a request after this opens a new one)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (and True), or a new one (and False)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _release(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()
