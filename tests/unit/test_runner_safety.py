"""The on-call promises at the runner: a stop sticks against a running watch, the live mirror and
the record are made to agree before anything is decided, a raise through two writes survives a
crash at any point, a watch ends with its controller, an explicit restart that cannot start fails.

In memory (tests/unit/test_runner.py's target and scripted Prometheus, a fake clock); the real
drivers and processes are in tests/integration/test_crash_safety.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from mirrorramp.errors import MirrorRampError
from mirrorramp.gates import parse_gates
from mirrorramp.machine import Action, Policy
from mirrorramp.model import Step
from mirrorramp.plan import fingerprint
from mirrorramp.runner import RESTART_TRIES
from mirrorramp.state import RampState
from tests.unit.test_runner import GATES, PLAN, Clock, MemoryTarget, ScriptedPrometheus, make_runner, ramping


def stopped_at(when: float) -> RampState:
    return RampState(status="stopped", percent=0.0, stop={"reason": "pager", "at": when, "by": "alice"})


class TwoWriteTarget(MemoryTarget):
    """A target whose state and mirror are two writes (like a proxy file and a state file):
    every write is logged as (unconfirmed?, percent) to check the order of a raise."""

    atomic = False

    def __init__(self, state=None, percent=0.0) -> None:
        super().__init__(state, percent)
        self.order: list[tuple[bool, float]] = []

    def write(self, current, state, percent, *, dry_run):
        written = super().write(current, state, percent, dry_run=dry_run)
        if not dry_run:
            self.order.append((state.unconfirmed is not None, percent))
        return written


# -- 1. a stop recorded while a watch runs wins ------------------------------------------------------


def test_an_emergency_stop_during_a_watch_with_restart_is_not_undone():
    clock = Clock()
    target = MemoryTarget(stopped_at(clock.now - 100), percent=0)
    watch = make_runner(
        target, ScriptedPrometheus(), clock, mode="watch", poll_interval=10, policy=Policy(restart=True)
    )
    on_call = make_runner(target, ScriptedPrometheus(), clock)
    sleeps = {"n": 0}

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        sleeps["n"] += 1
        if sleeps["n"] == 3:  # while the watch waits at step 1, the on-call engineer stops the ramp
            on_call.stop("pager again", "bob")

    watch.sleep = sleep
    printed: list[str] = []
    watch.progress = printed.append
    outcome = watch.run()
    assert (target.state.status, target.percent) == ("stopped", 0)
    assert target.state.stop["by"] == "bob"
    assert [event["event"] for event in target.state.history][-3:] == ["restart", "start", "stop"]
    assert outcome.ended.startswith("stopped by bob") and "while this run was watching" in outcome.ended
    assert outcome.last.action is Action.LEFT
    assert any("stopped by bob" in line for line in printed)


def test_a_restart_applies_once_and_later_passes_carry_no_stale_note():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now - 1), percent=1)
    watch = make_runner(
        target, ScriptedPrometheus(), clock, mode="watch", poll_interval=30, policy=Policy(restart=True)
    )
    reasons: list[str] = []
    watch.on_pass = lambda outcome: reasons.append(outcome.last.reason)
    watch.run()
    assert "restart=true ignored" in reasons[0]
    assert not [reason for reason in reasons[1:] if "restart=true ignored" in reason]
    assert target.state.status == "completed"


def test_a_pause_recorded_by_another_run_ends_the_watch_and_keeps_the_mirror():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now), percent=1)
    watch = make_runner(target, ScriptedPrometheus(), clock, mode="watch", poll_interval=10)
    other = make_runner(target, ScriptedPrometheus(), clock, policy=Policy(pause=True))

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if target.state.status == "ramping" and clock.now > 1_000_020:
            other.run()

    watch.sleep = sleep
    outcome = watch.run()
    assert outcome.ended.startswith("paused by another run")
    assert (target.state.status, target.percent) == ("paused", 1)


# -- 2. drift, before deciding --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "live", "expected_status", "expected_percent"),
    [
        pytest.param(stopped_at(999_000), 5.0, "stopped", 0.0, id="stopped-with-live-5"),
        pytest.param(ramping(1, 999_990), 10.0, "ramping", 5.0, id="step-2-with-live-10"),
    ],
)
def test_every_pass_repairs_drift_downwards_and_warns(state, live, expected_status, expected_percent):
    clock = Clock()
    target = MemoryTarget(state, percent=live)
    outcome = make_runner(target, ScriptedPrometheus(), clock).run()
    assert (target.state.status, target.percent) == (expected_status, expected_percent)
    assert any(event["event"] == "drift" for event in target.state.history)
    assert any("drift: the live mirror is" in warning for warning in outcome.warnings)
    assert outcome.changed


def test_drift_in_check_mode_is_reported_and_nothing_is_written():
    clock = Clock()
    target = MemoryTarget(stopped_at(999_000), percent=5)
    outcome = make_runner(target, ScriptedPrometheus(), clock, dry_run=True).run()
    assert target.writes == 0 and target.percent == 5
    assert outcome.changed and outcome.after.percent == 0


def test_the_emergency_stop_of_a_stopped_ramp_removes_a_live_mirror():
    clock = Clock()
    target = MemoryTarget(stopped_at(999_000), percent=5)
    outcome = make_runner(target, ScriptedPrometheus(), clock).stop("again", "bob")
    assert target.percent == 0 and outcome.changed
    assert "a live mirror of 5% was still on" in outcome.last.reason


# -- 2. the order of a raise through two writes ------------------------------------------------------


def test_a_raise_through_two_writes_records_the_intent_then_sets_the_proxy_then_confirms():
    clock = Clock()
    target = TwoWriteTarget(ramping(0, clock.now - 61), percent=1)
    make_runner(target, ScriptedPrometheus(), clock).run()
    assert target.order == [(True, 1.0), (True, 5.0), (False, 5.0)]
    assert target.state.unconfirmed is None and target.state.step_index == 1


def test_a_lowering_through_two_writes_is_one_write_proxy_first():
    clock = Clock()
    target = TwoWriteTarget(ramping(1, clock.now - 10), percent=5)
    make_runner(target, ScriptedPrometheus(error_ratio=0.5), clock).run()
    assert target.order == [(False, 0.0)] and target.state.status == "rolled_back"


# -- 3. a plan change says so ----------------------------------------------------------------------


def test_a_plan_change_is_in_the_line_and_never_raises_the_mirror():
    clock = Clock()
    old = (Step(10, 60), Step(20, 60), Step(50, 60))
    state = replace(ramping(0, clock.now - 100), percent=10.0, plan=fingerprint(old))
    target = MemoryTarget(state, percent=10)
    outcome = make_runner(target, ScriptedPrometheus(), clock).run()  # PLAN is 1 -> 5 -> 20
    assert target.percent == 5.0 and target.state.step_index == 1  # 5% is the highest step <= 10%
    assert outcome.last.reason.startswith("plan changed: 10% -> 20% -> 50% is now 1% -> 5% -> 20%")
    assert "holding step 2 (5%)" in outcome.last.reason
    assert target.state.plan == fingerprint(PLAN)


# -- 4. a controller that is gone, a restart that cannot start -------------------------------------------


def test_a_watch_ends_without_another_write_once_its_controller_is_gone():
    clock = Clock()
    target = MemoryTarget(ramping(0, clock.now), percent=1)
    watch = make_runner(target, ScriptedPrometheus(), clock, mode="watch", poll_interval=10)
    controller = {"alive": True}

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        controller["alive"] = False  # killed while the watch waits

    watch.sleep = sleep
    writes_before = target.writes
    outcome = watch.run(alive=lambda: controller["alive"])
    assert target.writes - writes_before <= 1  # the first pass's bookkeeping only
    assert target.state.step_index == 0 and target.percent == 1
    assert any("the process that started this run is gone" in warning for warning in outcome.warnings)


def test_an_explicit_restart_that_cannot_check_its_queries_fails_after_bounded_tries():
    clock = Clock()
    target = MemoryTarget(stopped_at(999_000), percent=0)
    down = ScriptedPrometheus(down=True)
    runner = make_runner(target, down, clock, mode="watch", policy=Policy(restart=True))
    with pytest.raises(
        MirrorRampError, match=f"not restarted, the gate queries could not be checked in {RESTART_TRIES}"
    ):
        runner.run()
    assert target.writes == 0 and target.state.status == "stopped"
    assert 0 < clock.now - 1_000_000.0 < 60  # a bounded wait, not the watch's deadline


# -- 5. the warning about an alert gate that cannot fire comes before the first change ----------------


def test_an_alert_gate_no_rule_can_fire_is_warned_about_before_the_start():
    clock = Clock()
    target = MemoryTarget()
    runner = make_runner(target, ScriptedPrometheus(), clock)
    runner.config = replace(
        runner.config,
        gates=parse_gates({**GATES, "alerts": [{"name": "no-page", "matchers": {"severity": "page"}}]}),
    )
    said: list[str] = []
    runner.progress = said.append
    runner.warn = lambda message: said.append(f"WARNING {message}")
    outcome = runner.run()
    assert target.state.status == "ramping"  # the start goes ahead: the gate holds it later
    warned = next(i for i, line in enumerate(said) if line.startswith("WARNING user-service: gate 'no-page'"))
    started = next(i for i, line in enumerate(said) if "started: step 1" in line)
    assert warned < started
    assert not [w for w in outcome.warnings if "no-page" in w]  # shown once, not again at the end


def test_a_step_finer_than_the_driver_can_set_is_refused_before_anything_is_read():
    from mirrorramp.arguments import RampRequest
    from mirrorramp.errors import ConfigError
    from tests.support.task_arguments import validated

    task = {
        "service": "demo-service",
        "namespace": "local",
        "environment": "local",
        "driver": "envoy",
        "envoy": {
            "route_path": "/x/route.yaml",
            "route_config_name": "demo-service",
            "admin_url": "http://127.0.0.1:1",
            "state_dir": "/y",
        },
        "steps": [{"percent": 0.12345, "hold": "5s"}],
        "workloads": {"primary": "a", "mirror": ["b"]},
        "prometheus": {"url": "http://127.0.0.1:9090"},
    }
    with pytest.raises(
        ConfigError, match=r"steps\[0\].percent: envoy mirror percent 0.12345: runtime_fraction counts millionths"
    ):
        RampRequest.from_arguments(validated(task), check_mode=False, diff=False)
    task["steps"] = [{"percent": 0.1234, "hold": "5s"}]
    assert RampRequest.from_arguments(validated(task), check_mode=False, diff=False).config.plan[0].percent == 0.1234


def test_a_stop_landing_between_a_write_and_its_read_back_is_not_a_failed_write():
    """The watch restarts at 1 %, and the on-call stop (0 %) lands before its read-back: the
    read-back sees another run's version, not a write that did not stick."""
    clock = Clock()

    class StopAfterTheRestart(MemoryTarget):
        def write(self, current, state, percent, *, dry_run):
            written = super().write(current, state, percent, dry_run=dry_run)
            if state.status == "ramping":
                stop = RampState.with_event(state, clock.now, "stop", "pager (by bob)", status="stopped", percent=0.0)
                self.state = stop.evolve(stop={"reason": "pager", "at": clock.now, "by": "bob"})
                self.percent = 0.0
                self.version += 1
            return written

    target = StopAfterTheRestart(stopped_at(clock.now - 100), percent=0)
    watch = make_runner(
        target, ScriptedPrometheus(), clock, mode="watch", poll_interval=10, policy=Policy(restart=True)
    )
    outcome = watch.run()
    assert outcome.ended.startswith("stopped by bob")
    assert (target.state.status, target.percent) == ("stopped", 0.0)


def test_status_under_a_shorter_plan_says_the_next_run_re_maps_it():
    from mirrorramp.results import status_row

    clock = Clock()
    state = replace(ramping(2, clock.now - 10), plan=fingerprint((Step(1, 60), Step(5, 60), Step(20, 60))))
    target = MemoryTarget(state, percent=20)
    runner = make_runner(target, ScriptedPrometheus(), clock)
    runner.config = replace(runner.config, plan=(Step(1, 60), Step(5, 60)))
    row = status_row(runner.config, runner.status(), now=clock.now)
    assert row["next_advance"] == "-"
    assert "plan changed: 1% -> 5% -> 20% is now 1% -> 5%" in row["attention"]
    assert "the mirror is lowered to 5%" in row["attention"]
