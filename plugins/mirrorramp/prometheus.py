"""A small Prometheus HTTP API client: instant queries, the loaded alert rules, readiness.

Every call has a timeout; retries are bounded, with exponential backoff and jitter, under one
overall deadline on time.monotonic(). Connection errors, timeouts, 5xx and 429 are retried
(PrometheusError: no answer, no evidence). A query Prometheus refuses to run (400 bad_data,
422 execution) is not retried: it raises QueryRejectedError, a configuration error. The bearer
token goes in the Authorization header only: it is never part of a message, a repr or a log line.

`concurrently` runs the independent queries of one gate pass at once on a small bounded pool:
a pass waits for about one answer instead of one after the other.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import requests

from mirrorramp.errors import PrometheusError, QueryRejectedError
from mirrorramp.http_retry import backoff_delay, redact, retry_after, safe_url

log = logging.getLogger(__name__)

# Statuses that say "try again later"; anything else that is not 2xx is final.
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Prometheus answers a query it refuses to run with these (bad_data, execution): the one place
# that tells a wrong query from a Prometheus that could not answer.
_QUERY_REJECTED_STATUS = frozenset({400, 422})
BACKOFF_CAP_SECONDS = 5.0
# The most queries in flight at once from one pass: a pass has about 7; below requests' pool of
# 10 connections per host, so every concurrent query reuses a kept-alive connection.
MAX_CONCURRENT_QUERIES = 8

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


class PrometheusClient:
    """Talks to one Prometheus (or anything serving its HTTP API: Thanos, Mimir, a proxy)."""

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
        session: requests.Session | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url or "")
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
        # The secrets a message must never show: the token and a password in the URL.
        self._secrets = tuple(s for s in (token, parts.password) if s)
        self._session = session or requests.Session()
        self._session.verify = ca_cert if ca_cert else validate_certs
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        has_token = "Authorization" in self._session.headers
        return f"PrometheusClient(url={self.safe_url!r}, token={'<set>' if has_token else None})"

    def close(self) -> None:
        self._session.close()

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
            response = self._session.get(f"{self.url}/-/ready", timeout=self.timeout)
        except requests.RequestException:
            return False
        return response.status_code == 200

    # -- HTTP with bounded retries ---------------------------------------------------------

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
            try:
                response = self._session.get(f"{self.url}{path}", params=params, timeout=min(self.timeout, remaining))
            except requests.Timeout as e:
                last_error = f"timed out after {min(self.timeout, remaining):.3g}s ({type(e).__name__})"
            except requests.ConnectionError as e:
                last_error = f"connection failed: {self._redact(_root_cause(e))}"
            except requests.RequestException as e:
                raise PrometheusError(f"{endpoint}: request failed: {self._redact(str(e))}") from e
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return self._success_data(endpoint, response)
                api_error = self._api_error(response)
                if status in _QUERY_REJECTED_STATUS and api_error and "query" in params:
                    raise QueryRejectedError(params["query"], status, api_error)
                error = api_error or self._body_start(response)
                if status not in _RETRYABLE_STATUS:
                    raise PrometheusError(f"{endpoint}: HTTP {status}: {error}")
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

    def _success_data(self, endpoint: str, response: requests.Response) -> dict:
        try:
            body = response.json()
        except ValueError as e:
            raise PrometheusError(f"{endpoint}: the answer is not JSON (HTTP {response.status_code})") from e
        if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(body.get("data"), dict):
            raise PrometheusError(f"{endpoint}: unexpected answer: {self._redact(str(body))[:300]}")
        data = body["data"]
        if body.get("warnings"):
            data = {**data, "warnings": list(body["warnings"])}
        return data

    def _api_error(self, response: requests.Response) -> str | None:
        """Prometheus' own error text ("bad_data: ... parse error ..."), or None when the body
        is not the API's error answer (a proxy's page, say)."""
        try:
            body = response.json()
        except ValueError:
            return None
        if not (isinstance(body, dict) and body.get("status") == "error" and body.get("error")):
            return None
        return self._redact(f"{body.get('errorType', 'error')}: {body['error']}")

    def _body_start(self, response: requests.Response) -> str:
        return self._redact(" ".join(response.text.split())[:200] or response.reason or "no body")


def concurrently(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Every call's result, in the calls' order, the calls run at once on at most
    MAX_CONCURRENT_QUERIES threads (one call runs in the caller's thread).

    Once every call has ended, the first call (in order) that raised raises again here: the
    error a caller sees is the one it would have met running them one after the other, and no
    call is still running when this returns. The calls share a PrometheusClient: its
    requests.Session keeps its connections in urllib3's thread-safe pool and only reads its
    headers; a call must not share other mutable state without a lock.
    """
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=min(MAX_CONCURRENT_QUERIES, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]


def _root_cause(error: requests.RequestException) -> str:
    """The useful part of a requests error: urllib3's reason, without the pool's retry story."""
    inner = error.args[0] if error.args else None
    reason = getattr(inner, "reason", None)
    return str(reason if reason is not None else error)


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
