"""BatchedPrometheus and the judges' windows: each service's judge counts over its own step so
far, and services whose judge windows are equal share one grouped query per part."""

from __future__ import annotations

from mirrorramp import promql
from mirrorramp.batch import BatchedPrometheus
from mirrorramp.gates import evaluate, parse_gates
from mirrorramp.model import Verdict
from mirrorramp.prometheus import QueryResult
from mirrorramp.promql import QueryContext

GATES = parse_gates({"min_requests": 10, "judges": [{"name": "judge-5xx", "metric": "error_ratio"}]})


class RecordingPrometheus:
    """100 requests a second at every workload the query names, no 5xx; records each query."""

    safe_url = "http://prometheus.test"

    def __init__(self) -> None:
        self.queries: list[str] = []

    def query(self, query: str, at=None) -> QueryResult:
        self.queries.append(query)
        if "response_code" in query:
            return QueryResult("vector", [])
        if "sum by" not in query:
            return QueryResult("vector", [({}, 1000.0)])
        seconds = float(promql.judge_query_any_window(query)[1].rstrip("s"))
        samples = [
            ({"destination_workload_namespace": "shop", "destination_workload": f"{name}-{version}"}, 100.0 * seconds)
            for name in ("a", "b", "c")
            for version in ("v1", "v2")
        ]
        return QueryResult("vector", samples)

    def alert_rules(self) -> tuple:
        return ()


def context(name: str) -> QueryContext:
    return QueryContext(name, "shop", "local", f"{name}-v1", (f"{name}-v2",), 60.0)


def test_equal_judge_windows_share_one_grouped_query_and_another_window_gets_its_own():
    client = RecordingPrometheus()
    batched = BatchedPrometheus(client, GATES, [context(n) for n in ("a", "b", "c")], 60.0)
    windows = {"a": 600.0, "b": 600.0, "c": 1200.0}
    results = {
        name: next(
            r for r in evaluate(GATES, batched, context(name), 60.0, judge_window_seconds=w) if r.kind == "judge"
        )
        for name, w in windows.items()
    }
    judge_queries = [q for q in client.queries if "a-v1|a-v2" in q]  # the traffic check names only the v2s
    # requests + errors, once per distinct window; every query names all three services.
    assert len(judge_queries) == 4
    assert all('destination_workload=~"a-v1|a-v2|b-v1|b-v2|c-v1|c-v2"' in q for q in judge_queries)
    assert sorted(promql.judge_query_any_window(q)[1] for q in judge_queries) == ["1200s", "1200s", "600s", "600s"]
    assert results["a"].extra["n_candidate"] == 60000.0
    assert results["c"].extra["n_candidate"] == 120000.0
    assert results["c"].verdict is Verdict.PASS


def test_the_any_window_form_of_a_judge_query_and_of_another_query():
    query = promql.judge_query("requests", ("shop",), ("a-v1", "a-v2"), "3600s")
    template, window = promql.judge_query_any_window(query)
    assert window == "3600s"
    assert template == promql.judge_query("requests", ("shop",), ("a-v1", "a-v2"), promql.ANY_WINDOW)
    assert promql.judge_query_any_window("sum(rate(x[5m]))") is None
