"""Every input check of the role mirror_preflight: one case per check.

Each case overrides one inventory variable of the local inventory (the whole value, as `-e` would)
and expects the preflight to fail with a message that names the variable by its full path and the
bad value. To keep this fast, all cases run in ONE ansible-playbook run of the role alone: the cases
are packed onto the hosts of a generated inventory (host vars override group_vars/all), never two
cases that override the same variable on one host: the preflight reports every bad input of a host
together, so each case still finds its own message. One case goes through playbooks/render.yml to
prove that nothing is written.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ansible_run import REPO_ROOT, run_playbook

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
    (
        "retries-attempts-negative",
        services(set_key("0.retries", {"attempts": -1, "per_try_timeout": "2s"})),
        "mirror_services[0].retries.attempts",
        "-1",
    ),
    (
        # `{retry_on: a,b}` in a flow mapping splits at the comma into extra keys.
        "retries-unknown-key",
        services(set_key("0.retries", {"attempts": 2, "retry_on": "connect-failure", "refused-stream": None})),
        "mirror_services[0].retries",
        '"refused-stream": null',
    ),
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
    ("ramp-hold-without-unit", steps((1, "10"), (5, "5s")), "mirror_ramp_steps[0].hold", '"10"'),
    ("ramp-hold-unknown-unit", steps((1, "1y"), (5, "5s")), "mirror_ramp_steps[0].hold", '"1y"'),
    ("ramp-driver-unknown", {"mirror_ramp_driver": "envoy"}, "mirror_ramp_driver", '"envoy"'),
    ("ramp-mode-unknown", {"mirror_ramp_mode": "cron"}, "mirror_ramp_mode", '"cron"'),
]
# Two bad inputs at once: both are reported in one failure.
TWO_ERRORS = {"mirror_environment": "qa", "mirror_ramp_driver": "envoy"}
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
def preflight_outcome(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict]:
    """Run every case in one ansible-playbook run; return (failures by host, stats)."""
    root = tmp_path_factory.mktemp("preflight")
    inventory = root / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(BASE_INVENTORY / "group_vars")
    host = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    hosts = {"baseline": dict(host), "two-errors": {**host, **TWO_ERRORS}}
    for case_id, overrides, _, _ in CASES:
        packed = next(
            (name for name in hosts if name.startswith("cases-") and not set(overrides) & set(hosts[name])),
            f"cases-{len(hosts)}",
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
    report = json.loads(run.stdout[run.stdout.index("{") :])
    return host_failures(report), report["stats"]


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
def test_every_bad_input_is_reported_together(preflight_outcome):
    failures, _ = preflight_outcome
    message = failures["two-errors"]
    assert message.startswith("2 bad input(s)"), message
    assert 'mirror_environment = "qa"' in message
    assert 'mirror_ramp_driver = "envoy"' in message


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
