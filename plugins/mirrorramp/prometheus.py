"""A small Prometheus HTTP API client: instant queries, the loaded alert rules, readiness.

Every call has a timeout; retries are bounded, with exponential backoff and jitter, under one
overall deadline on time.monotonic(). Connection errors, timeouts, 5xx and 429 are retried
(PrometheusError: no answer, no evidence). A query Prometheus refuses to run (400 bad_data,
422 execution) is not retried: it raises QueryRejectedError, a configuration error. The bearer
token goes in the Authorization header only: it is never part of a message, a repr or a log line.

`concurrently` runs the independent queries of one gate pass at once on a small bounded pool:
a pass waits for about one answer instead of one after the other.

The HTTP is the standard library's http.client on kept-alive connections, not `requests`: a pass
is a few small GETs to one host, and requests spent 1.7-2.3 ms of CPU on each (sessions merging
the environment's proxy settings, urllib3's pool) against about 0.6 ms here; the threads of a
pass share the GIL, so that CPU was most of a pass (docs/benchmarks.md, section 1).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TypeVar

from mirrorramp.errors import PrometheusError, QueryRejectedError
from mirrorramp.http_retry import backoff_delay, redact, retry_after, safe_url
from mirrorramp.kept_alive import Answer, KeptAliveConnections

log = logging.getLogger(__name__)

# Statuses that say "try again later"; anything else that is not 2xx is final.
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Prometheus answers a query it refuses to run with these (bad_data, execution): the one place
# that tells a wrong query from a Prometheus that could not answer.
_QUERY_REJECTED_STATUS = frozenset({400, 422})
BACKOFF_CAP_SECONDS = 5.0
# The most queries in flight at once from one pass (a pass has about 7): the caller's thread and
# MAX_CONCURRENT_QUERIES - 1 threads of a pool kept for the process (starting threads for every
# pass cost more than the queries on a loaded machine).
MAX_CONCURRENT_QUERIES = 8
# Kept-alive connections a client keeps between queries: one per query in flight.
MAX_IDLE_CONNECTIONS = MAX_CONCURRENT_QUERIES

T = TypeVar("T")


@dataclass(frozen=True)
class AlertRule:
    """A loaded alerting rule: its name and the labels it sets itself (a value may be a template,
    such as {{ $labels.service }}). An alert it fires carries these labels, alertname=name, and
    the other labels of its expression's series."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryResult:
    """An instant query's answer: result_type is vector, scalar, matrix or string.

    samples holds one (labels, value) per series; a scalar is one sample with no labels; for
    a matrix each series' last value; a string has no samples. Values are floats, so "NaN"
    and "+Inf" are float("nan") and float("inf").
    """

    result_type: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _float(text: object) -> float:
    """A Prometheus sample value ("1.5", "NaN", "+Inf", "-Inf") as a float."""
    if not isinstance(text, str):
        raise ValueError(f"sample value {text!r} is not a string")
    return float(text)


@dataclass(frozen=True)
class _Proxy:
    """The HTTP(S) proxy the environment names for the Prometheus URL (HTTP_PROXY, HTTPS_PROXY,
    NO_PROXY), as requests honoured it: plain HTTP through it, HTTPS tunnelled (CONNECT)."""

    host: str
    port: int
    headers: dict[str, str]


def _proxy_for(scheme: str, host: str) -> _Proxy | None:
    address = urllib.request.getproxies().get(scheme)
    if not address or urllib.request.proxy_bypass(host):
        return None
    if "://" not in address:
        address = f"http://{address}"
    parts = urllib.parse.urlsplit(address)
    if not parts.hostname:
        return None
    headers = {}
    if parts.username is not None:
        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = f"Basic {base64.b64encode(credentials.encode()).decode()}"
    return _Proxy(parts.hostname, parts.port or 80, headers)


def _tls_context(ca_cert: str | None, validate_certs: bool) -> ssl.SSLContext:
    """The certificate check requests made: against ca_cert when given (whatever validate_certs
    says), against the system's CAs when validate_certs, else none."""
    context = ssl.create_default_context(cafile=ca_cert)
    if not ca_cert and not validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class PrometheusClient:
    """Talks to one Prometheus (or anything serving its HTTP API: Thanos, Mimir, a proxy).

    Safe to share between threads: each query takes a kept-alive connection of its own from the
    client's idle ones (or opens one) and gives it back when the answer is read.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        ca_cert: str | None = None,
        validate_certs: bool = True,
        timeout: float = 10.0,
        retries: int = 3,
        *,
        backoff: float = 0.5,
    ) -> None:
        parts = urllib.parse.urlsplit(url or "")
        try:
            port = parts.port
        except ValueError:
            port = None
            parts = parts._replace(netloc="")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PrometheusError(f"Prometheus URL {safe_url(url or '')!r} is not an http(s) URL")
        if not (isinstance(timeout, int | float) and timeout > 0):
            raise PrometheusError(f"Prometheus timeout must be > 0 seconds, got {timeout!r}")
        if not (isinstance(retries, int) and retries >= 0):
            raise PrometheusError(f"Prometheus retries must be an integer >= 0, got {retries!r}")
        self.url = url.rstrip("/")
        self.safe_url = safe_url(self.url)
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = backoff
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port or (443 if self._https else 80)
        self._path = parts.path.rstrip("/")
        self._tls = _tls_context(ca_cert, validate_certs) if self._https else None
        self._proxy = _proxy_for(parts.scheme, self._host)
        # The secrets a message must never show: the token and a password in the URL.
        self._secrets = tuple(s for s in (token, parts.password) if s)
        self._headers = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "mirror-ramp"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif parts.username is not None:  # user:password@ in the URL, as requests sent it
            credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._headers["Authorization"] = f"Basic {base64.b64encode(credentials.encode()).decode()}"
        # A kept-alive connection, not counted as an attempt when the server had closed it.
        self._connections = KeptAliveConnections(self._new_connection, MAX_IDLE_CONNECTIONS)

    def __repr__(self) -> str:
        has_token = self._headers.get("Authorization", "").startswith("Bearer ")
        return f"PrometheusClient(url={self.safe_url!r}, token={'<set>' if has_token else None})"

    def close(self) -> None:
        """Close the kept-alive connections (a query after this opens a new one)."""
        self._connections.close()

    # -- the API ---------------------------------------------------------------------------

    def query(self, promql: str, at: float | None = None) -> QueryResult:
        """Run an instant query (at `at`, seconds since the epoch; default: now)."""
        params: dict[str, str] = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get_json("/api/v1/query", params)
        try:
            return _parse_query_data(data)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise PrometheusError(f"{self.safe_url}/api/v1/query: unexpected answer: {e}") from e

    def alert_rules(self) -> tuple[AlertRule, ...]:
        """The alerting rules Prometheus has loaded, each with its own labels."""
        data = self._get_json("/api/v1/rules", {"type": "alert"})
        try:
            return tuple(
                AlertRule(str(rule["name"]), {str(k): str(v) for k, v in (rule.get("labels") or {}).items()})
                for group in data["groups"]
                for rule in group.get("rules") or []
                if rule.get("type", "alerting") == "alerting"
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise PrometheusError(f"{self.safe_url}/api/v1/rules: unexpected answer: {e}") from e

    def ready(self) -> bool:
        """True if /-/ready answers 200 now (one attempt, no retry)."""
        try:
            return self._get("/-/ready", {}, self.timeout).status == 200
        except (OSError, http.client.HTTPException):
            return False

    # -- HTTP on kept-alive connections ------------------------------------------------------

    def _new_connection(self) -> http.client.HTTPConnection:
        host, port = (self._proxy.host, self._proxy.port) if self._proxy else (self._host, self._port)
        if self._tls is None:
            return http.client.HTTPConnection(host, port, timeout=self.timeout)
        connection = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._tls)
        if self._proxy:
            connection.set_tunnel(self._host, self._port, headers=self._proxy.headers)
        return connection

    def _get(self, path: str, params: dict[str, str], timeout: float) -> Answer:
        """One GET (`timeout` for the connection and for each read), its answer read whole.
        Raises OSError (refused, timed out, TLS) or http.client.HTTPException."""
        target = f"{self._path}{path}"
        if params:
            target = f"{target}?{urllib.parse.urlencode(params)}"
        headers = self._headers
        if self._proxy and self._tls is None:  # plain HTTP through a proxy: the absolute URL
            target = f"http://{self._host}:{self._port}{target}"
            headers = {**headers, **self._proxy.headers}
        return self._connections.get(target, headers, timeout)

    # -- bounded retries -------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _get_json(self, path: str, params: dict[str, str]) -> dict:
        """GET `path` and return the `data` of a success answer, retrying what may pass."""
        endpoint = f"{self.safe_url}{path}"
        attempts = self.retries + 1
        # One deadline for everything: each attempt's timeout plus the backoff between them.
        deadline = time.monotonic() + attempts * self.timeout + self.retries * BACKOFF_CAP_SECONDS
        last_error = "no attempt made"
        for attempt in range(attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            retry_after_s: float | None = None
            attempt_timeout = min(self.timeout, remaining)
            try:
                response = self._get(path, params, attempt_timeout)
            except TimeoutError as e:
                last_error = f"timed out after {attempt_timeout:.3g}s ({type(e).__name__})"
            except (OSError, http.client.HTTPException) as e:
                last_error = f"connection failed: {self._redact(str(e) or type(e).__name__)}"
            else:
                status = response.status
                if 200 <= status < 300:
                    return self._success_data(endpoint, response)
                api_error = self._api_error(response)
                if status in _QUERY_REJECTED_STATUS and api_error and "query" in params:
                    raise QueryRejectedError(params["query"], status, api_error)
                error = api_error or self._body_start(response)
                if status not in _RETRYABLE_STATUS:
                    raise PrometheusError(f"{endpoint}: HTTP {status}: {error}{self._redirected(response)}")
                last_error = f"HTTP {status}: {error}"
                retry_after_s = retry_after(response)
            if attempt + 1 < attempts:
                delay = (
                    retry_after_s
                    if retry_after_s is not None
                    else backoff_delay(self.backoff, attempt, BACKOFF_CAP_SECONDS)
                )
                delay = min(delay, BACKOFF_CAP_SECONDS, max(0.0, deadline - time.monotonic()))
                log.debug(
                    "mirror_ramp: %s attempt %d/%d failed (%s); retrying in %.2fs",
                    endpoint,
                    attempt + 1,
                    attempts,
                    last_error,
                    delay,
                )
                time.sleep(delay)
        raise PrometheusError(f"{endpoint}: no answer after {attempts} attempt(s); last error: {last_error}")

    def _success_data(self, endpoint: str, response: Answer) -> dict:
        try:
            body = json.loads(response.body)
        except ValueError as e:
            raise PrometheusError(f"{endpoint}: the answer is not JSON (HTTP {response.status})") from e
        if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(body.get("data"), dict):
            raise PrometheusError(f"{endpoint}: unexpected answer: {self._redact(str(body))[:300]}")
        data = body["data"]
        if body.get("warnings"):
            data = {**data, "warnings": list(body["warnings"])}
        return data

    def _api_error(self, response: Answer) -> str | None:
        """Prometheus' own error text ("bad_data: ... parse error ..."), or None when the body
        is not the API's error answer (a proxy's page, say)."""
        try:
            body = json.loads(response.body)
        except ValueError:
            return None
        if not (isinstance(body, dict) and body.get("status") == "error" and body.get("error")):
            return None
        return self._redact(f"{body.get('errorType', 'error')}: {body['error']}")

    def _body_start(self, response: Answer) -> str:
        return self._redact(" ".join(response.text.split())[:200] or response.reason or "no body")

    @staticmethod
    def _redirected(response: Answer) -> str:
        """Where a redirect points (redirects are not followed: the Authorization header must not
        go to another host, and the API's paths do not move): set the URL to it."""
        location = response.headers.get("Location")
        if not (300 <= response.status < 400 and location):
            return ""
        return f" (redirected to {safe_url(location)}: set the Prometheus URL to where it points)"


# The pool `concurrently` runs calls on: made on first use, kept for the process (its threads wait
# idle between passes), made again in a forked child (a fork copies no threads).
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool_in_child() -> None:
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool_in_child)


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_QUERIES - 1, thread_name_prefix="mirror-query")
        return _pool


def concurrently(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Every call's result, in the calls' order, the calls run at once: the first in the caller's
    thread, the others on a shared pool of MAX_CONCURRENT_QUERIES - 1 threads.

    A call no pool thread has started yet when the caller is free runs in the caller's thread:
    a call that itself calls `concurrently` (a judge's counts, a grouped query) never waits for a
    pool thread that is waiting for it, and a busy pool only makes a pass sequential.

    Once every call has ended, the first call (in order) that raised raises again here: the
    error a caller sees is the one it would have met running them one after the other, and no
    call is still running when this returns. The calls share a PrometheusClient (thread-safe: a
    connection per query in flight); a call must not share other mutable state without a lock.
    """
    if len(calls) <= 1:
        return [call() for call in calls]
    pool = _shared_pool()
    submitted = [pool.submit(call) for call in calls[1:]]
    outcomes = [_run_here(calls[0])]
    for call, future in zip(calls[1:], submitted, strict=True):
        outcomes.append(_run_here(call) if future.cancel() else future)
    wait(outcomes)
    return [future.result() for future in outcomes]


def _run_here(call: Callable[[], T]) -> Future[T]:
    """`call` run in this thread, its result or error in a done Future (as the pool's are)."""
    future: Future[T] = Future()
    future.set_running_or_notify_cancel()
    try:
        future.set_result(call())
    except BaseException as e:  # kept for the caller, raised in call order as the pool's are
        future.set_exception(e)
    return future


def _parse_query_data(data: dict) -> QueryResult:
    result_type = data["resultType"]
    result = data["result"]
    warnings = [str(w) for w in data.get("warnings", [])]
    if result_type == "vector":
        samples = [(dict(s["metric"]), _float(s["value"][1])) for s in result]
    elif result_type == "scalar":
        samples = [({}, _float(result[1]))]
    elif result_type == "matrix":
        samples = [(dict(s["metric"]), _float(s["values"][-1][1])) for s in result if s.get("values")]
    elif result_type == "string":
        samples = []
    else:
        raise ValueError(f"unknown resultType {result_type!r}")
    return QueryResult(result_type, samples, warnings)
