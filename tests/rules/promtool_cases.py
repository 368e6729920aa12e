"""Write `promtool test rules` files from a rendered environment.

Every number comes from the environment's inputs (group_vars as the role read them): each alert is
driven just above and just below each of its thresholds (x1.05, x0.95), so a rule that used another
threshold, window or `for` fails the test. The input series are Istio's real metrics as a sidecar
reports them for the mirror workload (reporter="destination").

Timing: one sample and one rule evaluation every `step` seconds (a tenth of the rate window), so
every rate has enough samples; the alerts are checked once while they can only be pending (before
their `for` has elapsed) and once after every `for` has elapsed.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.rules.monitoring_render import Render, Target, duration_seconds

PROMTOOL = "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else (shutil.which("promtool") or "promtool")
SEVERITIES = ("warning", "critical")
# Requests per step: fine enough that a ratio 5% away from a threshold is exact in counts.
REQUESTS_PER_STEP = 100_000
# Cases closer than this (relative) to a threshold they are not aimed at are left out: the float
# arithmetic of rate() would decide them, not the rule.
MARGIN = 0.01
QUANTILE = 0.99


@dataclass(frozen=True)
class Timing:
    step: int  # seconds between samples and between rule evaluations
    end: int  # seconds: every `for` has elapsed by then

    @property
    def samples(self) -> int:
        """The N of promtool's "a+bxN" (N + 1 samples), up to `end`."""
        return self.end // self.step + 1


def timing(render: Render) -> Timing:
    inputs = render.inputs
    step = max(1, int(duration_seconds(inputs["alert_window"]) // 10))
    longest = max(
        duration_seconds(inputs["no_traffic_for"]),
        *(duration_seconds(inputs["alert_for"][severity]) for severity in SEVERITIES),
    )
    return Timing(step=step, end=math.ceil(longest / step) * step + 3 * step)


def _seconds(value: int) -> str:
    return f"{value}s"


def _series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ", ".join(f"{name}={json.dumps(value)}" for name, value in labels.items())
    return {"series": f"{metric}{{{body}}}", "values": values}


def _workload_labels(target: Target, workload: str, reporter: str = "destination") -> dict[str, str]:
    return {
        "reporter": reporter,
        "destination_workload_namespace": target.namespace,
        "destination_workload": workload,
    }


def _counter(per_step: float, timing: Timing) -> str:
    return f"0+{per_step:g}x{timing.samples}"


def requests(
    target: Target, workload: str, code: str, per_step: float, timing: Timing, reporter: str = "destination"
) -> dict[str, str]:
    labels = {**_workload_labels(target, workload, reporter), "response_code": code}
    return _series("istio_requests_total", labels, _counter(per_step, timing))


def duration_buckets(target: Target, upper_ms: str, per_step: float, timing: Timing) -> list[dict[str, str]]:
    """Every request in the bucket (0, upper_ms]: the p99 is QUANTILE * upper_ms."""
    return [
        _series(
            "istio_request_duration_milliseconds_bucket",
            {**_workload_labels(target, target.workload), "le": le},
            _counter(per_step, timing),
        )
        for le in (upper_ms, "+Inf")
    ]


def _rule(render: Render, alertname: str, severity: str, target: Target) -> dict[str, Any]:
    for group in render.rule_groups():
        for rule in group["rules"]:
            labels = rule.get("labels", {})
            if (
                rule.get("alert") == alertname
                and labels.get("severity") == severity
                and labels.get("service") == target.service
                and labels.get("workload") == target.workload
            ):
                return rule
    raise AssertionError(f"{render.rules_file}: no {alertname} {severity} rule for {target}")


def expected_alert(render: Render, alertname: str, severity: str, target: Target) -> dict[str, Any]:
    """The alert as promtool reports it: the labels the gates match, the rule's (static) annotations."""
    return {
        "exp_labels": {
            "severity": severity,
            "service": target.service,
            "namespace": target.namespace,
            "environment": render.inputs["environment"],
            "workload": target.workload,
        },
        "exp_annotations": _rule(render, alertname, severity, target)["annotations"],
    }


def _checks(
    render: Render, alertname: str, firing: Iterable[tuple[str, Target]], fors: Iterable[str], timing: Timing
) -> list[dict[str, Any]]:
    """Nothing fires while the alerts can only be pending; then exactly `firing` fires."""
    firing = list(firing)
    checks = []
    shortest = min((duration_seconds(text) for text in fors), default=0)
    if firing and shortest > 0:
        pending_until = max(timing.step, int(shortest // timing.step) * timing.step)
        checks.append({"eval_time": _seconds(pending_until), "alertname": alertname, "exp_alerts": []})
    checks.append(
        {
            "eval_time": _seconds(timing.end),
            "alertname": alertname,
            "exp_alerts": [expected_alert(render, alertname, severity, target) for severity, target in firing],
        }
    )
    return checks


def _near_another_threshold(value: float, limits: dict[str, float], aimed: float) -> bool:
    return any(limit != aimed and abs(value - limit) <= MARGIN * limit for limit in limits.values())


def threshold_values(limits: dict[str, float], upper: float | None = None) -> list[tuple[str, float, float]]:
    """(case name, value, aimed threshold): x0.95 and x1.05 of each threshold."""
    values = []
    for severity in SEVERITIES:
        aimed = float(limits[severity])
        for side, factor in (("below", 1 - 5 * MARGIN), ("above", 1 + 5 * MARGIN)):
            value = aimed * factor
            if upper is not None and value > upper:
                continue
            values.append((f"{side} the {severity} threshold", value, aimed))
    return values


@dataclass(frozen=True)
class Case:
    """One promtool test group, with the severities it expects to fire per mirror workload."""

    alertname: str
    name: str
    fires: tuple[str, ...]
    group: dict[str, Any]


def error_ratio_cases(render: Render) -> list[Case]:
    alertname = "MirrorErrorRatioHigh"
    limits = {severity: float(render.inputs["thresholds"]["error_ratio"][severity]) for severity in SEVERITIES}
    fors = [render.inputs["alert_for"][severity] for severity in SEVERITIES]
    t = timing(render)
    targets = render.targets()
    cases = []
    for name, value, aimed in threshold_values(limits, upper=1.0):
        errors = round(value * REQUESTS_PER_STEP)
        ratio = errors / REQUESTS_PER_STEP
        if abs(ratio - aimed) <= MARGIN * aimed or _near_another_threshold(ratio, limits, aimed):
            continue
        fires = tuple(severity for severity in SEVERITIES if ratio > limits[severity])
        series = []
        for target in targets:
            series.append(requests(target, target.workload, "200", REQUESTS_PER_STEP - errors, t))
            series.append(requests(target, target.workload, "503", errors, t))
            # The caller's view of the same workload: must not count (mirrored requests have none).
            series.append(requests(target, target.workload, "503", REQUESTS_PER_STEP, t, reporter="source"))
        firing = [(severity, target) for target in targets for severity in fires]
        group = {
            "name": f"{alertname}: 5xx ratio {ratio:g}, {name}",
            "interval": _seconds(t.step),
            "input_series": series,
            "alert_rule_test": _checks(render, alertname, firing, fors, t),
        }
        cases.append(Case(alertname, name, fires, group))
    idle = [requests(target, target.workload, code, 0, t) for target in targets for code in ("200", "503")]
    cases.append(Case(alertname, "idle mirror (0/0)", (), _idle_group(alertname, idle, t)))
    return cases


def latency_cases(render: Render) -> list[Case]:
    alertname = "MirrorLatencyP99High"
    limits = {severity: float(render.inputs["thresholds"]["p99_latency_ms"][severity]) for severity in SEVERITIES}
    fors = [render.inputs["alert_for"][severity] for severity in SEVERITIES]
    t = timing(render)
    targets = render.targets()
    cases = []
    for name, value, aimed in threshold_values(limits):
        upper_ms = f"{value / QUANTILE:.9g}"
        p99 = float(upper_ms) * QUANTILE
        if abs(p99 - aimed) <= MARGIN * aimed or _near_another_threshold(p99, limits, aimed):
            continue
        fires = tuple(severity for severity in SEVERITIES if p99 > limits[severity])
        series = [s for target in targets for s in duration_buckets(target, upper_ms, REQUESTS_PER_STEP, t)]
        firing = [(severity, target) for target in targets for severity in fires]
        group = {
            "name": f"{alertname}: p99 {p99:g} ms, {name}",
            "interval": _seconds(t.step),
            "input_series": series,
            "alert_rule_test": _checks(render, alertname, firing, fors, t),
        }
        cases.append(Case(alertname, name, fires, group))
    idle = [s for target in targets for s in duration_buckets(target, "500", 0, t)]
    cases.append(Case(alertname, "idle mirror (NaN quantile)", (), _idle_group(alertname, idle, t)))
    return cases


def no_traffic_cases(render: Render) -> list[Case]:
    alertname = "MirrorNoTraffic"
    fors = [render.inputs["no_traffic_for"]]
    t = timing(render)
    targets = render.targets()
    primaries = {(target.namespace, target.primary): target for target in targets}

    def primary(per_step: float) -> list[dict[str, str]]:
        return [requests(target, target.primary, "200", per_step, t) for target in primaries.values()]

    def mirror(per_step: float) -> list[dict[str, str]]:
        return [requests(target, target.workload, "200", per_step, t) for target in targets]

    variants = [
        ("mirror workloads without any series", primary(100), ("warning",)),
        ("mirror workloads stalled (flat counters)", primary(100) + mirror(0), ("warning",)),
        ("mirror workloads receive requests", primary(100) + mirror(1), ()),
        ("primary idle, mirror without series", primary(0), ()),
    ]
    cases = []
    for name, series, fires in variants:
        firing = [(severity, target) for target in targets for severity in fires]
        group = {
            "name": f"{alertname}: {name}",
            "interval": _seconds(t.step),
            "input_series": series,
            "alert_rule_test": _checks(render, alertname, firing, fors, t),
        }
        cases.append(Case(alertname, name, fires, group))
    return cases


def _idle_group(alertname: str, series: list[dict[str, str]], t: Timing) -> dict[str, Any]:
    return {
        "name": f"{alertname}: idle mirror",
        "interval": _seconds(t.step),
        "input_series": series,
        "alert_rule_test": [{"eval_time": _seconds(t.end), "alertname": alertname, "exp_alerts": []}],
    }


CASE_BUILDERS = {
    "MirrorErrorRatioHigh": error_ratio_cases,
    "MirrorLatencyP99High": latency_cases,
    "MirrorNoTraffic": no_traffic_cases,
}


def write_test_file(render: Render, cases: list[Case], path: Path) -> Path:
    document = {
        "rule_files": [str(render.rules_file)],
        "evaluation_interval": _seconds(timing(render).step),
        "tests": [case.group for case in cases],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=200))
    return path


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)
