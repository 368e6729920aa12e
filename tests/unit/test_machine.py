"""The state machine: every transition, every verdict, every inconclusive cause, as tables."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from mirrorramp.errors import ConfigError
from mirrorramp.machine import Action, Decision, Policy, decide, emergency_stop, summarize
from mirrorramp.model import GateResult, Verdict
from mirrorramp.plan import parse_steps
from mirrorramp.state import RampState, StateError

DAY = 86400.0
T0 = 1_700_000_000.0
PLAN = parse_steps([{"percent": p, "hold": "1d"} for p in (1, 5, 10, 20)])
FRACTIONAL = parse_steps([{"percent": p, "hold": "1h"} for p in (0.5, 2.5, 12.5)])


# -- builders -------------------------------------------------------------------------------------


def passing(name: str = "error-ratio", value: float = 0.01) -> GateResult:
    return GateResult(name, "threshold", "sum(rate(x[600s]))", Verdict.PASS, value, 0.05, "<=")


def failing(name: str = "error-ratio", value: float = 0.2) -> GateResult:
    return GateResult(name, "threshold", "sum(rate(x[600s]))", Verdict.FAIL, value, 0.05, "<=")


def inconclusive(reason: str = "no data", value: float | None = None, name: str = "error-ratio") -> GateResult:
    return GateResult(name, "threshold", "sum(rate(x[600s]))", Verdict.INCONCLUSIVE, value, 0.05, "<=", reason=reason)


PENDING = RampState.initial()


def at_step(index: int, *, status: str = "ramping", started: float = T0, streak: int = 0, plan=PLAN) -> RampState:
    return RampState(
        status=status,
        step_index=index,
        percent=plan[index].percent,
        step_started_at=started,
        updated_at=started,
        inconclusive_streak=streak,
        history=[{"at": started, "event": "advance", "step": index, "percent": plan[index].percent, "detail": ""}],
    )


ROLLED_BACK = RampState(
    status="rolled_back",
    step_index=1,
    percent=0.0,
    step_started_at=T0,
    updated_at=T0 + 3600,
    rollback={"reason": "gate error-ratio failed", "gate": "error-ratio", "value": 0.2, "threshold": 0.05, "at": T0},
    history=[{"at": T0, "event": "rollback", "step": 1, "percent": 0.0, "detail": "breach"}],
)
STOPPED = RampState(
    status="stopped",
    step_index=2,
    percent=0.0,
    step_started_at=T0,
    updated_at=T0,
    stop={"reason": "pager", "at": T0, "by": "alice"},
    history=[{"at": T0, "event": "stop", "step": 2, "percent": 0.0, "detail": "pager (by alice)"}],
)
NO_POLICY = Policy()


# -- verdict folding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gates", "verdict"),
    [
        pytest.param(None, Verdict.INCONCLUSIVE, id="none-is-no-evidence"),
        pytest.param([], Verdict.INCONCLUSIVE, id="empty-is-no-evidence"),
        pytest.param([passing()], Verdict.PASS, id="one-pass"),
        pytest.param([passing("a"), passing("b")], Verdict.PASS, id="all-pass"),
        pytest.param([failing()], Verdict.FAIL, id="one-fail"),
        pytest.param([inconclusive()], Verdict.INCONCLUSIVE, id="one-inconclusive"),
        pytest.param([passing(), inconclusive()], Verdict.INCONCLUSIVE, id="inconclusive-beats-pass"),
        pytest.param([passing(), failing()], Verdict.FAIL, id="fail-beats-pass"),
        pytest.param([inconclusive(), failing()], Verdict.FAIL, id="fail-beats-inconclusive"),
        pytest.param([failing(), inconclusive(), passing()], Verdict.FAIL, id="fail-beats-all"),
    ],
)
def test_summarize(gates, verdict):
    assert summarize(gates) is verdict


# -- the transition table -------------------------------------------------------------------------


# (state, gates, now, policy) -> (action, status, step_index, target_percent, changed, reason fragment)
TRANSITIONS = [
    pytest.param(
        PENDING,
        None,
        T0,
        NO_POLICY,
        (Action.START, "ramping", 0, 1.0, True, "started: step 1 of 4: mirroring 1%"),
        id="pending-starts-without-gates",
    ),
    pytest.param(
        PENDING,
        [passing()],
        T0,
        NO_POLICY,
        (Action.START, "ramping", 0, 1.0, True, "holding 1d"),
        id="pending-starts-with-passing-gates",
    ),
    pytest.param(
        PENDING,
        [inconclusive()],
        T0,
        NO_POLICY,
        (Action.START, "ramping", 0, 1.0, True, "started"),
        id="pending-starts-on-inconclusive-no-mirror-yet",
    ),
    pytest.param(
        PENDING,
        [passing("a"), failing("b")],
        T0,
        NO_POLICY,
        (Action.HOLD, "pending", None, None, False, "not started: gate failed: b = 0.2 (must be <= 0.05)"),
        id="pending-failing-gate-does-not-start",
    ),
    pytest.param(
        PENDING,
        None,
        T0,
        Policy(pause=True),
        (Action.STAY, "pending", None, None, False, "not started"),
        id="pending-paused-does-not-start",
    ),
    pytest.param(
        at_step(1),
        [passing()],
        T0 + 3600,
        NO_POLICY,
        (Action.HOLD, "ramping", 1, None, False, "holding step 2 (5%): 23h left"),
        id="ramping-holds-with-time-left",
    ),
    pytest.param(
        at_step(1),
        [passing()],
        T0 + DAY,
        NO_POLICY,
        (Action.ADVANCE, "ramping", 2, 10.0, True, "step 2 (5%) held 1d with passing gates: now step 3 of 4 (10%)"),
        id="ramping-advances-when-hold-exactly-elapsed",
    ),
    pytest.param(
        at_step(0),
        [passing()],
        T0 + 10 * DAY,
        NO_POLICY,
        (Action.ADVANCE, "ramping", 1, 5.0, True, "now step 2 of 4"),
        id="ramping-advances-one-step-only-after-a-long-gap",
    ),
    pytest.param(
        at_step(3),
        [passing()],
        T0 + DAY,
        NO_POLICY,
        (Action.COMPLETE, "completed", 3, 20.0, True, "ramp completed, the mirror stays at 20%"),
        id="ramping-last-step-completes",
    ),
    pytest.param(
        at_step(1),
        [passing("a"), failing("b")],
        T0 + 60,
        NO_POLICY,
        (Action.ROLLBACK, "rolled_back", 1, 0.0, True, "rolled back from step 2 (5%): gate failed: b = 0.2"),
        id="ramping-failing-gate-rolls-back",
    ),
    pytest.param(
        at_step(1),
        [failing()],
        T0 + DAY,
        NO_POLICY,
        (Action.ROLLBACK, "rolled_back", 1, 0.0, True, "mirror removed"),
        id="ramping-fail-beats-elapsed-hold",
    ),
    pytest.param(
        at_step(1),
        [failing()],
        T0 + 60,
        Policy(pause=True),
        (Action.ROLLBACK, "rolled_back", 1, 0.0, True, "failed"),
        id="ramping-fail-beats-pause",
    ),
    pytest.param(
        at_step(1),
        [passing()],
        T0 + DAY,
        Policy(pause=True),
        (Action.PAUSE, "paused", 1, 5.0, True, "paused at step 2 (5%): the mirror stays at 5%"),
        id="ramping-pauses-even-when-it-could-advance",
    ),
    pytest.param(
        at_step(1),
        [passing(), inconclusive()],
        T0 + DAY,
        NO_POLICY,
        (Action.HOLD, "ramping", 1, None, False, "hold done, waiting for passing gates"),
        id="ramping-inconclusive-never-advances",
    ),
    pytest.param(
        at_step(1),
        None,
        T0 + DAY,
        NO_POLICY,
        (Action.HOLD, "ramping", 1, None, False, "gates inconclusive (1 of 10 tolerated): no gate results"),
        id="ramping-gates-none-is-inconclusive",
    ),
    pytest.param(
        at_step(1),
        [],
        T0 + DAY,
        NO_POLICY,
        (Action.HOLD, "ramping", 1, None, False, "no gate results"),
        id="ramping-gates-empty-is-inconclusive",
    ),
    pytest.param(
        at_step(1, started=T0 + DAY),
        [passing()],
        T0,
        NO_POLICY,
        (Action.HOLD, "ramping", 1, None, False, "holding step 2 (5%): 1d left (clock skew"),
        id="ramping-clock-skew-counts-as-just-started",
    ),
    pytest.param(
        at_step(1, status="paused"),
        [passing()],
        T0 + 5 * DAY,
        NO_POLICY,
        (Action.STAY, "paused", 1, None, False, "paused at step 2 (5%); resume with resume=true"),
        id="paused-stays-paused",
    ),
    pytest.param(
        at_step(1, status="paused"),
        [passing()],
        T0 + 5 * DAY,
        Policy(pause=True),
        (Action.STAY, "paused", 1, None, False, "paused at step 2 (5%)"),
        id="paused-pause-again-is-a-no-op",
    ),
    pytest.param(
        at_step(1, status="paused"),
        [failing()],
        T0 + 60,
        NO_POLICY,
        (Action.ROLLBACK, "rolled_back", 1, 0.0, True, "rolled back from step 2 (5%), paused"),
        id="paused-breach-still-rolls-back",
    ),
    pytest.param(
        at_step(1, status="paused"),
        [passing()],
        T0 + 5 * DAY,
        Policy(resume=True),
        (Action.RESUME, "ramping", 1, 5.0, True, "resumed step 2 (5%): the hold starts again, 1d left"),
        id="paused-resumes-with-a-fresh-hold",
    ),
    pytest.param(
        at_step(1, status="paused"),
        [failing()],
        T0 + 60,
        Policy(resume=True),
        (Action.ROLLBACK, "rolled_back", 1, 0.0, True, "failed"),
        id="paused-resume-with-breach-rolls-back",
    ),
    pytest.param(
        at_step(3, status="completed"),
        [passing()],
        T0 + 9 * DAY,
        NO_POLICY,
        (Action.STAY, "completed", 3, None, False, "completed at 20%: gates pass"),
        id="completed-healthy-stays",
    ),
    pytest.param(
        at_step(3, status="completed"),
        [failing()],
        T0 + 9 * DAY,
        NO_POLICY,
        (Action.ROLLBACK, "rolled_back", 3, 0.0, True, "rolled back from step 4 (20%), completed"),
        id="completed-breach-rolls-back",
    ),
    pytest.param(
        at_step(3, status="completed"),
        [inconclusive()],
        T0 + 9 * DAY,
        NO_POLICY,
        (Action.STAY, "completed", 3, None, False, "completed at 20%: gates inconclusive (1 of 10 tolerated)"),
        id="completed-inconclusive-stays-with-a-note",
    ),
    pytest.param(
        at_step(3, status="completed"),
        [passing()],
        T0 + 9 * DAY,
        Policy(pause=True),
        (Action.STAY, "completed", 3, None, False, "pause=true ignored"),
        id="completed-pause-is-ignored-and-said",
    ),
    pytest.param(
        ROLLED_BACK,
        None,
        T0 + DAY,
        NO_POLICY,
        (
            Action.STAY,
            "rolled_back",
            1,
            None,
            False,
            "rolled back at 2023-11-14T22:13:20Z (gate error-ratio failed); restart with restart=true",
        ),
        id="rolled-back-stays-until-restart",
    ),
    pytest.param(
        ROLLED_BACK,
        None,
        T0 + DAY,
        Policy(resume=True),
        (Action.STAY, "rolled_back", 1, None, False, "restart with restart=true"),
        id="rolled-back-resume-does-not-restart",
    ),
    pytest.param(
        ROLLED_BACK,
        None,
        T0 + DAY,
        Policy(restart=True),
        (Action.RESTART, "ramping", 0, 1.0, True, "restarted after the rollback of 2023-11-14T22:13:20Z: step 1"),
        id="rolled-back-restarts-at-step-1",
    ),
    pytest.param(
        ROLLED_BACK,
        [failing()],
        T0 + DAY,
        Policy(restart=True),
        (Action.HOLD, "rolled_back", 1, None, False, "not restarted: gate failed: error-ratio"),
        id="rolled-back-restart-blocked-by-failing-gate",
    ),
    pytest.param(
        STOPPED,
        [passing()],
        T0 + DAY,
        NO_POLICY,
        (Action.STAY, "stopped", 2, None, False, "stopped at 2023-11-14T22:13:20Z by alice (pager); restart with"),
        id="stopped-stays-until-restart",
    ),
    pytest.param(
        STOPPED,
        None,
        T0 + DAY,
        Policy(restart=True),
        (Action.RESTART, "ramping", 0, 1.0, True, "restarted after the stop of 2023-11-14T22:13:20Z"),
        id="stopped-restarts-at-step-1",
    ),
    pytest.param(
        at_step(2),
        [passing()],
        T0 + 60,
        Policy(restart=True),
        (Action.HOLD, "ramping", 2, None, False, "restart=true ignored: the ramp is ramping"),
        id="restart-while-ramping-is-ignored-and-said",
    ),
    pytest.param(
        at_step(2),
        [passing()],
        T0 + 60,
        Policy(resume=True),
        (Action.HOLD, "ramping", 2, None, False, "resume=true ignored"),
        id="resume-while-ramping-is-ignored-and-said",
    ),
]


@pytest.mark.parametrize(("state", "gates", "now", "policy", "expected"), TRANSITIONS)
def test_transition(state, gates, now, policy, expected):
    action, status, step_index, target, changed, fragment = expected
    decision = decide(state, PLAN, gates, now, policy)
    assert decision.action is action
    assert decision.state.status == status
    assert decision.state.step_index == step_index
    assert decision.target_percent == target
    assert decision.changed is changed
    assert fragment in decision.reason
    if changed:
        assert decision.state_dirty, "a change is always written"
        assert decision.state.updated_at == now
    if target is not None and target > 0:
        assert decision.state.percent == target
    # Whatever comes out can be stored and loaded again.
    assert RampState.from_json(decision.state.to_json()) == decision.state


def test_start_sets_the_hold_clock_and_records_the_gates():
    decision = decide(PENDING, PLAN, [passing()], T0, NO_POLICY)
    assert decision.state.step_started_at == T0
    assert decision.state.last_gates == [passing().as_dict()]
    assert decision.seconds_left == DAY
    assert [e["event"] for e in decision.state.history] == ["start"]


def test_advance_restarts_the_hold_clock():
    decision = decide(at_step(0), PLAN, [passing()], T0 + DAY + 5, NO_POLICY)
    assert decision.state.step_started_at == T0 + DAY + 5
    assert decision.seconds_left == DAY
    assert decision.state.inconclusive_streak == 0


def test_hold_reason_says_how_long_is_left():
    decision = decide(at_step(1), PLAN, [passing()], T0 + DAY - (3 * 3600 + 12 * 60 + 30), NO_POLICY)
    assert decision.reason == "holding step 2 (5%): 3h 12m left"
    assert decision.seconds_left == pytest.approx(3 * 3600 + 12 * 60 + 30)


def test_clock_skew_never_advances_and_leaves_the_full_hold():
    decision = decide(at_step(1, started=T0 + 2 * DAY), PLAN, [passing()], T0 + DAY, NO_POLICY)
    assert decision.action is Action.HOLD
    assert decision.seconds_left == DAY
    assert decision.state.step_started_at == T0 + 2 * DAY


def test_rollback_records_the_breach():
    breach = failing("p99-latency", 900.0)
    decision = decide(at_step(2), PLAN, [passing(), breach, failing("other")], T0 + 99, NO_POLICY)
    assert decision.breach == breach
    assert decision.state.percent == 0.0
    assert decision.state.rollback == {
        "reason": "gate failed: p99-latency = 900 (must be <= 0.05) (and 1 more: other)",
        "gate": "p99-latency",
        "value": 900.0,
        "threshold": 0.05,
        "at": T0 + 99,
    }
    assert decision.state.history[-1]["event"] == "rollback"
    assert decision.state.step_index == 2, "the rolled-back state remembers where it was"


def test_resume_restarts_the_hold_clock():
    decision = decide(at_step(1, status="paused"), PLAN, [passing()], T0 + 3 * DAY, Policy(resume=True))
    assert decision.state.step_started_at == T0 + 3 * DAY
    assert decision.seconds_left == DAY
    after = decide(decision.state, PLAN, [passing()], T0 + 3 * DAY + 60, NO_POLICY)
    assert after.action is Action.HOLD


def test_restart_starts_fresh_and_keeps_the_history():
    decision = decide(ROLLED_BACK, PLAN, None, T0 + DAY, Policy(restart=True))
    state = decision.state
    assert state.rollback is None and state.stop is None
    assert state.step_started_at == T0 + DAY
    assert state.inconclusive_streak == 0
    assert [e["event"] for e in state.history] == ["rollback", "restart", "start"]
    assert decision.seconds_left == DAY


def test_fractional_percents_are_kept_exactly():
    start = decide(PENDING, FRACTIONAL, None, T0, NO_POLICY)
    assert start.target_percent == 0.5
    assert "mirroring 0.5%" in start.reason
    advance = decide(start.state, FRACTIONAL, [passing()], T0 + 3600, NO_POLICY)
    assert (advance.target_percent, advance.state.percent) == (2.5, 2.5)
    assert "step 1 (0.5%) held 1h with passing gates: now step 2 of 3 (2.5%)" in advance.reason
    hold = decide(advance.state, FRACTIONAL, [passing()], T0 + 3600 + 60, NO_POLICY)
    assert hold.reason == "holding step 2 (2.5%): 59m left"
    last = decide(at_step(2, plan=FRACTIONAL), FRACTIONAL, [passing()], T0 + 3600, NO_POLICY)
    assert (last.action, last.target_percent) == (Action.COMPLETE, 12.5)


# -- inconclusive evidence ------------------------------------------------------------------------

INCONCLUSIVE_CAUSES = [
    pytest.param(inconclusive("no data: the query returned no series"), id="no-data"),
    pytest.param(inconclusive("NaN: 0/0, no requests in the window", float("nan")), id="nan"),
    pytest.param(inconclusive("+Inf: division by zero", float("inf")), id="plus-inf"),
    pytest.param(inconclusive("too few requests: 12 < 100 in 600s", 0.0), id="too-few-requests"),
    pytest.param(inconclusive("Prometheus unreachable: ConnectionRefusedError"), id="prometheus-unreachable"),
    pytest.param(inconclusive("timeout after 10s (3 attempts)"), id="timeout"),
    pytest.param(inconclusive("HTTP 503 Service Unavailable"), id="http-error"),
]


@pytest.mark.parametrize("cause", INCONCLUSIVE_CAUSES)
def test_each_inconclusive_cause_holds_and_never_advances(cause):
    state = at_step(1, streak=2)
    decision = decide(state, PLAN, [passing("other"), cause], T0 + 3 * DAY, NO_POLICY)
    assert decision.action is Action.HOLD
    assert decision.target_percent is None
    assert decision.changed is False
    assert decision.state_dirty is True, "the streak must be stored"
    assert decision.state.inconclusive_streak == 3
    assert decision.state.step_index == 1 and decision.state.percent == 5.0
    assert cause.reason in decision.reason
    assert decision.seconds_left == 0
    assert RampState.from_json(decision.state.to_json()) == decision.state


@pytest.mark.parametrize("cause", INCONCLUSIVE_CAUSES)
def test_each_inconclusive_cause_never_fails_a_completed_ramp(cause):
    decision = decide(at_step(3, status="completed"), PLAN, [cause], T0 + 9 * DAY, NO_POLICY)
    assert (decision.action, decision.state.status, decision.target_percent) == (Action.STAY, "completed", None)


@pytest.mark.parametrize(
    ("status", "action", "expected_action", "expected_status", "target"),
    [
        pytest.param("ramping", "hold", Action.HOLD, "ramping", None, id="ramping-hold"),
        pytest.param("ramping", "rollback", Action.ROLLBACK, "rolled_back", 0.0, id="ramping-rollback"),
        pytest.param("paused", "hold", Action.STAY, "paused", None, id="paused-hold"),
        pytest.param("paused", "rollback", Action.ROLLBACK, "rolled_back", 0.0, id="paused-rollback"),
        pytest.param("completed", "hold", Action.STAY, "completed", None, id="completed-hold"),
        pytest.param("completed", "rollback", Action.ROLLBACK, "rolled_back", 0.0, id="completed-rollback"),
    ],
)
def test_inconclusive_budget_exhaustion(status, action, expected_action, expected_status, target):
    policy = Policy(inconclusive_budget=3, inconclusive_action=action)
    cause = inconclusive("Prometheus unreachable: timeout")
    tolerated = decide(at_step(1, status=status, streak=2), PLAN, [cause], T0 + 60, policy)
    assert tolerated.state.inconclusive_streak == 3
    assert tolerated.state.status == status, "within the budget nothing but the streak changes"
    assert "3 of 3 tolerated" in tolerated.reason

    decision = decide(tolerated.state, PLAN, [cause], T0 + 120, policy)
    assert decision.action is expected_action
    assert decision.state.status == expected_status
    assert decision.target_percent == target
    assert decision.state.inconclusive_streak == 4
    if action == "rollback":
        assert decision.changed is True
        assert decision.breach is None, "no gate failed"
        assert decision.state.rollback["reason"].startswith("inconclusive for 4 consecutive checks (budget 3)")
        assert decision.state.rollback["gate"] == "error-ratio"
    else:
        assert decision.changed is False
        assert decision.state_dirty is True
        assert "inconclusive budget exhausted (4 consecutive checks, budget 3)" in decision.reason
        assert decision.state.history[-1]["event"] == "inconclusive_budget_exhausted"
        # The event is recorded once, not on every further blind check.
        again = decide(decision.state, PLAN, [cause], T0 + 180, policy)
        assert again.state.history == decision.state.history
        assert again.state.inconclusive_streak == 5


def test_budget_zero_applies_the_action_at_the_first_inconclusive_check():
    policy = Policy(inconclusive_budget=0, inconclusive_action="rollback")
    decision = decide(at_step(1), PLAN, None, T0 + 60, policy)
    assert (decision.action, decision.target_percent) == (Action.ROLLBACK, 0.0)
    assert decision.state.rollback["gate"] is None
    assert "no gate results" in decision.state.rollback["reason"]


def test_passing_check_resets_the_streak_as_bookkeeping_only():
    decision = decide(at_step(1, streak=4), PLAN, [passing()], T0 + 60, NO_POLICY)
    assert decision.action is Action.HOLD
    assert decision.state.inconclusive_streak == 0
    assert (decision.changed, decision.state_dirty) == (False, True)
    assert decision.state.updated_at == T0 + 60


def test_advance_waits_for_the_first_passing_check_after_inconclusive_ones():
    blind = decide(at_step(0, streak=1), PLAN, [inconclusive()], T0 + DAY + 60, NO_POLICY)
    assert blind.action is Action.HOLD
    seen = decide(blind.state, PLAN, [passing()], T0 + DAY + 120, NO_POLICY)
    assert seen.action is Action.ADVANCE
    assert seen.state.inconclusive_streak == 0


# -- idempotency ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "gates", "now", "policy"),
    [
        pytest.param(at_step(1), [passing()], T0 + 60, NO_POLICY, id="hold"),
        pytest.param(at_step(3, status="completed"), [passing()], T0 + 9 * DAY, NO_POLICY, id="completed-stay"),
        pytest.param(at_step(1, status="paused"), [passing()], T0 + 60, NO_POLICY, id="paused-stay"),
        pytest.param(ROLLED_BACK, None, T0 + DAY, NO_POLICY, id="rolled-back-stay"),
        pytest.param(STOPPED, None, T0 + DAY, NO_POLICY, id="stopped-stay"),
        pytest.param(PENDING, [failing()], T0, NO_POLICY, id="pending-blocked"),
        pytest.param(at_step(1), [passing()], T0 + DAY, Policy(pause=True), id="after-pause"),
        pytest.param(ROLLED_BACK, [passing()], T0 + DAY, Policy(restart=True), id="after-restart"),
        pytest.param(at_step(1), [failing()], T0 + 60, NO_POLICY, id="after-rollback"),
    ],
)
def test_second_run_with_the_same_inputs_changes_nothing(state, gates, now, policy):
    first = decide(state, PLAN, gates, now, policy)
    second = decide(first.state, PLAN, gates, now, policy)
    assert second.changed is False
    assert second.state_dirty is False
    assert second.state is first.state
    assert second.target_percent is None


def test_new_gate_values_with_the_same_verdicts_are_not_worth_a_write():
    state = decide(at_step(1), PLAN, [passing(value=0.01)], T0 + 60, NO_POLICY).state
    state = state.evolve(last_gates=[passing(value=0.01).as_dict()])
    decision = decide(state, PLAN, [passing(value=0.02)], T0 + 120, NO_POLICY)
    assert (decision.changed, decision.state_dirty) == (False, False)
    assert decision.state is state


def test_a_changed_verdict_is_worth_a_write_but_is_not_a_change():
    state = at_step(1).evolve(last_gates=[passing("a").as_dict()])
    decision = decide(state, PLAN, [passing("a"), passing("b")], T0 + 120, NO_POLICY)
    assert (decision.changed, decision.state_dirty) == (False, True)
    assert [g["name"] for g in decision.state.last_gates] == ["a", "b"]


def test_repeated_inconclusive_checks_only_dirty_the_state():
    first = decide(at_step(1), PLAN, [inconclusive()], T0 + 60, NO_POLICY)
    second = decide(first.state, PLAN, [inconclusive()], T0 + 120, NO_POLICY)
    assert (second.changed, second.state_dirty, second.state.inconclusive_streak) == (False, True, 2)
    assert second.state.status == "ramping" and second.state.percent == 5.0


# -- a whole ramp ---------------------------------------------------------------------------------


def test_a_whole_ramp_from_pending_to_restart():
    state, now = PENDING, T0
    actions = []
    for gates, step in [
        ([passing()], 0),  # start
        ([passing()], 3600),  # hold
        ([passing()], DAY),  # advance to 5
        ([inconclusive()], DAY),  # hold, blind
        ([passing()], 60),  # advance to 10 (the hold ran through the blind check)
        ([passing()], DAY),  # advance to 20
        ([passing()], DAY),  # complete
        ([passing()], DAY),  # stay
        ([failing()], 60),  # rollback
        (None, 60),  # stay rolled back
    ]:
        now += step
        decision = decide(state, PLAN, gates, now, NO_POLICY)
        actions.append((str(decision.action), decision.state.percent))
        state = RampState.from_json(decision.state.to_json())
    assert actions == [
        ("start", 1.0),
        ("hold", 1.0),
        ("advance", 5.0),
        ("hold", 5.0),
        ("advance", 10.0),
        ("advance", 20.0),
        ("complete", 20.0),
        ("stay", 20.0),
        ("rollback", 0.0),
        ("stay", 0.0),
    ]
    assert [e["event"] for e in state.history] == [
        "start",
        "advance",
        "advance",
        "advance",
        "complete",
        "rollback",
    ]


# -- emergency stop -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(PENDING, id="pending"),
        pytest.param(at_step(2), id="ramping"),
        pytest.param(at_step(1, status="paused"), id="paused"),
        pytest.param(at_step(3, status="completed"), id="completed"),
        pytest.param(ROLLED_BACK, id="rolled-back"),
    ],
)
def test_emergency_stop_removes_the_mirror_from_any_status(state):
    decision = emergency_stop(state, T0 + 500, "candidate corrupts carts", "oncall-bob")
    assert (decision.action, decision.target_percent, decision.changed) == (Action.STOP, 0.0, True)
    assert decision.state.status == "stopped"
    assert decision.state.percent == 0.0
    assert decision.state.stop == {"reason": "candidate corrupts carts", "at": T0 + 500, "by": "oncall-bob"}
    assert decision.state.history[-1]["event"] == "stop"
    assert "emergency stop by oncall-bob" in decision.reason
    # The scheduled job does not put it back ...
    later = decide(decision.state, PLAN, [passing()], T0 + 9 * DAY, NO_POLICY)
    assert (later.action, later.target_percent, later.changed) == (Action.STAY, None, False)
    # ... until an explicit restart.
    restarted = decide(decision.state, PLAN, None, T0 + 9 * DAY, Policy(restart=True))
    assert (restarted.action, restarted.target_percent) == (Action.RESTART, 1.0)


def test_emergency_stop_twice_keeps_the_first_record_and_still_targets_zero():
    decision = emergency_stop(STOPPED, T0 + 999, "again", "carol")
    assert (decision.changed, decision.state_dirty, decision.target_percent) == (False, False, 0.0)
    assert decision.state is STOPPED
    assert "already stopped at 2023-11-14T22:13:20Z by alice" in decision.reason


def test_emergency_stop_defaults():
    decision = emergency_stop(at_step(0), T0, "", "")
    assert decision.state.stop == {"reason": "emergency stop", "at": T0, "by": "unknown"}


# -- inputs that are refused ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        pytest.param({"inconclusive_budget": -1}, "inconclusive_budget: got -1", id="negative-budget"),
        pytest.param({"inconclusive_budget": 1.5}, "inconclusive_budget: got 1.5", id="float-budget"),
        pytest.param({"inconclusive_budget": True}, "inconclusive_budget: got True", id="bool-budget"),
        pytest.param({"inconclusive_action": "panic"}, "inconclusive_action: got 'panic'", id="unknown-action"),
        pytest.param({"pause": True, "resume": True}, "pause and resume", id="pause-and-resume"),
        pytest.param({"pause": True, "restart": True}, "pause and restart", id="pause-and-restart"),
    ],
)
def test_policy_refuses(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        Policy(**kwargs)


@pytest.mark.parametrize(
    ("state", "plan", "now", "error", "fragment"),
    [
        pytest.param(at_step(3), PLAN[:2], T0, ConfigError, "at step 4 but the plan has 2 step(s)", id="plan-shrank"),
        pytest.param(PENDING, (), T0, ConfigError, "the plan is empty", id="empty-plan"),
        pytest.param(PENDING, PLAN, float("nan"), ConfigError, "now: got nan", id="now-nan"),
        pytest.param(
            RampState(status="ramping", step_index=0, percent=1.0),
            PLAN,
            T0,
            StateError,
            "needs step_started_at",
            id="ramping-without-clock",
        ),
        pytest.param(
            RampState(status="completed", percent=20.0),
            PLAN,
            T0,
            StateError,
            "needs a step_index",
            id="completed-without-step",
        ),
        pytest.param(RampState(status="odd"), PLAN, T0, StateError, "status is 'odd'", id="unknown-status"),
    ],
)
def test_decide_refuses_inconsistent_inputs(state, plan, now, error, fragment):
    with pytest.raises(error) as caught:
        decide(state, plan, None, now, NO_POLICY)
    assert fragment in str(caught.value)


def test_completed_state_outlives_a_shorter_plan():
    decision = decide(at_step(3, status="completed"), PLAN[:2], [passing()], T0, NO_POLICY)
    assert decision.action is Action.STAY


def test_decision_and_policy_are_frozen():
    decision = decide(PENDING, PLAN, None, T0, NO_POLICY)
    assert isinstance(decision, Decision)
    with pytest.raises(FrozenInstanceError):
        decision.changed = False  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        NO_POLICY.pause = True  # type: ignore[misc]
