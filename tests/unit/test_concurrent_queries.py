"""One gate pass sends its independent queries at once (prometheus.concurrently): against a
Prometheus that answers every query after DELAY, a pass waits for its three dependent steps (the
traffic check; the metric gates, judges and rule list; the alert gates), not for each query.
The results, their order and the errors are those of the same pass sent one query at a time."""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback

import pytest

from mirrorramp import gates
from mirrorramp.batch import BatchedPrometheus
from mirrorramp.errors import QueryRejectedError
from mirrorramp.gates import evaluate, parse_gates
from mirrorramp.model import Verdict
from mirrorramp.prometheus import MAX_CONCURRENT_QUERIES, PrometheusClient, QueryResult, concurrently
from mirrorramp.promql import QueryContext
from tests.support.prometheus_server import Reply, ScriptedPrometheus, fixture, vector_reply

CONTEXT = QueryContext("user-service", "shop", "prod", "user-service-v1", ("user-service-v2",))
OTHER = QueryContext("order-service", "shop", "prod", "order-service-v1", ("order-service-v2",))
WINDOW = 600
DELAY = 0.25  # each answer's delay: long beside a loopback round trip, short for a test
STEPS = 3  # traffic; metric gates + judges + rules; alerts
# The local inventory's gates (inventories/local ramp.yml) and a judge: 9 queries and the rule list.
GATESET = parse_gates(
    {
        "min_requests": 10,
        "thresholds": [
            {"name": "mirror-5xx-ratio", "metric": "error_ratio", "operator": "<", "value": 0.05},
            {"name": "mirror-p99-latency-ms", "metric": "p99_latency", "operator": "<", "value": 1000},
        ],
        "comparisons": [
            {"name": "5xx-ratio-vs-primary", "metric": "error_ratio", "max_delta": 0.02},
            {"name": "p99-vs-primary", "metric": "p99_latency", "max_ratio": 50},
        ],
        "judges": [{"name": "judge-errors", "metric": "error_ratio"}],
        "alerts": [{"name": "no-critical", "alertname": "MirrorErrorRatioCritical"}],
    }
)
QUERIES = gates._rendered_queries(GATESET, CONTEXT.with_window(WINDOW))  # every gate's but the judge's
SEQUENTIAL_QUERIES = len(QUERIES) + 2  # and the judge's two counts (errors, requests)


def delayed(reply: Reply, delay: float = DELAY) -> Reply:
    return dataclasses.replace(reply, delay=delay)


def workload_series(value: str) -> Reply:
    """Every sandbox workload with `value`: what a grouped query (sum by namespace, workload) or
    a judge's count answers; a one-service query reads its own series."""
    reply = vector_reply(value)
    sample = reply.body["data"]["result"][0]
    series = [
        {**sample, "metric": {"destination_workload_namespace": "shop", "destination_workload": workload}}
        for workload in ("user-service-v1", "user-service-v2", "order-service-v1", "order-service-v2")
    ]
    return Reply(200, {**reply.body, "data": {**reply.body["data"], "result": series}})


@pytest.fixture
def server():
    scripted = ScriptedPrometheus().start()
    scripted.rule_names = ["MirrorErrorRatioCritical"]
    yield scripted
    scripted.stop()


def client_for(url: str) -> PrometheusClient:
    return PrometheusClient(url, timeout=5.0, retries=0, backoff=0.01)


def answer_every_query(server: ScriptedPrometheus, delay: float) -> None:
    server.answers = {query: delayed(vector_reply("0.001"), delay) for query in QUERIES.values()}
    server.answers[QUERIES[gates.TRAFFIC_GATE]] = delayed(vector_reply("500"), delay)
    server.answers[QUERIES["no-critical"]] = delayed(fixture("alerts_firing"), delay)
    server.default = delayed(workload_series("300"), delay)  # the judge's counts


def one_at_a_time(calls):
    return [call() for call in calls]


def as_rows(results) -> list[dict]:
    return [result.as_dict() for result in results]


# -- concurrently ------------------------------------------------------------------------------


def test_concurrently_keeps_the_order_of_the_calls():
    def after(seconds: float, value: int):
        return lambda: time.sleep(seconds) or value

    # The last call answers first.
    assert concurrently([after(0.2, 1), after(0.1, 2), after(0.0, 3)]) == [1, 2, 3]


def test_concurrently_raises_the_first_error_in_call_order_once_every_call_ended():
    ended = []

    def fails(seconds: float, name: str):
        def call():
            time.sleep(seconds)
            ended.append(name)
            raise ValueError(name)

        return call

    with pytest.raises(ValueError, match=r"^first$"):
        concurrently([fails(0.2, "first"), fails(0.0, "second"), lambda: ended.append("ok")])
    assert sorted(ended) == ["first", "ok", "second"]


def test_concurrently_runs_at_most_the_bound_at_once():
    running, peak, lock = 0, 0, threading.Lock()

    def call():
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    concurrently([call] * (MAX_CONCURRENT_QUERIES * 2))
    assert peak == MAX_CONCURRENT_QUERIES


def test_one_client_shared_by_the_threads_gives_each_query_its_own_answer(server):
    # Answers in the reverse order of the queries: a mixed-up connection would show.
    count = 3 * MAX_CONCURRENT_QUERIES
    server.answers = {f"q{i}": delayed(vector_reply(str(i)), 0.01 * (count - i)) for i in range(count)}
    client = client_for(server.url)
    answers = concurrently([lambda i=i: client.query(f"q{i}") for i in range(count)])
    assert [result.samples[0][1] for result in answers] == [float(i) for i in range(count)]


def test_a_single_call_runs_in_the_callers_thread():
    assert concurrently([threading.current_thread]) == [threading.current_thread()]


# -- a gate pass -----------------------------------------------------------------------------


def test_a_pass_waits_for_its_three_steps_not_for_each_query(server):
    answer_every_query(server, DELAY)
    started = time.monotonic()
    results = evaluate(GATESET, client_for(server.url), CONTEXT, WINDOW)
    elapsed = time.monotonic() - started
    assert len(server.queries()) == SEQUENTIAL_QUERIES == 8  # one at a time: 8 x DELAY = 2 s
    assert STEPS * DELAY <= elapsed < (STEPS + 2) * DELAY, elapsed
    assert [r.name for r in results] == [
        "traffic",
        "mirror-5xx-ratio",
        "mirror-p99-latency-ms",
        "5xx-ratio-vs-primary",
        "p99-vs-primary",
        "judge-errors",
        "no-critical",
    ]


def test_a_pass_decides_as_one_query_at_a_time(server, monkeypatch):
    answer_every_query(server, 0.0)
    at_once = evaluate(GATESET, client_for(server.url), CONTEXT, WINDOW, at=1795637000.0)
    monkeypatch.setattr(gates, "concurrently", one_at_a_time)
    reference = evaluate(GATESET, client_for(server.url), CONTEXT, WINDOW, at=1795637000.0)
    assert as_rows(at_once) == as_rows(reference)
    verdicts = {r.name: r.verdict for r in at_once}
    assert verdicts["no-critical"] is Verdict.FAIL and verdicts["mirror-5xx-ratio"] is Verdict.PASS


def test_a_batched_pass_sends_each_grouped_query_once_in_three_steps(server, monkeypatch):
    server.default = delayed(workload_series("500"))
    batched = BatchedPrometheus(client_for(server.url), GATESET, [CONTEXT, OTHER], WINDOW)
    started = time.monotonic()
    results = evaluate(GATESET, batched, CONTEXT, WINDOW, at=1795637000.0)
    elapsed = time.monotonic() - started
    grouped = [q for q in server.queries() if "sum by (" in q or q.startswith("max_over_time(ALERTS")]
    assert len(grouped) == len(set(grouped)) == len(server.queries())  # nothing sent twice or alone
    # traffic, the mirror's and primary's error ratio and p99, the judge's two counts, the alerts
    assert len(grouped) == 8
    assert STEPS * DELAY <= elapsed < (STEPS + 2) * DELAY, elapsed
    # The same verdicts as the batch sent one query at a time.
    server.default = workload_series("500")
    monkeypatch.setattr(gates, "concurrently", one_at_a_time)
    monkeypatch.setattr("mirrorramp.batch.concurrently", one_at_a_time)
    batched.new_pass()
    assert as_rows(results) == as_rows(evaluate(GATESET, batched, CONTEXT, WINDOW, at=1795637000.0))


def test_a_rejected_query_names_the_first_gate_in_order_even_when_a_later_one_answers_first(server):
    answer_every_query(server, 0.0)
    # The first threshold's rejection comes last; the comparison's first.
    server.answers[QUERIES["mirror-5xx-ratio"]] = delayed(fixture("bad_data_400"), 0.3)
    server.answers[QUERIES["5xx-ratio-vs-primary"]] = fixture("execution_422")
    with pytest.raises(QueryRejectedError) as caught:
        evaluate(GATESET, client_for(server.url), CONTEXT, WINDOW)
    assert caught.value.gate == "mirror-5xx-ratio"
    assert caught.value.status == 400


def test_an_unanswered_query_leaves_its_gate_inconclusive_and_the_others_decided(server):
    answer_every_query(server, 0.0)
    server.answers[QUERIES["mirror-p99-latency-ms"]] = Reply(503, "overloaded")
    results = {r.name: r for r in evaluate(GATESET, client_for(server.url), CONTEXT, WINDOW)}
    assert results["mirror-p99-latency-ms"].verdict is Verdict.INCONCLUSIVE
    assert results["mirror-p99-latency-ms"].reason.startswith("Prometheus unreachable")
    assert results["mirror-5xx-ratio"].verdict is Verdict.PASS
    assert results["no-critical"].verdict is Verdict.FAIL


def test_too_few_requests_sends_none_of_the_metric_gates_queries(server):
    answer_every_query(server, 0.0)
    server.answers[QUERIES[gates.TRAFFIC_GATE]] = vector_reply("3")
    results = {r.name: r for r in evaluate(GATESET, client_for(server.url), CONTEXT, WINDOW)}
    assert results["mirror-5xx-ratio"].reason == "not checked: too few requests: 3 < 10"
    sent = set(server.queries())
    assert not sent & {QUERIES[name] for name in ("mirror-5xx-ratio", "p99-vs-primary")}
    assert QUERIES["no-critical"] in sent  # alert gates are checked whatever the traffic


class BrokenClient:
    """A client that answers the traffic check (the pass's first query, alone), then fails every
    grouped query with an error no layer expects (a bug, say)."""

    safe_url = "http://127.0.0.1:9"

    def __init__(self) -> None:
        self.answered_traffic = False

    def query(self, query: str, at: float | None = None) -> QueryResult:
        if not self.answered_traffic:
            self.answered_traffic = True
            labels = {"destination_workload_namespace": "shop", "destination_workload": "user-service-v2"}
            return QueryResult("vector", [(labels, 500.0)])
        time.sleep(0.05)  # the comparisons' threads wait on the thresholds' groups meanwhile
        raise RuntimeError("unexpected")

    def alert_rules(self) -> tuple:
        return ()


# Two thresholds on the same metric: the second one's thread only waits for the first one's query.
SHARED_GROUP = parse_gates(
    {
        "min_requests": 10,
        "thresholds": [
            {"name": "critical-5xx", "metric": "error_ratio", "operator": "<", "value": 0.05},
            {"name": "warning-5xx", "metric": "error_ratio", "operator": "<", "value": 0.01, "severity": "warning"},
        ],
    }
)


def test_an_unexpected_error_in_a_grouped_query_reaches_every_waiting_gate_and_hangs_none():
    batched = BatchedPrometheus(BrokenClient(), SHARED_GROUP, [CONTEXT, OTHER], WINDOW)
    outcome: list[BaseException] = []

    def one_pass() -> None:
        try:
            evaluate(SHARED_GROUP, batched, CONTEXT, WINDOW)
        except BaseException as e:  # the pass's own error, collected for the assertion
            outcome.append(e)

    runner = threading.Thread(target=one_pass, daemon=True)
    runner.start()
    runner.join(timeout=10)
    assert not runner.is_alive(), "a thread of the pass still waits for an answer"
    assert [type(e) for e in outcome] == [RuntimeError]
    assert batched_traffic_passed(outcome)


def batched_traffic_passed(outcome: list[BaseException]) -> bool:
    """The error came from the second step (the metric gates), not from the traffic check."""
    frames = [frame.name for frame in traceback.extract_tb(outcome[0].__traceback__)]
    return "_single_value" in frames


def test_nested_calls_deeper_than_the_pool_all_end():
    """Calls that call `concurrently` themselves (a judge's counts, a grouped query) while every
    pool thread is busy: a call no pool thread has started runs in its caller's thread, so the
    shared pool never waits on itself."""
    inner = MAX_CONCURRENT_QUERIES * 2

    def outer(i: int) -> int:
        return sum(concurrently([lambda j=j: time.sleep(0.01) or i * j for j in range(inner)]))

    started = time.monotonic()
    got = concurrently([lambda i=i: outer(i) for i in range(MAX_CONCURRENT_QUERIES * 2)])
    assert got == [i * sum(range(inner)) for i in range(MAX_CONCURRENT_QUERIES * 2)]
    assert time.monotonic() - started < 10
