"""gates: parsing the `gates` argument, checking queries up front, and verdicts from real answers."""

from __future__ import annotations

import json
import pickle
import re

import pytest

from mirrorramp import gates, judge, promql
from mirrorramp.batch import BatchedPrometheus
from mirrorramp.errors import ConfigError, PrometheusError, QueryRejectedError
from mirrorramp.gates import check_queries, evaluate, parse_gates
from mirrorramp.model import Verdict
from mirrorramp.prometheus import PrometheusClient
from mirrorramp.promql import QueryContext
from tests.support.prometheus_server import Reply, ScriptedPrometheus, fixture, free_port, vector_reply

CONTEXT = QueryContext("user-service", "shop", "prod", "user-service-v1", ("user-service-v2",))
OTHER = QueryContext("order-service", "shop", "prod", "order-service-v1", ("order-service-v2",))
WINDOW = 600
ERROR_GATE = {"name": "error-ratio", "metric": "error_ratio", "operator": "<", "value": 0.05}
ALERT_GATE = {"name": "no-critical", "alertname": "MirrorErrorRatioCritical"}


def rendered(template: str) -> str:
    return promql.render(template, CONTEXT.with_window(WINDOW), "test")


TRAFFIC_QUERY = rendered(promql.REQUEST_COUNT)
ERROR_QUERY = rendered(promql.ERROR_RATIO)
DELTA_QUERY = rendered(promql.ERROR_RATIO_DELTA)
ALERT_QUERY = 'max_over_time(ALERTS{alertstate="firing",alertname="MirrorErrorRatioCritical"}[600s])'


@pytest.fixture
def server():
    scripted = ScriptedPrometheus().start()
    yield scripted
    scripted.stop()


def client_for(url: str, retries: int = 0) -> PrometheusClient:
    # 2 s: a loaded CI machine must not turn an answer into a timeout; the timeout case waits 6 s.
    return PrometheusClient(url, timeout=2.0, retries=retries, backoff=0.01)


def by_name(results):
    return {r.name: r for r in results}


# -- parsing ---------------------------------------------------------------------------------


def test_parse_a_full_gate_set():
    gateset = parse_gates(
        {
            "min_requests": 50,
            "thresholds": [
                ERROR_GATE,
                {"name": "p99", "query": promql.P99_LATENCY_MS, "operator": "<=", "value": 800, "severity": "warning"},
            ],
            "alerts": [
                ALERT_GATE,
                {
                    "name": "any-critical",
                    "matchers": {"severity": "critical", "destination_workload": "${mirror_workload}"},
                },
            ],
            "comparisons": [
                {"name": "error-delta", "metric": "error_ratio", "max_delta": 0.01},
                {"name": "latency-ratio", "metric": "p99_latency", "max_ratio": 1.5},
            ],
        }
    )
    assert gateset.min_requests == 50
    assert [g.name for g in gateset.thresholds] == ["error-ratio", "p99"]
    assert gateset.thresholds[0].query == promql.ERROR_RATIO
    assert gateset.thresholds[1].severity == "warning"
    assert gateset.thresholds[0].severity == "critical"
    assert gateset.alerts[0].matchers == {"alertname": "MirrorErrorRatioCritical"}
    assert gateset.alerts[1].alertname is None
    assert [(g.metric, g.limit) for g in gateset.comparisons] == [("error_ratio", 0.01), ("p99_latency", 1.5)]


def test_parse_nothing_gives_only_the_traffic_check():
    assert parse_gates(None) == parse_gates({}) == gates.GateSet()
    assert parse_gates({}).min_requests == 100


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], r"gates: got list, expected a mapping"),
        ({"treshold": []}, r"gates: unknown key 'treshold'; allowed: min_requests, request_query, thresholds"),
        ({"min_requests": -1}, r"gates.min_requests: got -1, expected an integer >= 0"),
        ({"min_requests": "100"}, r"gates.min_requests: got '100', expected an integer >= 0"),
        ({"min_requests": True}, r"gates.min_requests: got True"),
        ({"thresholds": {"name": "x"}}, r"gates.thresholds: got dict, expected a list"),
        ({"thresholds": ["x"]}, r"gates.thresholds\[0\]: got 'x', expected a mapping"),
        (
            {"thresholds": [{**ERROR_GATE, "operator": "=<"}]},
            r"gates.thresholds\[0\].operator: got '=<', expected one of <, <=, >, >=",
        ),
        ({"thresholds": [{**ERROR_GATE, "operator": "=="}]}, r"gates.thresholds\[0\].operator: got '=='"),
        ({"thresholds": [{**ERROR_GATE, "value": "5%"}]}, r"gates.thresholds\[0\].value: got '5%', expected a finite"),
        ({"thresholds": [{**ERROR_GATE, "value": float("nan")}]}, r"gates.thresholds\[0\].value: got nan"),
        ({"thresholds": [{**ERROR_GATE, "value": True}]}, r"gates.thresholds\[0\].value: got True"),
        ({"thresholds": [{**ERROR_GATE, "name": ""}]}, r"gates.thresholds\[0\].name: got '', expected a non-empty"),
        ({"thresholds": [{**ERROR_GATE, "metric": "errors"}]}, r"gates.thresholds\[0\].metric: got 'errors'"),
        (
            {"thresholds": [{**ERROR_GATE, "query": "up"}]},
            r"gates.thresholds\[0\]: give either query \(PromQL\) or metric",
        ),
        (
            {"thresholds": [{"name": "x", "query": 'up{a="${svc}"}', "operator": "<", "value": 1}]},
            r"gate 'x': unknown placeholder \$\{svc\}",
        ),
        ({"thresholds": [{**ERROR_GATE, "treshold": 1}]}, r"gates.thresholds\[0\]: unknown key 'treshold'"),
        ({"thresholds": [ERROR_GATE, ERROR_GATE]}, r"gates.thresholds\[1\].name: 'error-ratio' is used twice"),
        ({"thresholds": [{**ERROR_GATE, "name": "traffic"}]}, r"gates.thresholds\[0\].name: 'traffic' is used twice"),
        ({"alerts": [{"name": "a"}]}, r"gates.alerts\[0\]: give alertname or matchers"),
        (
            {"alerts": [{"name": "a", "matchers": ["x"]}]},
            r"gates.alerts\[0\].matchers: got \['x'\], expected a mapping",
        ),
        ({"alerts": [{"name": "a", "matchers": {"bad-label": "x"}}]}, r"gates.alerts\[0\].matchers: label 'bad-label'"),
        (
            {"alerts": [{"name": "a", "matchers": {"alertstate": "pending"}}]},
            r"gates.alerts\[0\].matchers.alertstate: not allowed",
        ),
        (
            {"alerts": [{"name": "a", "alertname": "X", "matchers": {"alertname": "Y"}}]},
            r"gates.alerts\[0\]: alertname 'X' and matchers.alertname disagree",
        ),
        ({"alerts": [{"name": "a", "alertname": ""}]}, r"gates.alerts\[0\].alertname: got ''"),
        (
            {"comparisons": [{"name": "c", "metric": "latency", "max_ratio": 2}]},
            r"gates.comparisons\[0\].metric: got 'latency', expected one of error_ratio, p99_latency",
        ),
        (
            {"comparisons": [{"name": "c", "metric": "p99_latency", "max_delta": 2}]},
            r"gates.comparisons\[0\].max_delta: not used with metric p99_latency; give max_ratio",
        ),
        (
            {"comparisons": [{"name": "c", "metric": "error_ratio"}]},
            r"gates.comparisons\[0\].max_delta: got None, expected a finite number",
        ),
        (
            {"comparisons": [{"name": "c", "metric": "error_ratio", "max_delta": 5}]},
            r"gates.comparisons\[0\].max_delta: got 5, expected 0 <= max_delta <= 1",
        ),
        (
            {"comparisons": [{"name": "c", "metric": "p99_latency", "max_ratio": 0}]},
            r"gates.comparisons\[0\].max_ratio: got 0, expected a ratio > 0",
        ),
        ({"request_query": ""}, r"gates.request_query: got '', expected a PromQL string"),
    ],
    ids=[
        "not-a-mapping",
        "unknown-top-key",
        "negative-min-requests",
        "string-min-requests",
        "bool-min-requests",
        "thresholds-not-a-list",
        "threshold-not-a-mapping",
        "operator-reversed",
        "operator-equals",
        "value-percent-string",
        "value-nan",
        "value-bool",
        "empty-name",
        "unknown-metric",
        "query-and-metric",
        "unknown-placeholder",
        "unknown-threshold-key",
        "duplicate-name",
        "reserved-name",
        "alert-without-target",
        "alert-matchers-list",
        "alert-bad-label",
        "alert-alertstate",
        "alertname-disagrees",
        "alertname-empty",
        "comparison-unknown-metric",
        "comparison-wrong-limit",
        "comparison-no-limit",
        "comparison-delta-out-of-range",
        "comparison-ratio-zero",
        "empty-request-query",
    ],
)
def test_bad_gate_config_names_the_entry(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_gates(raw)


@pytest.mark.parametrize(
    ("operator", "value", "threshold", "verdict"),
    [
        ("<", 0.01, 0.05, Verdict.PASS),
        ("<", 0.05, 0.05, Verdict.FAIL),
        ("<", 0.12, 0.05, Verdict.FAIL),
        ("<=", 0.05, 0.05, Verdict.PASS),
        ("<=", 0.0501, 0.05, Verdict.FAIL),
        (">", 0.99, 0.95, Verdict.PASS),
        (">", 0.95, 0.95, Verdict.FAIL),
        (">=", 0.95, 0.95, Verdict.PASS),
        (">=", 0.5, 0.95, Verdict.FAIL),
        ("<", -1.0, 0.0, Verdict.PASS),
    ],
    ids=[
        "lt-below",
        "lt-equal",
        "lt-above",
        "le-equal",
        "le-above",
        "gt-above",
        "gt-equal",
        "ge-equal",
        "ge-below",
        "lt-negative",
    ],
)
def test_operators(server, operator, value, threshold, verdict):
    gateset = parse_gates(
        {"min_requests": 10, "thresholds": [{**ERROR_GATE, "operator": operator, "value": threshold}]}
    )
    server.answers = {TRAFFIC_QUERY: vector_reply("500"), ERROR_QUERY: vector_reply(repr(value))}
    result = by_name(evaluate(gateset, client_for(server.url), CONTEXT, WINDOW))["error-ratio"]
    assert result.verdict is verdict
    assert (result.value, result.threshold, result.operator) == (value, threshold, operator)
    assert result.query == ERROR_QUERY
    if verdict is Verdict.FAIL:
        assert result.reason == f"value {value:g} is not {operator} {threshold:g}"


# -- evaluation ------------------------------------------------------------------------------


def test_healthy_traffic_passes_with_one_query_per_gate(server):
    gateset = parse_gates(
        {
            "min_requests": 100,
            "thresholds": [ERROR_GATE],
            "alerts": [ALERT_GATE, {"name": "second", "alertname": "MirrorErrorRatioCritical"}],
            "comparisons": [{"name": "delta", "metric": "error_ratio", "max_delta": 0.01}],
        }
    )
    server.rule_names = ["MirrorErrorRatioCritical"]
    server.answers = {
        TRAFFIC_QUERY: vector_reply("1200"),
        ERROR_QUERY: vector_reply("0.001"),
        rendered(promql.ERROR_RATIO_DELTA): vector_reply("-0.002"),
    }
    results = evaluate(gateset, client_for(server.url), CONTEXT, WINDOW, at=1795637000.0)
    assert [(r.name, r.kind, r.verdict) for r in results] == [
        ("traffic", "traffic", Verdict.PASS),
        ("error-ratio", "threshold", Verdict.PASS),
        ("delta", "comparison", Verdict.PASS),
        ("no-critical", "alert", Verdict.PASS),
        ("second", "alert", Verdict.PASS),
    ]
    assert results[0].reason == "1200 requests >= 100"
    assert results[2].reason == "mirror minus primary 5xx ratio -0.002 <= 0.01"
    assert results[3].reason == "not firing in the last 600s"
    paths = [r.path for r in server.requests]
    assert paths.count("/api/v1/rules") == 1
    assert paths.count("/api/v1/query") == 5
    assert {r.params.get("time") for r in server.requests if r.path == "/api/v1/query"} == {"1795637000.000"}
    assert server.queries()[-1] == ALERT_QUERY


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (fixture("empty"), "no data: the query returned an empty vector"),
        (fixture("nan"), "no data: the value is NaN"),
        (fixture("inf"), r"the value is \+Inf"),
        (vector_reply("-Inf"), "the value is -Inf"),
        (fixture("multi_series"), "the query returned 2 series, a gate needs one"),
        (fixture("matrix"), "the query returns a matrix"),
        (Reply(500, "internal"), "Prometheus unreachable: .*HTTP 500: internal"),
        (Reply(503, "Service Unavailable"), "Prometheus unreachable: .*HTTP 503: Service Unavailable"),
        (Reply(400, "<html>400 Bad Request</html>"), "Prometheus unreachable: .*HTTP 400: <html>400 Bad Request"),
        (Reply(200, fixture("vector").body, delay=6), "Prometheus unreachable: .*timed out after 2s"),
    ],
    ids=["empty", "nan", "plus-inf", "minus-inf", "multi-series", "matrix", "500", "503", "proxy-400", "timeout"],
)
def test_no_evidence_is_inconclusive_never_pass(server, reply, reason):
    gateset = parse_gates({"min_requests": 10, "thresholds": [ERROR_GATE]})
    server.answers = {TRAFFIC_QUERY: vector_reply("500"), ERROR_QUERY: reply}
    result = by_name(evaluate(gateset, client_for(server.url), CONTEXT, WINDOW))["error-ratio"]
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.value is None
    assert result.query == ERROR_QUERY
    assert result.threshold == 0.05 and result.operator == "<"
    assert re.search(reason, result.reason), result.reason


# -- a query Prometheus refuses: a configuration error, never a verdict ------------------------

REJECTIONS = [
    pytest.param(
        fixture("bad_data_400"),
        400,
        'bad_data: invalid parameter "query": 1:75: parse error: unclosed left parenthesis',
        id="400-bad-data",
    ),
    pytest.param(
        fixture("execution_422"),
        422,
        "many-to-many matching not allowed: matching labels must be unique on one side",
        id="422-execution",
    ),
]
EVERY_KIND = parse_gates(
    {
        "min_requests": 10,
        "thresholds": [ERROR_GATE],
        "comparisons": [{"name": "delta", "metric": "error_ratio", "max_delta": 0.01}],
        "alerts": [ALERT_GATE],
    }
)
GATE_QUERIES = {"traffic": TRAFFIC_QUERY, "error-ratio": ERROR_QUERY, "delta": DELTA_QUERY, "no-critical": ALERT_QUERY}
HEALTHY = {TRAFFIC_QUERY: vector_reply("500"), ERROR_QUERY: vector_reply("0.001"), DELTA_QUERY: vector_reply("0")}


def assert_rejected(error: QueryRejectedError, gate: str, status: int, message: str) -> None:
    assert isinstance(error, ConfigError) and not isinstance(error, PrometheusError)
    assert (error.gate, error.query, error.status) == (gate, GATE_QUERIES[gate], status)
    text = str(error)
    assert text.startswith(f"gate {gate!r}: Prometheus rejected its query: HTTP {status} "), text
    assert message in text
    assert f"; the query: {GATE_QUERIES[gate][:120]}" in text


@pytest.mark.parametrize("gate", list(GATE_QUERIES))
@pytest.mark.parametrize(("reply", "status", "message"), REJECTIONS)
def test_a_query_prometheus_refuses_while_ramping_raises_naming_the_gate(server, gate, reply, status, message):
    """Not INCONCLUSIVE: a wrong query is no missing evidence, and would hold the step forever."""
    server.rule_names = ["MirrorErrorRatioCritical"]
    server.answers = {**HEALTHY, GATE_QUERIES[gate]: reply}
    with pytest.raises(QueryRejectedError) as caught:
        evaluate(EVERY_KIND, client_for(server.url, retries=3), CONTEXT, WINDOW)
    assert_rejected(caught.value, gate, status, message)
    assert server.queries().count(GATE_QUERIES[gate]) == 1  # never retried


@pytest.mark.parametrize("gate", list(GATE_QUERIES))
@pytest.mark.parametrize(("reply", "status", "message"), REJECTIONS)
def test_a_batched_query_prometheus_refuses_for_every_service_raises_naming_the_gate(
    server, gate, reply, status, message
):
    """The grouped query refused (by default), then each service's own: the same error as
    without batching, for each service, and the grouped query sent once in the pass."""
    server.rule_names = ["MirrorErrorRatioCritical"]
    server.default = reply
    accepted = {query: reply for query, reply in HEALTHY.items() if query != GATE_QUERIES[gate]}
    for query, answer in accepted.items():  # each service's own queries, but the gate's
        server.answers[query] = server.answers[query.replace("user-service", OTHER.service)] = answer
    batched = BatchedPrometheus(client_for(server.url, retries=3), EVERY_KIND, [CONTEXT, OTHER], WINDOW)
    with pytest.raises(QueryRejectedError) as caught:
        evaluate(EVERY_KIND, batched, CONTEXT, WINDOW)
    assert_rejected(caught.value, gate, status, message)
    with pytest.raises(QueryRejectedError, match=f"^gate {gate!r}: Prometheus rejected its query: HTTP {status} "):
        evaluate(EVERY_KIND, batched, OTHER, WINDOW)
    grouped = [q for q in server.queries() if "sum by (" in q]
    assert grouped and len(grouped) == len(set(grouped))  # once per pass, not once per service


def test_a_batched_grouped_query_refused_falls_back_to_each_services_own_answer(server):
    """A grouped query refused (a limit on a long query, say) is no error while the services'
    own queries are accepted: each gets its own verdict."""
    gateset = parse_gates({"min_requests": 10, "thresholds": [ERROR_GATE]})
    server.default = fixture("execution_422")
    server.answers = {TRAFFIC_QUERY: vector_reply("500"), ERROR_QUERY: vector_reply("0.2")}
    batched = BatchedPrometheus(client_for(server.url), gateset, [CONTEXT, OTHER], WINDOW)
    results = by_name(evaluate(gateset, batched, CONTEXT, WINDOW))
    assert (results["traffic"].verdict, results["error-ratio"].verdict) == (Verdict.PASS, Verdict.FAIL)
    assert any("sum by (" in q for q in server.queries())


def test_a_rejection_message_keeps_the_start_and_end_of_a_long_query_and_message():
    query = "sum(" + " + ".join(f'rate(m{{w="{i}"}}[5m])' for i in range(200)) + ")"
    why = "execution: found duplicate series " + "{series} " * 300 + ";many-to-many matching not allowed"
    error = QueryRejectedError(query, 422, why).for_gate("big")
    text = str(error)
    assert len(text) < 1000
    assert text.startswith("gate 'big': Prometheus rejected its query: HTTP 422 execution: found duplicate series")
    assert ';many-to-many matching not allowed; the query: sum(rate(m{w="0"}[5m])' in text
    assert text.endswith('rate(m{w="199"}[5m]))')
    assert (error.query, error.prometheus_message) == (query, why)  # whole, for the task result
    copied = pickle.loads(pickle.dumps(error))
    assert (str(copied), copied.gate) == (text, "big")


def test_a_500_then_success_is_retried_to_a_verdict(server):
    gateset = parse_gates({"min_requests": 10, "thresholds": [ERROR_GATE]})
    server.answers = {TRAFFIC_QUERY: vector_reply("500"), ERROR_QUERY: vector_reply("0.2")}
    server.queue(Reply(500, "starting"), vector_reply("500"))
    results = by_name(evaluate(gateset, client_for(server.url, retries=2), CONTEXT, WINDOW))
    assert results["traffic"].verdict is Verdict.PASS
    assert results["error-ratio"].verdict is Verdict.FAIL


@pytest.mark.parametrize(
    ("reply", "value", "reason"),
    [
        (vector_reply("12"), 12.0, "too few requests: 12 < 100"),
        (vector_reply("99.6"), 99.6, "too few requests: 99.6 < 100"),
        (fixture("empty"), 0.0, "too few requests: 0 < 100"),
    ],
    ids=["twelve", "just-under", "no-series"],
)
def test_too_few_requests_makes_every_metric_gate_inconclusive_without_querying(server, reply, value, reason):
    gateset = parse_gates(
        {
            "thresholds": [ERROR_GATE],
            "comparisons": [{"name": "latency-ratio", "metric": "p99_latency", "max_ratio": 1.5}],
        }
    )
    server.answers = {TRAFFIC_QUERY: reply}
    results = by_name(evaluate(gateset, client_for(server.url), CONTEXT, WINDOW))
    traffic = results["traffic"]
    assert (traffic.verdict, traffic.value, traffic.threshold, traffic.reason) == (
        Verdict.INCONCLUSIVE,
        value,
        100.0,
        reason,
    )
    for name in ("error-ratio", "latency-ratio"):
        assert results[name].verdict is Verdict.INCONCLUSIVE
        assert results[name].reason == f"not checked: {reason}"
    assert server.queries() == [TRAFFIC_QUERY]


def test_traffic_nan_is_inconclusive(server):
    server.answers = {TRAFFIC_QUERY: fixture("nan")}
    (traffic,) = evaluate(parse_gates({}), client_for(server.url), CONTEXT, WINDOW)
    assert traffic.verdict is Verdict.INCONCLUSIVE
    assert traffic.reason.startswith("request count: no data: the value is NaN")


def test_min_requests_zero_accepts_no_series(server):
    (traffic,) = evaluate(parse_gates({"min_requests": 0}), client_for(server.url), CONTEXT, WINDOW)
    assert traffic.verdict is Verdict.PASS


def test_prometheus_unreachable_makes_every_gate_inconclusive_after_one_try():
    gateset = parse_gates({"thresholds": [ERROR_GATE], "alerts": [ALERT_GATE]})
    client = client_for(f"http://127.0.0.1:{free_port()}", retries=1)
    results = evaluate(gateset, client, CONTEXT, WINDOW)
    assert [r.verdict for r in results] == [Verdict.INCONCLUSIVE] * 3
    assert "Connection refused" in results[0].reason
    assert results[2].reason.startswith("not checked: request count: Prometheus unreachable")


def test_alert_gate_without_a_loaded_rule_is_inconclusive(server):
    server.rule_names = ["SomethingElse"]
    server.answers = {TRAFFIC_QUERY: vector_reply("500")}
    gateset = parse_gates({"alerts": [ALERT_GATE]})
    result = by_name(evaluate(gateset, client_for(server.url), CONTEXT, WINDOW))["no-critical"]
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.reason == "no alert rule MirrorErrorRatioCritical loaded"
    assert ALERT_QUERY not in server.queries()


def test_alert_that_fired_in_the_window_fails_with_its_labels(server):
    server.rule_names = ["MirrorErrorRatioCritical"]
    server.answers = {TRAFFIC_QUERY: fixture("empty"), ALERT_QUERY: fixture("alerts_firing")}
    gateset = parse_gates({"thresholds": [ERROR_GATE], "alerts": [ALERT_GATE]})
    results = by_name(evaluate(gateset, client_for(server.url), CONTEXT, WINDOW))
    # Too little traffic for the metric gates, but a fired alert fails whatever the traffic.
    assert results["error-ratio"].verdict is Verdict.INCONCLUSIVE
    alert = results["no-critical"]
    assert (alert.verdict, alert.value, alert.query) == (Verdict.FAIL, 1.0, ALERT_QUERY)
    assert alert.reason == "MirrorErrorRatioCritical fired in the last 600s (1 alert series)"
    assert alert.extra["alerts"] == [
        {
            "alertname": "MirrorErrorRatioCritical",
            "alertstate": "firing",
            "destination_workload": "user-service-v2",
            "severity": "critical",
        }
    ]


def test_alert_matchers_render_placeholders_exactly(server):
    gateset = parse_gates(
        {"alerts": [{"name": "a", "matchers": {"severity": "critical", "destination_workload": "${mirror_workload}"}}]}
    )
    assert gates.alert_query(gateset.alerts[0], CONTEXT.with_window(60)) == (
        'max_over_time(ALERTS{alertstate="firing",severity="critical",destination_workload="user-service-v2"}[60s])'
    )
    server.rule_names = ["MirrorErrorRatioHigh"]
    server.rule_labels = {"MirrorErrorRatioHigh": {"severity": "critical", "workload": "user-service-v2"}}
    server.answers = {TRAFFIC_QUERY: vector_reply("500")}
    result = evaluate(gateset, client_for(server.url), CONTEXT, WINDOW)[-1]
    assert (result.verdict, result.reason) == (Verdict.PASS, "not firing in the last 600s")


# A label-only gate, as the inventories write it: {severity, service, namespace}.
LABEL_GATE = {"name": "critical", "matchers": {"severity": "critical", "service": "${service}", "namespace": "shop"}}
NO_RULE_FOR_THE_LABELS = (
    'none of the {} loaded alert rules could fire an alert with {{severity="critical",service="user-service",'
    'namespace="shop"}}'
)


@pytest.mark.parametrize(
    ("rules", "verdict", "reason"),
    [
        pytest.param({}, Verdict.INCONCLUSIVE, NO_RULE_FOR_THE_LABELS.format(0), id="no-rule-loaded"),
        pytest.param(
            {"MirrorErrorRatioHigh": {"severity": "critical", "service": "order-service", "namespace": "shop"}},
            Verdict.INCONCLUSIVE,
            NO_RULE_FOR_THE_LABELS.format(1),
            id="only-another-services-rules",
        ),
        pytest.param(
            {"MirrorNoTraffic": {"severity": "warning", "service": "user-service", "namespace": "shop"}},
            Verdict.INCONCLUSIVE,
            NO_RULE_FOR_THE_LABELS.format(1),
            id="only-warnings",
        ),
        pytest.param(
            {
                "MirrorNoTraffic": {"severity": "warning", "service": "user-service"},
                "MirrorErrorRatioHigh": {"severity": "critical", "service": "user-service", "namespace": "shop"},
            },
            Verdict.PASS,
            "not firing in the last 600s",
            id="the-services-critical-rule",
        ),
        pytest.param(
            {"AnyCritical": {"severity": "critical"}},
            Verdict.PASS,
            "not firing in the last 600s",
            id="service-from-the-expression",
        ),
        pytest.param(
            {"AnyCritical": {"severity": "critical", "service": "{{ $labels.destination_service_name }}"}},
            Verdict.PASS,
            "not firing in the last 600s",
            id="service-from-a-template",
        ),
    ],
)
def test_an_alert_gate_no_loaded_rule_could_fire_is_inconclusive_not_a_pass(server, rules, verdict, reason):
    # Without a rule that could fire, "nothing fired" is no evidence: the rules of a service never
    # applied, or a label written wrong, would otherwise pass every step.
    server.rule_names = list(rules)
    server.rule_labels = rules
    server.answers = {TRAFFIC_QUERY: vector_reply("500")}
    result = by_name(evaluate(parse_gates({"alerts": [LABEL_GATE]}), client_for(server.url), CONTEXT, WINDOW))
    assert (result["critical"].verdict, result["critical"].reason) == (verdict, reason)
    asked = any(q.startswith("max_over_time(ALERTS") for q in server.queries())
    assert asked is (verdict is Verdict.PASS)


def test_a_named_alert_whose_rule_sets_other_labels_is_inconclusive(server):
    server.rule_names = ["MirrorErrorRatioCritical"]
    server.rule_labels = {"MirrorErrorRatioCritical": {"severity": "warning"}}
    server.answers = {TRAFFIC_QUERY: vector_reply("500")}
    gate = {"name": "named", "alertname": "MirrorErrorRatioCritical", "matchers": {"severity": "critical"}}
    result = evaluate(parse_gates({"alerts": [gate]}), client_for(server.url), CONTEXT, WINDOW)[-1]
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.reason == (
        'none of the 1 loaded alert rules could fire an alert with {alertname="MirrorErrorRatioCritical",'
        'severity="critical"}'
    )


def test_rule_list_failure_makes_alert_gates_inconclusive(server):
    server.answers = {TRAFFIC_QUERY: vector_reply("500")}
    server.queue(vector_reply("500"), Reply(503, "rules unavailable"))
    gateset = parse_gates({"alerts": [ALERT_GATE, LABEL_GATE]})
    result = by_name(evaluate(gateset, client_for(server.url), CONTEXT, WINDOW))
    for name in ("no-critical", "critical"):
        assert result[name].verdict is Verdict.INCONCLUSIVE
        assert "could not list the alert rules" in result[name].reason


@pytest.mark.parametrize(
    ("metric", "limit_key", "limit", "value", "verdict"),
    [
        ("error_ratio", "max_delta", 0.01, "0.005", Verdict.PASS),
        ("error_ratio", "max_delta", 0.01, "0.03", Verdict.FAIL),
        ("p99_latency", "max_ratio", 1.5, "1.2", Verdict.PASS),
        ("p99_latency", "max_ratio", 1.5, "2.5", Verdict.FAIL),
        ("p99_latency", "max_ratio", 1.5, "+Inf", Verdict.INCONCLUSIVE),
        ("p99_latency", "max_ratio", 1.5, "NaN", Verdict.INCONCLUSIVE),
    ],
    ids=["delta-pass", "delta-fail", "ratio-pass", "ratio-fail", "primary-p99-zero", "no-latency-data"],
)
def test_comparisons(server, metric, limit_key, limit, value, verdict):
    gateset = parse_gates({"comparisons": [{"name": "cmp", "metric": metric, limit_key: limit}]})
    query = rendered(promql.COMPARISON_QUERIES[metric])
    server.answers = {TRAFFIC_QUERY: vector_reply("500"), query: vector_reply(value)}
    result = by_name(evaluate(gateset, client_for(server.url), CONTEXT, WINDOW))["cmp"]
    assert (result.verdict, result.kind, result.operator, result.threshold, result.query) == (
        verdict,
        "comparison",
        "<=",
        limit,
        query,
    )


def test_evaluate_accepts_a_context_mapping(server):
    context = {
        "service": "user-service",
        "namespace": "shop",
        "environment": "prod",
        "primary_workload": "user-service-v1",
        "mirror_workloads": ["user-service-v2"],
    }
    server.answers = {TRAFFIC_QUERY: vector_reply("500")}
    (traffic,) = evaluate(parse_gates({}), client_for(server.url), context, WINDOW)
    assert traffic.verdict is Verdict.PASS and traffic.query == TRAFFIC_QUERY


def test_result_is_json_safe(server):
    server.answers = {TRAFFIC_QUERY: vector_reply("500"), ERROR_QUERY: fixture("nan")}
    results = evaluate(parse_gates({"thresholds": [ERROR_GATE]}), client_for(server.url), CONTEXT, WINDOW)
    json.dumps([r.as_dict() for r in results], allow_nan=False)


# -- checking the queries before any change --------------------------------------------------


def test_check_queries_sends_each_query_once(server):
    gateset = parse_gates({"thresholds": [ERROR_GATE], "alerts": [ALERT_GATE]})
    server.rule_names = ["MirrorErrorRatioCritical"]
    assert check_queries(gateset, client_for(server.url), CONTEXT) == []
    assert len(server.queries()) == 3


def test_check_queries_syntax_error_is_a_config_error_naming_the_gate(server):
    broken = {"name": "broken", "query": "sum(rate(x[${window}])", "operator": "<", "value": 1}
    gateset = parse_gates({"thresholds": [ERROR_GATE, broken]})
    server.answers = {rendered("sum(rate(x[${window}])").replace("600s", "300s"): fixture("bad_data_400")}
    with pytest.raises(
        QueryRejectedError, match=r"^gate 'broken': Prometheus rejected its query: HTTP 400 bad_data: .*parse error"
    ) as caught:
        check_queries(gateset, client_for(server.url, retries=3), CONTEXT)
    assert str(caught.value).endswith("; the query: sum(rate(x[300s])")
    assert (caught.value.gate, caught.value.query) == ("broken", "sum(rate(x[300s])")
    assert len(server.queries()) == 3  # no retry of a rejected query


def test_check_queries_refuses_a_range_vector(server):
    gateset = parse_gates({"thresholds": [{"name": "raw", "query": "x[${window}]", "operator": "<", "value": 1}]})
    server.answers = {"x[300s]": fixture("matrix")}
    with pytest.raises(ConfigError, match="gate 'raw': the query returns a matrix"):
        check_queries(gateset, client_for(server.url), CONTEXT)


def test_check_queries_bad_template_fails_before_any_request(server):
    gateset = parse_gates(
        {"thresholds": [{"name": "one", "query": 'x{w="${mirror_workload_exact}"}', "operator": "<", "value": 1}]}
    )
    two = QueryContext("s", "n", "e", "p", ("m1", "m2"))
    with pytest.raises(ConfigError, match=r"gate 'one'.*exactly one mirror workload"):
        check_queries(gateset, client_for(server.url), two)
    assert server.requests == []


def test_check_queries_warns_about_an_alert_rule_not_loaded(server):
    server.rule_names = ["MirrorErrorRatioHigh"]
    server.rule_labels = {"MirrorErrorRatioHigh": {"severity": "critical", "service": "user-service"}}
    gateset = parse_gates({"alerts": [ALERT_GATE, LABEL_GATE]})
    assert check_queries(gateset, client_for(server.url), CONTEXT) == [
        "gate 'no-critical': no alert rule MirrorErrorRatioCritical loaded in Prometheus; the gate stays "
        "inconclusive until one is",
    ]
    server.rule_labels["MirrorErrorRatioHigh"]["namespace"] = "orders"
    assert check_queries(gateset, client_for(server.url), CONTEXT)[1] == (
        f"gate 'critical': {NO_RULE_FOR_THE_LABELS.format(1)} in Prometheus; the gate stays inconclusive until one is"
    )


def test_check_queries_unreachable_raises_prometheus_error():
    client = client_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(PrometheusError, match="Connection refused") as caught:
        check_queries(parse_gates({}), client, CONTEXT)
    assert not isinstance(caught.value, ConfigError)


# -- judge gates (judge.py) -----------------------------------------------------------------

JUDGE_LATENCY = {"name": "judge-latency", "metric": "latency"}
JUDGE_ERRORS = {"name": "judge-errors", "metric": "error_ratio"}
BASELINE_CONTEXT = QueryContext(
    "user-service", "shop", "prod", "user-service-v1", ("user-service-v2",), baseline_workload="user-service-base"
)


def test_judge_gates_parse_with_defaults_that_need_no_tuning():
    gateset = parse_gates({"judges": [JUDGE_LATENCY, {**JUDGE_ERRORS, "tolerance": 0.5, "min_samples": 50}]})
    latency, errors = gateset.judges
    assert (latency.metric, latency.settings) == ("latency", judge.Settings(0.10, 0.99, 200, 0.001))
    assert (errors.settings.tolerance, errors.settings.min_samples) == (0.5, 50)
    assert latency.severity == "critical"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        pytest.param({**JUDGE_LATENCY, "tolerence": 0.2}, r"gates.judges\[0\]: unknown key 'tolerence'", id="typo"),
        pytest.param(
            {"name": "j", "metric": "p99"}, r"metric: got 'p99', expected one of error_ratio, latency", id="metric"
        ),
        pytest.param(
            {**JUDGE_LATENCY, "min_difference": 0.01}, "min_difference: only for metric error_ratio", id="floor"
        ),
        pytest.param({**JUDGE_LATENCY, "tolerance": -0.1}, r"tolerance: got -0.1, expected 0 <= tolerance", id="tol"),
        pytest.param(
            {**JUDGE_LATENCY, "confidence": 1.0}, r"confidence: got 1.0, expected 0.5 <= confidence < 1", id="conf"
        ),
        pytest.param(
            {**JUDGE_LATENCY, "min_samples": 0}, r"min_samples: got 0, expected an integer >= 1", id="samples"
        ),
        pytest.param(
            {**JUDGE_ERRORS, "min_difference": 1}, r"min_difference: got 1, expected 0 <= min_difference", id="md"
        ),
        pytest.param({"metric": "latency"}, r"gates.judges\[0\].name: got None", id="no-name"),
    ],
)
def test_bad_judge_config_names_the_entry(entry, message):
    with pytest.raises(ConfigError, match=message):
        parse_gates({"judges": [entry]})


def test_judge_names_are_unique_with_the_other_gates():
    with pytest.raises(ConfigError, match=r"gates.judges\[0\].name: 'error-ratio' is used twice"):
        parse_gates({"thresholds": [ERROR_GATE], "judges": [{**JUDGE_ERRORS, "name": "error-ratio"}]})


def _series(*samples: tuple[dict, float]) -> Reply:
    result = [{"metric": labels, "value": [1795637000.0, repr(value)]} for labels, value in samples]
    return Reply(200, {"status": "success", "data": {"resultType": "vector", "result": result}})


def _workload(name: str, **labels: str) -> dict:
    return {"destination_workload_namespace": "shop", "destination_workload": name, **labels}


BOUNDS = ("10", "50", "100", "250", "500", "1000", "+Inf")


def _buckets(name: str, per_bucket: list[float]) -> list[tuple[dict, float]]:
    cumulative, total = [], 0.0
    for le, count in zip(BOUNDS, per_bucket, strict=True):
        total += count
        cumulative.append((_workload(name, le=le), total))
    return cumulative


def _judge_queries(context: QueryContext, gate: dict) -> dict[str, str]:
    parsed = parse_gates({"judges": [gate]}).judges[0]
    return gates.judge_queries(parsed, context.with_window(WINDOW))


@pytest.mark.parametrize(
    ("candidate", "verdict", "summary"),
    [
        pytest.param([0, 200, 600, 200, 0, 0, 0], Verdict.PASS, "latency shift 1x [", id="identical"),
        pytest.param([0, 0, 0, 200, 600, 200, 0], Verdict.FAIL, "latency shift ", id="slower"),
    ],
)
def test_judge_latency_against_the_primary(server, candidate, verdict, summary):
    gateset = parse_gates({"min_requests": 10, "judges": [JUDGE_LATENCY]})
    (query,) = _judge_queries(CONTEXT, JUDGE_LATENCY).values()
    assert "sum by (destination_workload_namespace, destination_workload, le) (increase(" in query
    assert 'destination_workload=~"user-service-v1|user-service-v2"' in query
    server.answers = {
        TRAFFIC_QUERY: vector_reply("1000"),
        query: _series(
            *_buckets("user-service-v2", candidate), *_buckets("user-service-v1", [0, 2000, 6000, 2000, 0, 0, 0])
        ),
    }
    result = by_name(evaluate(gateset, client_for(server.url), CONTEXT, WINDOW))["judge-latency"]
    assert result.verdict is verdict, result.reason
    assert result.kind == "judge"
    assert result.extra["summary"].startswith(summary)
    assert result.extra["summary"].endswith("tol 1.1 n=1000/10000")
    assert (result.extra["n_candidate"], result.extra["n_baseline"]) == (1000, 10000)
    assert result.extra["lower"] <= result.value <= result.extra["upper"]
    assert result.threshold == pytest.approx(1.1)  # the latency judge's default tolerance


def test_judge_errors_against_the_baseline_shadow_over_the_judge_window(server):
    gateset = parse_gates({"judges": [JUDGE_ERRORS]})
    parsed = parse_gates({"judges": [JUDGE_ERRORS]}).judges[0]
    queries = gates.judge_queries(parsed, BASELINE_CONTEXT.with_window(3600))
    assert queries["errors"].endswith("[3600s]))")  # the step so far, not the gates' window
    assert 'response_code=~"5.."' in queries["errors"]
    assert 'destination_workload=~"user-service-base|user-service-v2"' in queries["requests"]
    server.answers = {
        queries["errors"]: _series((_workload("user-service-v2"), 150.0), (_workload("user-service-base"), 10.0)),
        queries["requests"]: _series(
            (_workload("user-service-v2"), 3000.0),
            (_workload("user-service-base"), 3000.0),
            (_workload("user-service-v1"), 90000.0),  # the primary is not the baseline here
        ),
    }
    client = client_for(server.url)
    result = by_name(evaluate(gateset, client, BASELINE_CONTEXT, WINDOW, judge_window_seconds=3600))["judge-errors"]
    assert result.verdict is Verdict.FAIL, result.reason
    assert result.extra["summary"].startswith("error_ratio ratio 15 [")
    assert result.extra["summary"].endswith("tol 1.25 n=3000/3000")
    assert result.extra["z"] == pytest.approx(judge.sequence_z(1500.0, 0.01, judge.SEQUENCE_TUNED_FOR["error_ratio"]))
    assert result.extra["window"] == "3600s"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        pytest.param(fixture("empty"), "no data: no requests at the candidate", id="empty"),
        pytest.param(Reply(503, "Service Unavailable"), "Prometheus unreachable", id="down"),
        pytest.param(_series((_workload("user-service-v2", le="+Inf"), float("nan"))), "no data", id="nan"),
    ],
)
def test_judge_without_evidence_is_inconclusive(server, reply, reason):
    gateset = parse_gates({"judges": [JUDGE_LATENCY]})
    (query,) = _judge_queries(CONTEXT, JUDGE_LATENCY).values()
    server.answers = {TRAFFIC_QUERY: vector_reply("1000"), query: reply}
    result = by_name(evaluate(gateset, client_for(server.url), CONTEXT, WINDOW))["judge-latency"]
    assert result.verdict is Verdict.INCONCLUSIVE
    assert reason in result.reason


def test_judge_query_rejected_raises_naming_the_gate(server):
    gateset = parse_gates({"judges": [JUDGE_LATENCY]})
    (query,) = _judge_queries(CONTEXT, JUDGE_LATENCY).values()
    server.answers = {
        TRAFFIC_QUERY: vector_reply("1000"),
        query: Reply(400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
    }
    with pytest.raises(QueryRejectedError, match="judge-latency"):
        evaluate(gateset, client_for(server.url), CONTEXT, WINDOW)
    (up_front,) = gates.judge_queries(gateset.judges[0], CONTEXT).values()  # the context's own window
    server.answers[up_front] = server.answers[query]
    with pytest.raises(QueryRejectedError, match="judge-latency"):
        check_queries(gateset, client_for(server.url), CONTEXT)


def test_query_context_accepts_a_baseline_workload_and_falls_back_to_the_primary():
    mapping = {
        "service": "s",
        "namespace": "n",
        "environment": "prod",
        "primary_workload": "s-v1",
        "mirror_workloads": ["s-v2"],
    }
    assert QueryContext.of(mapping).baseline == "s-v1"
    assert QueryContext.of({**mapping, "baseline_workload": "s-base"}).with_window(60).baseline == "s-base"
    with pytest.raises(ConfigError, match="baseline_workload must be a non-empty string"):
        QueryContext.of({**mapping, "baseline_workload": ""})


def test_batched_judges_send_one_grouped_query_per_part_for_every_service(server):
    gateset = parse_gates({"min_requests": 10, "judges": [JUDGE_LATENCY, JUDGE_ERRORS]})
    grouped = {
        part: promql.judge_query(
            part,
            ["shop"],
            ["user-service-v1", "user-service-v2", "order-service-v1", "order-service-v2"],
            "600s",
        )
        for part in ("buckets", "errors", "requests")
    }
    slow, same = [0, 0, 0, 200, 600, 200, 0], [0, 2000, 6000, 2000, 0, 0, 0]
    server.answers = {
        TRAFFIC_QUERY: vector_reply("1000"),
        TRAFFIC_QUERY.replace("user-service", "order-service"): vector_reply("1000"),
        grouped["buckets"]: _series(
            *_buckets("user-service-v2", slow),
            *_buckets("user-service-v1", same),
            *_buckets("order-service-v2", [v / 10 for v in same]),
            *_buckets("order-service-v1", same),
        ),
        grouped["errors"]: _series((_workload("user-service-v2"), 0.0), (_workload("order-service-v2"), 0.0)),
        grouped["requests"]: _series(
            *((_workload(w), n) for w, n in [("user-service-v2", 1e3), ("user-service-v1", 1e4)]),
            *((_workload(w), n) for w, n in [("order-service-v2", 1e5), ("order-service-v1", 1e6)]),
        ),
    }
    batched = BatchedPrometheus(client_for(server.url), gateset, [CONTEXT, OTHER], WINDOW)
    user = by_name(evaluate(gateset, batched, CONTEXT, WINDOW))
    order = by_name(evaluate(gateset, batched, OTHER, WINDOW))
    assert (user["judge-latency"].verdict, order["judge-latency"].verdict) == (Verdict.FAIL, Verdict.PASS)
    assert user["judge-latency"].extra["n_baseline"] == 10000  # only user-service's own series
    assert (user["judge-errors"].verdict, order["judge-errors"].verdict) == (Verdict.INCONCLUSIVE, Verdict.PASS)
    sent = server.queries()
    assert all(sent.count(query) == 1 for query in grouped.values())
    assert not any('=~"user-service-v1|user-service-v2"' in q for q in sent)  # no one-service judge query
