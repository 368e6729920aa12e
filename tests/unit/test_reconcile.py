"""The record against the live mirror, before any decision: drift, unconfirmed raises, plan changes,
and a run's options against what other runs recorded meanwhile (machine.reconcile, interrupted,
Policy.after_first_pass, emergency_stop with a live mirror).

Pure functions, so tables: (stored state, live percent, plan) -> what the next write must be.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from mirrorramp.machine import Action, Policy, decide, emergency_stop, interrupted, reconcile
from mirrorramp.model import GateResult, Step, Verdict
from mirrorramp.plan import fingerprint
from mirrorramp.state import RampState

NOW = 2_000_000.0
PLAN = (Step(1, 60), Step(5, 60), Step(10, 60), Step(20, 60))
PASS = [GateResult("mirror-5xx-ratio", "threshold", "q", Verdict.PASS, 0.0, 0.05, "<")]


def at(status: str, index: int, plan=PLAN, started: float = NOW - 10, **changes) -> RampState:
    return RampState(
        status=status,
        step_index=index,
        percent=plan[index].percent,
        step_started_at=started,
        plan=fingerprint(plan),
        **changes,
    )


def stopped() -> RampState:
    return RampState(status="stopped", percent=0.0, stop={"reason": "pager", "at": NOW - 100, "by": "alice"})


def rolled_back() -> RampState:
    record = {"reason": "gate failed", "gate": "g", "value": 1, "threshold": 0, "at": NOW - 100}
    return RampState(status="rolled_back", step_index=1, percent=0.0, rollback=record, plan=fingerprint(PLAN))


# -- drift -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "live", "target", "status", "percent", "words"),
    [
        pytest.param(stopped(), 5.0, 0.0, "stopped", 0.0, "record says no mirror (stopped): removed", id="stopped-5"),
        pytest.param(rolled_back(), 5.0, 0.0, "rolled_back", 0.0, "no mirror (rolled_back)", id="rolled-back-5"),
        pytest.param(
            RampState.initial().with_event(NOW - 50, "revert", "the start did not land"),
            10.0,
            0.0,
            "pending",
            0.0,
            "no mirror (pending)",
            id="pending-with-a-record-10",
        ),
        pytest.param(at("ramping", 1), 10.0, 5.0, "ramping", 5.0, "lowered to 5%", id="ramping-above"),
        pytest.param(at("paused", 1), 20.0, 5.0, "paused", 5.0, "lowered to 5%", id="paused-above"),
        pytest.param(at("completed", 3), 50.0, 20.0, "completed", 20.0, "lowered to 20%", id="completed-above"),
    ],
)
def test_a_live_mirror_above_the_record_is_lowered_to_it(state, live, target, status, percent, words):
    fix = reconcile(state, PLAN, live, "", NOW)
    assert fix is not None and fix.action is Action.RECONCILE
    assert fix.target_percent == target
    assert (fix.state.status, fix.state.percent) == (status, percent)
    assert words in fix.reason and fix.warning
    assert fix.state.history[-1]["event"] == "drift"
    assert f"live mirror is {live:g}%" in fix.state.history[-1]["detail"]


def test_a_live_mirror_below_the_record_pulls_the_record_down_never_the_mirror_up():
    # Recorded step 3 (10%), 7% live: the record follows to the highest step at or below 7%
    # (step 2, 5%) and the mirror goes down to it; its hold starts again.
    fix = reconcile(at("ramping", 2), PLAN, 7.0, "", NOW)
    assert fix.target_percent == 5.0
    assert (fix.state.status, fix.state.step_index, fix.state.percent, fix.state.step_started_at) == (
        "ramping",
        1,
        5.0,
        NOW,
    )
    assert "follows it down to step 2 (5%)" in fix.reason


def test_no_live_mirror_while_the_record_says_a_step_is_a_rollback_cut_short():
    fix = reconcile(at("ramping", 1), PLAN, 0.0, "", NOW)
    assert fix.target_percent is None  # nothing to write to the proxy: it is already off
    assert fix.state.status == "rolled_back" and fix.state.percent == 0
    assert "a rollback or stop cut short" in fix.state.rollback["reason"]
    # ... and it stays off: the next decision does not start it again.
    assert decide(fix.state, PLAN, PASS, NOW + 1000).target_percent is None


def test_targets_that_differ_are_drift_at_the_same_percent():
    fix = reconcile(at("ramping", 1), PLAN, 5.0, "live mirror fields x, expected y", NOW)
    assert fix.target_percent == 5.0 and "set again to 5%" in fix.reason


@pytest.mark.parametrize(
    ("state", "live"),
    [
        pytest.param(RampState.initial(), 0.0, id="pending-off"),
        # Never ran: the rendered mirror_percent is the operator's, the first START replaces it.
        pytest.param(RampState.initial(), 10.0, id="never-ran-with-a-rendered-mirror"),
        pytest.param(stopped(), 0.0, id="stopped-off"),
        pytest.param(at("ramping", 1), 5.0, id="ramping-at-record"),
        pytest.param(at("completed", 3), 20.0, id="completed-at-record"),
    ],
)
def test_agreement_needs_no_write(state, live):
    assert reconcile(state, PLAN, live, "", NOW) is None


# -- unconfirmed raises --------------------------------------------------------------------------


def raising_to_step_3() -> RampState:
    origin = {"at": NOW - 5, "status": "ramping", "step_index": 1, "percent": 5.0, "step_started_at": NOW - 70}
    return at("ramping", 2, started=NOW - 5, unconfirmed=origin)


def test_an_unconfirmed_raise_that_reached_the_proxy_is_confirmed():
    fix = reconcile(raising_to_step_3(), PLAN, 10.0, "", NOW)
    assert fix.target_percent is None and fix.state.unconfirmed is None
    assert (fix.state.step_index, fix.state.percent) == (2, 10.0)
    assert fix.state.history[-1]["event"] == "confirm" and not fix.warning


def test_an_unconfirmed_raise_that_did_not_reach_the_proxy_is_reverted():
    fix = reconcile(raising_to_step_3(), PLAN, 5.0, "", NOW)
    assert fix.target_percent is None and fix.state.unconfirmed is None
    assert (fix.state.step_index, fix.state.percent, fix.state.step_started_at) == (1, 5.0, NOW - 70)
    assert "did not reach the proxy" in fix.warning
    # Its hold was over: with passing gates the next decision makes the raise again, through the gates.
    assert decide(fix.state, PLAN, PASS, NOW).target_percent == 10.0


def test_an_unconfirmed_start_that_did_not_land_goes_back_to_pending():
    origin = {"at": NOW - 5, "status": "pending", "step_index": None, "percent": 0.0, "step_started_at": None}
    fix = reconcile(at("ramping", 0, unconfirmed=origin), PLAN, 0.0, "", NOW)
    assert (fix.state.status, fix.state.step_index, fix.state.percent) == ("pending", None, 0.0)


# -- plan changes --------------------------------------------------------------------------------


def test_a_new_plan_re_maps_the_ramp_without_raising_the_mirror():
    old = (Step(10, 60), Step(20, 60), Step(50, 60))
    fix = reconcile(at("ramping", 0, plan=old), PLAN, 10.0, "", NOW)
    # The highest step of [1, 5, 10, 20] at or below 10% is step 3; its hold starts again.
    assert fix.target_percent is None
    assert (fix.state.step_index, fix.state.percent, fix.state.step_started_at) == (2, 10.0, NOW)
    assert fix.state.plan == fingerprint(PLAN)
    assert fix.reason.startswith("plan changed: 10% -> 20% -> 50% is now 1% -> 5% -> 10% -> 20%")
    assert fix.state.history[-1]["event"] == "plan_changed"
    # Held again in full before the next step, not advanced at once.
    assert decide(fix.state, PLAN, PASS, NOW + 30).action is Action.HOLD
    assert decide(fix.state, PLAN, PASS, NOW + 60).target_percent == 20.0


def test_a_plan_whose_steps_are_all_above_the_live_mirror_waits_below_its_first_step():
    old = PLAN
    new = (Step(10, 60), Step(20, 60))
    fix = reconcile(at("completed", 1, plan=old), new, 5.0, "", NOW)
    assert fix.target_percent is None and fix.state.status == "ramping"
    assert (fix.state.step_index, fix.state.percent) == (0, 5.0)
    assert "5% (below step 1)" in fix.reason
    held = decide(fix.state, new, PASS, NOW + 60)
    assert held.action is Action.ADVANCE and held.target_percent == 10.0
    assert "now step 1 of 2 (10%)" in held.reason


def test_a_plan_that_tops_out_below_the_live_mirror_lowers_it():
    old = (Step(10, 60), Step(20, 60), Step(50, 60))
    fix = reconcile(at("ramping", 2, plan=old), PLAN, 50.0, "", NOW)
    assert fix.target_percent == 20.0 and (fix.state.step_index, fix.state.percent) == (3, 20.0)
    assert "the mirror is lowered to 20%" in fix.reason


def test_a_state_of_an_older_version_adopts_the_plan_that_fits_it_without_a_write():
    legacy = replace(at("ramping", 1), plan=None)
    fix = reconcile(legacy, PLAN, 5.0, "", NOW)
    assert fix is not None and not fix.state_dirty and not fix.changed and fix.state.plan == fingerprint(PLAN)


def test_the_start_records_the_plan_it_follows():
    started = decide(RampState.initial(), PLAN, PASS, NOW)
    assert started.state.plan == fingerprint(PLAN)
    assert reconcile(started.state, PLAN, 1.0, "", NOW) is None


# -- a run's options against other runs ------------------------------------------------------------


def test_restart_and_resume_act_on_the_first_pass_only():
    policy = Policy(restart=True, resume=True).after_first_pass()
    assert not policy.restart and not policy.resume
    # A stop recorded after the run began is not undone by a later pass of that run.
    assert decide(stopped(), PLAN, PASS, NOW, policy).action is Action.STAY


@pytest.mark.parametrize(
    ("record", "words"),
    [
        pytest.param(lambda s: emergency_stop(s, NOW, "pager", "alice", 5.0).state, "stopped by alice", id="stop"),
        pytest.param(lambda s: decide(s, PLAN, [], NOW, Policy(pause=True)).state, "paused by another", id="pause"),
    ],
)
def test_a_stop_or_pause_recorded_by_another_run_interrupts_this_one(record, words):
    seen = at("ramping", 1)
    assert interrupted(seen, seen) is None
    why = interrupted(seen, record(seen))
    assert why is not None and words in why and "while this run was watching" in why


def test_an_advance_by_another_run_does_not_interrupt():
    seen = at("ramping", 0, started=NOW - 100)
    advanced = decide(seen, PLAN, PASS, NOW).state
    assert advanced.step_index == 1 and interrupted(seen, advanced) is None


# -- the emergency stop says what it removed -------------------------------------------------------


def test_the_emergency_stop_says_what_it_removed():
    stop = emergency_stop(at("ramping", 1), NOW, "pager", "alice", live_percent=10.0)
    assert "mirror removed (it was live at 10%)" in stop.reason


def test_a_stop_of_a_stopped_ramp_still_removes_a_live_mirror_and_says_so():
    stop = emergency_stop(stopped(), NOW, "again", "bob", live_percent=5.0)
    assert stop.changed and stop.target_percent == 0
    assert "a live mirror of 5% was still on" in stop.reason and stop.warning
    assert stop.state.stop["by"] == "alice"  # the first stop record is kept
    quiet = emergency_stop(stopped(), NOW, "again", "bob", live_percent=0.0)
    assert not quiet.changed and "no mirror is live" in quiet.reason
