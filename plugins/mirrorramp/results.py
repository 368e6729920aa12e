"""The task's result of a run: one service's dict, the rows of many, the status line and row.

JSON-safe dicts, as Ansible registers them; secrets never enter them (the request's notifier and
tokens are not read here).
"""

from __future__ import annotations

import time
from typing import Any

from mirrorramp.arguments import RampRequest
from mirrorramp.drivers.base import TargetSnapshot
from mirrorramp.durations import prometheus_duration
from mirrorramp.errors import MirrorRampError
from mirrorramp.machine import WHOLE_STEP, reconcile, when
from mirrorramp.runner import RampConfig, RunOutcome


def combined_result(requests: list[RampRequest], results: list[dict | MirrorRampError]) -> dict:
    """The task result of many services: one row each under `results`, as a loop registers them."""
    rows, failed, warnings, diffs = [], [], [], []
    for request, result in zip(requests, results, strict=True):
        cfg = request.config
        if isinstance(result, MirrorRampError):
            row = {
                "service": cfg.service,
                "namespace": cfg.namespace,
                "environment": cfg.environment,
                "changed": False,
                "failed": True,
                "msg": f"{cfg.service}: {result}",
            }
            failed.append(row["msg"])
        else:
            row = dict(result)
            warnings.extend(f"{cfg.service}: {warning}" for warning in row.pop("warnings", []))
            if "diff" in row:  # shown once, at the task's level (a list: one per service)
                diffs.append(row.pop("diff"))
        rows.append(row)
    changed = sum(1 for row in rows if row["changed"])
    combined: dict[str, Any] = {
        "changed": changed > 0,
        "results": rows,
        "warnings": warnings,
        "msg": f"{len(rows)} service(s): {changed} changed, {len(rows) - changed - len(failed)} unchanged"
        + (f", {len(failed)} failed: " + "; ".join(failed) if failed else ""),
    }
    if failed:
        combined["failed"] = True
    if diffs:
        combined["diff"] = diffs
    return combined


def row_line(row: dict) -> str:
    """One line per service in the task's output: what happened to it and why."""
    word = "failed" if row.get("failed") else "changed" if row["changed"] else "ok"
    return f"{word}: [{row['environment']}] {row['msg']}"


def status_row(config: RampConfig, outcome: RunOutcome, now: float | None = None) -> dict:
    """One row of playbooks/status.yml: where the ramp is and what it last saw."""
    state = outcome.after.state
    now = time.time() if now is None else now
    index = state.step_index
    next_advance = None
    # A plan changed since the state was written may be shorter: the next run re-maps the ramp.
    if state.status == "ramping" and index is not None and index < len(config.plan) and state.step_started_at:
        next_advance = when(state.step_started_at + config.plan[index].hold_seconds)
    since = state.step_started_at if state.status in ("ramping", "paused") else state.updated_at
    gates = [
        {key: g.get(key) for key in ("name", "verdict", "value", "operator", "threshold")}
        for g in state.last_gates
        if not str(g.get("name")).endswith(WHOLE_STEP)
    ]
    return {
        "service": config.service,
        "environment": config.environment,
        "state": state.status + (" (unconfirmed)" if state.unconfirmed else ""),
        "step": f"{index + 1}/{len(config.plan)}" if index is not None else f"-/{len(config.plan)}",
        "percent": outcome.after.percent,
        "since": when(since) if since is not None else "-",
        "next_advance": next_advance or "-",
        "last_gates": gates,
        "attention": _disagreement(config, outcome.after, now),
    }


def _disagreement(config: RampConfig, snapshot: TargetSnapshot, now: float) -> str:
    """What the next run will do to make the record and the live mirror agree; "" when they do."""
    fix = reconcile(snapshot.state, config.plan, snapshot.percent, snapshot.mirror_drift, now)
    if fix is None or not fix.reason:
        return ""
    return f"the record and the live mirror disagree; the next run reconciles them: {fix.reason}"


def _settings(snapshot: TargetSnapshot) -> dict:
    return {"percent": snapshot.percent, "state": snapshot.state.status, "mirror": snapshot.mirror_settings}


def result_of(request: RampRequest, outcome: RunOutcome) -> dict:
    cfg = request.config
    state = outcome.after.state
    decision = outcome.last
    step_index = state.step_index
    result: dict[str, Any] = {
        "changed": outcome.changed,
        "service": cfg.service,
        "namespace": cfg.namespace,
        "environment": cfg.environment,
        "state": state.status,
        "step": (step_index + 1) if step_index is not None else 0,
        "steps": len(cfg.plan),
        "percent": outcome.after.percent,
        "previous_percent": outcome.before.percent,
        "action": str(decision.action) if decision else "none",
        "gates": [g.as_dict() for g in outcome.gates],
        "conflicts": outcome.conflicts,
        "passes": outcome.passes,
        "rollback": state.rollback,
        "seconds_left": decision.seconds_left if decision else None,
        "window": prometheus_duration(cfg.window_seconds),
        "msg": _summary(cfg.service, outcome, request.config.dry_run),
        "warnings": list(outcome.warnings),
    }
    if request.diff and outcome.changed:
        result["diff"] = {
            "before_header": f"{cfg.service} mirror (before)",
            "after_header": f"{cfg.service} mirror (after)",
            "before": _settings(outcome.before),
            "after": _settings(outcome.after),
        }
    return result


def _summary(service: str, outcome: RunOutcome, dry_run: bool) -> str:
    decision = outcome.last
    reason = decision.reason if decision else "nothing decided"
    prefix = "(check mode, nothing written) " if dry_run and outcome.changed else ""
    conflict = f"; {outcome.conflicts} conflict(s) with another run" if outcome.conflicts else ""
    return f"{prefix}{service}: {reason}{conflict}"
