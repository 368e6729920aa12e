"""The gates against the real Prometheus, scraping Istio-shaped metrics every second.

Each test has its own workloads, so what one test feeds does not leak into another's gates.
Waits are deadline polls that keep feeding traffic while they wait.
"""

from __future__ import annotations

import time

import pytest

from mirrorramp.errors import ConfigError
from mirrorramp.gates import check_queries, default_gates, evaluate, parse_gates
from mirrorramp.model import Verdict
from mirrorramp.prometheus import PrometheusClient
from mirrorramp.promql import QueryContext
from tests.support.istio_metrics_source import IstioMetricsSource
from tests.support.prometheus_server import PrometheusServer, poll_until

pytestmark = pytest.mark.slow

NAMESPACE = "shop"
ALERT = "MirrorErrorRatioCritical"
# The shape of the project's alert: the mirror's 5xx share over a short rate window.
RULES = f"""\
groups:
  - name: mirror-gates-test
    rules:
      - alert: {ALERT}
        expr: >-
          sum by (destination_workload) (rate(istio_requests_total{{reporter="destination",
          destination_workload="alerting-v2",response_code=~"5.."}}[5s]))
          / sum by (destination_workload) (rate(istio_requests_total{{reporter="destination",
          destination_workload="alerting-v2"}}[5s])) > 0.05
        for: 1s
        labels: {{severity: critical}}
"""
WINDOW = 10


@pytest.fixture(scope="module")
def source():
    metrics = IstioMetricsSource(namespace=NAMESPACE, service="user-service").start()
    yield metrics
    metrics.stop()


@pytest.fixture(scope="module")
def prometheus(source, tmp_path_factory):
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), targets=[source.target], rules={"mirror": RULES})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(prometheus):
    gate_client = PrometheusClient(prometheus.url, timeout=2.0, retries=1, backoff=0.05)
    yield gate_client
    gate_client.close()


def context(name: str) -> QueryContext:
    return QueryContext("user-service", NAMESPACE, "local", f"{name}-v1", (f"{name}-v2",))


def verdicts(results) -> dict[str, Verdict]:
    return {r.name: r.verdict for r in results}


def feeding(feed, check):
    """A poll step: serve some requests, then look."""

    def step():
        feed()
        return check()

    return step


def full_gateset(min_requests: int = 20):
    raw = default_gates(error_ratio_max=0.05, p99_latency_ms_max=1000, min_requests=min_requests)
    raw["comparisons"] = [
        {"name": "error-delta", "metric": "error_ratio", "max_delta": 0.01},
        {"name": "latency-ratio", "metric": "p99_latency", "max_ratio": 1.5},
    ]
    raw["alerts"] = [
        {"name": "no-critical", "alertname": ALERT, "matchers": {"destination_workload": "${mirror_workload}"}}
    ]
    return parse_gates(raw)


def test_default_queries_are_accepted_by_prometheus(client):
    assert check_queries(full_gateset(), client, context("healthy")) == []


def test_healthy_traffic_passes_every_gate(source, client):
    gateset = full_gateset()

    def serve():
        for workload in ("healthy-v1", "healthy-v2"):
            source.add(workload, n=30, code=200, latency_ms=20)

    def all_pass():
        results = evaluate(gateset, client, context("healthy"), WINDOW)
        return results if all(r.verdict is Verdict.PASS for r in results) else None

    results = poll_until(feeding(serve, all_pass), timeout=20, interval=0.5, what="all gates pass")
    by_name = {r.name: r for r in results}
    assert set(by_name) == {"traffic", "error-ratio", "p99-latency-ms", "error-delta", "latency-ratio", "no-critical"}
    assert by_name["traffic"].value >= 20
    assert by_name["error-ratio"].value == 0
    assert 10 < by_name["p99-latency-ms"].value <= 25  # every request took 20 ms: the (10, 25] bucket
    assert by_name["latency-ratio"].value == pytest.approx(1.0)


def test_errors_on_the_mirror_fail_the_error_gates(source, client):
    gateset = full_gateset()

    def serve():
        source.add("failing-v1", n=40, code=200, latency_ms=20)
        source.add("failing-v2", n=30, code=200, latency_ms=20)
        source.add("failing-v2", n=10, code=503, latency_ms=20)

    def error_gates_fail():
        results = evaluate(gateset, client, context("failing"), WINDOW)
        seen = verdicts(results)
        return results if seen["error-ratio"] is Verdict.FAIL and seen["error-delta"] is Verdict.FAIL else None

    results = poll_until(feeding(serve, error_gates_fail), timeout=20, interval=0.5, what="error gates fail")
    by_name = {r.name: r for r in results}
    assert by_name["traffic"].verdict is Verdict.PASS
    # 10 of every 40; a scrape between the two add() calls can tilt a short window a little.
    assert 0.1 < by_name["error-ratio"].value < 0.5
    assert by_name["error-ratio"].reason == f"value {by_name['error-ratio'].value:.6g} is not < 0.05"
    assert by_name["p99-latency-ms"].verdict is Verdict.PASS


def test_alert_that_fired_and_resolved_fails_until_the_window_moves_past_it(source, prometheus, client):
    gateset = parse_gates({"min_requests": 0, "alerts": [{"name": "no-critical", "alertname": ALERT}]})
    ctx = context("alerting")
    firing_now = f'ALERTS{{alertname="{ALERT}",alertstate="firing",destination_workload="alerting-v2"}}'

    def serve_errors():
        source.add("alerting-v2", n=20, code=200)
        source.add("alerting-v2", n=5, code=500)

    poll_until(feeding(serve_errors, lambda: prometheus.query(firing_now)), timeout=20, interval=0.5, what="firing")
    (alert,) = [r for r in evaluate(gateset, client, ctx, 60) if r.kind == "alert"]
    assert alert.verdict is Verdict.FAIL and alert.value == 1.0
    assert alert.extra["alerts"][0]["alertname"] == ALERT
    assert alert.extra["alerts"][0]["severity"] == "critical"

    def serve_healthy():
        source.add("alerting-v2", n=20, code=200)

    poll_until(
        feeding(serve_healthy, lambda: not prometheus.query(firing_now)), timeout=20, interval=0.5, what="resolved"
    )
    # Resolved now, yet a run whose window covers the firing still fails the step.
    (alert,) = [r for r in evaluate(gateset, client, ctx, 60) if r.kind == "alert"]
    assert alert.verdict is Verdict.FAIL, alert.reason
    assert "fired in the last 60s" in alert.reason

    def passes_over_a_short_window():
        (short,) = [r for r in evaluate(gateset, client, ctx, 3) if r.kind == "alert"]
        return short if short.verdict is Verdict.PASS else None

    short = poll_until(feeding(serve_healthy, passes_over_a_short_window), timeout=15, interval=0.5, what="pass")
    assert short.reason == "not firing in the last 3s"
    # The long window still remembers it.
    (alert,) = [r for r in evaluate(gateset, client, ctx, 60) if r.kind == "alert"]
    assert alert.verdict is Verdict.FAIL


def test_unknown_alert_rule_is_inconclusive(client):
    gateset = parse_gates({"min_requests": 0, "alerts": [{"name": "typo", "alertname": "MirrorErrorRatioCritcal"}]})
    (alert,) = [r for r in evaluate(gateset, client, context("healthy"), WINDOW) if r.kind == "alert"]
    assert alert.verdict is Verdict.INCONCLUSIVE
    assert alert.reason == "no alert rule MirrorErrorRatioCritcal loaded"


def test_no_series_and_idle_series_are_inconclusive(source, prometheus, client):
    gateset = full_gateset()
    # No series at all: the request count is an empty vector.
    results = evaluate(gateset, client, context("ghost"), WINDOW)
    assert verdicts(results) == dict.fromkeys(verdicts(results), Verdict.INCONCLUSIVE) | {"no-critical": Verdict.PASS}
    assert results[0].reason == "too few requests: 0 < 20"
    # Series that exist but served nothing: with no minimum the ratios are 0/0 = NaN.
    source.touch("idle-v1")
    source.touch("idle-v2")
    idle = 'istio_requests_total{destination_workload="idle-v2"}'
    poll_until(lambda: len(prometheus.query(f"count_over_time({idle}[{WINDOW}s])")) > 0, timeout=10, what="scraped")
    poll_until(lambda: float(prometheus.query(f"count_over_time({idle}[{WINDOW}s])")[0]["value"][1]) >= 2, 10)
    results = {r.name: r for r in evaluate(full_gateset(min_requests=0), client, context("idle"), WINDOW)}
    assert results["traffic"].verdict is Verdict.PASS and results["traffic"].value == 0
    for name in ("error-ratio", "p99-latency-ms", "error-delta", "latency-ratio"):
        assert results[name].verdict is Verdict.INCONCLUSIVE, name
        assert results[name].reason.startswith("no data: the value is NaN"), results[name].reason


def test_syntax_error_in_a_template_is_a_config_error_before_any_change(client):
    broken = {
        "name": "broken-ratio",
        "query": 'sum(rate(istio_requests_total{a="${service}"}[${window}])',
        "operator": "<",
        "value": 1,
    }
    gateset = parse_gates({"thresholds": [broken]})
    with pytest.raises(ConfigError, match=r"gate 'broken-ratio': Prometheus rejected its query: .*parse error"):
        check_queries(gateset, client, context("healthy"))


def test_prometheus_stopped_is_inconclusive_and_recovers(source, prometheus, client):
    gateset = full_gateset()
    prometheus.stop(kill=True)
    try:
        started = time.monotonic()
        results = evaluate(gateset, client, context("healthy"), WINDOW)
        assert time.monotonic() - started < 5  # bounded: one failed request, not one per gate
        assert all(r.verdict is Verdict.INCONCLUSIVE for r in results)
        assert "Prometheus unreachable" in results[0].reason
        assert "Connection refused" in results[0].reason
        assert prometheus.url in results[0].reason
    finally:
        prometheus.start()

    def serve():
        for workload in ("healthy-v1", "healthy-v2"):
            source.add(workload, n=30, code=200, latency_ms=20)

    def all_pass():
        return all(r.verdict is Verdict.PASS for r in evaluate(gateset, client, context("healthy"), WINDOW))

    poll_until(feeding(serve, all_pass), timeout=20, interval=0.5, what="all gates pass after the restart")
