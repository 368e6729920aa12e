"""What the engine's two HTTP clients share: the delay before a retry (exponential backoff with
jitter, or the server's Retry-After) and what a message may show of a URL or an answer.

prometheus.PrometheusClient (queries, bounded by one deadline) and notify.Notifier (webhooks,
bounded by a budget per event) keep their own loops: which answers are final differs (a
rejected query is a configuration error; a webhook's 4xx means this body will never pass).
"""

from __future__ import annotations

import math
import random
import urllib.parse
from collections.abc import Iterable
from typing import Protocol

REDACTED = "<redacted>"


class _Headers(Protocol):
    def get(self, name: str, default: str, /) -> str | None: ...


class HasHeaders(Protocol):
    """An HTTP answer with its headers: a requests.Response (the notifier's) or the Prometheus
    client's answer (http.client's headers)."""

    @property
    def headers(self) -> _Headers: ...


def backoff_delay(backoff: float, retry: int, cap: float = math.inf) -> float:
    """Seconds before retry number `retry` (0 for the first): exponential, capped, with "equal
    jitter" (between half and all of backoff * 2**retry), so clients that failed together do
    not retry together."""
    base = min(cap, backoff * 2**retry)
    return base / 2 + random.uniform(0, base / 2)


def retry_after(response: HasHeaders) -> float | None:
    """The server's Retry-After in seconds (the delta-seconds form), None when absent or not one."""
    value = response.headers.get("Retry-After", "") or ""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced, the longest first (a token may contain a shorter one)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def safe_url(url: str, *, keep_path: bool = True) -> str:
    """`url` as a message may show it: never user:password@ or the query string (either may carry
    a secret); without the path too when the path is the secret (a webhook's token)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:  # a malformed port: say nothing rather than echo the URL
        return "<invalid URL>"
    host = parts.hostname or ("" if keep_path else "?")
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path if keep_path else "/...", "", ""))
