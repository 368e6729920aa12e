"""The gates against the real Prometheus, scraping Istio-shaped metrics every second.

Each test has its own workloads, so what one test feeds does not leak into another's gates.
Waits are deadline polls that keep feeding traffic while they wait.
"""

from __future__ import annotations

import math
import time

import pytest

from mirrorramp.batch import BatchedPrometheus
from mirrorramp.errors import ConfigError, QueryRejectedError
from mirrorramp.gates import check_queries, evaluate, parse_gates
from mirrorramp.model import Verdict
from mirrorramp.prometheus import PrometheusClient
from mirrorramp.promql import QueryContext
from mirrorsandbox.istio_metrics_source import IstioMetricsSource
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
    raw: dict = {
        "min_requests": min_requests,
        "thresholds": [
            {"name": "error-ratio", "metric": "error_ratio", "operator": "<", "value": 0.05},
            {"name": "p99-latency-ms", "metric": "p99_latency", "operator": "<", "value": 1000},
        ],
    }
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


def test_a_label_only_gate_needs_a_loaded_rule_that_could_fire_it(client):
    # The rule sets severity: critical itself; destination_workload comes from its expression.
    could = {"severity": "critical", "destination_workload": "${mirror_workload}"}
    cannot = {"severity": "crit", "destination_workload": "${mirror_workload}"}
    gateset = parse_gates(
        {"min_requests": 0, "alerts": [{"name": "could", "matchers": could}, {"name": "cannot", "matchers": cannot}]}
    )
    results = {r.name: r for r in evaluate(gateset, client, context("healthy"), WINDOW) if r.kind == "alert"}
    assert (results["could"].verdict, results["could"].reason) == (Verdict.PASS, f"not firing in the last {WINDOW}s")
    assert results["cannot"].verdict is Verdict.INCONCLUSIVE
    assert results["cannot"].reason == (
        'none of the 1 loaded alert rules could fire an alert with {severity="crit",destination_workload="healthy-v2"}'
    )


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


# Two series with the same (empty) match group on each side: Prometheus parses it, then refuses
# to run it (422 execution), without any scraped data.
TWO_SERIES = 'label_replace(vector(1), "code", "200", "", "") or label_replace(vector(1), "code", "503", "", "")'


@pytest.mark.parametrize("batched", [False, True], ids=["own-queries", "batched"])
@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        pytest.param(
            'sum(rate(istio_requests_total{destination_workload="${mirror_workload}"}[${window}])',
            400,
            'bad_data: invalid parameter "query": 1:71: parse error: unclosed left parenthesis',
            id="400-syntax",
        ),
        pytest.param(
            'sum(rate(istio_requests_total{destination_workload="${mirror_workload}"}))',
            400,
            'expected type range vector in call to function "rate", got instant vector',
            id="400-function-misuse",
        ),
        pytest.param(
            f"sum(({TWO_SERIES}) / on () ({TWO_SERIES}))",
            422,
            "execution: found duplicate series for the match group {} on the right hand-side of the operation",
            id="422-many-to-many",
        ),
    ],
)
def test_a_query_prometheus_refuses_while_ramping_raises_naming_the_gate(client, batched, query, status, message):
    """Not an inconclusive verdict (which holds the step forever): a configuration error,
    from evaluate as from the check before the start, batched or not."""
    gateset = parse_gates(
        {"min_requests": 0, "thresholds": [{"name": "custom", "query": query, "operator": "<", "value": 1}]}
    )
    ctx = context("refused").with_window(WINDOW)
    sender = BatchedPrometheus(client, gateset, [ctx, context("refused-too")], WINDOW) if batched else client
    for check in (lambda: evaluate(gateset, sender, ctx, WINDOW), lambda: check_queries(gateset, sender, ctx)):
        with pytest.raises(QueryRejectedError) as caught:
            check()
        error = caught.value
        assert (error.gate, error.status) == ("custom", status)
        assert error.query == query.replace("${mirror_workload}", "refused-v2").replace("${window}", f"{WINDOW}s")
        assert str(error).startswith(f"gate 'custom': Prometheus rejected its query: HTTP {status} "), str(error)
        assert message in str(error)
        assert str(error).endswith(f"; the query: {error.query}")


@pytest.fixture(scope="module")
def limited(source, tmp_path_factory):
    """A Prometheus that refuses a query loading more than 5 samples (422 execution)."""
    server = PrometheusServer(
        tmp_path_factory.mktemp("limited"), targets=[source.target], extra_args=("--query.max-samples=5",)
    )
    server.start()
    yield server
    server.stop()


def test_a_batched_grouped_query_refused_for_every_service_raises_naming_the_gate(source, limited):
    """The grouped request count refused by a sample limit, then each service's own as well:
    each service's evaluation raises the same error, naming the traffic gate."""
    contexts = [context("limited"), context("limited-too")]
    selector = 'istio_requests_total{destination_workload="limited-v2",response_code="200"}'

    def serve():
        for ctx in contexts:
            source.add(ctx.mirror_workloads[0], n=5, code=200)

    # One sample per series is under the limit; a 10 s window of 1 s scrapes is over it.
    first = float(poll_until(feeding(serve, lambda: limited.query(f"timestamp({selector})")), 10)[0]["value"][1])
    poll_until(
        feeding(serve, lambda: float(limited.query(f"timestamp({selector})")[0]["value"][1]) >= first + 7),
        timeout=15,
        interval=0.5,
        what="7 s of samples",
    )
    counted = CountingClient(limited.url, timeout=2.0, retries=1, backoff=0.05)
    gateset = full_gateset()
    batched = BatchedPrometheus(counted, gateset, contexts, WINDOW)
    for ctx in contexts:
        with pytest.raises(QueryRejectedError) as caught:
            evaluate(gateset, batched, ctx, WINDOW)
        assert (caught.value.gate, caught.value.status) == ("traffic", 422)
        assert str(caught.value).startswith("gate 'traffic': Prometheus rejected its query: HTTP 422 execution: ")
        assert "query processing would load too many samples into memory" in str(caught.value)
    grouped = [q for q in counted.sent if "sum by (" in q]
    assert len(grouped) == 1, counted.sent  # the grouped query once; then each service's own
    assert len(counted.sent) == 3, counted.sent
    counted.close()


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


class CountingClient(PrometheusClient):
    """A real client that counts the queries it sends."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    def query(self, promql, at=None):
        self.sent.append(promql)
        return super().query(promql, at=at)


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_batched_queries_answer_each_service_as_its_own_queries_do(source, prometheus, client):
    """One query per gate for all services gives every service the verdict, value and reason of
    its own queries: healthy, failing, slow, idle (NaN), absent, and several mirror workloads."""

    def serve():
        source.add("batch-ok-v1", n=40, code=200, latency_ms=20)
        source.add("batch-ok-v2", n=40, code=200, latency_ms=20)
        source.add("batch-bad-v1", n=40, code=200, latency_ms=20)
        source.add("batch-bad-v2", n=30, code=200, latency_ms=20)
        source.add("batch-bad-v2", n=10, code=503, latency_ms=20)
        source.add("batch-slow-v1", n=40, code=200, latency_ms=20)
        source.add("batch-slow-v2", n=40, code=200, latency_ms=2000)
        for workload in ("batch-multi-v1", "batch-multi-v2", "batch-multi-v3"):
            source.add(workload, n=20, code=200, latency_ms=40)

    source.touch("batch-idle-v1")
    source.touch("batch-idle-v2")
    contexts = [context(name) for name in ("batch-ok", "batch-bad", "batch-slow", "batch-idle", "batch-ghost")]
    contexts.append(
        QueryContext("user-service", NAMESPACE, "local", "batch-multi-v1", ("batch-multi-v2", "batch-multi-v3"))
    )

    def every_kind_seen():
        seen = {
            ctx.mirror_workloads[0]: verdicts(evaluate(full_gateset(), client, ctx, WINDOW)) for ctx in contexts[:3]
        }
        return (
            set(seen["batch-ok-v2"].values()) == {Verdict.PASS}
            and seen["batch-bad-v2"]["error-ratio"] is Verdict.FAIL
            and seen["batch-slow-v2"]["latency-ratio"] is Verdict.FAIL
        )

    poll_until(feeding(serve, every_kind_seen), timeout=20, interval=0.5, what="healthy, failing and slow seen")
    at = time.time()  # one instant for both: the answers must be equal, not close
    # A scrape stamped before `at` can be stored after it: wait until every such sample is in, or
    # the two sides read the same instant through different data.
    time.sleep(2.0)
    no_alerts = parse_gates(
        {"min_requests": 20, "thresholds": [{"name": "p99", "metric": "p99_latency", "operator": "<", "value": 1000}]}
    )
    gatesets = {"min 20": full_gateset(), "min 0": full_gateset(min_requests=0), "no alerts": no_alerts}
    plain = CountingClient(prometheus.url, timeout=2.0, retries=1)
    counted = CountingClient(prometheus.url, timeout=2.0, retries=1)

    def look(gateset, client, ctx):
        try:
            return evaluate(gateset, client, ctx, WINDOW, at=at)
        except ConfigError as e:  # ${mirror_workload} in an alert matcher needs one workload
            return str(e)

    for label, gateset in gatesets.items():
        plain.sent.clear()
        counted.sent.clear()
        batched = BatchedPrometheus(counted, gateset, contexts, WINDOW)
        for ctx in contexts:
            own, shared = look(gateset, plain, ctx), look(gateset, batched, ctx)
            if isinstance(own, str):
                assert shared == own and len(ctx.mirror_workloads) == 2
                continue
            assert [r.name for r in shared] == [r.name for r in own]
            for mine, theirs in zip(shared, own, strict=True):
                where = f"{label} {ctx.mirror_workloads} {mine.name}"
                assert mine.verdict is theirs.verdict, f"{where}: {mine.reason} / {theirs.reason}"
                assert same(mine.value, theirs.value), f"{where}: {mine.value} != {theirs.value}"
                assert mine.reason == theirs.reason, where
        by_ctx = {ctx.mirror_workloads[0]: look(gateset, batched, ctx) for ctx in contexts[:3]}
        assert verdicts(by_ctx["batch-ok-v2"]) == dict.fromkeys(verdicts(by_ctx["batch-ok-v2"]), Verdict.PASS)
        if label != "no alerts":
            assert verdicts(by_ctx["batch-bad-v2"])["error-ratio"] is Verdict.FAIL
            assert verdicts(by_ctx["batch-slow-v2"])["latency-ratio"] is Verdict.FAIL
        # The grouped queries went once each, whatever the number of services (the service with
        # two mirror workloads asks its own); one service alone asks up to 6 queries per look.
        grouped = [q for q in counted.sent if "sum by (" in q or q.startswith("max_over_time(ALERTS{alertstate")]
        assert len(set(grouped)) == len(grouped) <= 7, grouped
        own_queries = [q for q in counted.sent if q not in grouped]
        assert all("batch-multi" in q for q in own_queries), own_queries
        assert bool(own_queries) == (label == "no alerts")
        assert len(plain.sent) > 2 * len(counted.sent)
    plain.close()
    counted.close()


def test_batched_queries_with_prometheus_down_are_inconclusive_for_each_service_without_a_retry_each():
    gateset = full_gateset()
    contexts = [context(f"down-{i}") for i in range(20)]
    counted = CountingClient("http://127.0.0.1:9", timeout=1.0, retries=1, backoff=0.01)
    batched = BatchedPrometheus(counted, gateset, contexts, WINDOW)
    for ctx in contexts:
        results = evaluate(gateset, batched, ctx, WINDOW)
        assert all(r.verdict is Verdict.INCONCLUSIVE for r in results), [r.reason for r in results]
        assert "Prometheus unreachable" in results[0].reason
    assert len(counted.sent) == 1  # the traffic group once, not once per service (nor the others after it)
    batched.new_pass()
    evaluate(gateset, batched, contexts[0], WINDOW)
    assert len(counted.sent) == 2  # a new pass asks again
