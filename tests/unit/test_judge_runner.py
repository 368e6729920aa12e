"""The runner with judge gates: they judge the step so far at every look, an inconclusive judge
holds a step only once its hold is over, and a slow mirror is removed (the in-memory target and
clock of test_runner, a Prometheus answering bucket counts)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from mirrorramp.gates import parse_gates
from mirrorramp.machine import judge_window_seconds
from mirrorramp.prometheus import QueryResult
from mirrorramp.runner import gate_row
from tests.unit.test_runner import PLAN, Clock, MemoryTarget, make_runner, ramping

BOUNDS = ("10", "50", "100", "250", "500", "1000", "+Inf")
BASELINE = [0, 2000, 6000, 2000, 0, 0, 0]


class BucketPrometheus:
    """The traffic query answers `requests`; the judge's bucket query one histogram per workload."""

    def __init__(self, candidate: list[float]) -> None:
        self.candidate = candidate
        self.queries: list[str] = []

    def query(self, promql: str, at=None) -> QueryResult:
        self.queries.append(promql)
        if "istio_request_duration_milliseconds_bucket" not in promql:
            return QueryResult("vector", [({}, 1000.0)])
        samples = []
        for workload, counts in (("user-service-v2", self.candidate), ("user-service-v1", BASELINE)):
            total = 0.0
            for le, count in zip(BOUNDS, counts, strict=True):
                total += count
                labels = {"destination_workload_namespace": "shop", "destination_workload": workload, "le": le}
                samples.append((labels, total))
        return QueryResult("vector", samples)

    def alert_rules(self) -> tuple:
        return ()


def judge_runner(target, prometheus, clock):
    runner = make_runner(target, prometheus, clock)
    gates = parse_gates({"min_requests": 10, "judges": [{"name": "judge-latency", "metric": "latency"}]})
    return _with_gates(runner, gates)


def _with_gates(runner, gates):
    runner.config = replace(runner.config, gates=gates)
    return runner


def test_each_look_judges_the_step_so_far_and_the_whole_step_look_leaves_judges_out():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now), percent=PLAN[0].percent)
    prometheus = BucketPrometheus(list(BASELINE))
    runner = judge_runner(target, prometheus, clock)
    clock.now += 30  # half the 60 s hold
    runner.run_once()
    judge_queries = [q for q in prometheus.queries if "_bucket" in q]
    assert judge_queries[-1].endswith("[60s]))")  # 30 s of step, in whole minutes
    writes = target.writes
    clock.now += 30  # the hold is over: the step advances on the judge's pass
    outcome = runner.run_once()
    assert target.state.step_index == 1, outcome.last.reason
    assert target.writes == writes + 1  # the advance; a look alone writes nothing
    rows = [gate_row(g) for g in outcome.gates if g.kind == "judge"]
    assert len(rows) == 1  # no "(whole step)" judge: it already judged the whole step
    assert rows[0].split()[:5] == ["pass", "judge-latency", "latency", "shift", "1x"]
    assert rows[0].endswith("] tol 1.1 n=10000/10000")


@pytest.mark.parametrize(
    ("elapsed", "window"), [(0.0, 60.0), (1.0, 60.0), (60.0, 60.0), (61.0, 120.0), (86399.5, 86400.0)]
)
def test_the_judge_window_is_the_step_so_far_in_whole_minutes(elapsed, window):
    assert judge_window_seconds(1000.0, 1000.0 + elapsed) == window


def test_a_slower_mirror_is_removed_on_the_judges_evidence():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now), percent=PLAN[0].percent)
    runner = judge_runner(target, BucketPrometheus([0, 0, 0, 2000, 6000, 2000, 0]), clock)
    clock.now += 45
    runner.run_once()
    assert target.state.status == "rolled_back"
    assert target.percent == 0.0
    assert target.state.rollback["gate"] == "judge-latency"


def test_a_second_look_at_the_same_time_spends_nothing_and_writes_nothing():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now), percent=PLAN[0].percent)
    runner = judge_runner(target, BucketPrometheus(list(BASELINE)), clock)
    clock.now += 20
    runner.run_once()
    writes = target.writes
    runner.run_once()
    assert target.writes == writes


class CountingPrometheus:
    """100 requests/s at each side, no 5xx: the counts grow with the query's range."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def query(self, promql: str, at=None) -> QueryResult:
        self.queries.append(promql)
        seconds = float(re.search(r"\[(\d+)s\]", promql).group(1))
        if "response_code" in promql:
            return QueryResult("vector", [])
        if "sum by" not in promql:
            return QueryResult("vector", [({}, 100.0 * seconds)])
        return QueryResult(
            "vector",
            [
                ({"destination_workload_namespace": "shop", "destination_workload": w}, 100.0 * seconds)
                for w in ("user-service-v1", "user-service-v2")
            ],
        )

    def alert_rules(self) -> tuple:
        return ()


def test_an_inconclusive_judge_holds_the_step_only_once_the_hold_is_over():
    """100 req/s a side, no 5xx. 6,000 requests a side cannot show a ratio under 0.1 % at the
    sequence's z: before the hold ends that is no verdict yet (no streak); at its end the
    step holds; 24,000 a side can show it, and the step advances."""
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now), percent=PLAN[0].percent)
    runner = make_runner(target, CountingPrometheus(), clock)
    runner.config = replace(
        runner.config,
        gates=parse_gates({"min_requests": 10, "judges": [{"name": "judge-5xx", "metric": "error_ratio"}]}),
    )
    clock.now += 40
    outcome = runner.run_once()
    assert [g.verdict for g in outcome.gates if g.kind == "judge"] == ["inconclusive"]
    assert target.state.inconclusive_streak == 0  # no early verdict is not blindness
    clock.now += 21  # the 60 s hold is over, 120 s of counts: still not enough
    outcome = runner.run_once()
    assert {g.name: g.verdict for g in outcome.gates if g.kind == "judge"} == {"judge-5xx": "inconclusive"}
    assert target.state.step_index == 0
    assert target.state.inconclusive_streak == 1
    clock.now += 180  # 240 s of counts
    outcome = runner.run_once()
    assert {g.name: g.verdict for g in outcome.gates if g.kind == "judge"} == {"judge-5xx": "pass"}
    assert target.state.step_index == 1, outcome.last.reason
