"""How the engine words a gate and its numbers, in every place a person reads them: the summary
line and the gate table of a run (runner), the reason of a decision (machine), notifications
(notify), the ramp report (report), the status table (filter mirror_status_table), and a judge's
interval (gates, judge). Pure, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mirrorramp.model import GateResult


def number(value: object, *, missing: str = "-", digits: int = 4) -> str:
    """A value as messages show it: `digits` significant digits, NaN and +Inf/-Inf spelt as
    Prometheus writes them, `missing` for None, anything that is not a number as text."""
    if value is None:
        return missing
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.{digits}g}"


def describe_gate(gate: GateResult | Mapping) -> str:
    """One gate for a message: "error-ratio = 0.07 (must be <= 0.05): 5xx from the mirror".
    A stored gate (a dict of GateResult.as_dict, as the report keeps them) is worded the same."""
    fields = gate.as_dict() if isinstance(gate, GateResult) else gate
    text = str(fields.get("name"))
    if fields.get("value") is not None:
        text += f" = {number(fields['value'])}"
    threshold, operator = fields.get("threshold"), fields.get("operator")
    if threshold is not None:
        text += f" (must be {operator} {number(threshold)})" if operator else f" (threshold {number(threshold)})"
    if fields.get("reason"):
        text += f": {fields['reason']}"
    return text


def gate_row(gate: GateResult) -> str:
    """One line of the gate table printed with each change: verdict, name, value, threshold;
    a judge gate's estimate, interval, tolerance and sample sizes (its `summary`)."""
    if gate.kind == "judge" and "summary" in gate.extra:
        return f"    {gate.verdict:<12} {gate.name:<36} {gate.extra['summary']}"
    limit = f"{gate.operator or ''} {number(gate.threshold)}" if gate.threshold is not None else ""
    note = f"  ({gate.reason})" if gate.verdict != "pass" and gate.reason else ""
    return f"    {gate.verdict:<12} {gate.name:<36} {number(gate.value):>10} {limit}{note}".rstrip()


def interval(estimate: float | None, lower: float | None, upper: float | None, unit: str = "") -> str:
    """A judge's estimate and interval: "1.08x [0.97, 1.21]" (3 significant digits)."""

    def show(value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return "inf" if math.isinf(value) else f"{value:.3g}"

    return f"{show(estimate)}{unit} [{show(lower)}, {show(upper)}]"
