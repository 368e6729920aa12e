"""machine.looks and machine.decided_on: which looks a pass takes at the gates, and what of
them the state machine decides on."""

from __future__ import annotations

import pytest

from mirrorramp.machine import Policy, decided_on, looks, switches_mirror_on, whole_step_due
from mirrorramp.model import GateResult, Verdict
from mirrorramp.plan import parse_steps
from mirrorramp.state import RampState

T0 = 1_700_000_000.0
PLAN = parse_steps([{"percent": p, "hold": "1h"} for p in (1, 5)])
WINDOW = 600.0


def at_step(status: str, started: float | None = T0) -> RampState:
    return RampState(status=status, step_index=0, percent=1.0, step_started_at=started, updated_at=T0)


@pytest.mark.parametrize("status", ["pending", "rolled_back", "stopped"])
def test_a_ramp_with_the_mirror_off_needs_no_look(status):
    state = RampState(status=status) if status == "pending" else at_step(status)
    assert looks(state, PLAN, T0 + 60, WINDOW) is None


@pytest.mark.parametrize(
    ("status", "elapsed", "whole_step", "hold_over", "judge_window"),
    [
        ("ramping", 30.0, None, False, 60.0),
        ("ramping", 3600.0, 3600.0, True, 3600.0),
        ("ramping", 3601.0, 3601.0, True, 3660.0),
        ("paused", 7200.0, None, False, 7200.0),
        ("completed", 7200.0, None, False, 7200.0),
    ],
)
def test_the_looks_of_a_watched_state(status, elapsed, whole_step, hold_over, judge_window):
    seen = looks(at_step(status), PLAN, T0 + elapsed, WINDOW)
    assert (seen.window_seconds, seen.whole_step_seconds, seen.hold_over) == (WINDOW, whole_step, hold_over)
    assert seen.judge_window_seconds == judge_window


def test_a_hold_shorter_than_the_window_takes_no_second_look():
    seen = looks(at_step("ramping"), PLAN, T0 + 3600, 7200.0)
    assert seen.hold_over and seen.whole_step_seconds is None


def gate(name: str, verdict: Verdict, kind: str = "threshold") -> GateResult:
    return GateResult(name, kind, "q", verdict)


def test_an_inconclusive_judge_is_decided_on_only_once_the_hold_is_over():
    results = [gate("t", Verdict.PASS), gate("j", Verdict.INCONCLUSIVE, "judge")]
    before = looks(at_step("ramping"), PLAN, T0 + 30, WINDOW)
    after = looks(at_step("ramping"), PLAN, T0 + 3600, WINDOW)
    assert [g.name for g in decided_on(before, results, [])] == ["t"]
    assert [g.name for g in decided_on(after, results, [])] == ["t", "j"]


def test_whole_step_passes_are_not_decided_on_and_a_failed_window_skips_the_look():
    after = looks(at_step("ramping"), PLAN, T0 + 3600, WINDOW)
    over = [gate("t (whole step)", Verdict.PASS), gate("a (whole step)", Verdict.FAIL, "alert")]
    assert [g.name for g in decided_on(after, [gate("t", Verdict.PASS)], over)] == ["t", "a (whole step)"]
    assert whole_step_due(after, [gate("t", Verdict.PASS)])
    assert not whole_step_due(after, [gate("t", Verdict.FAIL)])


@pytest.mark.parametrize(
    ("status", "restart", "expected"),
    [
        ("pending", False, True),
        ("rolled_back", False, False),
        ("rolled_back", True, True),
        ("stopped", True, True),
        ("ramping", True, False),
        ("completed", True, False),
    ],
)
def test_which_passes_may_switch_the_mirror_on(status, restart, expected):
    state = RampState(status=status) if status == "pending" else at_step(status)
    assert switches_mirror_on(state, Policy(restart=restart)) is expected
