"""The ramp's state machine, as pure functions: (state, plan, gate results, now, policy) -> Decision.

    pending -> ramping(step i) -> completed
                     |  \\-> paused (manual)      -> ramping
                     |-> rolled_back (gate breach, mirror removed)
                     \\-> stopped (emergency stop; stays until an explicit restart)

No I/O and no clock: the runner reads the target and asks Prometheus, passes what it saw, and
writes what the Decision says. Being pure is what makes every transition testable with a table,
and what makes a re-run with the same inputs a no-op.

Choices worth knowing (each one is the cautious reading of the design, docs/architecture.md):
- A failing gate wins over everything: it rolls back from ramping, paused and completed, and
  keeps a pending or restarted ramp from starting. Missing evidence never passes a step.
- Inconclusive checks are counted while the mirror is on (ramping, paused, completed). Once the
  streak exceeds `inconclusive_budget`, `inconclusive_action` applies: "hold" keeps holding
  (and says so), "rollback" removes the mirror, from any of those three statuses.
- The hold clock of a step keeps running through inconclusive checks: once the gates pass again
  after the hold, the step advances (the runner then also looks over the whole step).
- RESTART is a single decision: a rolled-back or stopped ramp goes back to pending and starts
  step 1 at once, so one write puts the mirror back; `history` keeps the earlier events.
  `restart` only acts on rolled_back and stopped: a flag left on in a scheduled job must not
  reset a ramp that is progressing or completed.
- RESUME restarts the hold of the current step: a pause usually means someone doubted the
  step, so it is watched for its full hold again before advancing.
- `pause` only acts on a ramping ramp (a pending ramp is simply not started while it is set).
- Freeze windows and approvals only stop the mirror from going UP (start, advance, restart);
  a breach rolls back whatever the time and whoever approved. A step that needs an approval
  WAITs once its predecessor has held with passing gates; the gates keep guarding meanwhile.
- Before deciding, every pass reconciles the record with the live mirror (`reconcile`): a live
  mirror above what the state allows is lowered to it, one below pulls the record down, never
  up; a raise left unconfirmed is confirmed or reverted; a changed plan is re-mapped, never
  raising the mirror. The options of a run apply to the state it began with: restart and
  resume act on its first pass only, and a stop, rollback or pause recorded by another run
  since ends this run's work on the service (`interrupted`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from mirrorramp.durations import format_duration
from mirrorramp.errors import ConfigError
from mirrorramp.freeze import FreezeWindow, frozen_by
from mirrorramp.model import MIRROR_ON, NOT_CHECKED, RESTARTABLE, GateResult, Status, Step, Verdict
from mirrorramp.plan import describe_steps, fingerprint, percents_of
from mirrorramp.state import RampState, StateError
from mirrorramp.wording import describe_gate

INCONCLUSIVE_ACTIONS = ("hold", "rollback")
# Percents are compared with this slack: they come back from JSON and from proxies as floats.
PERCENT_EPSILON = 1e-9
# Events another run records that end this run's work on a service (see `interrupted`).
INTERRUPTING_EVENTS = {"stop": "stopped", "rollback": "rolled back", "pause": "paused"}
# The name suffix of a gate's second look, over the whole step (`looks`).
WHOLE_STEP = " (whole step)"


class Action(enum.StrEnum):
    """What a decision does; the value is what the task result shows as `action`."""

    START = "start"  # pending -> ramping at step 1
    ADVANCE = "advance"  # step i held and passed -> step i+1
    HOLD = "hold"  # stay at the current step (time left, or no evidence, or not started)
    ROLLBACK = "rollback"  # remove the mirror (gate breach, or inconclusive budget with rollback)
    COMPLETE = "complete"  # the last step held and passed
    STAY = "stay"  # nothing to do: completed and healthy, paused, rolled back, stopped
    PAUSE = "pause"  # ramping -> paused, the mirror stays at its percent
    RESUME = "resume"  # paused -> ramping, the hold starts again
    RESTART = "restart"  # rolled_back/stopped -> pending -> ramping at step 1, in one decision
    STOP = "stop"  # emergency stop: mirror removed, stays removed until a restart
    WAIT = "wait"  # the next step needs an approval (approve=<service>:<step>) that was not given
    RECONCILE = "reconcile"  # the record and the live mirror made to agree (drift, unconfirmed, plan)
    LEFT = "left"  # another run stopped, rolled back or paused the ramp while this run watched


@dataclass(frozen=True)
class Policy:
    """The operator's choices for one run.

    inconclusive_budget: consecutive inconclusive checks tolerated; the next one applies
    inconclusive_action ("hold": keep holding and say so; "rollback": remove the mirror).
    restart/pause/resume: the explicit requests of the task (see the module docstring).
    approval_steps: 1-based steps that start only with an approval; approved: those given now.
    approve_hint: how to approve step {step}, for messages ("-e approve=user-service:{step}").
    freeze: windows in which the mirror never goes up.
    """

    inconclusive_budget: int = 10
    inconclusive_action: str = "hold"
    restart: bool = False
    pause: bool = False
    resume: bool = False
    approval_steps: frozenset[int] = frozenset()
    approved: frozenset[int] = frozenset()
    approve_hint: str = "approve={step}"
    freeze: tuple[FreezeWindow, ...] = ()

    def __post_init__(self) -> None:
        budget = self.inconclusive_budget
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise ConfigError(f"inconclusive_budget: got {budget!r}, expected an integer >= 0")
        if self.inconclusive_action not in INCONCLUSIVE_ACTIONS:
            raise ConfigError(
                f"inconclusive_action: got {self.inconclusive_action!r}, expected one of "
                f"{', '.join(INCONCLUSIVE_ACTIONS)}"
            )
        if self.pause and self.resume:
            raise ConfigError("pause and resume are both true: ask for one")
        if self.pause and self.restart:
            raise ConfigError("pause and restart are both true: ask for one")

    def after_first_pass(self) -> Policy:
        """The policy of a run's later passes: restart and resume act on the state the run began
        with, once. Applied again on a later pass, they would undo a stop or a pause that
        someone recorded meanwhile (an emergency stop undone by a watch run's restart)."""
        return replace(self, restart=False, resume=False)


@dataclass(frozen=True)
class Decision:
    """What to do now, and the state to store.

    target_percent: the mirror percent the driver must set (0 removes every mirror field), or
    None when this decision does not move the mirror (leave it as it is).

    changed: the ramp moved: a new target percent or a new status/step (START, ADVANCE,
    COMPLETE, ROLLBACK, PAUSE, RESUME, RESTART, STOP). This is what Ansible reports as
    `changed`. HOLD and STAY are never changed.

    state_dirty: the returned state differs from the input and should be written. True whenever
    `changed` is, and also for bookkeeping only: the inconclusive streak, the verdicts of
    `last_gates`, a "budget exhausted" event. Bookkeeping is not `changed` (the mirror and the
    ramp's position did not move). A change of gate values alone with the same verdicts is not
    dirty (a write on every scheduled run would churn the object for nothing); when
    `state_dirty` is False, `state` is the input state itself.

    seconds_left: until the current step may advance (HOLD, and after START/ADVANCE/RESUME/
    RESTART the new step's hold); 0 when the hold is over but the gates do not allow advancing.
    breach: the (first) failing gate, when one failed.
    """

    action: Action
    state: RampState
    target_percent: float | None
    changed: bool
    reason: str
    seconds_left: float | None = None
    breach: GateResult | None = None
    state_dirty: bool = False
    warning: str = ""  # what an operator must hear about even when nothing failed (drift)


# -- helpers used by more than one transition -------------------------------------------------


def summarize(gates: Sequence[GateResult] | None) -> Verdict:
    """Fold gate verdicts: FAIL beats INCONCLUSIVE beats PASS; no gates at all is INCONCLUSIVE.

    No gates is no evidence, and no evidence must never let a step advance.
    """
    if not gates:
        return Verdict.INCONCLUSIVE
    verdicts = {gate.verdict for gate in gates}
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    if Verdict.INCONCLUSIVE in verdicts:
        return Verdict.INCONCLUSIVE
    return Verdict.PASS


def when(at: float | None) -> str:
    """Epoch seconds as UTC ISO 8601 for messages ("2025-01-31T12:00:00Z")."""
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        return "an unknown time"
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe_first(gates: Sequence[GateResult], verdict: Verdict) -> str:
    matching = [gate for gate in gates if gate.verdict is verdict]
    if not matching:
        return "no gate results"
    # Gates left unchecked for want of traffic say nothing the first one did not.
    others = [g.name for g in matching[1:] if not g.reason.startswith(NOT_CHECKED)]
    more = f" (and {len(others)} more: {', '.join(others)})" if others else ""
    return describe_gate(matching[0]) + more


def _step_label(index: int | None, percent: float) -> str:
    """Steps are 1-based in everything a human reads; step_index stays 0-based."""
    return f"step {index + 1} ({percent:g}%)" if index is not None else f"{percent:g}%"


def _below(state: RampState, plan: Sequence[Step]) -> bool:
    """At a percent below its step's: a new plan whose first step is above the live mirror."""
    index = state.step_index
    return index is not None and index < len(plan) and state.percent < plan[index].percent - PERCENT_EPSILON


def _label(state: RampState, plan: Sequence[Step]) -> str:
    """ "step 2 (5%)", or "0.5% (below step 1)" for a ramp re-mapped below its plan's first step."""
    if _below(state, plan):
        return f"{state.percent:g}% (below step {(state.step_index or 0) + 1})"
    return _step_label(state.step_index, state.percent)


def _where(state: RampState) -> str:
    """Where the ramp is, for rollback and stop messages: "step 2 (5%)", "step 4 (20%), completed"."""
    label = _step_label(state.step_index, state.percent)
    return label if state.status == "ramping" else f"{label}, {state.status}"


def _verdict_signature(gates: Sequence[dict]) -> list[tuple[object, object]]:
    return [(gate.get("name"), gate.get("verdict")) for gate in gates]


def _bookkeeping(state: RampState, gates: Sequence[GateResult] | None, streak: int) -> RampState:
    """`state` with this check recorded: the streak, and the gate results when there were any."""
    last_gates = [gate.as_dict() for gate in gates] if gates is not None else state.last_gates
    return state.evolve(inconclusive_streak=streak, last_gates=last_gates)


def _settle(old: RampState, new: RampState, now: float) -> tuple[RampState, bool]:
    """(state to return, dirty) for a decision that does not move the ramp.

    Dirty only when something worth a write changed; then `updated_at` is stamped. Otherwise
    the input state comes back untouched, so a re-run with the same inputs is a no-op.
    """
    dirty = (
        new.inconclusive_streak != old.inconclusive_streak
        or _verdict_signature(new.last_gates) != _verdict_signature(old.last_gates)
        or len(new.history) != len(old.history)
        or new.history[-1:] != old.history[-1:]
    )
    if not dirty:
        return old, False
    return new.evolve(updated_at=now), True


def _check_inputs(state: RampState, plan: Sequence[Step], now: float, policy: Policy) -> None:
    if not isinstance(state, RampState):
        raise TypeError(f"state must be a RampState, got {type(state).__name__}")
    if not isinstance(policy, Policy):
        raise TypeError(f"policy must be a Policy, got {type(policy).__name__}")
    if not plan or not all(isinstance(step, Step) for step in plan):
        raise ConfigError("steps: the plan is empty or not made of Steps (parse it with plan.parse_steps)")
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ConfigError(f"now: got {now!r}, expected epoch seconds")
    if state.status not in tuple(Status):
        raise StateError(f"ramp state: status is {state.status!r}, expected one of {', '.join(Status)}")
    if state.status in ("ramping", "paused") and state.step_started_at is None:
        raise StateError(f"ramp state: status {state.status} needs step_started_at")
    if state.status in ("ramping", "paused", "completed") and state.step_index is None:
        raise StateError(f"ramp state: status {state.status} needs a step_index")
    if state.status in ("ramping", "paused") and state.step_index is not None and state.step_index >= len(plan):
        raise ConfigError(
            f"the stored state is at step {state.step_index + 1} but the plan has {len(plan)} step(s): "
            "restore the plan, or stop the ramp and restart it"
        )


# -- transitions ------------------------------------------------------------------------------


def _rollback(
    state: RampState,
    now: float,
    gates: Sequence[GateResult] | None,
    streak: int,
    *,
    reason: str,
    gate: GateResult | None,
    breach: GateResult | None,
) -> Decision:
    record = {
        "reason": reason,
        "gate": gate.name if gate else None,
        "value": gate.value if gate else None,
        "threshold": gate.threshold if gate else None,
        "at": now,
    }
    new = _bookkeeping(state, gates, streak).with_event(
        now,
        "rollback",
        reason,
        status="rolled_back",
        percent=0.0,
        rollback=record,
        unconfirmed=None,
        updated_at=now,
    )
    where = _where(state)
    return Decision(
        action=Action.ROLLBACK,
        state=new,
        target_percent=0.0,
        changed=True,
        reason=f"rolled back from {where}: {reason}; mirror removed",
        breach=breach,
        state_dirty=True,
    )


def _start(
    state: RampState,
    plan: Sequence[Step],
    gates: Sequence[GateResult] | None,
    now: float,
    *,
    restart: bool,
) -> Decision:
    first = plan[0]
    fresh = state
    was = ""
    if restart:
        if state.status == "rolled_back":
            was = f"the rollback of {when((state.rollback or {}).get('at'))}"
        else:
            was = f"the stop of {when((state.stop or {}).get('at'))}"
        fresh = state.with_event(now, "restart", f"restart after {was}", status="pending", step_index=None, percent=0.0)
    detail = f"step 1 of {len(plan)}: mirroring {first.percent:g}%"
    new = fresh.with_event(
        now,
        "start",
        detail,
        status="ramping",
        step_index=0,
        percent=first.percent,
        step_started_at=now,
        updated_at=now,
        inconclusive_streak=0,
        last_gates=[gate.as_dict() for gate in gates] if gates is not None else [],
        rollback=None,
        stop=None,
        plan=fingerprint(plan),
        unconfirmed=None,
    )
    hold = f", holding {format_duration(first.hold_seconds)}"
    return Decision(
        action=Action.RESTART if restart else Action.START,
        state=new,
        target_percent=first.percent,
        changed=True,
        reason=(f"restarted after {was}: " if restart else "started: ") + detail + hold,
        seconds_left=first.hold_seconds,
        state_dirty=True,
    )


def _up_blocked(
    state: RampState, step: int, percent: float, now: float, policy: Policy, *, done: str, left_state: RampState
) -> Decision | None:
    """HOLD (freeze) or WAIT (approval) instead of moving the mirror up to 1-based `step`; None: go.

    `done` says what is complete ("step 2 (5%) held 10s with passing gates"); `left_state` is the
    state to keep (with this run's bookkeeping). The wait is recorded once, as an event, so that
    it is announced once and shows in the report.
    """
    window = frozen_by(policy.freeze, now)
    if window:
        new, dirty = _settle(state, left_state, now)
        return Decision(
            action=Action.HOLD,
            state=new,
            target_percent=None,
            changed=False,
            reason=f"{done}; freeze window {window}: step {step} ({percent:g}%) waits until it ends",
            seconds_left=0.0,
            state_dirty=dirty,
        )
    if step in policy.approval_steps and step not in policy.approved:
        waiting = f"step {step} ({percent:g}%) waits for an approval: {policy.approve_hint.format(step=step)}"
        new = left_state
        last = new.history[-1] if new.history else {}
        if last.get("event") != "waiting_for_approval" or last.get("detail") != waiting:
            new = new.with_event(now, "waiting_for_approval", waiting)
        new, dirty = _settle(state, new, now)
        return Decision(
            action=Action.WAIT,
            state=new,
            target_percent=None,
            changed=False,
            reason=f"{done}; {waiting}",
            seconds_left=0.0,
            state_dirty=dirty,
        )
    return None


def _not_started(state: RampState, fail: GateResult, gates: Sequence[GateResult], restart: bool) -> Decision:
    verb = "not restarted" if restart else "not started"
    return Decision(
        action=Action.HOLD,
        state=state,
        target_percent=None,
        changed=False,
        reason=f"{verb}: gate failed: {_describe_first(gates, Verdict.FAIL)}",
        breach=fail,
    )


def _pending(
    state: RampState,
    plan: Sequence[Step],
    gates: Sequence[GateResult] | None,
    fail: GateResult | None,
    now: float,
    policy: Policy,
) -> Decision:
    # Nothing is stored for a ramp that has not started: its first write is the START.
    if policy.pause:
        return Decision(Action.STAY, state, None, False, "pending; pause=true: the ramp is not started")
    if fail is not None:
        return _not_started(state, fail, gates or (), restart=False)
    blocked = _up_blocked(state, 1, plan[0].percent, now, policy, done="not started", left_state=state)
    return blocked or _start(state, plan, gates, now, restart=False)


def _blocked(
    state: RampState,
    plan: Sequence[Step],
    gates: Sequence[GateResult] | None,
    fail: GateResult | None,
    now: float,
    policy: Policy,
) -> Decision:
    """rolled_back or stopped: the mirror stays off until an explicit restart."""
    if policy.restart:
        if fail is not None:
            return _not_started(state, fail, gates or (), restart=True)
        blocked = _up_blocked(state, 1, plan[0].percent, now, policy, done="not restarted", left_state=state)
        return blocked or _start(state, plan, gates, now, restart=True)
    if state.status == "rolled_back":
        record = state.rollback or {}
        why = f"rolled back at {when(record.get('at'))} ({record.get('reason', 'no reason recorded')})"
    else:
        record = state.stop or {}
        why = (
            f"stopped at {when(record.get('at'))} by {record.get('by') or 'unknown'} "
            f"({record.get('reason') or 'no reason recorded'})"
        )
    return Decision(Action.STAY, state, None, False, f"{why}; restart with restart=true")


def _ignored(state: RampState, policy: Policy) -> str:
    """Say so when a request has no effect in this status, so nobody waits for it."""
    notes = []
    if policy.restart and state.status not in RESTARTABLE:
        notes.append(f"restart=true ignored: the ramp is {state.status}, not rolled back or stopped")
    if policy.resume and state.status != "paused":
        notes.append(f"resume=true ignored: the ramp is {state.status}, not paused")
    if policy.pause and state.status == "completed":
        notes.append("pause=true ignored: the ramp is completed")
    return "".join(f" ({note})" for note in notes)


@dataclass(frozen=True)
class _Check:
    """This run's look at the gates while the mirror is on, shared by the three statuses."""

    checked: RampState  # the input state with the streak and gate results recorded
    blind: str  # why the evidence is inconclusive, "" when the gates pass
    notes: str  # requests that have no effect in this status
    label: str  # "step 2 (5%)"


def _mirror_on(
    state: RampState,
    plan: Sequence[Step],
    gates: Sequence[GateResult] | None,
    fail: GateResult | None,
    now: float,
    policy: Policy,
) -> Decision:
    """ramping, paused, completed: the mirror is on, so the gates guard it."""
    results = tuple(gates or ())
    verdict = summarize(results)
    streak = state.inconclusive_streak + 1 if verdict is Verdict.INCONCLUSIVE else 0
    if fail is not None:
        return _rollback(
            state,
            now,
            gates,
            streak,
            reason=f"gate failed: {_describe_first(results, Verdict.FAIL)}",
            gate=fail,
            breach=fail,
        )
    budget = policy.inconclusive_budget
    exhausted = streak > budget
    evidence = _describe_first(results, Verdict.INCONCLUSIVE)
    if exhausted and policy.inconclusive_action == "rollback":
        return _rollback(
            state,
            now,
            gates,
            streak,
            reason=f"inconclusive for {streak} consecutive checks (budget {budget}): {evidence}",
            gate=next((g for g in results if g.verdict is Verdict.INCONCLUSIVE), None),
            breach=None,
        )
    checked = _bookkeeping(state, gates, streak)
    if exhausted and streak == budget + 1:
        # Once per blind spell, not on every further check: the history is for events.
        checked = checked.with_event(now, "inconclusive_budget_exhausted", evidence)
    blind = ""
    if verdict is Verdict.INCONCLUSIVE:
        blind = (
            f"inconclusive budget exhausted ({streak} consecutive checks, budget {budget}), holding: {evidence}"
            if exhausted
            else f"gates inconclusive ({streak} of {budget} tolerated): {evidence}"
        )
    check = _Check(checked, blind, _ignored(state, policy), _label(state, plan))
    if state.status == "completed":
        new, dirty = _settle(state, checked, now)
        return Decision(
            action=Action.STAY,
            state=new,
            target_percent=None,
            changed=False,
            reason=f"completed at {state.percent:g}%: {blind or 'gates pass'}{check.notes}",
            state_dirty=dirty,
        )
    if state.status == "paused":
        return _paused(state, plan, check, now, policy)
    return _ramping(state, plan, check, now, policy)


def _paused(state: RampState, plan: Sequence[Step], check: _Check, now: float, policy: Policy) -> Decision:
    step = plan[state.step_index or 0]
    blind = f"; {check.blind}" if check.blind else ""
    if policy.resume:
        new = check.checked.with_event(
            now,
            "resume",
            f"{check.label}: the hold starts again",
            status="ramping",
            step_started_at=now,
            updated_at=now,
        )
        left = format_duration(step.hold_seconds)
        return Decision(
            action=Action.RESUME,
            state=new,
            target_percent=state.percent,
            changed=True,
            reason=f"resumed {check.label}: the hold starts again, {left} left{blind}{check.notes}",
            seconds_left=step.hold_seconds,
            state_dirty=True,
        )
    new, dirty = _settle(state, check.checked, now)
    return Decision(
        action=Action.STAY,
        state=new,
        target_percent=None,
        changed=False,
        reason=f"paused at {check.label}; resume with resume=true{blind}{check.notes}",
        state_dirty=dirty,
    )


def _ramping(state: RampState, plan: Sequence[Step], check: _Check, now: float, policy: Policy) -> Decision:
    step_index = state.step_index or 0
    step = plan[step_index]
    if policy.pause:
        new = check.checked.with_event(now, "pause", check.label, status="paused", updated_at=now)
        blind = f"; {check.blind}" if check.blind else ""
        return Decision(
            action=Action.PAUSE,
            state=new,
            target_percent=state.percent,
            changed=True,
            reason=(
                f"paused at {check.label}: the mirror stays at {state.percent:g}%; "
                f"resume with resume=true{blind}{check.notes}"
            ),
            state_dirty=True,
        )
    started = state.step_started_at if state.step_started_at is not None else now
    elapsed = now - started
    skew = ""
    if elapsed < 0:
        # This run's clock is behind the one that started the step: never count that as held.
        skew = (
            f" (clock skew: the step started {format_duration(-elapsed)} ahead of this clock; counted as just started)"
        )
        elapsed = 0.0
    left = max(0.0, step.hold_seconds - elapsed)
    if check.blind or left > 0:
        if check.blind:
            timing = f"; {format_duration(left)} left" if left > 0 else "; hold done, waiting for passing gates"
            reason = f"holding {check.label}: {check.blind}{timing}"
        else:
            reason = f"holding {check.label}: {format_duration(left)} left"
        new, dirty = _settle(state, check.checked, now)
        return Decision(
            action=Action.HOLD,
            state=new,
            target_percent=None,
            changed=False,
            reason=f"{reason}{skew}{check.notes}",
            seconds_left=left,
            state_dirty=dirty,
        )
    held = f"{check.label} held {format_duration(step.hold_seconds)} with passing gates"
    below = _below(state, plan)
    if below or step_index + 1 < len(plan):
        # Below its step (a re-mapped plan), the next move is up to that step itself.
        index = step_index if below else step_index + 1
        following = plan[index]
        blocked = _up_blocked(state, index + 1, following.percent, now, policy, done=held, left_state=check.checked)
        if blocked is not None:
            return replace(blocked, reason=f"{blocked.reason}{skew}{check.notes}")
        detail = f"{held}: now step {index + 1} of {len(plan)} ({following.percent:g}%)"
        new = check.checked.with_event(
            now, "advance", detail, step_index=index, percent=following.percent, step_started_at=now, updated_at=now
        )
        return Decision(
            action=Action.ADVANCE,
            state=new,
            target_percent=following.percent,
            changed=True,
            reason=f"{detail}, holding {format_duration(following.hold_seconds)}{check.notes}",
            seconds_left=following.hold_seconds,
            state_dirty=True,
        )
    detail = f"{held}: ramp completed, the mirror stays at {state.percent:g}%"
    new = check.checked.with_event(now, "complete", detail, status="completed", updated_at=now)
    return Decision(
        action=Action.COMPLETE,
        state=new,
        target_percent=state.percent,
        changed=True,
        reason=f"{detail}{check.notes}",
        state_dirty=True,
    )


# -- the entry points -------------------------------------------------------------------------


# -- which looks a pass takes at the gates ---------------------------------------------------


def switches_mirror_on(state: RampState, policy: Policy) -> bool:
    """Whether this pass may put the mirror on from off: a pending ramp, or an explicit restart of
    a rolled-back or stopped one. Every gate query must parse before it does (the runner checks
    them; `not_started` is the decision when they could not be checked)."""
    return state.status == "pending" or (policy.restart and state.status in RESTARTABLE)


def not_started(state: RampState, problem: str) -> Decision:
    """Hold a ramp off when its gate queries could not be checked: no start without them."""
    return Decision(Action.HOLD, state, None, False, f"not started: {problem}")


def step_start(state: RampState, now: float) -> float:
    """When the state's step started, as the judges count it (a completed ramp written without
    a step start counts from its last update)."""
    if state.step_started_at is not None:
        return state.step_started_at
    return state.updated_at if state.updated_at is not None else now


def judge_window_seconds(step_started_at: float, now: float) -> float:
    """The judges' window: the step so far, in whole minutes (rounded up, so that the services
    of a run whose steps started in the same minute share one grouped query, batch.py). The
    minute before the step adds requests at the step before's share, on both sides alike."""
    return max(60.0, 60.0 * math.ceil((now - step_started_at) / 60.0))


@dataclass(frozen=True)
class Looks:
    """The looks a pass takes at the gates of a state with the mirror on.

    window_seconds: the gates' own window (the recent evidence). judge_window_seconds: the
    judges count the step so far (judge.py's confidence sequence). whole_step_seconds: once the
    hold is over, the other gates are looked at over the whole step too, so an alert that fired
    and resolved between two scheduled runs still fails the step; None when not due (a step
    younger than the window was just looked at in whole). hold_over: inconclusive judges count
    from then on (before, they only say a small mirror has not served enough yet).
    """

    window_seconds: float
    judge_window_seconds: float
    whole_step_seconds: float | None
    hold_over: bool


def looks(state: RampState, plan: Sequence[Step], now: float, window_seconds: float) -> Looks | None:
    """The looks at the gates `state` needs now; None when the mirror is off (nothing to look at)."""
    if state.status not in MIRROR_ON:
        return None
    step = plan[state.step_index] if state.step_index is not None and state.step_index < len(plan) else None
    hold_over = (
        state.status == "ramping"
        and step is not None
        and state.step_started_at is not None
        and now - state.step_started_at >= step.hold_seconds
    )
    whole_step = None
    if hold_over and now - state.step_started_at > window_seconds:
        whole_step = now - state.step_started_at
    return Looks(window_seconds, judge_window_seconds(step_start(state, now), now), whole_step, hold_over)


def whole_step_due(looks: Looks, results: Sequence[GateResult]) -> bool:
    """Whether the whole-step look is worth taking: due, and the recent window did not fail."""
    return looks.whole_step_seconds is not None and all(r.verdict is not Verdict.FAIL for r in results)


def decided_on(looks: Looks, results: Sequence[GateResult], whole_step: Sequence[GateResult]) -> list[GateResult]:
    """The results `decide` judges: the recent window's (an inconclusive judge only once the
    hold is over) and what the whole-step look did not pass. Whole-step passes add nothing, and
    recording them would rewrite the stored verdicts each time a hold ends."""
    decided = [r for r in results if looks.hold_over or not (r.kind == "judge" and r.verdict is Verdict.INCONCLUSIVE)]
    return decided + [r for r in whole_step if r.verdict is not Verdict.PASS]


def decide(
    state: RampState,
    plan: Sequence[Step],
    gates: Sequence[GateResult] | None,
    now: float,
    policy: Policy | None = None,
) -> Decision:
    """The one decision of this run. Pure: same inputs, same Decision.

    `gates` None means "not evaluated" (the runner does not look while the mirror is off);
    while the mirror is on, None or [] is no evidence and takes the inconclusive path.
    `now` is epoch seconds from the caller's clock.
    """
    policy = policy or Policy()
    _check_inputs(state, plan, now, policy)
    results = tuple(gates) if gates is not None else None
    fail = next((gate for gate in results or () if gate.verdict is Verdict.FAIL), None)
    if state.status == "pending":
        return _pending(state, plan, results, fail, now, policy)
    if state.status in ("rolled_back", "stopped"):
        return _blocked(state, plan, results, fail, now, policy)
    return _mirror_on(state, plan, results, fail, now, policy)


def emergency_stop(state: RampState, now: float, reason: str = "", by: str = "", live_percent: float = 0.0) -> Decision:
    """Remove the mirror now and keep it removed until an explicit restart.

    Needs no gates and no plan, so it works with Prometheus down or the configuration broken.
    `live_percent` is what the proxy mirrors now, whatever the state says: the stop says what it
    removed. Stopping a stopped ramp keeps its first stop record, and removes a mirror that is
    live all the same (drift: a cut-short write, a hand edit), saying so; the target is always 0
    so that the driver re-asserts that no mirror field is left.
    """
    reason = reason or "emergency stop"
    by = by or "unknown"
    live = f"{live_percent:g}%"
    if state.status == "stopped":
        record = state.stop or {}
        already = f"already stopped at {when(record.get('at'))} by {record.get('by') or 'unknown'}"
        if live_percent <= PERCENT_EPSILON:
            return Decision(Action.STOP, state, 0.0, False, f"{already}; no mirror is live, it stays removed")
        drift = f"a live mirror of {live} was still on while the ramp was stopped"
        new = state.with_event(now, "drift", f"{drift}: removed by the stop of {by}", percent=0.0, updated_at=now)
        return Decision(
            Action.STOP, new, 0.0, True, f"{already}; {drift} (drift): removed it", state_dirty=True, warning=drift
        )
    record = {"reason": reason, "at": now, "by": by}
    new = state.with_event(
        now,
        "stop",
        f"{reason} (by {by})",
        status="stopped",
        percent=0.0,
        stop=record,
        unconfirmed=None,
        updated_at=now,
    )
    removed = f"it was live at {live}" if live_percent > PERCENT_EPSILON else "none was live"
    return Decision(
        Action.STOP,
        new,
        0.0,
        True,
        f"emergency stop by {by} at {_where(state)}: {reason}; mirror removed ({removed})",
        state_dirty=True,
    )


def roll_back(state: RampState, now: float, reason: str) -> Decision:
    """Remove the mirror for a reason no gate result carries (a configuration error)."""
    return _rollback(state, now, None, state.inconclusive_streak, reason=reason, gate=None, breach=None)


def interrupted(seen: RampState, current: RampState) -> str | None:
    """Why this run must leave a ramp alone: the stop, rollback or pause that another run recorded
    since this run last saw the state (`seen`: what it read first, or last wrote). None: go on.

    A run's options apply to the state it began with; a stop recorded after that wins.
    """
    for event in reversed(_events_since(seen.history, current.history)):
        verb = INTERRUPTING_EVENTS.get(str(event.get("event")))
        if verb is None:
            continue
        at = when(event.get("at"))
        if event.get("event") == "stop":
            record = current.stop or {}
            by = record.get("by") or "unknown"
            return (
                f"stopped by {by} at {at} while this run was watching ({record.get('reason') or 'no reason'}); "
                "this run leaves the mirror off; restart with restart=true"
            )
        then = "restart with restart=true" if verb == "rolled back" else "resume with resume=true"
        return f"{verb} by another run at {at} while this run was watching ({event.get('detail')}); {then}"
    return None


def _events_since(seen: list[dict], current: list[dict]) -> list[dict]:
    """The events of `current` recorded after the last one of `seen` (all of them when that one
    has gone out of the bounded history, or was never there)."""
    if not seen:
        return list(current)
    last = seen[-1]
    for index in range(len(current) - 1, -1, -1):
        if current[index] == last:
            return list(current[index + 1 :])
    return list(current)


# -- reconciling the record with the live mirror -----------------------------------------------


def reconcile(
    state: RampState, plan: Sequence[Step], live_percent: float, live_drift: str, now: float
) -> Decision | None:
    """Make the record and the live mirror agree before anything is decided; None: they agree.

    In this order:
    1. A raise left unconfirmed (the intent was recorded, the proxy may not have it): confirmed
       when the live mirror has it, else the record goes back to where the raise came from.
    2. Drift. Pending (once it recorded anything), rolled back and stopped ramps have no
       mirror; the others at most the
       recorded percent, in the driver's own shape (`live_drift` says how it differs, "" when it
       does not). A mirror above that is set to it (the target). A live mirror below the record
       pulls the record down (a lowering cut short, a hand edit): to the highest step at or below
       it, its hold starting again, or to rolled back when no mirror is live. Never up.
    3. A plan that is not the one recorded: the current step becomes the highest step whose
       percent is at or below the recorded one, its hold starts again; the mirror is lowered to
       that step's percent, never raised (below the first step, it stays where it is).
    """
    notes: list[str] = []
    warnings: list[str] = []
    new, target = state, None

    if new.unconfirmed is not None:
        origin = new.unconfirmed
        if live_percent >= new.percent - PERCENT_EPSILON:
            note = f"the raise to {_label(new, plan)} left unconfirmed by an earlier run is live: confirmed"
            new = new.with_event(now, "confirm", note, unconfirmed=None)
        else:
            back = RampState(
                status=origin["status"],
                step_index=origin["step_index"],
                percent=float(origin["percent"]),
                step_started_at=origin["step_started_at"],
            )
            note = (
                f"the raise to {new.percent:g}% recorded at {when(origin.get('at'))} did not reach the proxy "
                f"(live {live_percent:g}%): back to {_label(back, plan) if back.status in MIRROR_ON else back.status}"
            )
            new = new.with_event(
                now,
                "revert",
                note,
                status=back.status,
                step_index=back.step_index,
                percent=back.percent,
                step_started_at=back.step_started_at,
                unconfirmed=None,
            )
            warnings.append(note)
        notes.append(note)

    mirror_on = new.status in MIRROR_ON
    allowed = new.percent if mirror_on else 0.0
    live = f"{live_percent:g}%" + (f" ({live_drift})" if live_drift else "")
    # A ramp that never wrote anything has no record to drift from: its live mirror is the one
    # the operator rendered (`mirror_percent`), and its first run's START replaces it.
    never_ran = new.status == "pending" and not new.history
    above = live_percent > allowed + PERCENT_EPSILON or (live_drift and live_percent > PERCENT_EPSILON)
    if above and not never_ran:
        expected = f"{allowed:g}%" if mirror_on else f"no mirror ({new.status})"
        done = (
            f"lowered to {allowed:g}%"
            if allowed > 0 and live_percent > allowed
            else (f"set again to {allowed:g}%" if allowed > 0 else "removed")
        )
        note = f"drift: the live mirror is {live}, the record says {expected}: {done}"
        new = new.with_event(now, "drift", note)
        target = allowed
        notes.append(note)
        warnings.append(note)
    elif mirror_on and live_percent < allowed - PERCENT_EPSILON:
        if live_percent <= PERCENT_EPSILON:
            reason = (
                f"no mirror is live while the record says {_label(new, plan)}: a rollback or stop cut short, "
                "or a hand edit"
            )
            new = new.with_event(
                now,
                "drift",
                f"drift: {reason}",
                status="rolled_back",
                percent=0.0,
                rollback={"reason": reason, "gate": None, "value": None, "threshold": None, "at": now},
            )
            note = f"drift: {reason}; recorded as rolled back, it stays off until restart=true"
        else:
            new, target = _remap(new, plan, live_percent, now)
            note = (
                f"drift: the live mirror is {live}, below the recorded {allowed:g}%: the record follows it "
                f"down to {_label(new, plan)}, its hold starts again"
            )
            new = new.with_event(now, "drift", note)
        notes.append(note)
        warnings.append(note)

    wanted = fingerprint(plan)
    if new.status in MIRROR_ON and new.plan != wanted:
        index = new.step_index or 0
        if new.plan is None and index < len(plan) and abs(plan[index].percent - new.percent) <= PERCENT_EPSILON:
            new = new.evolve(plan=wanted)  # a state of an older version: it follows this plan
        else:
            was = percents_of(new.plan) if new.plan else "a plan not recorded"
            new, lower = _remap(new, plan, new.percent, now)
            target = lower if lower is not None else target
            note = (
                f"plan changed: {was} is now {describe_steps(plan)}: at {_label(new, plan)} of {len(plan)}, "
                "its hold starts again" + (f"; the mirror is lowered to {lower:g}%" if lower is not None else "")
            )
            new = new.with_event(now, "plan_changed", note)
            notes.append(note)

    if new == state:
        return None
    if not notes:
        # Only the plan of an older version's state adopted: carried by the next write, not one
        # of its own (a write on every run for nothing).
        return Decision(Action.RECONCILE, new, None, False, "")
    moved = target is not None or (new.status, new.step_index, new.percent) != (
        state.status,
        state.step_index,
        state.percent,
    )
    return Decision(
        action=Action.RECONCILE,
        state=new.evolve(updated_at=now),
        target_percent=target,
        changed=moved,
        reason="; ".join(notes),
        state_dirty=True,
        warning="; ".join(warnings),
    )


def _remap(state: RampState, plan: Sequence[Step], percent: float, now: float) -> tuple[RampState, float | None]:
    """`state` moved onto `plan` at the highest step at or below `percent`; (new state, the percent
    to lower the mirror to, or None when it stays).

    Below the first step, the ramp waits there at `percent` (its next move is up to step 1,
    through the gates). Paused stays paused; completed stays completed only at the last step
    with the same percent; the hold starts again.
    """
    fitting = [i for i, step in enumerate(plan) if step.percent <= percent + PERCENT_EPSILON]
    index = fitting[-1] if fitting else 0
    new_percent = plan[index].percent if fitting else percent
    status = state.status
    if status == "completed" and not (index == len(plan) - 1 and abs(new_percent - state.percent) <= PERCENT_EPSILON):
        status = "ramping"
    new = state.evolve(
        status=status,
        step_index=index,
        percent=new_percent,
        step_started_at=now,
        inconclusive_streak=0,
        plan=fingerprint(plan),
    )
    lower = new_percent if new_percent < percent - PERCENT_EPSILON else None
    return new, lower
