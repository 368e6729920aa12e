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
from mirrorramp.errors import ConflictError, DriverError, MirrorRampError, PrometheusError
from mirrorramp.gates import GateSet, check_queries, evaluate
from mirrorramp.machine import Action, Decision, Policy, decide, emergency_stop
from mirrorramp.model import GateResult, Step, Verdict
from mirrorramp.notify import Notifier, event_from_decision
from mirrorramp.prometheus import PrometheusClient
from mirrorramp.state import RampState

# States in which the mirror may be on, so the gates are evaluated.
WATCHED_STATUSES = ("ramping", "paused", "completed")
TERMINAL_STATUSES = ("completed", "rolled_back", "stopped")
CONFLICT_RETRIES = 3


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

    # -- gates ---------------------------------------------------------------------------
    def _evaluate(self, state: RampState, now: float) -> tuple[list[GateResult] | None, list[GateResult]]:
        """(what the state machine decides on, what the result shows) for `state`.

        None when the mirror is off (nothing to look at). The recent window catches a breach
        now; once the hold has elapsed a second look over the whole step (since it started) must
        pass too, so an alert that fired and resolved between two scheduled runs still fails the
        step. Whole-step results that pass are shown but not decided on: they add nothing, and
        recording them would rewrite the stored verdicts each time a hold ends.
        """
        if state.status not in WATCHED_STATUSES:
            return None, []
        cfg = self.config
        results = evaluate(cfg.gates, self.prometheus, cfg.query_context, cfg.window_seconds)
        step = cfg.plan[state.step_index] if state.step_index is not None else None
        if (
            state.status == "ramping"
            and step is not None
            and state.step_started_at is not None
            and now - state.step_started_at >= step.hold_seconds
            # A step younger than the window was just looked at in whole.
            and now - state.step_started_at > cfg.window_seconds
            and all(r.verdict is not Verdict.FAIL for r in results)
        ):
            whole_step = now - state.step_started_at
            over_step = [
                replace(r, name=f"{r.name} (whole step)")
                for r in evaluate(cfg.gates, self.prometheus, cfg.query_context, whole_step)
            ]
            return results + [r for r in over_step if r.verdict is not Verdict.PASS], results + over_step
        return results, results

    # -- one pass ------------------------------------------------------------------------
    def run_once(self, outcome: RunOutcome | None = None) -> RunOutcome:
        snapshot = self.driver.read()
        outcome = outcome or RunOutcome(before=snapshot, after=snapshot)
        outcome.passes += 1
        for attempt in range(CONFLICT_RETRIES + 1):
            now = self.clock()
            status = snapshot.state.status
            if status == "pending" or (self.config.policy.restart and status in ("rolled_back", "stopped")):
                # The first change of a ramp: every query must parse before the mirror goes on.
                try:
                    outcome.warnings.extend(
                        check_queries(self.config.gates, self.prometheus, self.config.query_context)
                    )
                except PrometheusError as e:
                    gates = [
                        GateResult(
                            name="prometheus",
                            kind="availability",
                            query="",
                            verdict=Verdict.INCONCLUSIVE,
                            reason=f"cannot check the gate queries: {e}",
                        )
                    ]
                    decision = decide(snapshot.state, self.config.plan, gates, now, self.config.policy)
                    decision = _never_start(decision, snapshot, gates)
                    outcome.gates = gates
                    outcome.decisions.append(decision)
                    outcome.after = snapshot
                    return outcome
            gates, shown = self._evaluate(snapshot.state, now)
            decision = decide(snapshot.state, self.config.plan, gates, now, self.config.policy)
            outcome.gates = shown
            if not decision.changed and not decision.state_dirty:
                outcome.decisions.append(decision)
                outcome.after = snapshot
                outcome.warnings.extend(self._post(decision, snapshot, snapshot))  # "held", if opted in
                return outcome
            target = decision.target_percent if decision.target_percent is not None else snapshot.percent
            try:
                written = self.driver.write(snapshot, decision.state, target, dry_run=self.config.dry_run)
            except ConflictError as e:
                outcome.conflicts += 1
                outcome.warnings.append(f"{e}; re-read and decided again (attempt {attempt + 1})")
                snapshot = self.driver.read()
                continue
            if not self.config.dry_run:
                self._verify(target)
            outcome.decisions.append(decision)
            outcome.after = written
            outcome.changed = outcome.changed or decision.changed
            # A wait for approval is announced once: when it is first recorded.
            if decision.changed or _new_wait(decision, snapshot):
                outcome.warnings.extend(self._announce(decision, snapshot, written, shown))
            else:
                outcome.warnings.extend(self._post(decision, snapshot, written))  # "held", if opted in
            return outcome
        raise ConflictError(
            f"{self.driver.description} kept changing under this run ({CONFLICT_RETRIES + 1} conflicts); nothing changed"
        )

    def _verify(self, percent: float) -> None:
        """Read the target back: the write is done only when the live percent is the one set."""
        live = self.driver.read()
        if abs(live.percent - percent) > 1e-9:
            raise DriverError(f"{self.driver.description}: wrote mirror {percent:g}% but read back {live.percent:g}%")

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
            decision = emergency_stop(snapshot.state, self.clock(), reason, by)
            outcome = RunOutcome(before=snapshot, after=snapshot, decisions=[decision], passes=1, warnings=conflicts)
            outcome.conflicts = len(conflicts)
            if not decision.changed and snapshot.percent == 0:
                return outcome
            try:
                written = self.driver.write(snapshot, decision.state, 0.0, dry_run=self.config.dry_run)
            except ConflictError as e:
                conflicts.append(f"{e}; re-read and stopped again (attempt {attempt + 1})")
                continue
            if not self.config.dry_run:
                self._verify(0.0)
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
    def run(self) -> RunOutcome:
        """This ramp alone (see run_all); an error of any pass is raised."""
        (result,) = run_all([self])
        if isinstance(result, MirrorRampError):
            raise result
        return result


def run_all(
    runners: Sequence[Runner],
    *,
    before_pass: Callable[[list[Runner]], None] = lambda _runners: None,
) -> list[RunOutcome | MirrorRampError]:
    """Run every ramp of `runners` (one task: the same mode, poll interval and deadline).

    `scheduled` mode: one pass each. `watch`: pass after pass, every poll interval, until each
    ramp is completed, rolled back or stopped, or the deadline passes. Each pass looks at every
    ramp still going, one after the other; `before_pass` gets them first (to batch their reads
    and queries). A ramp whose pass fails (the API, a conflict that does not settle) is left
    out of the passes after it, with its error in its place: the others go on, so a rollback due
    on one service is never held back by another.
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
            if isinstance(result, RunOutcome) and result.after.state.status not in TERMINAL_STATUSES
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
            runners[0].sleep(min(config.poll_interval, remaining))
            one_pass([i for i, _ in active])
    return [result for result in results if result is not None]  # the first pass filled every slot


def _new_wait(decision: Decision, before: TargetSnapshot) -> bool:
    """A wait for approval recorded by this decision (a wait already recorded is not news)."""
    history = decision.state.history
    return (
        decision.action is Action.WAIT
        and bool(history)
        and history[-1].get("event") == "waiting_for_approval"
        and history[-1:] != before.state.history[-1:]
    )


def gate_row(gate: GateResult) -> str:
    """One line of the gate table printed with each change: verdict, name, value, threshold."""
    value = "-" if gate.value is None else f"{gate.value:.4g}"
    limit = f"{gate.operator or ''} {gate.threshold:.4g}" if gate.threshold is not None else ""
    note = f"  ({gate.reason})" if gate.verdict is not Verdict.PASS and gate.reason else ""
    return f"    {gate.verdict:<12} {gate.name:<36} {value:>10} {limit}{note}".rstrip()


def _never_start(decision: Decision, snapshot: TargetSnapshot, gates: list[GateResult]) -> Decision:
    """Without a successful query check nothing may change: keep the target as it is."""
    if decision.changed:
        reason = f"not started: {gates[0].reason}"
        return replace(
            decision,
            action=Action.HOLD,
            state=snapshot.state,
            target_percent=snapshot.percent,
            changed=False,
            state_dirty=False,
            reason=reason,
        )
    return decision
