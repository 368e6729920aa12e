"""One ramp run: read the target, ask Prometheus, decide, write, verify, notify.

`scheduled` mode does one pass; `watch` repeats the pass every poll interval until the ramp
is completed, rolled back or stopped, or the deadline passes. The decisions themselves are the
pure state machine in machine.py; this module only sequences the I/O around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from mirrorramp.drivers.base import Driver, TargetSnapshot
from mirrorramp.durations import format_duration
from mirrorramp.errors import (
    ConfigError,
    ConflictError,
    DriverError,
    MirrorRampError,
    PrometheusError,
    QueryRejectedError,
)
from mirrorramp.gates import GateSet, check_queries, evaluate
from mirrorramp.machine import (
    PERCENT_EPSILON,
    WHOLE_STEP,
    Action,
    Decision,
    Policy,
    decide,
    decided_on,
    emergency_stop,
    interrupted,
    looks,
    not_started,
    reconcile,
    roll_back,
    switches_mirror_on,
    whole_step_due,
)
from mirrorramp.model import MIRROR_ON, TERMINAL, GateResult, Step, Verdict
from mirrorramp.notify import Notifier, event_from_decision
from mirrorramp.prometheus import PrometheusClient
from mirrorramp.state import RampState
from mirrorramp.wording import gate_row

CONFLICT_RETRIES = 3
# An explicit restart that cannot check its gate queries tries this often, then fails the task.
RESTART_TRIES = 3
RESTART_BACKOFF_SECONDS = 2.0
# The read-back of a write: this many reads, this far apart (see Runner._verify).
VERIFY_READS = 5
VERIFY_INTERVAL_SECONDS = 0.2
# How often a waiting watch looks whether the process that started it is still there.
ALIVE_CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class RampConfig:
    service: str
    namespace: str
    environment: str
    plan: tuple[Step, ...]
    gates: GateSet
    query_context: dict
    window_seconds: float
    policy: Policy
    mode: str = "scheduled"
    poll_interval: float = 60.0
    deadline_seconds: float = 3600.0
    dry_run: bool = False


@dataclass
class RunOutcome:
    """What the action plugin turns into its result."""

    before: TargetSnapshot
    after: TargetSnapshot
    decisions: list[Decision] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    changed: bool = False
    conflicts: int = 0
    warnings: list[str] = field(default_factory=list)
    passes: int = 0
    ended: str = ""  # why this run left the ramp alone (another run stopped it meanwhile)

    @property
    def last(self) -> Decision | None:
        return self.decisions[-1] if self.decisions else None


class Runner:
    def __init__(
        self,
        config: RampConfig,
        driver: Driver,
        prometheus: PrometheusClient,
        notifier: Notifier | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        progress: Callable[[str], None] = lambda _msg: None,
        on_pass: Callable[[RunOutcome], None] = lambda _outcome: None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.driver = driver
        self.prometheus = prometheus
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.sleep = sleep
        self.progress = progress
        # Called after every pass (the ramp report records each one).
        self.on_pass = on_pass
        # Shows a warning that must come before the ramp changes anything (the gate queries'
        # check); None: it joins the run's warnings, shown when the run ends.
        self.warn = warn
        # The state as this run last saw it (read first, or written since): what is newer was
        # recorded by another run.
        self._seen: RampState | None = None

    # -- gates ---------------------------------------------------------------------------
    def _evaluate(self, state: RampState, now: float) -> tuple[list[GateResult] | None, list[GateResult]]:
        """(what the state machine decides on, what the result shows) for `state`: the looks
        machine.looks says, taken; None when the mirror is off (nothing to look at)."""
        cfg = self.config
        seen = looks(state, cfg.plan, now, cfg.window_seconds)
        if seen is None:
            return None, []
        judge_window = seen.judge_window_seconds if cfg.gates.judges else None
        results = evaluate(
            cfg.gates, self.prometheus, cfg.query_context, seen.window_seconds, judge_window_seconds=judge_window
        )
        over_step: list[GateResult] = []
        if whole_step_due(seen, results):
            # The judges already judged the whole step: this look is for the other gates.
            others = replace(cfg.gates, judges=())
            over_step = [
                replace(r, name=f"{r.name}{WHOLE_STEP}")
                for r in evaluate(others, self.prometheus, cfg.query_context, seen.whole_step_seconds)
            ]
        return decided_on(seen, results, over_step), results + over_step

    # -- one pass ------------------------------------------------------------------------
    def run_once(self, outcome: RunOutcome | None = None) -> RunOutcome:
        """One pass: read, reconcile the record with the live mirror, decide, write, verify.

        The first pass of a run applies its options (restart, resume) to the state it reads;
        later passes (watch mode) do not, and a stop, rollback or pause that another run
        recorded since this run last looked ends this run's work on the service.
        """
        first = outcome is None
        snapshot = self.driver.read()
        outcome = outcome or RunOutcome(before=snapshot, after=snapshot)
        outcome.passes += 1
        policy = self.config.policy if first else self.config.policy.after_first_pass()
        for attempt in range(CONFLICT_RETRIES + 1):
            if self._seen is not None and (why := interrupted(self._seen, snapshot.state)):
                outcome.decisions.append(Decision(Action.LEFT, snapshot.state, None, False, why))
                outcome.after, outcome.ended = snapshot, why
                self.progress(f"{self.config.environment}/{self.config.service}: {why}")
                return outcome
            self._seen = snapshot.state
            try:
                self._pass(snapshot, policy, outcome)
                return outcome
            except ConflictError as e:
                outcome.conflicts += 1
                outcome.warnings.append(f"{e}; re-read and decided again (attempt {attempt + 1})")
                snapshot = self.driver.read()
        raise ConflictError(
            f"{self.driver.description} kept changing under this run ({CONFLICT_RETRIES + 1} conflicts); nothing changed"
        )

    def _pass(self, snapshot: TargetSnapshot, policy: Policy, outcome: RunOutcome) -> None:
        cfg = self.config
        now = self.clock()
        fix = reconcile(snapshot.state, cfg.plan, snapshot.percent, snapshot.mirror_drift, now)
        if fix is not None and not fix.state_dirty:
            snapshot, fix = replace(snapshot, state=fix.state), None
        if fix is not None:
            target = fix.target_percent if fix.target_percent is not None else snapshot.percent
            written = self._apply(snapshot, fix.state, target, now)
            self.progress(f"{cfg.environment}/{cfg.service}: {fix.reason}")
            if fix.warning:
                outcome.warnings.append(fix.warning)
            outcome.warnings.extend(self._post(fix, snapshot, written))
            outcome.decisions.append(fix)
            outcome.after, outcome.changed = written, outcome.changed or fix.changed
            snapshot = written
        if switches_mirror_on(snapshot.state, policy):
            # The first change of a ramp: every query must parse before the mirror goes on.
            restarting = snapshot.state.status != "pending"
            problem = self._check_queries(outcome, tries=RESTART_TRIES if restarting else 1)
            if problem:
                if restarting:
                    raise MirrorRampError(
                        f"restart=true: not restarted, the gate queries could not be checked in "
                        f"{RESTART_TRIES} tries: {problem}; the mirror stays off"
                    )
                gates = [GateResult("prometheus", "availability", "", Verdict.INCONCLUSIVE, reason=problem)]
                outcome.gates = gates
                self._done(outcome, fix, not_started(snapshot.state, problem), snapshot)
                return
        try:
            gates, shown = self._evaluate(snapshot.state, now)
        except QueryRejectedError as e:
            raise self._rejected(snapshot, policy, e, now, outcome) from e
        decision = decide(snapshot.state, cfg.plan, gates, now, policy)
        outcome.gates = shown
        if not decision.changed and not decision.state_dirty:
            self._done(outcome, fix, decision, snapshot)
            outcome.warnings.extend(self._post(decision, snapshot, snapshot))  # "held", if opted in
            return
        target = decision.target_percent if decision.target_percent is not None else snapshot.percent
        written = self._apply(snapshot, decision.state, target, now)
        self._done(outcome, fix, decision, written)
        outcome.changed = outcome.changed or decision.changed
        # A wait for approval is announced once: when it is first recorded.
        if decision.changed or _new_wait(decision, snapshot):
            outcome.warnings.extend(self._announce(decision, snapshot, written, shown))
        else:
            outcome.warnings.extend(self._post(decision, snapshot, written))  # "held", if opted in

    def _rejected(
        self, snapshot: TargetSnapshot, policy: Policy, error: QueryRejectedError, now: float, outcome: RunOutcome
    ) -> ConfigError:
        """A gate query Prometheus refuses is a configuration error: the task fails, naming it.

        The mirror stays as it is, unless the operator asked inconclusive checks to roll back:
        then it is removed first (a ramp nobody can judge is one the operator wants off).
        """
        if policy.inconclusive_action != "rollback" or snapshot.state.status not in MIRROR_ON:
            return ConfigError(f"{error}; the mirror stays at {snapshot.percent:g}%")
        decision = roll_back(snapshot.state, now, f"a gate query was rejected: {error}")
        outcome.after = self._apply(snapshot, decision.state, 0.0, now)
        outcome.decisions.append(decision)
        outcome.changed = True
        outcome.warnings.extend(self._announce(decision, snapshot, outcome.after, []))
        return ConfigError(f"{error}; mirror removed (inconclusive_action=rollback)")

    def _done(self, outcome: RunOutcome, fix: Decision | None, decision: Decision, after: TargetSnapshot) -> None:
        """Record the pass's decision and where it left the target; what reconciling did leads
        its line ("plan changed: ...")."""
        if fix is not None and fix.reason:
            decision = replace(decision, reason=f"{fix.reason}; {decision.reason}")
        outcome.decisions.append(decision)
        outcome.after = after

    def _check_queries(self, outcome: RunOutcome, *, tries: int) -> str:
        """ "" when every gate query parses, else why they could not be checked (after `tries`)."""
        problem = ""
        for attempt in range(tries):
            if attempt:
                self.sleep(RESTART_BACKOFF_SECONDS * attempt)
            try:
                warnings = check_queries(self.config.gates, self.prometheus, self.config.query_context)
            except PrometheusError as e:
                problem = f"cannot check the gate queries: {e}"
                continue
            if self.warn is None:
                outcome.warnings.extend(warnings)
            else:
                for warning in warnings:
                    self.warn(f"{self.config.service}: {warning}")
            return ""
        return problem

    def _apply(self, current: TargetSnapshot, state: RampState, percent: float, now: float) -> TargetSnapshot:
        """Store `state` and set the mirror to `percent`, in an order a crash cannot make unsafe.

        A driver whose state and mirror are one write (`atomic`) does both at once. Otherwise a
        raise records its intent first (the new step, `unconfirmed`), then sets the proxy, reads
        it back and confirms; a lowering sets the proxy first (the driver's write does). Killed
        at any point, the next run finds a record at or above the live mirror, or an unconfirmed
        raise it can finish or revert (machine.reconcile).
        """
        dry_run = self.config.dry_run
        if dry_run or self.driver.atomic or percent <= current.percent + PERCENT_EPSILON:
            written = self.driver.write(current, state, percent, dry_run=dry_run)
            if not dry_run:
                self._verify(percent, written)
        else:
            before = current.state
            origin = (
                {"status": before.status, "step_index": before.step_index, "percent": before.percent}
                | {"step_started_at": before.step_started_at}
                if before.status in MIRROR_ON
                else {"status": "pending", "step_index": None, "percent": 0.0, "step_started_at": None}
            )
            intent = state.evolve(unconfirmed={"at": now, **origin})
            recorded = self.driver.write(current, intent, current.percent, dry_run=False)
            self._seen = intent
            raised = self.driver.write(recorded, intent, percent, dry_run=False)
            self._verify(percent, raised)
            written = self.driver.write(raised, state, percent, dry_run=False)
        self._seen = written.state
        return written

    def _verify(self, percent: float, written: TargetSnapshot) -> None:
        """Read the target back: the write is done only when the live percent is the one set.

        A proxy's old instances can still answer for a moment after the new
        configuration does: a few reads, VERIFY_INTERVAL_SECONDS apart, before calling it failed.
        A version other than the one written means another run wrote since (an emergency stop):
        its percent is its own, not a failure of this write; the next read sees it.
        """
        for attempt in range(VERIFY_READS):
            if attempt:
                self.sleep(VERIFY_INTERVAL_SECONDS)
            live = self.driver.read()
            if abs(live.percent - percent) <= PERCENT_EPSILON or live.version != written.version:
                return
        raise DriverError(
            f"{self.driver.description}: wrote mirror {percent:g}% but read back {live.percent:g}% "
            f"({VERIFY_READS} reads over {VERIFY_READS * VERIFY_INTERVAL_SECONDS:g}s)"
        )

    def _announce(
        self, decision: Decision, before: TargetSnapshot, after: TargetSnapshot, gates: list[GateResult]
    ) -> list[str]:
        """Print the change with the gates it was decided on, then post its event (see _post)."""
        cfg = self.config
        summary = f"{cfg.environment}/{cfg.service}: {decision.reason}"
        self.progress("\n".join([summary, *(gate_row(gate) for gate in gates)]))
        return self._post(decision, before, after)

    def _post(self, decision: Decision, before: TargetSnapshot, after: TargetSnapshot) -> list[str]:
        """Post the decision's event to the webhooks (the notifier drops kinds not asked for).

        Called only once the write is verified: for a rollback or a stop the mirror is already
        removed, so a slow or failing receiver delays this report (by at most the notifier's
        budget), never the removal. Returns the webhooks' warnings.
        """
        cfg = self.config
        event = event_from_decision(
            decision,
            environment=cfg.environment,
            service=cfg.service,
            namespace=cfg.namespace,
            steps=len(cfg.plan),
            percent_before=before.percent,
            percent=after.percent,
            at=self.clock(),
            dry_run=cfg.dry_run,
        )
        if cfg.dry_run or event is None:
            return []
        return self.notifier.post(event)

    # -- the on-call operations ---------------------------------------------------------
    def stop(self, reason: str, by: str) -> RunOutcome:
        """Emergency stop: remove the mirror now, verified, and keep it off until a restart.

        Asks nothing of Prometheus. A stopped ramp whose mirror is back (someone re-applied it
        by hand) has it removed again.
        """
        conflicts: list[str] = []
        for attempt in range(CONFLICT_RETRIES + 1):
            snapshot = self.driver.read()
            now = self.clock()
            decision = emergency_stop(snapshot.state, now, reason, by, live_percent=snapshot.percent)
            outcome = RunOutcome(before=snapshot, after=snapshot, decisions=[decision], passes=1, warnings=conflicts)
            outcome.conflicts = len(conflicts)
            if decision.warning:
                outcome.warnings.append(decision.warning)
            if not decision.changed and snapshot.percent == 0:
                return outcome
            try:
                written = self._apply(snapshot, decision.state, 0.0, now)
            except ConflictError as e:
                conflicts.append(f"{e}; re-read and stopped again (attempt {attempt + 1})")
                continue
            outcome.after, outcome.changed = written, True
            outcome.warnings.extend(self._announce(decision, snapshot, written, []))
            return outcome
        raise ConflictError(
            f"{self.driver.description} kept changing under the stop ({CONFLICT_RETRIES + 1} conflicts); "
            "run the emergency stop again"
        )

    def status(self) -> RunOutcome:
        """Read the target and its stored state; change nothing, ask nothing of Prometheus."""
        snapshot = self.driver.read()
        return RunOutcome(before=snapshot, after=snapshot, passes=1)

    # -- modes ---------------------------------------------------------------------------
    def run(self, alive: Callable[[], bool] = lambda: True) -> RunOutcome:
        """This ramp alone (see run_all); an error of any pass is raised."""
        (result,) = run_all([self], alive=alive)
        if isinstance(result, MirrorRampError):
            raise result
        return result


def run_all(
    runners: Sequence[Runner],
    *,
    before_pass: Callable[[list[Runner]], None] = lambda _runners: None,
    alive: Callable[[], bool] = lambda: True,
) -> list[RunOutcome | MirrorRampError]:
    """Run every ramp of `runners` (one task: the same mode, poll interval and deadline).

    `scheduled` mode: one pass each. `watch`: pass after pass, every poll interval, until each
    ramp is completed, rolled back or stopped, or the deadline passes. Each pass looks at every
    ramp still going, one after the other; `before_pass` gets them first (to batch their reads
    and queries). A ramp whose pass fails (the API, a conflict that does not settle) is left
    out of the passes after it, with its error in its place: the others go on, so a rollback due
    on one service is never held back by another. A ramp that another run stopped, rolled back
    or paused meanwhile is left out too (RunOutcome.ended).

    `alive` is asked before every pass of a watch and while it waits: once it says no (the
    process that started the run is gone), the watch ends without another write. A watch whose
    controller was killed must not go on ramping on its own.
    """
    results: list[RunOutcome | MirrorRampError | None] = [None] * len(runners)

    def one_pass(indexes: list[int]) -> None:
        before_pass([runners[i] for i in indexes])
        for i in indexes:
            previous = results[i]
            try:
                outcome = runners[i].run_once(previous if isinstance(previous, RunOutcome) else None)
            except MirrorRampError as e:
                results[i] = e
                continue
            results[i] = outcome
            runners[i].on_pass(outcome)

    def going() -> list[tuple[int, RunOutcome]]:
        return [
            (i, result)
            for i, result in enumerate(results)
            if isinstance(result, RunOutcome) and result.after.state.status not in TERMINAL and not result.ended
        ]

    one_pass(list(range(len(runners))))
    config = runners[0].config if runners else None
    if config is not None and config.mode == "watch" and not config.dry_run:
        deadline = time.monotonic() + config.deadline_seconds
        while active := going():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for _, outcome in active:
                    outcome.warnings.append(
                        f"watch deadline of {format_duration(config.deadline_seconds)} reached; "
                        "the ramp goes on at the next run"
                    )
                break
            for i, outcome in active:
                last = outcome.last
                if last is not None and not last.changed:  # changes were announced already
                    runners[i].progress(f"{runners[i].config.environment}/{runners[i].config.service}: {last.reason}")
            if not _wait(runners[0].sleep, min(config.poll_interval, remaining), alive):
                for _, outcome in active:
                    outcome.warnings.append(
                        "the process that started this run is gone: the watch ends here, nothing more is "
                        "written; the ramp goes on at the next run"
                    )
                break
            one_pass([i for i, _ in active])
    return [result for result in results if result is not None]  # the first pass filled every slot


def _wait(sleep: Callable[[float], None], seconds: float, alive: Callable[[], bool]) -> bool:
    """Sleep `seconds` in slices of at most ALIVE_CHECK_SECONDS; False as soon as `alive` says no."""
    left = seconds
    while True:
        if not alive():
            return False
        if left <= 0:
            return True
        slice_ = min(ALIVE_CHECK_SECONDS, left)
        sleep(slice_)
        left -= slice_


def _new_wait(decision: Decision, before: TargetSnapshot) -> bool:
    """A wait for approval recorded by this decision (a wait already recorded is not news)."""
    history = decision.state.history
    return (
        decision.action is Action.WAIT
        and bool(history)
        and history[-1].get("event") == "waiting_for_approval"
        and history[-1:] != before.state.history[-1:]
    )
