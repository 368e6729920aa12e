"""The runner's sequencing around the state machine: read, check, decide, write, verify.

The driver is an in-memory target with the Driver protocol's optimistic concurrency, and
Prometheus a scripted client; the real ones have their own integration tests.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from mirrorramp.drivers.base import TargetSnapshot
from mirrorramp.errors import ConflictError, DriverError, PrometheusError
from mirrorramp.gates import parse_gates
from mirrorramp.machine import Policy
from mirrorramp.model import Step
from mirrorramp.notify import Notifier
from mirrorramp.prometheus import QueryResult
from mirrorramp.runner import RampConfig, Runner, run_all
from mirrorramp.state import RampState

PLAN = (Step(1, 60), Step(5, 60), Step(20, 60))
CONTEXT = {
    "service": "user-service",
    "namespace": "shop",
    "environment": "prod",
    "primary_workload": "user-service-v1",
    "mirror_workloads": ["user-service-v2"],
}
GATES = {
    "min_requests": 10,
    "thresholds": [{"name": "mirror-5xx-ratio", "metric": "error_ratio", "operator": "<", "value": 0.05}],
}


class MemoryTarget:
    """A target holding the mirror percent and the state, versioned like a resourceVersion."""

    description = "memory target"
    atomic = True

    def __init__(self, state: RampState | None = None, percent: float = 0.0) -> None:
        self.state = state or RampState.initial()
        self.percent = percent
        self.version = 1
        self.writes = 0
        self.conflicts_to_inject: list[tuple[RampState, float]] = []
        self.ignore_writes = False

    def read(self) -> TargetSnapshot:
        return TargetSnapshot(self.state, self.percent, str(self.version))

    def write(self, current, state, percent, *, dry_run):
        if self.conflicts_to_inject:
            # Another run wins the race: it writes first, our version is stale.
            self.state, self.percent = self.conflicts_to_inject.pop(0)
            self.version += 1
        if current.version != str(self.version):
            raise ConflictError(f"{self.description} changed (version {current.version} != {self.version})")
        if dry_run:
            return TargetSnapshot(state, percent, current.version)
        self.writes += 1
        if not self.ignore_writes:
            self.state, self.percent = state, percent
        self.version += 1
        return TargetSnapshot(state, percent, str(self.version))


class ScriptedPrometheus:
    """Answers the traffic query with `requests` and every other query with `error_ratio`."""

    def __init__(self, requests: float = 1000, error_ratio: float = 0.0, down: bool = False) -> None:
        self.requests = requests
        self.error_ratio = error_ratio
        self.down = down
        self.queries: list[str] = []

    def query(self, promql: str, at=None) -> QueryResult:
        self.queries.append(promql)
        if self.down:
            raise PrometheusError("http://127.0.0.1:1: connection refused")
        value = self.requests if promql.startswith("sum(increase(") else self.error_ratio
        return QueryResult("vector", [({}, float(value))])

    def alert_rules(self) -> tuple:
        return ()


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def make_runner(target, prometheus, clock, **config) -> Runner:
    cfg = RampConfig(
        service="user-service",
        namespace="shop",
        environment="prod",
        plan=PLAN,
        gates=parse_gates(GATES),
        query_context=CONTEXT,
        window_seconds=30,
        policy=config.pop("policy", Policy()),
        **config,
    )
    return Runner(cfg, target, prometheus, Notifier(), clock=clock, sleep=clock.sleep)


def ramping(step: int, started: float) -> RampState:
    return replace(
        RampState.initial(), status="ramping", step_index=step, percent=PLAN[step].percent, step_started_at=started
    )


def test_pending_starts_the_first_step_and_reads_it_back():
    target, clock = MemoryTarget(), Clock()
    outcome = make_runner(target, ScriptedPrometheus(), clock).run()
    assert outcome.changed
    assert (target.state.status, target.state.step_index, target.percent) == ("ramping", 0, 1.0)


def test_a_query_check_without_prometheus_never_starts():
    target, clock = MemoryTarget(), Clock()
    outcome = make_runner(target, ScriptedPrometheus(down=True), clock).run()
    assert not outcome.changed
    assert target.writes == 0 and target.percent == 0
    assert "not started" in outcome.last.reason


def test_hold_not_elapsed_changes_nothing():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now - 10), percent=1)
    first = make_runner(target, ScriptedPrometheus(), clock).run()
    # The first check records the gate verdicts with the state (bookkeeping, not a change).
    assert not first.changed and target.writes == 1 and target.percent == 1
    outcome = make_runner(target, ScriptedPrometheus(), clock).run()
    assert not outcome.changed and target.writes == 1
    assert str(outcome.last.action) == "hold"


def test_hold_elapsed_checks_the_whole_step_then_advances_one_step():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now - 3600), percent=1)
    prometheus = ScriptedPrometheus()
    outcome = make_runner(target, prometheus, clock).run()
    assert outcome.changed
    assert (target.state.step_index, target.percent) == (1, 5.0)
    # The recent window (30s) and the whole step (3600s) were both asked.
    assert any("[30s]" in q for q in prometheus.queries)
    assert any("[3600s]" in q for q in prometheus.queries)
    # Running again at once changes nothing.
    again = make_runner(target, prometheus, clock).run()
    assert not again.changed and target.state.step_index == 1


def test_a_breach_removes_the_mirror_and_records_why():
    clock = Clock()
    target = MemoryTarget(ramping(1, clock.now - 10), percent=5)
    outcome = make_runner(target, ScriptedPrometheus(error_ratio=0.3), clock).run()
    assert outcome.changed
    assert (target.state.status, target.percent) == ("rolled_back", 0)
    assert target.state.rollback["gate"] == "mirror-5xx-ratio"
    assert target.state.rollback["value"] == pytest.approx(0.3)


def test_a_failing_webhook_never_blocks_the_rollback():
    clock = Clock()
    target = MemoryTarget(ramping(1, clock.now - 10), percent=5)
    runner = make_runner(target, ScriptedPrometheus(error_ratio=0.3), clock)
    runner.notifier = Notifier(urls=["http://127.0.0.1:9/hook/secret-token"], timeout=0.5, attempts=1)
    outcome = runner.run()
    assert target.percent == 0
    assert any("webhook" in w for w in outcome.warnings)
    assert not any("secret-token" in w for w in outcome.warnings)


def test_a_lost_race_rereads_and_does_not_advance_twice():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now - 3600), percent=1)
    # The other run advanced to step 2 (5%) just before our write.
    target.conflicts_to_inject = [(ramping(1, clock.now), 5.0)]
    outcome = make_runner(target, ScriptedPrometheus(), clock).run()
    assert outcome.conflicts == 1
    assert not outcome.changed
    assert (target.state.step_index, target.percent) == (1, 5.0)


def test_conflicts_without_end_fail_and_change_nothing():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now - 3600), percent=1)
    target.conflicts_to_inject = [(ramping(0, clock.now - 3600), 1.0)] * 10
    with pytest.raises(ConflictError):
        make_runner(target, ScriptedPrometheus(), clock).run()


def test_check_mode_writes_nothing_but_reports_the_change():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now - 3600), percent=1)
    outcome = make_runner(target, ScriptedPrometheus(), clock, dry_run=True).run()
    assert outcome.changed
    assert outcome.after.percent == 5.0
    assert (target.writes, target.percent, target.state.step_index) == (0, 1, 0)


def test_a_write_that_does_not_stick_is_reported():
    clock = Clock()
    target = MemoryTarget(ramping(1, clock.now - 10), percent=5)
    target.ignore_writes = True
    with pytest.raises(DriverError, match="read back"):
        make_runner(target, ScriptedPrometheus(error_ratio=0.3), clock).run()


def test_watch_mode_ramps_to_completion_one_step_per_hold():
    clock = Clock()
    target = MemoryTarget()
    outcome = make_runner(
        target, ScriptedPrometheus(), clock, mode="watch", poll_interval=20, deadline_seconds=3600
    ).run()
    assert target.state.status == "completed"
    assert target.percent == 20.0
    actions = [str(d.action) for d in outcome.decisions if d.changed]
    assert actions == ["start", "advance", "advance", "complete"]


def test_watch_mode_stops_at_the_deadline_without_losing_the_state():
    clock = Clock()
    target = MemoryTarget()
    runner = make_runner(
        target, ScriptedPrometheus(requests=0), clock, mode="watch", poll_interval=1, deadline_seconds=0.2
    )
    runner.sleep = lambda s: clock.sleep(s) or __import__("time").sleep(0.05)
    outcome = runner.run()
    assert target.state.status == "ramping" and target.percent == 1.0
    assert any("deadline" in w for w in outcome.warnings)


def test_each_change_prints_the_gates_it_was_decided_on():
    clock = Clock()
    target = MemoryTarget(ramping(1, clock.now - 10), percent=5)
    printed: list[str] = []
    runner = make_runner(target, ScriptedPrometheus(error_ratio=0.3), clock)
    runner.progress = printed.append
    runner.run()
    (message,) = printed
    summary, *rows = message.splitlines()
    assert summary.startswith("prod/user-service: rolled back from step 2 (5%)")
    failed = [row for row in rows if "mirror-5xx-ratio" in row]
    assert failed and failed[0].split()[:3] == ["fail", "mirror-5xx-ratio", "0.3"], rows
    assert {row.split()[0] for row in rows} <= {"pass", "fail", "inconclusive"}


def test_gates_left_unchecked_for_want_of_traffic_are_not_listed_as_evidence():
    clock = Clock()
    target = MemoryTarget(ramping(1, clock.now - 10), percent=5)
    outcome = make_runner(target, ScriptedPrometheus(requests=3), clock).run()
    assert outcome.last.reason.startswith("holding step 2 (5%): gates inconclusive (1 of 10 tolerated): traffic = 3")
    assert "more:" not in outcome.last.reason


class FailingOnSecondRead(MemoryTarget):
    """A target whose API goes away after the first pass."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(self) -> TargetSnapshot:
        self.reads += 1
        if self.reads > 2:  # the first pass reads twice: before the write and to verify it
            raise DriverError("memory target: HTTP 503 Service Unavailable")
        return super().read()


def test_run_all_keeps_going_for_the_others_when_one_service_fails():
    clock = Clock()
    healthy, breaching, broken = MemoryTarget(), MemoryTarget(), FailingOnSecondRead()
    watch = {"mode": "watch", "poll_interval": 20, "deadline_seconds": 3600}
    runners = [
        make_runner(broken, ScriptedPrometheus(), clock, **watch),
        make_runner(breaching, ScriptedPrometheus(), clock, **watch),
        make_runner(healthy, ScriptedPrometheus(), clock, **watch),
    ]
    passes: list[list[Runner]] = []
    # The breach comes after the start: the second runner's candidate starts failing.
    runners[1].prometheus = ScriptedPrometheus(error_ratio=0.0)

    def before_pass(going: list[Runner]) -> None:
        passes.append(going)
        if len(passes) == 2:
            runners[1].prometheus.error_ratio = 0.5

    results = run_all(runners, before_pass=before_pass)
    assert isinstance(results[0], DriverError) and "503" in str(results[0])
    assert breaching.state.status == "rolled_back" and breaching.percent == 0
    assert healthy.state.status == "completed" and healthy.percent == 20
    assert results[2].passes == len(passes)
    # Every pass looked at the ramps still going; the broken one left after its failure.
    assert passes[0] == runners and passes[1] == runners
    assert passes[2] == [runners[2]]


def test_run_all_in_scheduled_mode_makes_one_pass_each():
    clock = Clock()
    targets = [MemoryTarget() for _ in range(3)]
    results = run_all([make_runner(t, ScriptedPrometheus(), clock) for t in targets])
    assert [r.passes for r in results] == [1, 1, 1]
    assert [t.percent for t in targets] == [1.0, 1.0, 1.0]
