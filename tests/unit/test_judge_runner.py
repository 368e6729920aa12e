"""The runner with judge gates: the alpha spent is recorded per step, and a slow mirror is
removed (the in-memory target and clock of test_runner, a Prometheus answering bucket counts)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from mirrorramp.gates import parse_gates
from mirrorramp.judge import obrien_fleming_spent
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


def test_each_look_records_what_it_spent_and_a_new_step_starts_afresh():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now), percent=PLAN[0].percent)
    runner = judge_runner(target, BucketPrometheus(list(BASELINE)), clock)
    clock.now += 30  # half the 60 s hold
    runner.run_once()
    record = target.state.judge_spending["judge-latency"]
    assert record["t"] == pytest.approx(0.5)
    assert record["spent"] == pytest.approx(obrien_fleming_spent(0.5, 0.01))
    clock.now += 30  # the hold is over: the step is judged in whole and advances
    outcome = runner.run_once()
    assert target.state.step_index == 1, outcome.last.reason
    assert target.state.judge_spending == {}  # the old step's record is gone with it
    rows = [gate_row(g) for g in outcome.gates if g.kind == "judge"]
    assert rows[0].split()[:5] == ["pass", "judge-latency", "latency", "shift", "1x"]
    assert rows[0].endswith("] tol 1.25 n=10000/10000")
    assert len(rows) == 2  # the window and the whole step


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


def test_an_inconclusive_window_judge_holds_nothing_the_whole_step_decides():
    """3,000 requests without a 5xx in the 30 s window cannot show a ratio under 0.1 % (the
    judge is inconclusive there); the 60 s step's 6,000 can, and the step advances on them."""
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now), percent=PLAN[0].percent)
    runner = make_runner(target, CountingPrometheus(), clock)
    runner.config = replace(
        runner.config,
        gates=parse_gates({"min_requests": 10, "judges": [{"name": "judge-5xx", "metric": "error_ratio"}]}),
    )
    clock.now += 40
    outcome = runner.run_once()
    window = [g for g in outcome.gates if g.kind == "judge"]
    assert [g.verdict for g in window] == ["inconclusive"]
    assert target.state.inconclusive_streak == 0  # no early verdict is not blindness
    clock.now += 21
    outcome = runner.run_once()
    verdicts = {g.name: g.verdict for g in outcome.gates if g.kind == "judge"}
    assert verdicts == {"judge-5xx": "inconclusive", "judge-5xx (whole step)": "pass"}
    assert target.state.step_index == 1, outcome.last.reason


def test_the_window_and_the_whole_step_share_one_increment_at_the_end_of_the_hold():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now), percent=PLAN[0].percent)
    runner = judge_runner(target, BucketPrometheus(list(BASELINE)), clock)
    clock.now += 30
    runner.run_once()
    clock.now += 31  # past the 60 s hold: this look closes it at t = 1
    outcome = runner.run_once()
    increment = 0.01 - obrien_fleming_spent(0.5, 0.01)
    spent = {g.name: g.extra["fail_alpha"] for g in outcome.gates if g.kind == "judge"}
    assert spent == {
        "judge-latency": pytest.approx(increment / 2),
        "judge-latency (whole step)": pytest.approx(increment / 2),
    }
