"""Every input check of the role mirror_preflight: one case per check.

Each case overrides one inventory variable of the local inventory (the whole value, as `-e` would)
and expects the preflight to fail with a message that names the variable by its full path and the
bad value. To keep this fast, all cases run in ONE ansible-playbook run of the role alone: the cases
are packed onto the hosts of a generated inventory (host vars override group_vars/all), never two
cases that set one variable to different values on one host: the preflight reports every bad input of
a host together, so each case still finds its own message. The good cases (GOOD: optional inputs left out,
every form the engine reads) are packed the same way onto hosts of their own, which must pass. One
case goes through playbooks/render.yml to prove that nothing is written.

The rules shared with other code are also held to it directly, without Ansible: the Envoy duration
pattern against role mirror_proxy's, the keys of the gates and the steps against the engine's, the
keys of a service against docs/configuration.md, each driver's percent resolution against the
driver and the filter mirror_unknown_keys. (The hold is checked by the engine's own parser:
tests/unit/test_filters_engine_rules.py.)
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from mirrorramp.arguments import ARGUMENT_SPEC
from mirrorramp.drivers.envoy import check_percent
from mirrorramp.errors import ConfigError
from mirrorramp.gates import GATES_KEYS, parse_gates
from mirrorramp.plan import STEP_KEYS
from tests.support.ansible_run import REPO_ROOT, run_playbook
from tests.support.plugin_files import load_filter

BASE_INVENTORY = REPO_ROOT / "inventories" / "local"
GROUP_VARS = BASE_INVENTORY / "group_vars" / "all"
FINAL_CHECK = "Fail with every failed input check"


def base_vars() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted(GROUP_VARS.glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


BASE = base_vars()
FAULT_ON = {
    "enabled": True,
    "delay": {"percent": 1, "fixed_delay": "2s"},
    "abort": {"percent": 0.5, "http_status": 503},
}


def services(change: Callable[[list[dict]], None]) -> dict[str, Any]:
    """mirror_services of the base inventory with one change."""
    value = copy.deepcopy(BASE["mirror_services"])
    change(value)
    return {"mirror_services": value}


def var(name: str, change: Callable[[Any], Any]) -> dict[str, Any]:
    """Variable `name` of the base inventory, changed by `change` (which may mutate or return)."""
    value = copy.deepcopy(BASE[name])
    result = change(value)
    return {name: value if result is None else result}


def fault(change: Callable[[dict], None]) -> dict[str, Any]:
    proxy = copy.deepcopy(BASE["mirror_proxy"])
    proxy["fault"] = copy.deepcopy(FAULT_ON)
    change(proxy["fault"])
    return {"mirror_proxy": proxy}


def proxy_feature(feature: str, **settings: Any) -> dict[str, Any]:
    """mirror_proxy of the base inventory with `feature` enabled and set to `settings`."""
    proxy = copy.deepcopy(BASE["mirror_proxy"])
    proxy[feature] = {"enabled": True, **settings}
    return {"mirror_proxy": proxy}


RATE_LIMIT = {"max_tokens": 10, "tokens_per_fill": 10}
ADAPTIVE = {"sample_percentile": 90, "min_rtt_request_count": 50}


def set_key(path: str, value: Any) -> Callable[[Any], None]:
    """A change that sets `value` at a dotted path such as '0.subsets.1.name'."""

    def change(data: Any) -> None:
        *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
        for part in parents:
            data = data[part]
        data[last] = value

    return change


def delete_key(path: str) -> Callable[[Any], None]:
    def change(data: Any) -> None:
        *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
        for part in parents:
            data = data[part]
        del data[last]

    return change


def with_baseline(name: Any, labels: dict | None = None) -> Callable[[list[dict]], None]:
    """A baseline subset (labels {version: v1-baseline} unless given) and baseline_subset `name`."""

    def change(svcs: list[dict]) -> None:
        subset = {"name": "baseline", "labels": labels or {"version": "v1-baseline"}, "workload": "demo-baseline"}
        svcs[0]["subsets"].append(subset)
        svcs[0]["baseline_subset"] = name

    return change


def duplicate_first(key: str) -> Callable[[list[dict]], None]:
    def change(svcs: list[dict]) -> None:
        if key == "service":
            svcs.append(copy.deepcopy(svcs[0]))
        else:
            svcs[0]["subsets"].append(copy.deepcopy(svcs[0]["subsets"][1]))

    return change


def steps(*pairs: tuple[Any, Any]) -> dict[str, Any]:
    return {"mirror_ramp_steps": [{"percent": p, "hold": h} for p, h in pairs]}


# id, overrides, the path the message must name, the bad value as the message shows it (JSON).
CASES = [
    ("environment-unknown", {"mirror_environment": "qa"}, "mirror_environment", '"qa"'),
    ("namespace-not-dns-label", {"mirror_namespace": "Shop_Dev"}, "mirror_namespace", '"Shop_Dev"'),
    ("namespace-too-long", {"mirror_namespace": "a" * 64}, "mirror_namespace", '"' + "a" * 64 + '"'),
    (
        "service-namespace-not-dns-label",
        services(set_key("0.namespace", "-shop")),
        "mirror_services[0].namespace",
        '"-shop"',
    ),
    (
        "hpa-namespace-not-dns-label",
        var("mirror_gateway_hpa", set_key("namespace", "istio.system")),
        "mirror_gateway_hpa.namespace",
        '"istio.system"',
    ),
    ("services-empty", {"mirror_services": []}, "mirror_services", "[]"),
    (
        "service-name-not-dns-label",
        services(set_key("0.name", "Demo_Service")),
        "mirror_services[0].name",
        '"Demo_Service"',
    ),
    ("service-name-duplicate", services(duplicate_first("service")), "mirror_services[1].name", '"demo-service"'),
    (
        "mirror-percent-above-100",
        services(set_key("0.mirror_percent", 150)),
        "mirror_services[0].mirror_percent",
        "150",
    ),
    (
        "mirror-percent-negative",
        services(set_key("0.mirror_percent", -0.5)),
        "mirror_services[0].mirror_percent",
        "-0.5",
    ),
    (
        "mirror-percent-not-a-number",
        services(set_key("0.mirror_percent", "ten")),
        "mirror_services[0].mirror_percent",
        '"ten"',
    ),
    ("port-zero", services(set_key("0.port", 0)), "mirror_services[0].port", "0"),
    ("port-above-65535", services(set_key("0.port", 70000)), "mirror_services[0].port", "70000"),
    ("grpc-port-above-65535", services(set_key("0.grpc", {"port": 65536})), "mirror_services[0].grpc.port", "65536"),
    ("subsets-empty", services(set_key("0.subsets", [])), "mirror_services[0].subsets", "[]"),
    (
        "subset-name-not-dns-label",
        services(set_key("0.subsets.1.name", "Candidate")),
        "mirror_services[0].subsets[1].name",
        '"Candidate"',
    ),
    (
        "subset-name-duplicate",
        services(duplicate_first("subset")),
        "mirror_services[0].subsets[2].name",
        '"candidate"',
    ),
    ("subset-labels-empty", services(set_key("0.subsets.1.labels", {})), "mirror_services[0].subsets[1].labels", "{}"),
    (
        "subset-workload-missing",
        services(delete_key("0.subsets.1.workload")),
        "mirror_services[0].subsets[1].workload",
        "null",
    ),
    (
        # The ramp refuses it when it starts (plugins/mirrorramp/arguments.py DNS1123_LABEL).
        "subset-workload-not-dns-label",
        services(set_key("0.subsets.1.workload", "Demo_Service.v2")),
        "mirror_services[0].subsets[1].workload",
        '"Demo_Service.v2"',
    ),
    (
        "subset-workload-too-long",
        services(set_key("0.subsets.0.workload", "w" * 64)),
        "mirror_services[0].subsets[0].workload",
        '"' + "w" * 64 + '"',
    ),
    (
        "primary-subset-unknown",
        services(set_key("0.primary_subset", "main")),
        "mirror_services[0].primary_subset",
        '"main"',
    ),
    ("mirrors-empty", services(set_key("0.mirrors", [])), "mirror_services[0].mirrors", "[]"),
    (
        "mirror-subset-unknown",
        services(set_key("0.mirrors.0.subset", "canary")),
        "mirror_services[0].mirrors[0].subset",
        '"canary"',
    ),
    (
        "mirror-subset-is-primary",
        services(set_key("0.mirrors.0.subset", "primary")),
        "mirror_services[0].mirrors[0].subset",
        '"primary"',
    ),
    (
        "baseline-subset-unknown",
        services(with_baseline("shadow")),
        "mirror_services[0].baseline_subset",
        '"shadow"',
    ),
    (
        "baseline-subset-is-primary",
        services(with_baseline("primary")),
        "mirror_services[0].baseline_subset",
        '"primary"',
    ),
    (
        # Its workload would be counted as the candidate's.
        "baseline-subset-is-a-mirror",
        services(with_baseline("candidate")),
        "mirror_services[0].baseline_subset",
        '"candidate"',
    ),
    (
        "baseline-subset-not-a-string",
        services(with_baseline(["baseline"])),
        "mirror_services[0].baseline_subset",
        '["baseline"]',
    ),
    (
        # {version: v1} selects the pods of {version: v1, track: baseline}: users would reach them.
        "baseline-labels-select-the-primarys-pods",
        services(with_baseline("baseline", {"version": "v1", "track": "baseline"})),
        "mirror_services[0].baseline_subset",
        '"baseline"',
    ),
    (
        "baseline-labels-selected-by-the-primary",
        services(with_baseline("baseline", {"track": "baseline"})),
        "mirror_services[0].baseline_subset",
        '"baseline"',
    ),
    (
        "threshold-warning-above-critical",
        var("mirror_thresholds", set_key("p99_latency_ms.warning", 2000)),
        "mirror_thresholds.p99_latency_ms",
        "2000",
    ),
    (
        "threshold-negative",
        var("mirror_thresholds", set_key("p99_latency_ms.warning", -1)),
        "mirror_thresholds.p99_latency_ms.warning",
        "-1",
    ),
    (
        # A missing severity is named, not a Jinja error about a dict.
        "threshold-severity-missing",
        var("mirror_thresholds", delete_key("error_ratio.warning")),
        "mirror_thresholds.error_ratio.warning",
        "null",
    ),
    (
        "error-ratio-above-one",
        var("mirror_thresholds", set_key("error_ratio.critical", 5)),
        "mirror_thresholds.error_ratio.critical",
        "5",
    ),
    (
        "duration-timeout",
        services(set_key("0.timeout", "5 seconds")),
        "mirror_services[0].timeout",
        '"5 seconds"',
    ),
    (
        "duration-per-try-timeout",
        services(set_key("0.retries", {"attempts": 2, "per_try_timeout": "2"})),
        "mirror_services[0].retries.per_try_timeout",
        '"2"',
    ),
    ("duration-alert-window", {"mirror_alert_window": "10"}, "mirror_alert_window", '"10"'),
    (
        "duration-alert-for",
        var("mirror_alert_for", set_key("critical", "2d")),
        "mirror_alert_for.critical",
        '"2d"',
    ),
    ("duration-no-traffic-for", {"mirror_no_traffic_for": "soon"}, "mirror_no_traffic_for", '"soon"'),
    (
        "duration-monitoring-interval",
        var("mirror_monitoring", set_key("interval", "15")),
        "mirror_monitoring.interval",
        '"15"',
    ),
    # A subset's own connection pool and outlier detection: their durations as the service's.
    (
        "duration-subset-connect-timeout",
        services(set_key("0.subsets.1.connection_pool", {"tcp": {"connect_timeout": "2 s"}})),
        "mirror_services[0].subsets[1].connection_pool.tcp.connect_timeout",
        '"2 s"',
    ),
    (
        "duration-subset-outlier-interval",
        services(set_key("0.subsets.1.outlier_detection.interval", "1")),
        "mirror_services[0].subsets[1].outlier_detection.interval",
        '"1"',
    ),
    (
        "duration-subset-base-ejection-time",
        services(set_key("0.subsets.0.outlier_detection", {"base_ejection_time": 5})),
        "mirror_services[0].subsets[0].outlier_detection.base_ejection_time",
        "5",
    ),
    (
        "retries-attempts-negative",
        services(set_key("0.retries", {"attempts": -1, "per_try_timeout": "2s"})),
        "mirror_services[0].retries.attempts",
        "-1",
    ),
    ("retries-not-a-mapping", services(set_key("0.retries", 3)), "mirror_services[0].retries", "3"),
    (
        "fault-in-prod",
        {"mirror_environment": "prod", **fault(lambda f: None)},
        "mirror_proxy.fault.enabled",
        "true",
    ),
    (
        "fault-delay-percent-above-100",
        fault(set_key("delay.percent", 101)),
        "mirror_proxy.fault.delay.percent",
        "101",
    ),
    (
        "fault-abort-percent-negative",
        fault(set_key("abort.percent", -1)),
        "mirror_proxy.fault.abort.percent",
        "-1",
    ),
    (
        "fault-abort-status-out-of-range",
        fault(set_key("abort.http_status", 700)),
        "mirror_proxy.fault.abort.http_status",
        "700",
    ),
    (
        "duration-fault-delay",
        fault(set_key("delay.fixed_delay", "2 s")),
        "mirror_proxy.fault.delay.fixed_delay",
        '"2 s"',
    ),
    (
        # Envoy durations: seconds only, as the EnvoyFilter takes them unchanged (role mirror_proxy).
        "envoy-fill-interval-go-form",
        proxy_feature("rate_limit", **RATE_LIMIT, fill_interval="1m"),
        "mirror_proxy.rate_limit.fill_interval",
        '"1m"',
    ),
    (
        "envoy-fill-interval-below-50ms",
        proxy_feature("rate_limit", **RATE_LIMIT, fill_interval="0.01s"),
        "mirror_proxy.rate_limit.fill_interval",
        '"0.01s"',
    ),
    (
        "envoy-update-interval-zero",
        proxy_feature("adaptive_concurrency", **ADAPTIVE, concurrency_update_interval="0s", min_rtt_interval="60s"),
        "mirror_proxy.adaptive_concurrency.concurrency_update_interval",
        '"0s"',
    ),
    (
        "envoy-min-rtt-interval-go-form",
        proxy_feature("adaptive_concurrency", **ADAPTIVE, concurrency_update_interval="0.1s", min_rtt_interval="500ms"),
        "mirror_proxy.adaptive_concurrency.min_rtt_interval",
        '"500ms"',
    ),
    (
        "monitoring-kind-unknown",
        var("mirror_monitoring", set_key("kind", "Monitor")),
        "mirror_monitoring.kind",
        '"Monitor"',
    ),
    (
        "hpa-min-zero",
        var("mirror_gateway_hpa", set_key("min_replicas", 0)),
        "mirror_gateway_hpa.min_replicas",
        "0",
    ),
    (
        "hpa-min-above-max",
        var("mirror_gateway_hpa", set_key("max_replicas", 2)),
        "mirror_gateway_hpa.max_replicas",
        "2",
    ),
    (
        "hpa-cpu-above-100",
        var("mirror_gateway_hpa", set_key("cpu_utilization", 150)),
        "mirror_gateway_hpa.cpu_utilization",
        "150",
    ),
    ("ramp-steps-empty", {"mirror_ramp_steps": []}, "mirror_ramp_steps", "[]"),
    ("ramp-percent-zero", steps((0, "5s"), (5, "5s")), "mirror_ramp_steps[0].percent", "0"),
    ("ramp-percent-above-100", steps((50, "5s"), (150, "5s")), "mirror_ramp_steps[1].percent", "150"),
    ("ramp-percent-not-increasing", steps((5, "5s"), (5, "5s")), "mirror_ramp_steps[1].percent", "5"),
    ("ramp-hold-unknown-unit", steps((1, "1y"), (5, "5s")), "mirror_ramp_steps[0].hold", '"1y"'),
    # The engine reads the largest unit first, each once (mirrorramp.durations).
    ("ramp-hold-units-out-of-order", steps((1, "5s"), (5, "30m1h")), "mirror_ramp_steps[1].hold", '"30m1h"'),
    ("ramp-hold-zero", steps((1, "0s"), (5, "5s")), "mirror_ramp_steps[0].hold", '"0s"'),
    ("ramp-hold-number-zero", steps((1, 0), (5, "5s")), "mirror_ramp_steps[0].hold", "0"),
    ("ramp-hold-boolean", steps((1, True), (5, "5s")), "mirror_ramp_steps[0].hold", "true"),
    ("ramp-driver-unknown", {"mirror_ramp_driver": "linkerd"}, "mirror_ramp_driver", '"linkerd"'),
    # The local inventory ramps through Envoy: runtime_fraction counts millionths (drivers/envoy.py).
    ("ramp-percent-finer-than-envoy", steps((0.12345, "5s"), (5, "5s")), "mirror_ramp_steps[0].percent", "0.12345"),
    (
        "mirror-percent-finer-than-envoy",
        services(set_key("0.mirror_percent", 0.12345)),
        "mirror_services[0].mirror_percent",
        "0.12345",
    ),
    ("ramp-mode-unknown", {"mirror_ramp_mode": "cron"}, "mirror_ramp_mode", '"cron"'),
]


def changed(name: str, *changes: Callable[[Any], None]) -> dict[str, Any]:
    """Variable `name` of the base inventory with every change applied."""
    value = copy.deepcopy(BASE[name])
    for change in changes:
        change(value)
    return {name: value}


# Each variable with an unknown key at every place where it holds keys. The cases of one variable
# share its value, so they share a host: the preflight reports every key at once.
UNKNOWN_KEYS = {
    **changed(
        "mirror_services",
        set_key("0.mirror_precent", 5),
        set_key("0.colour", "red"),
        set_key("0.subsets.1.lables", {"version": "v2"}),
        set_key("0.subsets.1.outlier_detection", {"intervall": "1s"}),
        set_key("0.subsets.0.connection_pool", {"tcp": {"max_connection": 10}}),
        set_key("0.mirrors.0.subnet", "candidate"),
        # `{retry_on: a,b}` in a flow mapping splits at the comma into a key without a value.
        set_key("0.retries", {"attempts": 2, "retry_on": "connect-failure", "refused-stream": None}),
        set_key("0.connection_pool", {"tcp": {"max_connection": 10}, "https": {}}),
        set_key("0.outlier_detection", {"intervall": "10s"}),
        set_key("0.grpc", {"port": 50051, "prot": 50052}),
        set_key("0.load_balancer", {"consistent_hash": "x-user-id"}),
    ),
    **changed(
        "mirror_thresholds",
        set_key("error_rate", {"warning": 0.1, "critical": 0.2}),
        set_key("p99_latency_ms.critcal", 2000),
        set_key("p95", {"warning": 1, "critical": 2}),
    ),
    **changed(
        "mirror_proxy",
        set_key("cachee", {"enabled": False}),
        set_key("rate_limit.max_tokns", 10),
        set_key("fault.enable", True),
        set_key("fault.abort", {"percent": 1, "http_status": 503, "http_code": 503}),
        set_key("authorization.principal", []),
    ),
    **changed("mirror_gateway_hpa", set_key("min_replica", 1)),
    **changed("mirror_monitoring", set_key("intervall", "30s"), set_key("scheme", "https")),
    **changed("mirror_ramp_steps", set_key("0.hodl", "1d")),
    **changed(
        "mirror_ramp_gates",
        set_key("treshold", []),
        set_key("min_requests", 5),
        set_key("thresholds.0.operatr", "<"),
        set_key("thresholds.0.unit", "ms"),
        set_key("alerts.0.matcher", {"severity": "critical"}),
        set_key("comparisons.0.max_detla", 0.1),
    ),
}
# id, the key's path, its value as the message shows it, what the message says right after
# "unknown key" (the near miss; "" for a far miss), and the keys allowed there, where given.
KEY_CASES = [
    ("key-service-near-miss", "mirror_services[0].mirror_precent", "5", " (did you mean mirror_percent?)", None),
    ("key-service-far-miss", "mirror_services[0].colour", '"red"', "", None),
    ("key-subset", "mirror_services[0].subsets[1].lables", '{"version": "v2"}', " (did you mean labels?)", None),
    (
        "key-subset-outlier-detection",
        "mirror_services[0].subsets[1].outlier_detection.intervall",
        '"1s"',
        " (did you mean interval?)",
        None,
    ),
    (
        "key-subset-connection-pool-tcp",
        "mirror_services[0].subsets[0].connection_pool.tcp.max_connection",
        "10",
        " (did you mean max_connections?)",
        "connect_timeout, max_connections",
    ),
    ("key-mirror", "mirror_services[0].mirrors[0].subnet", '"candidate"', " (did you mean subset?)", None),
    (
        "key-retries-unquoted",
        "mirror_services[0].retries.refused-stream",
        "null",
        "",
        "attempts, per_try_timeout, retry_on",
    ),
    (
        "key-connection-pool-tcp",
        "mirror_services[0].connection_pool.tcp.max_connection",
        "10",
        " (did you mean max_connections?)",
        None,
    ),
    ("key-connection-pool", "mirror_services[0].connection_pool.https", "{}", " (did you mean http?)", "http, tcp"),
    (
        "key-outlier-detection",
        "mirror_services[0].outlier_detection.intervall",
        '"10s"',
        " (did you mean interval?)",
        None,
    ),
    ("key-grpc", "mirror_services[0].grpc.prot", "50052", " (did you mean port?)", "port"),
    (
        "key-load-balancer",
        "mirror_services[0].load_balancer.consistent_hash",
        '"x-user-id"',
        " (did you mean consistent_hash_header?)",
        None,
    ),
    (
        "key-threshold-metric",
        "mirror_thresholds.error_rate",
        '{"critical": 0.2, "warning": 0.1}',
        " (did you mean error_ratio?)",
        None,
    ),
    (
        "key-threshold-far-miss",
        "mirror_thresholds.p95",
        '{"critical": 2, "warning": 1}',
        "",
        "error_ratio, p99_latency_ms",
    ),
    ("key-threshold-severity", "mirror_thresholds.p99_latency_ms.critcal", "2000", " (did you mean critical?)", None),
    ("key-proxy-feature", "mirror_proxy.cachee", '{"enabled": false}', " (did you mean cache?)", None),
    ("key-proxy-rate-limit", "mirror_proxy.rate_limit.max_tokns", "10", " (did you mean max_tokens?)", None),
    ("key-proxy-fault", "mirror_proxy.fault.enable", "true", " (did you mean enabled?)", None),
    ("key-proxy-fault-abort-far-miss", "mirror_proxy.fault.abort.http_code", "503", "", "http_status, percent"),
    ("key-proxy-authorization", "mirror_proxy.authorization.principal", "[]", " (did you mean principals?)", None),
    ("key-gateway-hpa", "mirror_gateway_hpa.min_replica", "1", " (did you mean min_replicas?)", None),
    ("key-monitoring-near-miss", "mirror_monitoring.intervall", '"30s"', " (did you mean interval?)", None),
    ("key-monitoring-far-miss", "mirror_monitoring.scheme", '"https"', "", "interval, kind, labels"),
    ("key-ramp-step", "mirror_ramp_steps[0].hodl", '"1d"', " (did you mean hold?)", "hold, percent"),
    ("key-gates", "mirror_ramp_gates.treshold", "[]", " (did you mean thresholds?)", None),
    (
        "key-gates-min-requests-moved",
        "mirror_ramp_gates.min_requests",
        "5",
        " (set mirror_ramp_min_requests instead)",
        "alerts, comparisons, judges, request_query, thresholds",
    ),
    ("key-gate-threshold", "mirror_ramp_gates.thresholds[0].operatr", '"<"', " (did you mean operator?)", None),
    ("key-gate-threshold-far-miss", "mirror_ramp_gates.thresholds[0].unit", '"ms"', "", None),
    (
        "key-gate-alert",
        "mirror_ramp_gates.alerts[0].matcher",
        '{"severity": "critical"}',
        " (did you mean matchers?)",
        None,
    ),
    ("key-gate-comparison", "mirror_ramp_gates.comparisons[0].max_detla", "0.1", " (did you mean max_delta?)", None),
]

# The mesh API: its values, and what a Gateway API service cannot carry.
CASES += [
    ("mesh-api-unknown", {"mirror_mesh_api": "linkerd"}, "mirror_mesh_api", '"linkerd"'),
    ("service-mesh-api-unknown", services(set_key("0.mesh_api", "consul")), "mirror_services[0].mesh_api", '"consul"'),
    (
        "gateway-api-mirror-to-a-host",
        services(lambda svcs: (set_key("0.mesh_api", "gateway-api")(svcs), set_key("0.mirrors.0.host", "other")(svcs))),
        "mirror_services[0].mirrors[0].host",
        '"other"',
    ),
    (
        "gateway-api-istio-match",
        services(
            lambda svcs: (
                set_key("0.mesh_api", "gateway-api")(svcs),
                set_key("0.mirror_match", {"headers": {"x-beta": {"exact": "1"}}})(svcs),
            )
        ),
        "mirror_services[0].mirror_match",
        '{"headers": {"x-beta": {"exact": "1"}}}',
    ),
    (
        "gateway-api-match-sets-the-method",
        services(
            lambda svcs: (
                set_key("0.mesh_api", "gateway-api")(svcs),
                set_key("0.mirror_match", [{"path": {"type": "PathPrefix", "value": "/a"}}, {"method": "POST"}])(svcs),
            )
        ),
        "mirror_services[0].mirror_match[1]",
        '{"method": "POST"}',
    ),
]


def variable_of(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


CASES += [
    (case_id, {variable_of(path): UNKNOWN_KEYS[variable_of(path)]}, path, shown)
    for case_id, path, shown, _, _ in KEY_CASES
]
# id, overrides that every check must accept.
GOOD = [
    # Every proxy feature is optional: left out, it renders nothing and no check may trip on it.
    ("proxy-features-absent-in-prod", {"mirror_environment": "prod", "mirror_proxy": {}}),
    # mirror_percent is optional: the template reads an absent one as 0.
    ("mirror-percent-absent", services(delete_key("0.mirror_percent"))),
    # Every hold form the engine reads: numbers of seconds, spaces between the parts.
    ("holds-the-engine-reads", steps((1, "1d 12h"), (2, 30), (5, "90"), (10, 2.5), (20, " 1h 30m "))),
    (
        "envoy-durations-at-their-minimum",
        {
            "mirror_proxy": {
                **BASE["mirror_proxy"],
                "rate_limit": {"enabled": True, **RATE_LIMIT, "fill_interval": "0.05s"},
                "adaptive_concurrency": {
                    "enabled": True,
                    **ADAPTIVE,
                    "concurrency_update_interval": "0.001s",
                    "min_rtt_interval": "0.001s",
                },
            }
        },
    ),
    # The whole environment on Gateway API, with an HTTPRouteMatch, every method and a fraction.
    (
        "gateway-api-service",
        {
            "mirror_mesh_api": "gateway-api",
            **services(
                lambda svcs: (
                    set_key("0.mirror_match", {"headers": [{"name": "x-beta", "value": "1"}], "method": "POST"})(svcs),
                    set_key("0.mirror_all_methods", True)(svcs),
                    set_key("0.mirror_percent", 0.5)(svcs),
                )
            ),
        },
    ),
    # istio writes a double: a percent that Envoy cannot set is fine there.
    (
        "percent-finer-than-envoy-on-istio",
        {
            "mirror_ramp_driver": "istio",
            **steps((0.12345, "5s"), (5, "5s")),
            **services(set_key("0.mirror_percent", 0.12345)),
        },
    ),
    # Ten-thousandths, whose float times 10,000 is not whole (0.0029 * 10000 = 28.999999999999996).
    ("percents-in-ten-thousandths-on-envoy", steps((0.0029, "5s"), (0.57, "5s"), (1.1, "5s"))),
    # Every key that a service may hold, each where the roles read it.
    (
        "every-service-key",
        services(
            set_key(
                "0",
                {
                    **BASE["mirror_services"][0],
                    "namespace": "shop",
                    "host": "demo-service.shop.svc.cluster.local",
                    "mirrors": [{"subset": "candidate", "host": "demo-service-mirror"}],
                    "subsets": [
                        *BASE["mirror_services"][0]["subsets"],
                        {
                            "name": "baseline",
                            "labels": {"version": "v1-baseline"},
                            "workload": "demo-baseline",
                            "connection_pool": {
                                "tcp": {"max_connections": 10, "connect_timeout": "2s"},
                                "http": {
                                    "http1_max_pending_requests": 10,
                                    "http2_max_requests": 10,
                                    "max_requests_per_connection": 1,
                                },
                            },
                            "outlier_detection": {
                                "consecutive_5xx_errors": 0,
                                "consecutive_gateway_errors": 3,
                                "interval": "1s",
                                "base_ejection_time": "5s",
                                "max_ejection_percent": 100,
                            },
                        },
                    ],
                    "baseline_subset": "baseline",
                    "mirror_match": {"headers": {"x-user-type": {"exact": "beta-tester"}}},
                    "retries": {"attempts": 2, "per_try_timeout": "2s", "retry_on": "connect-failure"},
                    "load_balancer": {"consistent_hash_header": "x-user-id"},
                    "connection_pool": {
                        "tcp": {"max_connections": 100, "connect_timeout": "1s"},
                        "http": {
                            "http1_max_pending_requests": 100,
                            "http2_max_requests": 100,
                            "max_requests_per_connection": 10,
                        },
                    },
                    "outlier_detection": {
                        "consecutive_5xx_errors": 3,
                        "interval": "10s",
                        "base_ejection_time": "30s",
                        "max_ejection_percent": 50,
                    },
                    "grpc": {"port": 50051},
                },
            )
        ),
    ),
]
# Two bad inputs at once: both are reported in one failure.
TWO_ERRORS = {"mirror_environment": "qa", "mirror_ramp_driver": "linkerd"}
CASE_HOST: dict[str, str] = {}
PREFLIGHT_PLAYBOOK = """---
- name: Check the inputs only
  hosts: all
  gather_facts: false
  roles:
    - mirror_preflight
"""


def host_failures(report: dict) -> dict[str, str]:
    """host -> message of the failure that stopped it (hosts that passed are absent)."""
    failures: dict[str, str] = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                if result.get("failed") and (
                    task["task"]["name"].endswith(FINAL_CHECK) or "Validation of arguments" in str(result.get("msg"))
                ):
                    failures[host] = str(result.get("msg"))
    return failures


@pytest.fixture(scope="module")
def preflight_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run every case in one ansible-playbook run; return its JSON report (ansible.posix.json)."""
    root = tmp_path_factory.mktemp("preflight")
    inventory = root / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(BASE_INVENTORY / "group_vars")
    host = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    hosts = {"baseline": dict(host), "two-errors": {**host, **TWO_ERRORS}}
    for prefix, cases in (("cases-", [(case[0], case[1]) for case in CASES]), ("good-", GOOD)):
        for case_id, overrides in cases:
            packed = next(
                (
                    name
                    for name in hosts
                    if name.startswith(prefix)
                    and all(hosts[name].get(key, value) == value for key, value in overrides.items())
                ),
                f"{prefix}{len(hosts)}",
            )
            hosts.setdefault(packed, dict(host)).update(overrides)
            CASE_HOST[case_id] = packed
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    playbook = root / "preflight.yml"
    playbook.write_text(PREFLIGHT_PLAYBOOK)
    run = run_playbook(
        str(playbook),
        inventory,
        env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_FORKS": "16"},
        timeout=600,
    )
    return json.loads(run.stdout[run.stdout.index("{") :])


@pytest.fixture(scope="module")
def preflight_outcome(preflight_report: dict) -> tuple[dict[str, str], dict]:
    """(failures by host, stats) of the run of every case."""
    return host_failures(preflight_report), preflight_report["stats"]


def loop_messages(report: dict, task_name: str, host: str) -> list[str]:
    """The `msg` of every loop item of the task `task_name` on `host`."""
    return [
        str(item.get("msg"))
        for play in report["plays"]
        for task in play["tasks"]
        if task["task"]["name"].endswith(task_name) and host in task["hosts"]
        for item in task["hosts"][host].get("results", [])
    ]


@pytest.mark.slow
def test_gateway_api_says_a_subsets_own_policy_is_not_rendered(preflight_report):
    """The local candidate subset's outlier detection has no Gateway API standard form."""
    messages = loop_messages(
        preflight_report, "Say which settings a Gateway API service does not render", CASE_HOST["gateway-api-service"]
    )
    assert len(messages) == 1, messages
    assert "which has no standard form for subsets[1].outlier_detection: they are not rendered" in messages[0]


@pytest.mark.slow
def test_baseline_passes_every_check(preflight_outcome):
    failures, stats = preflight_outcome
    assert "baseline" not in failures
    assert stats["baseline"]["failures"] == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case_id", "path", "shown_value"),
    [(case_id, path, shown) for case_id, _, path, shown in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_fails_naming_variable_and_value(preflight_outcome, case_id, path, shown_value):
    failures, stats = preflight_outcome
    host = CASE_HOST[case_id]
    assert stats[host]["failures"] == 1, f"{case_id} did not fail"
    named = [part for part in failures[host].split(" | ") if f"{path} = " in part]
    assert named, f"{path} not named in: {failures[host]}"
    assert any(shown_value in part and "must" in part for part in named), named


@pytest.mark.slow
@pytest.mark.parametrize("case_id", [case[0] for case in GOOD])
def test_good_input_passes_every_check(preflight_outcome, case_id):
    failures, stats = preflight_outcome
    host = CASE_HOST[case_id]
    assert host not in failures, failures[host]
    assert stats[host]["failures"] == 0


@pytest.mark.slow
def test_every_bad_input_is_reported_together(preflight_outcome):
    failures, _ = preflight_outcome
    message = failures["two-errors"]
    assert message.startswith("2 bad input(s)"), message
    assert 'mirror_environment = "qa"' in message
    assert 'mirror_ramp_driver = "linkerd"' in message


@pytest.mark.slow
def test_render_writes_nothing_on_bad_input(tmp_path: Path):
    build_dir = tmp_path / "build"
    run = run_playbook(
        "playbooks/render.yml",
        "inventories/local",
        {"mirror_build_dir": str(build_dir), **services(set_key("0.port", 70000))},
    )
    assert run.returncode != 0
    assert "mirror_services[0].port = 70000" in run.output, run.output[-3000:]
    assert not build_dir.exists() or not any(build_dir.rglob("*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case_id", "path", "shown", "says", "allowed"), KEY_CASES, ids=[case[0] for case in KEY_CASES]
)
def test_unknown_key_names_the_keys_allowed_and_the_near_miss(preflight_outcome, case_id, path, shown, says, allowed):
    failures, _ = preflight_outcome
    named = [part for part in failures[CASE_HOST[case_id]].split(" | ") if f"{path} = " in part]
    assert len(named) == 1, named
    parent = path.rsplit(".", 1)[0]
    assert f"{path} = {shown}: unknown key{says}; the keys of {parent} must be among " in named[0], named[0]
    if allowed is not None:
        assert f"must be among {allowed}" in named[0], named[0]
    assert ("must be quoted" in named[0]) is (shown == "null"), named[0]


@pytest.mark.slow
@pytest.mark.parametrize("case_id", ["ramp-percent-finer-than-envoy", "mirror-percent-finer-than-envoy"])
def test_percent_finer_than_the_driver_names_the_driver_and_what_it_takes(preflight_outcome, case_id):
    failures, _ = preflight_outcome
    expected = (
        "= 0.12345: must be a multiple of 0.0001 with mirror_ramp_driver envoy (the finest percent it can set), "
        "such as 0.1234 or 0.1235"
    )
    assert expected in failures[CASE_HOST[case_id]], failures[CASE_HOST[case_id]]


NO_SERVICES = "mirror_services = []: must list at least one service"


# ramp.yml (and status.yml, emergency-stop.yml) run no preflight: playbooks/tasks/select-services.yml
# says what rollout.yml's preflight says.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("playbook", "extra_vars", "message"),
    [
        ("rollout.yml", {"mirror_services": []}, NO_SERVICES),
        ("playbooks/ramp.yml", {"mirror_services": []}, NO_SERVICES),
        ("playbooks/ramp.yml", {"mirror_services": [], "service": ""}, NO_SERVICES),
        ("playbooks/ramp.yml", {"service": "nope"}, "service=nope is not a service of local; known: demo-service"),
    ],
    ids=["rollout-no-services", "ramp-no-services", "ramp-no-services-empty-service", "ramp-unknown-service"],
)
def test_playbook_without_its_service_says_why(tmp_path: Path, playbook, extra_vars, message):
    build_dir = tmp_path / "build"
    run = run_playbook(playbook, "inventories/local", {"mirror_build_dir": str(build_dir), **extra_vars}, check=True)
    assert run.returncode != 0
    assert message in run.output, run.output[-3000:]
    if message == NO_SERVICES:
        assert "is not a service of" not in run.output
    assert not build_dir.exists()


def role_vars(role: str) -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "roles" / role / "vars" / "main.yml").read_text())


def engine_allowed_keys(raw: dict) -> list[str]:
    """The keys the engine's gate parser allows where `raw` puts an unknown one (its message)."""
    with pytest.raises(ConfigError, match="unknown key") as error:
        parse_gates(raw)
    return sorted(str(error.value).rsplit("allowed: ", 1)[1].split(", "))


def test_gate_keys_are_the_ones_the_engine_reads() -> None:
    """The filter's keys against the parser's refusals: what the preflight allows, the ramp reads."""
    options = mirror_ramp_input_options("gates")
    assert sorted(options) == engine_allowed_keys({"unknown": 1})
    for kind in ("thresholds", "alerts", "comparisons", "judges"):
        assert sorted(options[kind]["options"]) == engine_allowed_keys({kind: [{"unknown": 1}]}), kind


def test_the_preflight_takes_the_gate_and_step_keys_from_the_engine() -> None:
    """min_requests left out: the ramp refuses it inside the gates (mirror_ramp_min_requests sets it)."""
    preflight = role_vars("mirror_preflight")
    assert "mirror_ramp_input_options(without=['min_requests'])" in preflight["__mirror_preflight_gate_options"]
    assert "mirror_ramp_input_options" in preflight["__mirror_preflight_step_options"]
    assert mirror_ramp_input_options("gates", without=["min_requests"]).keys() == set(GATES_KEYS) - {"min_requests"}


def test_step_keys_are_the_ones_the_engine_reads() -> None:
    assert sorted(mirror_ramp_input_options("steps")) == sorted(STEP_KEYS)


@pytest.mark.parametrize(
    ("engine_input", "without", "says"),
    [
        ("services", (), "input = 'services': must be one of gates, steps"),
        ("gates", "min_requests", "without = 'min_requests': must be a list of keys"),
        ("gates", ["min_request"], "'min_request' is not a key of the gates"),
    ],
)
def test_input_options_refuse_what_is_not_an_engine_input_or_key(engine_input: str, without: Any, says: str) -> None:
    with pytest.raises(AnsibleFilterError, match=re.escape(says)):
        mirror_ramp_input_options(engine_input, without)


def leaf_paths(options: dict, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, spec in options.items():
        if spec and spec.get("options"):
            paths |= leaf_paths(spec["options"], f"{prefix}{key}.")
        else:
            paths.add(f"{prefix}{key}")
    return paths


def documented_service_keys() -> set[str]:
    """The leaf keys of the key tables of docs/configuration.md's services section: the key column
    (`connection_pool.tcp.max_connections`), the `{a, b}` of the type column, `subsets[]`'s table."""
    section = (REPO_ROOT / "docs" / "configuration.md").read_text().split("\n## services.yml", 1)[1]
    section = section.split("\n## ", 1)[0]
    paths: set[str] = set()
    prefix, in_key_table = "", False
    for line in section.splitlines():
        if owner := re.fullmatch(r"`(\w+)\[\]`:", line.strip()):
            prefix = owner.group(1) + "."
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if not cells:
            in_key_table = False
            continue
        if cells[0] == "key":
            in_key_table = True
        elif in_key_table and cells[0].startswith("`"):
            key = prefix + cells[0].strip("`")
            paths.add(key)
            for inner in re.findall(r"`\{([^}]*)\}`", cells[1]):
                paths |= {f"{key}.{name.strip()}" for name in inner.split(",")}
    return {path for path in paths if not any(other.startswith(path + ".") for other in paths)}


def test_service_keys_are_the_documented_ones() -> None:
    options = role_vars("mirror_preflight")["__mirror_preflight_service_options"]
    assert leaf_paths(options) == documented_service_keys()


def test_driver_resolutions_are_what_each_driver_sets() -> None:
    resolutions = role_vars("mirror_preflight")["__mirror_preflight_ramp_driver_resolutions"]
    assert list(resolutions) == ARGUMENT_SPEC["driver"]["choices"]
    assert resolutions["istio"] is None  # mirrorPercentage.value is a double
    envoy = resolutions["envoy"]
    assert check_percent(envoy) == envoy
    assert check_percent(100 - envoy) == 100 - envoy
    with pytest.raises(ConfigError, match="at most four decimals"):
        check_percent(envoy / 2)


UNKNOWN_KEYS_FILTER = load_filter("mirror_input_keys", "mirror_unknown_keys")
mirror_ramp_input_options = load_filter("mirror_ramp_input_options")
FILTER_OPTIONS = {
    "svc": {"options": {"name": {}, "labels": {}, "subsets": {"type": "list", "options": {"name": {}}}}},
}


@pytest.mark.parametrize(
    ("value", "paths"),
    [
        ([{"name": "a", "labels": {"any": "label"}, "subsets": [{"name": "x"}]}], []),
        ([{"name": "a"}, {"nmae": "b"}], ["svc[1].nmae"]),
        ([{"subsets": [{"name": "x"}, {"nam": "y", "port": 1}]}], ["svc[0].subsets[1].nam", "svc[0].subsets[1].port"]),
        # A value of another type is left to the other checks.
        ([{"subsets": "x"}, "y", {"subsets": [3]}], []),
        ({"name": "a", 7: None}, ["svc.7"]),
    ],
    ids=["known", "in-a-list", "nested", "other-types", "non-string-key"],
)
def test_filter_finds_every_unknown_key_at_its_path(value, paths) -> None:
    assert [row["path"] for row in UNKNOWN_KEYS_FILTER({"svc": value}, FILTER_OPTIONS)] == paths


def test_filter_row_has_the_allowed_keys_and_the_near_miss() -> None:
    (row,) = UNKNOWN_KEYS_FILTER({"svc": [{"subsets": [{"nmae": 1}]}]}, FILTER_OPTIONS)
    assert row == {
        "path": "svc[0].subsets[0].nmae",
        "parent": "svc[0].subsets[0]",
        "key": "nmae",
        "value": 1,
        "allowed": ["name"],
        "close": ["name"],
    }
    (far,) = UNKNOWN_KEYS_FILTER({"svc": {"colour": 1}}, FILTER_OPTIONS)
    assert far["close"] == []


@pytest.mark.parametrize(
    ("inputs", "options", "says"),
    [
        ([1], FILTER_OPTIONS, "expected a mapping of input name to value, got list"),
        ({"svc": {}}, ["svc"], "expected the options as a mapping"),
        ({"other": {}}, FILTER_OPTIONS, "no options for input 'other'"),
        ({"svc": {"name": 1}}, {"svc": {"options": {"name": "str"}}}, "the spec of svc.name is 'str'"),
        ({"svc": {}}, {"svc": {"options": ["name"]}}, "the options of svc are ['name']"),
    ],
    ids=[
        "inputs-not-a-mapping",
        "options-not-a-mapping",
        "input-without-options",
        "spec-not-a-mapping",
        "options-a-list",
    ],
)
def test_filter_refuses_what_it_cannot_walk(inputs, options, says) -> None:
    with pytest.raises(AnsibleFilterError, match=re.escape(f"mirror_unknown_keys: {says}")):
        UNKNOWN_KEYS_FILTER(inputs, options)


def test_envoy_durations_have_one_rule_in_both_preflights() -> None:
    preflight = role_vars("mirror_preflight")["__mirror_preflight_envoy_duration"]
    assert preflight == role_vars("mirror_proxy")["__mirror_proxy_duration_pattern"]
    accepted = [
        value
        for value in ("1s", "0.1s", "60s", "0.05s", "1m", "500ms", "1h", "1", "1.s", " 1s")
        if re.match(preflight, value)
    ]
    assert accepted == ["1s", "0.1s", "60s", "0.05s"]
