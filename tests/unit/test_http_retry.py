"""The helpers the Prometheus client and the notifier share (mirrorramp.http_retry)."""

from __future__ import annotations

import pytest
import requests

from mirrorramp.http_retry import backoff_delay, redact, retry_after, safe_url


def response_with(headers: dict[str, str]) -> requests.Response:
    response = requests.Response()
    response.headers.update(headers)
    return response


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("0.5", 0.5), ("", None), ("Wed, 21 Oct 2026 07:28:00 GMT", None), ("-1", None), ("inf", None)],
)
def test_retry_after_reads_delta_seconds_only(header, seconds):
    assert retry_after(response_with({"Retry-After": header} if header else {})) == seconds


def test_backoff_is_exponential_with_equal_jitter_and_capped():
    for retry, (low, high) in enumerate([(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (2.5, 5.0)]):
        delays = {backoff_delay(1.0, retry, cap=5.0) for _ in range(30)}
        assert all(low <= d <= high for d in delays) and len(delays) > 1


def test_redact_replaces_the_longest_secret_first():
    # "abc" inside "abcdef": replacing the short one first would leave "def" visible.
    assert redact("token abcdef and abc", ["abc", "abcdef", ""]) == "token <redacted> and <redacted>"


@pytest.mark.parametrize(
    ("url", "keep_path", "shown"),
    [
        ("https://user:pw@prom.example:9090/prom?token=s", True, "https://prom.example:9090/prom"),
        ("https://hooks.slack.com/services/T0/B0/secret", False, "https://hooks.slack.com/..."),
        ("http://[::1]:8080/x", True, "http://[::1]:8080/x"),
        ("http://host:notaport/x", False, "<invalid URL>"),
        ("not a url", False, "//?/..."),
    ],
)
def test_safe_url_never_shows_credentials_or_queries(url, keep_path, shown):
    assert safe_url(url, keep_path=keep_path) == shown
