"""Pure filter: the failures of the checks of role mirror_monitoring, as its messages.

Each check was an assert task of its own: at least 0.05 s a task even when nothing failed (a forked
worker, plugin loading, the task's expressions compiled afresh). Here every check is one function,
in the order the tasks had, and the role loops one assert over the messages: a good inventory has
none.

Each message is the one the Jinja check gave, word for word, with its values written by Ansible's
own to_json filter and tested by Ansible's own match test; a key left out reads as null
(`default(none)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Number
from typing import Any

from ansible.plugins.filter.core import to_json
from ansible.plugins.test.core import match

# The documentation is mirror_monitoring_checks.yml beside this file (ansible-doc -t filter).

# The prometheus-operator kinds that scrape the sidecars.
_MONITOR_KINDS = ("PodMonitor", "ServiceMonitor")
# The thresholds the alert rules read, each per severity, in the order of the messages.
_THRESHOLD_METRICS = ("error_ratio", "p99_latency_ms")
_SEVERITIES = ("warning", "critical")


def _get(value: Any, key: str) -> Any:
    """`value.key | default(none)`: None where value is not a mapping or has no such key."""
    return value.get(key) if isinstance(value, Mapping) else None


def _kind_failures(scrape: Any, telemetry: Any) -> list[str]:
    # `labels | default({}) is mapping`: absent is fine, null is not.
    labels_ok = not isinstance(scrape, Mapping) or "labels" not in scrape or isinstance(scrape["labels"], Mapping)
    if _get(scrape, "kind") in _MONITOR_KINDS and labels_ok and isinstance(_get(telemetry, "enabled"), bool):
        return []
    return [
        f"mirror_monitoring = {to_json(scrape)}, mirror_telemetry = {to_json(telemetry)}: mirror_monitoring.kind "
        "must be PodMonitor or ServiceMonitor, mirror_monitoring.labels a mapping (or absent), and "
        "mirror_telemetry.enabled true or false"
    ]


def _duration_failures(durations: list[tuple[str, Any]], duration_pattern: str, duration_says: str) -> list[str]:
    return [
        f"{path} = {to_json(value)}: must be {duration_says}"
        for path, value in durations
        if not (isinstance(value, str) and match(value, duration_pattern))
    ]


def _threshold_failures(thresholds: Any) -> list[str]:
    failures = []
    for metric in _THRESHOLD_METRICS:
        for severity in _SEVERITIES:
            value = _get(_get(thresholds, metric), severity)
            if not (isinstance(value, Number) and not isinstance(value, bool)):
                failures.append(f"mirror_thresholds.{metric}.{severity} = {to_json(value)}: must be a number")
    return failures


def mirror_monitoring_checks(
    scrape: Any,
    telemetry: Any,
    thresholds: Any,
    alert_window: Any,
    alert_for: Any,
    no_traffic_for: Any,
    duration_pattern: str,
    duration_says: str,
) -> list[str]:
    """The message of every failed check of role mirror_monitoring, in the order of its checks."""
    durations = [
        ("mirror_monitoring.interval", _get(scrape, "interval")),
        ("mirror_alert_window", alert_window),
        ("mirror_alert_for.warning", _get(alert_for, "warning")),
        ("mirror_alert_for.critical", _get(alert_for, "critical")),
        ("mirror_no_traffic_for", no_traffic_for),
    ]
    return (
        _kind_failures(scrape, telemetry)
        + _duration_failures(durations, duration_pattern, duration_says)
        + _threshold_failures(thresholds)
    )


class FilterModule:
    def filters(self):
        return {"mirror_monitoring_checks": mirror_monitoring_checks}
