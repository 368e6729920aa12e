"""The role mirror_monitoring, rendered alone for every environment (tests/rules/monitoring_render.py).

The monitor kind, interval and labels follow group_vars; the Telemetry is valid and optional; the
PrometheusRule resources and the plain rules file hold the same groups, built from group_vars; no
made-up istio_mirror_* metric anywhere; the files recorded are the files written; a second render
is byte-identical and reports no change; check mode writes nothing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.rules.monitoring_render import (
    ENVIRONMENTS,
    Render,
    changed_count,
    render,
    rendered_environments,
    write_playbook,
)
from tests.support.validate_build import validate_build

pytestmark = pytest.mark.slow

MONITOR_KINDS = ("PodMonitor", "ServiceMonitor")
PROJECT_LABELS = ("app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "mirror-ramp.io/environment")
ALERT_LABELS = {"severity", "service", "namespace", "environment", "workload"}
# Both monitor kinds, one and two services, one and two mirrors: staging and prod are shaped as local.
RENDERED_TWICE = ("local", "dev")
# The local inventory with the other monitor kind, another interval and label, and no Telemetry.
OVERRIDES = {
    "mirror_monitoring": {"kind": "ServiceMonitor", "interval": "30s", "labels": {"prometheus": "mesh"}},
    "mirror_telemetry": {"enabled": False},
}


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Render]:
    return rendered_environments(tmp_path_factory)


@pytest.fixture(scope="module")
def overridden_check(tmp_path_factory: pytest.TempPathFactory) -> Render:
    """The local inventory with OVERRIDES, in check mode with --diff: the files the diff shows."""
    base = tmp_path_factory.mktemp("monitoring-check")
    return render("local", base / "build", write_playbook(base), OVERRIDES, check=True)


@pytest.fixture(scope="module")
def second_renders(renders: dict[str, Render]) -> dict[str, tuple[dict[Path, bytes], Render]]:
    """RENDERED_TWICE rendered again into the same directory: (files before, second run)."""
    before = {env: renders[env].files() for env in RENDERED_TWICE}
    playbook = write_playbook(renders["local"].build_dir.parent)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {env: pool.submit(render, env, renders[env].build_dir, playbook) for env in RENDERED_TWICE}
        return {env: (before[env], future.result()) for env, future in futures.items()}


def of_kind(render: Render, *kinds: str) -> dict[Path, dict[str, Any]]:
    return {path: doc for path, doc in render.manifests().items() if doc["kind"] in kinds}


def namespaces(render: Render) -> list[str]:
    return sorted({target.namespace for target in render.targets()})


def services_in(render: Render, namespace: str) -> list[str]:
    return sorted({t.service for t in render.targets() if t.namespace == namespace})


def keys_anywhere(data: Any) -> set[str]:
    if isinstance(data, dict):
        return set(data) | {key for value in data.values() for key in keys_anywhere(value)}
    if isinstance(data, list):
        return {key for value in data for key in keys_anywhere(value)}
    return set()


def assert_monitors(render: Render, kind: str, interval: str, labels: dict[str, str]) -> None:
    monitors = of_kind(render, *MONITOR_KINDS)
    assert sorted(doc["metadata"]["namespace"] for doc in monitors.values()) == namespaces(render)
    for path, doc in monitors.items():
        namespace = doc["metadata"]["namespace"]
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["kind"] == kind, path
        assert path.name.startswith(f"{kind.lower()}-{namespace}-")
        assert doc["metadata"]["labels"].items() >= labels.items()
        spec = doc["spec"]
        assert spec["selector"] == {
            "matchExpressions": [{"key": "app", "operator": "In", "values": services_in(render, namespace)}]
        }
        assert spec["namespaceSelector"] == {"matchNames": [namespace]}
        port = {"port": "http-envoy-prom"} if kind == "PodMonitor" else {"targetPort": "http-envoy-prom"}
        endpoints = spec["podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"]
        assert endpoints == [{**port, "path": "/stats/prometheus", "interval": interval}]
        # Keeping istio_mirror_* by relabelling would keep nothing: those metrics do not exist.
        assert not keys_anywhere(doc) & {"metricRelabelings", "relabelings"}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_monitor_kind_interval_and_labels_follow_group_vars(renders: dict[str, Render], environment: str) -> None:
    render = renders[environment]
    monitoring = render.inputs["monitoring"]

    assert_monitors(render, monitoring["kind"], monitoring["interval"], monitoring.get("labels") or {})


def test_monitor_and_telemetry_follow_overridden_vars(overridden_check: Render) -> None:
    wanted = OVERRIDES["mirror_monitoring"]

    assert_monitors(overridden_check, wanted["kind"], wanted["interval"], wanted["labels"])
    assert not of_kind(overridden_check, "PodMonitor")
    assert not of_kind(overridden_check, "Telemetry")


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_telemetry_enables_the_prometheus_provider_per_namespace(renders: dict[str, Render], environment: str) -> None:
    render = renders[environment]
    telemetries = list(of_kind(render, "Telemetry").values())

    assert render.inputs["telemetry"]["enabled"] is True
    assert sorted(doc["metadata"]["namespace"] for doc in telemetries) == namespaces(render)
    for doc in telemetries:
        assert doc["apiVersion"] == "telemetry.istio.io/v1"
        assert doc["spec"] == {"metrics": [{"providers": [{"name": "prometheus"}]}]}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_prometheusrules_and_the_plain_file_hold_the_same_groups(renders: dict[str, Render], environment: str) -> None:
    render = renders[environment]
    rules = list(of_kind(render, "PrometheusRule").values())
    from_resources = [group for doc in rules for group in doc["spec"]["groups"]]

    assert sorted(doc["metadata"]["namespace"] for doc in rules) == namespaces(render)
    for doc in rules:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["metadata"]["labels"].items() >= (render.inputs["monitoring"].get("labels") or {}).items()
        assert {g["rules"][0]["labels"]["namespace"] for g in doc["spec"]["groups"]} == {doc["metadata"]["namespace"]}
    assert sorted(from_resources, key=lambda g: g["name"]) == sorted(render.rule_groups(), key=lambda g: g["name"])


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_alert_rules_follow_group_vars(renders: dict[str, Render], environment: str) -> None:
    render = renders[environment]
    inputs = render.inputs
    groups = {group["name"]: group["rules"] for group in render.rule_groups()}
    window = f"[{inputs['alert_window']}]"

    assert sorted(groups) == sorted({f"mirror-{service['name']}" for service in inputs["services"]})
    seen = set()
    for target in render.targets():
        rules = [r for r in groups[f"mirror-{target.service}"] if r["labels"]["workload"] == target.workload]
        expected = {
            ("MirrorErrorRatioHigh", "warning"): ("error_ratio", inputs["alert_for"]["warning"]),
            ("MirrorErrorRatioHigh", "critical"): ("error_ratio", inputs["alert_for"]["critical"]),
            ("MirrorLatencyP99High", "warning"): ("p99_latency_ms", inputs["alert_for"]["warning"]),
            ("MirrorLatencyP99High", "critical"): ("p99_latency_ms", inputs["alert_for"]["critical"]),
            ("MirrorNoTraffic", "warning"): (None, inputs["no_traffic_for"]),
        }
        assert sorted((r["alert"], r["labels"]["severity"]) for r in rules) == sorted(expected)
        for rule in rules:
            threshold_key, for_ = expected[(rule["alert"], rule["labels"]["severity"])]
            expr = " ".join(rule["expr"].split())
            assert rule["for"] == for_
            assert rule["labels"] == {
                "severity": rule["labels"]["severity"],
                "service": target.service,
                "namespace": target.namespace,
                "environment": inputs["environment"],
                "workload": target.workload,
            }
            assert set(rule["annotations"]) == {"summary", "description"}
            assert 'reporter="destination"' in expr
            assert f'destination_workload_namespace="{target.namespace}"' in expr
            assert f'destination_workload="{target.workload}"' in expr
            assert window in expr
            if threshold_key:
                threshold = inputs["thresholds"][threshold_key][rule["labels"]["severity"]]
                assert float(expr.rsplit(">", 1)[1]) == float(threshold), expr
            else:
                assert f'destination_workload="{target.primary}"' in expr
                assert " unless " in expr
            seen.add((rule["alert"], rule["labels"]["severity"], target.workload))
    assert len(seen) == 5 * len(render.targets())


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_no_made_up_mirror_metrics(renders: dict[str, Render], environment: str) -> None:
    for path, content in renders[environment].files().items():
        assert b"istio_mirror" not in content, path


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_resources_are_labelled_named_and_valid(renders: dict[str, Render], environment: str) -> None:
    render = renders[environment]
    for path, doc in render.manifests().items():
        metadata = doc["metadata"]
        assert path.name == f"{doc['kind'].lower()}-{metadata['namespace']}-{metadata['name']}.yml"
        assert {label: metadata["labels"].get(label) for label in PROJECT_LABELS} == {
            "app.kubernetes.io/managed-by": "mirror-ramp",
            "app.kubernetes.io/part-of": "mirror-ramp",
            "mirror-ramp.io/environment": render.inputs["environment"],
        }

    count, findings = validate_build(render.build_dir)

    assert not findings, "\n".join(map(str, findings))
    assert count == len(render.manifests()) + 1  # + the plain rules file


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_recorded_files_are_the_written_files(renders: dict[str, Render], environment: str) -> None:
    render = renders[environment]

    assert sorted(render.inputs["rendered_files"]) == sorted(str(path) for path in render.files())


@pytest.mark.parametrize("environment", RENDERED_TWICE)
def test_second_render_is_identical_and_unchanged(
    second_renders: dict[str, tuple[dict[Path, bytes], Render]], environment: str
) -> None:
    before, second = second_renders[environment]

    assert changed_count(second.run) == 0, second.run.output[-3000:]
    assert second.files() == before


def test_check_mode_writes_nothing_and_diff_shows_every_file(overridden_check: Render) -> None:
    build_dir = overridden_check.build_dir.with_name("build")

    assert changed_count(overridden_check.run) > 0
    assert not build_dir.exists()
    assert sorted(overridden_check.inputs["rendered_files"]) == sorted(
        str(build_dir / path.relative_to(overridden_check.build_dir)) for path in overridden_check.files()
    )
    assert yaml.safe_load(overridden_check.rules_file.read_text())["groups"] == [
        group for doc in of_kind(overridden_check, "PrometheusRule").values() for group in doc["spec"]["groups"]
    ]
