"""Freeze windows and approvals: they keep the mirror from going up, never from coming down."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mirrorramp.errors import ConfigError
from mirrorramp.freeze import frozen_by, parse_freeze_windows
from mirrorramp.machine import Action, Policy, decide
from mirrorramp.model import GateResult, Verdict
from mirrorramp.plan import parse_steps
from mirrorramp.state import RampState

PLAN = parse_steps([{"percent": p, "hold": "1h"} for p in (1, 5, 10, 20)])
PASS = [GateResult("error-ratio", "threshold", "q", Verdict.PASS, 0.0, 0.05, "<")]
FAIL = [GateResult("error-ratio", "threshold", "q", Verdict.FAIL, 0.3, 0.05, "<")]


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


WINDOWS = parse_freeze_windows(
    [
        {"name": "weekend", "days": ["sat", "sun"]},
        {"name": "nights", "hours": "22-06"},
        {"name": "friday-pm", "days": ["Friday"], "hours": "12-24", "utc_offset": "+01:00"},
    ]
)


@pytest.mark.parametrize(
    ("at", "window"),
    [
        ("2026-11-28T10:00:00", "weekend"),  # Saturday
        ("2026-11-26T23:30:00", "nights"),  # Thursday night
        ("2026-11-27T05:59:59", "nights"),  # the early hours belong to the night before
        ("2026-11-27T06:00:00", ""),  # Friday morning: free
        ("2026-11-27T10:59:00", ""),  # 11:59 at +01:00
        ("2026-11-27T11:00:00", "friday-pm"),  # 12:00 at +01:00
        ("2026-11-26T12:00:00", ""),  # Thursday noon
    ],
)
def test_windows_cover_what_they_say(at: str, window: str) -> None:
    assert frozen_by(WINDOWS, utc(at)) == window


def test_hours_across_midnight_belong_to_the_day_they_start() -> None:
    (friday_night,) = parse_freeze_windows([{"days": ["fri"], "hours": "20-04"}])
    assert friday_night.covers(utc("2026-11-28T03:00:00"))  # Saturday 03:00, from Friday
    assert not friday_night.covers(utc("2026-11-27T03:00:00"))  # Friday 03:00, from Thursday


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("weekend", "expected a list of windows"),
        ([{"days": ["sonday"]}], "'sonday' is not a weekday"),
        ([{"hours": "18:00-08:00"}], 'expected "START-END"'),
        ([{"hours": "8-8"}], "START != END"),
        ([{"hours": "25-3"}], "START 0..23"),
        ([{"name": "x"}], "give days, hours or both"),
        ([{"days": ["mon"], "timezone": "CET"}], "unknown key(s) timezone"),
        ([{"days": ["mon"], "utc_offset": "1"}], 'expected "+HH:MM"'),
    ],
)
def test_bad_windows_are_refused_by_name(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        parse_freeze_windows(raw)


def held(step: int, now: float) -> RampState:
    """At 1-based `step`, held in full by `now`."""
    return RampState(
        status="ramping",
        step_index=step - 1,
        percent=PLAN[step - 1].percent,
        step_started_at=now - 7200,
        updated_at=now,
    )


SATURDAY = utc("2026-11-28T10:00:00")
THURSDAY = utc("2026-11-26T12:00:00")


def test_a_freeze_holds_the_advance_but_not_the_rollback() -> None:
    policy = Policy(freeze=WINDOWS)
    hold = decide(held(2, SATURDAY), PLAN, PASS, SATURDAY, policy)
    assert (hold.action, hold.changed, hold.target_percent) == (Action.HOLD, False, None)
    assert "freeze window weekend: step 3 (10%) waits until it ends" in hold.reason
    rollback = decide(held(2, SATURDAY), PLAN, FAIL, SATURDAY, policy)
    assert (rollback.action, rollback.target_percent) == (Action.ROLLBACK, 0.0)
    assert decide(held(2, THURSDAY), PLAN, PASS, THURSDAY, policy).action is Action.ADVANCE


def test_a_freeze_keeps_a_ramp_from_starting() -> None:
    decision = decide(RampState.initial(), PLAN, None, SATURDAY, Policy(freeze=WINDOWS))
    assert (decision.action, decision.changed) == (Action.HOLD, False)
    assert decide(RampState.initial(), PLAN, None, THURSDAY, Policy(freeze=WINDOWS)).action is Action.START


def test_a_step_that_needs_approval_waits_once_then_advances_when_approved() -> None:
    hint = "-e approve=user-service:{step}"
    policy = Policy(approval_steps=frozenset({4}), approve_hint=hint)
    state = held(3, THURSDAY)
    wait = decide(state, PLAN, PASS, THURSDAY, policy)
    assert (wait.action, wait.changed, wait.target_percent) == (Action.WAIT, False, None)
    assert "step 4 (20%) waits for an approval: -e approve=user-service:4" in wait.reason
    assert wait.state_dirty and wait.state.history[-1]["event"] == "waiting_for_approval"
    # The next scheduled run still waits, and records nothing new (announced once).
    again = decide(wait.state, PLAN, PASS, THURSDAY + 300, policy)
    assert again.action is Action.WAIT and not again.state_dirty
    # An approval for another step or service changes nothing; the right one advances.
    assert decide(wait.state, PLAN, PASS, THURSDAY + 600, Policy(approval_steps=frozenset({4}))).action is Action.WAIT
    approved = Policy(approval_steps=frozenset({4}), approved=frozenset({4}))
    go = decide(wait.state, PLAN, PASS, THURSDAY + 600, approved)
    assert (go.action, go.target_percent) == (Action.ADVANCE, 20.0)
    # While waiting, a breach still rolls back.
    assert decide(wait.state, PLAN, FAIL, THURSDAY + 600, policy).action is Action.ROLLBACK


def test_approval_of_the_first_step_keeps_the_ramp_pending() -> None:
    decision = decide(RampState.initial(), PLAN, None, THURSDAY, Policy(approval_steps=frozenset({1})))
    assert decision.action is Action.WAIT and decision.state.status == "pending"
    started = decide(
        RampState.initial(), PLAN, None, THURSDAY, Policy(approval_steps=frozenset({1}), approved=frozenset({1}))
    )
    assert started.action is Action.START
