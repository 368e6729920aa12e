"""Every environment renders, and everything it renders is valid against the real schemas.

Also proves that the validator (tests/support/validate_build.py) rejects what the schemas would
silently accept: unknown (misspelt) fields, deprecated Istio fields, bad core fields, bad rules.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.ansible_run import REPO_ROOT, run_playbook
from tests.support.validate_build import validate_build

ENVIRONMENTS = ["local", "dev", "staging", "prod"]
COMMON_KINDS = {"VirtualService", "DestinationRule", "HorizontalPodAutoscaler", "PrometheusRule", "Telemetry"}
# The kinds each environment must render at least (its proxy features and its monitoring kind).
EXPECTED_KINDS = {
    "local": COMMON_KINDS | {"PodMonitor"},
    "dev": COMMON_KINDS | {"ServiceMonitor", "AuthorizationPolicy", "EnvoyFilter"},
    "staging": COMMON_KINDS | {"PodMonitor", "AuthorizationPolicy", "EnvoyFilter"},
    "prod": COMMON_KINDS | {"PodMonitor", "AuthorizationPolicy", "EnvoyFilter"},
}


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def rendered(request, tmp_path_factory) -> tuple[str, Path]:
    """Render one environment once into a tmp build dir."""
    env = request.param
    build_dir = tmp_path_factory.mktemp(f"build-{env}")
    run = run_playbook("playbooks/render.yml", f"inventories/{env}", {"mirror_build_dir": str(build_dir)})
    assert run.returncode == 0, run.output[-4000:]
    return env, build_dir


@pytest.mark.slow
def test_every_rendered_file_is_valid(rendered):
    env, build_dir = rendered
    count, findings = validate_build(build_dir)
    assert findings == [], "\n".join(str(f) for f in findings)
    assert count >= len(EXPECTED_KINDS[env]) + 1


@pytest.mark.slow
def test_expected_kinds_are_rendered(rendered):
    env, build_dir = rendered
    kinds = {
        doc["kind"] for file in (build_dir / "k8s").glob("*.yml") for doc in yaml.safe_load_all(file.read_text()) if doc
    }
    assert EXPECTED_KINDS[env] <= kinds, f"missing in {env}: {sorted(EXPECTED_KINDS[env] - kinds)}"
    assert list((build_dir / "prometheus").glob("*.yml")), "no plain Prometheus rule file"


VIRTUAL_SERVICE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "user-service", "namespace": "shop", "labels": {"app.kubernetes.io/part-of": "mirror-ramp"}},
    "spec": {
        "hosts": ["user-service"],
        "http": [
            {
                "route": [{"destination": {"host": "user-service", "subset": "stable"}}],
                "mirror": {"host": "user-service", "subset": "candidate"},
                "mirrorPercentage": {"value": 0.5},
            }
        ],
    },
}
HPA = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "istio-ingressgateway"},
        "minReplicas": 1,
        "maxReplicas": 3,
    },
}
RULES = {"groups": [{"name": "mirror", "rules": [{"alert": "MirrorDown", "expr": "up == 0", "for": "5m"}]}]}


def write_build(root: Path, resource: dict, rules: dict = RULES) -> Path:
    (root / "k8s").mkdir(parents=True)
    (root / "prometheus").mkdir()
    (root / "k8s" / "resource.yml").write_text(yaml.safe_dump(resource))
    (root / "prometheus" / "rules.yml").write_text(yaml.safe_dump(rules))
    return root


def http_route_with(**fields) -> dict:
    resource = yaml.safe_load(yaml.safe_dump(VIRTUAL_SERVICE))
    resource["spec"]["http"][0].update(fields)
    return resource


@pytest.mark.parametrize(
    ("resource", "rules", "path", "says"),
    [
        (http_route_with(mirrorPercentge={"value": 1}), RULES, "spec.http[0].mirrorPercentge", "unknown field"),
        (http_route_with(mirrorPercent=5), RULES, "spec.http[0].mirrorPercent", "deprecated"),
        (
            {**VIRTUAL_SERVICE, "metadata": {"name": "a", "namespaec": "shop"}},
            RULES,
            "metadata.namespaec",
            "unknown field",
        ),
        (http_route_with(timeout=5), RULES, "spec.http.0.timeout", "string"),
        ({**HPA, "spec": {**HPA["spec"], "minReplica": 1}}, RULES, "spec", "minReplica"),
        ({**HPA, "spec": {**HPA["spec"], "maxReplicas": "3"}}, RULES, "spec.maxReplicas", "integer"),
        (HPA, {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up =="}]}]}, "", "promtool"),
    ],
    ids=[
        "istio-misspelt-field",
        "istio-deprecated-mirrorPercent",
        "istio-misspelt-metadata-field",
        "istio-wrong-type",
        "core-unknown-field",
        "core-wrong-type",
        "prometheus-rule-bad-expression",
    ],
)
def test_validator_rejects(tmp_path, resource, rules, path, says):
    _, findings = validate_build(write_build(tmp_path, resource, rules))
    assert findings, "accepted"
    assert any(f.path == path and says in f.message for f in findings), [str(f) for f in findings]


@pytest.mark.parametrize("resource", [VIRTUAL_SERVICE, HPA], ids=["virtualservice", "hpa"])
def test_validator_accepts_valid_resources(tmp_path, resource):
    count, findings = validate_build(write_build(tmp_path, resource))
    assert findings == []
    assert count == 2


def test_command_line_exits_1_with_one_line_per_error(tmp_path):
    build = write_build(tmp_path / "build", http_route_with(mirrorPercentge={"value": 1}))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.validate_build", str(build)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{build / 'k8s' / 'resource.yml'}: spec.http[0].mirrorPercentge: unknown field"
    assert lines[-1] == f"validated 2 resources in {build}: 1 errors"
