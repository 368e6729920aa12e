"""rollout.yml with the dev inventory, end to end: the Kubernetes API test double and a real Prometheus.

Prometheus scrapes Istio-shaped request metrics of the five dev workloads, fed from a bounded
background thread. Four ansible-playbook runs for the whole module (each renders and applies
everything, which dominates the cost), the tests then look at what each run left behind:

1. watch mode, short holds: every manifest is applied and both ramps complete (1 -> 20%);
2. someone edits the user-service DestinationRule by hand and the user-service candidate starts
   answering 5xx; a check-mode run with --diff shows both changes and persists nothing;
3. the same run for real: the DestinationRule is put back, user-service rolls back (every mirror
   field removed, the breach recorded), order-service stays completed;
4. healthy traffic again, a scheduled run: nothing changes, the mirror stays removed.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.fakes.kube_api import KubeApiServer, RecordedRequest
from tests.fakes.kube_fixtures import kube_api_server  # noqa: F401
from tests.support.ansible_run import REPO_ROOT, PlaybookRun, recap_counts, run_playbook
from tests.support.prometheus_server import poll_until
from tests.support.rollout_stack import (
    RolloutStack,
    error_ratio_query,
    rendered_manifests,
    rollout_stack,
    service_lines,
    stored_objects,
    task_lines,
)

pytestmark = pytest.mark.slow

INVENTORY = REPO_ROOT / "inventories" / "dev"
NAMESPACE = "shop-dev"
ISTIO = "networking.istio.io"
STATE_ANNOTATION = "mirror-ramp.io/state"
MIRROR_FIELDS = {"mirror", "mirrorPercentage", "mirrors"}
WORKLOADS = ("user-service-v1", "user-service-v2", "order-service-v1", "order-service-v2", "order-service-v2-perf")
FAILING = "user-service-v2"
HOLD_SECONDS = 1
STEPS = [{"percent": p, "hold": f"{HOLD_SECONDS}s"} for p in (1, 5, 10, 20)]
WINDOW = "5s"
# The hand edit of run 2: a value the render does not produce.
TAMPERED_MAX_CONNECTIONS = 7
# The kinds the dev inventory renders (monitoring.kind is ServiceMonitor in dev).
EXPECTED_KINDS = {
    "VirtualService",
    "DestinationRule",
    "EnvoyFilter",
    "AuthorizationPolicy",
    "ServiceMonitor",
    "PrometheusRule",
    "Telemetry",
    "HorizontalPodAutoscaler",
}


@dataclass
class Stage:
    run: PlaybookRun
    requests: list[RecordedRequest]
    objects: dict[tuple[str, str, str], dict[str, Any]]
    resource_version: int
    # What the render of this run wrote (a later run may render something else).
    manifests: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return recap_counts(self.run.output)

    def vs(self, name: str) -> dict[str, Any]:
        return self.objects[("VirtualService", NAMESPACE, name)]

    def state(self, name: str) -> dict[str, Any]:
        return json.loads(self.vs(name)["metadata"]["annotations"][STATE_ANNOTATION])


def mirror_keys(node: Any, path: str = "") -> list[str]:
    """Paths of every mirror field anywhere in `node`."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in MIRROR_FIELDS:
                found.append(f"{path}.{key}")
            found += mirror_keys(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += mirror_keys(value, f"{path}[{index}]")
    return found


def mirror_route(vs: dict[str, Any]) -> dict[str, Any]:
    (route,) = [r for r in vs["spec"]["http"] if r.get("name") == "mirror"]
    return route


def without_mirror_fields(vs: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(vs["spec"])
    for route in spec["http"]:
        for name in MIRROR_FIELDS:
            route.pop(name, None)
    return spec


@pytest.fixture(scope="module")
def stack(kube_api_server: KubeApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloutStack]:  # noqa: F811
    with rollout_stack(
        kube_api_server,
        tmp_path_factory.mktemp("prometheus"),
        namespace=NAMESPACE,
        service="user-service",
        workloads=WORKLOADS,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("build-dev")


@pytest.fixture(scope="module")
def stages(stack: RolloutStack, build_dir: Path) -> dict[str, Stage]:
    kube, prometheus, feeder = stack.kube, stack.prometheus, stack.feeder
    extra_vars = {
        "mirror_build_dir": str(build_dir),
        "mirror_kube": {
            "kubeconfig": None,
            "context": None,
            "host": kube.url,
            "api_key": kube.token,
            "validate_certs": False,
            "ca_cert": None,
        },
        "mirror_prometheus": {"url": prometheus.url, "timeout": "2s", "retries": 1},
        "mirror_ramp_steps": STEPS,
        "mirror_ramp_window": WINDOW,
        "mirror_ramp_min_requests": 10,
        "mirror_ramp_mode": "watch",
        "mirror_ramp_poll_interval": "500ms",
        "mirror_ramp_deadline": "120s",
    }
    # Only the discovery cache of kubernetes.core: the connection itself comes from mirror_kube.
    env = {"TMPDIR": str(kube.tmpdir)}
    out: dict[str, Stage] = {}

    def run(label: str, **options: Any) -> Stage:
        kube.clear_requests()
        variables = extra_vars | options.pop("extra", {})
        result = run_playbook("rollout.yml", INVENTORY, variables, env=env, timeout=400, **options)
        assert result.returncode == 0, f"run {label} failed:\n{result.output[-5000:]}"
        out[label] = Stage(
            result, kube.requests, stored_objects(kube), kube.resource_version, rendered_manifests(build_dir)
        )
        return out[label]

    run("first")

    # A hand edit of the live DestinationRule, then the candidate of user-service fails.
    patched = requests.patch(
        f"{kube.url}/apis/{ISTIO}/v1/namespaces/{NAMESPACE}/destinationrules/user-service",
        headers={"Authorization": f"Bearer {kube.token}", "Content-Type": "application/merge-patch+json"},
        json={"spec": {"trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": TAMPERED_MAX_CONNECTIONS}}}}},
        timeout=10,
    )
    assert patched.status_code == 200, patched.text
    feeder.failing.add(FAILING)
    query = error_ratio_query("user-service", NAMESPACE, "dev", FAILING, WINDOW)
    poll_until(
        lambda: any(float(s["value"][1]) > 0.2 for s in prometheus.query(query)),
        timeout=30,
        interval=0.5,
        what=f"the 5xx ratio of {FAILING} seen by Prometheus",
    )
    out["tampered"] = Stage(PlaybookRun(0, "", ""), [], stored_objects(kube), kube.resource_version)
    run("check", check=True, diff=True)
    run("breach")

    feeder.failing.clear()
    run("after", extra={"mirror_ramp_mode": "scheduled"})

    # A changed render is applied (a second copy is kept), then rolled back to the first.
    run("changed", extra={"mirror_ramp_mode": "scheduled", "mirror_alert_window": CHANGED_ALERT_WINDOW})

    def rollback(label: str, **options: Any) -> Stage:
        kube.clear_requests()
        result = run_playbook("playbooks/rollback.yml", INVENTORY, extra_vars, env=env, **options)
        assert result.returncode == 0, f"{label} failed:\n{result.output[-5000:]}"
        out[label] = Stage(result, kube.requests, stored_objects(kube), kube.resource_version)
        return out[label]

    rollback("rollback-check", check=True)
    rollback("rollback")
    return out


# -- 1. first run ----------------------------------------------------------------------------


def test_the_applied_alert_rules_were_loaded_into_prometheus(stages: dict[str, Stage], stack: RolloutStack) -> None:
    loader = stack.loader
    assert loader.error is None and loader.loads >= 1
    answer = requests.get(f"{stack.prometheus.url}/api/v1/rules", params={"type": "alert"}, timeout=5).json()
    loaded = {rule["name"] for group in answer["data"]["groups"] for rule in group["rules"]}
    assert {"MirrorErrorRatioHigh", "MirrorLatencyP99High", "MirrorNoTraffic"} <= loaded


def test_first_run_applies_every_rendered_manifest(stages: dict[str, Stage], build_dir: Path) -> None:
    first = stages["first"]
    manifests = first.manifests
    assert {m["kind"] for m in manifests} == EXPECTED_KINDS
    assert first.counts()["failed"] == 0
    for manifest in manifests:
        meta = manifest["metadata"]
        key = (manifest["kind"], meta["namespace"], meta["name"])
        assert key in first.objects, f"{key} not applied"
        stored = first.objects[key]
        assert stored["metadata"]["labels"] == meta["labels"], key
        if manifest["kind"] == "VirtualService":
            # The ramp owns the mirror fields since its first write; the rest is as rendered.
            assert without_mirror_fields(stored) == without_mirror_fields(manifest), key
        else:
            # Equal spec: nothing was pruned by the schema of the kind, nothing was left out.
            assert stored["spec"] == manifest["spec"], key
    applied = task_lines(first.run.output, "mirror_apply : Apply the manifests")
    assert applied[-1] == "changed: [localhost]"  # one task, one run of kubernetes.core.k8s
    assert sorted(applied[:-1]) == sorted(
        f"changed: {m['kind']} {m['metadata']['namespace']}/{m['metadata']['name']}" for m in manifests
    )
    creates = [r for r in first.requests if r.method == "POST"]
    assert len(creates) == len(manifests)
    assert all(r.status == 201 for r in creates)


@pytest.mark.parametrize(
    ("service", "targets"),
    [("user-service", ["candidate"]), ("order-service", ["candidate", "perf"])],
    ids=["one-mirror", "two-mirrors"],
)
def test_first_run_ramps_each_service_to_the_last_step(
    stages: dict[str, Stage], service: str, targets: list[str]
) -> None:
    first = stages["first"]
    state = first.state(service)
    assert state["status"] == "completed"
    assert state["step_index"] == len(STEPS) - 1
    assert state["percent"] == 20
    events = [(event["event"], event["step"], event["percent"]) for event in state["history"]]
    assert events == [
        ("start", 0, 1),
        ("advance", 1, 5),
        ("advance", 2, 10),
        ("advance", 3, 20),
        ("complete", 3, 20),
    ]
    started = [event["at"] for event in state["history"]]
    assert all(later - earlier >= HOLD_SECONDS for earlier, later in itertools.pairwise(started)), "a hold was cut"
    route = mirror_route(first.vs(service))
    if len(targets) == 1:
        assert route["mirror"]["subset"] == targets[0]
        assert route["mirrorPercentage"] == {"value": 20.0}
        assert "mirrors" not in route
    else:
        assert [m["destination"]["subset"] for m in route["mirrors"]] == targets
        assert [m["percentage"] for m in route["mirrors"]] == [{"value": 20.0}] * len(targets)
        assert "mirror" not in route and "mirrorPercentage" not in route
    output = first.run.output
    for number, percent in ((2, 5), (3, 10), (4, 20)):
        assert (
            f"dev/{service}: step {number - 1} ({STEPS[number - 2]['percent']}%) held {HOLD_SECONDS}s with passing gates: now step {number} of 4 ({percent}%)"
            in output
        )
    assert f"dev/{service}: step 4 (20%) held {HOLD_SECONDS}s with passing gates: ramp completed" in output
    assert service_lines(output, "mirror_ramp : Mirror of each service: ramp") == [
        "changed user-service",
        "changed order-service",
    ]


# -- 2. check mode ---------------------------------------------------------------------------


def test_check_mode_with_diff_persists_nothing(stages: dict[str, Stage]) -> None:
    before, check = stages["tampered"], stages["check"]
    assert check.resource_version == before.resource_version
    assert check.objects == before.objects
    dr = check.objects[("DestinationRule", NAMESPACE, "user-service")]
    assert dr["spec"]["trafficPolicy"]["connectionPool"]["tcp"]["maxConnections"] == TAMPERED_MAX_CONNECTIONS
    writes = [r for r in check.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]
    assert writes, "check mode is a server-side dry run: the writes are sent"
    assert all(r.query.get("dryRun") == "All" for r in writes), [(r.method, r.path, r.query) for r in writes]


def test_check_mode_reports_and_shows_what_a_real_run_would_change(stages: dict[str, Stage]) -> None:
    check = stages["check"]
    assert check.counts()["changed"] == 2  # the hand-edited DestinationRule, the user-service ramp
    applied = task_lines(check.run.output, "mirror_apply : Apply the manifests")
    assert [line for line in applied if line.startswith("changed: ")] == [
        "changed: DestinationRule shop-dev/user-service",
        "changed: [localhost]",
    ]
    assert service_lines(check.run.output, "mirror_ramp : Mirror of each service: ramp") == [
        "changed user-service",
        "ok order-service",
    ]
    output = check.run.output
    assert re.search(rf"^-\s+maxConnections: {TAMPERED_MAX_CONNECTIONS}$", output, re.M), output[-4000:]
    assert re.search(r"^\+\s+maxConnections: 100$", output, re.M)
    assert "--- before: user-service mirror (before)" in output
    assert re.search(r"^-\s+state: completed$", output, re.M)
    assert re.search(r"^\+\s+state: rolled_back$", output, re.M)
    assert re.search(r"^-\s+percent: 20.0$", output, re.M)
    assert re.search(r"^\+\s+percent: 0.0$", output, re.M)


# -- 3. the breach ---------------------------------------------------------------------------


def test_breach_rolls_back_and_removes_every_mirror_field(stages: dict[str, Stage]) -> None:
    breach = stages["breach"]
    vs = breach.vs("user-service")
    assert mirror_keys(vs) == []
    state = breach.state("user-service")
    assert state["status"] == "rolled_back"
    assert state["percent"] == 0
    thresholds = yaml.safe_load((INVENTORY / "group_vars" / "all" / "thresholds.yml").read_text())
    critical = thresholds["mirror_thresholds"]["error_ratio"]["critical"]
    rollback = state["rollback"]
    assert rollback["gate"] == "mirror-5xx-ratio"
    assert rollback["threshold"] == critical
    assert rollback["value"] > critical
    assert [event["event"] for event in state["history"]][-1] == "rollback"
    assert "dev/user-service: rolled back from step 4 (20%), completed: gate failed: mirror-5xx-ratio" in (
        breach.run.output
    )
    # The rest of the route is untouched.
    assert without_mirror_fields(vs) == without_mirror_fields(stages["first"].vs("user-service"))


def test_breach_run_repairs_the_hand_edit_and_leaves_the_healthy_service(stages: dict[str, Stage]) -> None:
    breach = stages["breach"]
    assert breach.counts()["changed"] == 2
    dr = breach.objects[("DestinationRule", NAMESPACE, "user-service")]
    assert dr["spec"]["trafficPolicy"]["connectionPool"]["tcp"]["maxConnections"] == 100
    order = breach.state("order-service")
    assert order["status"] == "completed" and order["percent"] == 20
    assert [m["percentage"] for m in mirror_route(breach.vs("order-service"))["mirrors"]] == [{"value": 20.0}] * 2
    assert service_lines(breach.run.output, "mirror_ramp : Mirror of each service: ramp") == [
        "changed user-service",
        "ok order-service",
    ]


# -- 4. after the rollback -------------------------------------------------------------------


def test_further_run_changes_nothing_and_keeps_the_mirror_removed(stages: dict[str, Stage]) -> None:
    breach, after = stages["breach"], stages["after"]
    assert after.counts()["changed"] == 0
    assert mirror_keys(after.vs("user-service")) == []
    assert after.state("user-service") == breach.state("user-service")
    # Nothing was written at all: the apply's patches were no-ops, the ramps stayed.
    assert after.resource_version == breach.resource_version
    assert after.objects == breach.objects
    assert not [r for r in after.requests if r.method in ("POST", "PUT", "DELETE")]


# -- 5. proxy configuration rollback -------------------------------------------------------------
CHANGED_ALERT_WINDOW = "7m"


def prometheus_rule_exprs(stage: Stage) -> list[str]:
    (rule,) = [obj for (kind, _, _), obj in stage.objects.items() if kind == "PrometheusRule"]
    return [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]


def test_rollback_reapplies_the_previous_known_good_manifests(stages: dict[str, Stage], build_dir: Path) -> None:
    first, changed = stages["first"], stages["changed"]
    assert any(f"[{CHANGED_ALERT_WINDOW}]" in expr for expr in prometheus_rule_exprs(changed))
    copies = sorted(path.name for path in (build_dir / "applied").iterdir())
    assert len(copies) == 2, copies  # first and changed; the runs in between applied the same manifests
    # Check mode changes nothing; the rollback puts the first manifests back.
    assert stages["rollback-check"].objects == changed.objects
    rolled = stages["rollback"]
    assert f"re-applying {copies[0]}" in rolled.run.output, rolled.run.output[-3000:]
    assert prometheus_rule_exprs(rolled) == prometheus_rule_exprs(first)
    # The ramp's mirror fields and state are not the rollback's business.
    assert mirror_keys(rolled.vs("user-service")) == mirror_keys(changed.vs("user-service"))
    assert rolled.state("user-service") == changed.state("user-service")
    assert rolled.state("order-service") == changed.state("order-service")
