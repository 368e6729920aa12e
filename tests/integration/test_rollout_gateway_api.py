"""rollout.yml with `-i inventories/staging -e mirror_mesh_api=gateway-api`, end to end (issue 21).

The Kubernetes API test double and a real Prometheus scraping Istio-shaped request metrics of the
three staging workloads, as in test_rollout_istio.py; staging's gates but its judges (those pass
on thousands of requests over whole minutes, not in holds of a second). Nine ansible-playbook runs
for the module, the tests then look at what each run left behind:

1. rollout.yml in watch mode, steps 0.5 -> 1 -> 5 -> 10 -> 20 % with short holds: every manifest
   is applied (the HTTPRoute and the version Services, no VirtualService or DestinationRule) and
   the ramp completes with the exact share of each step;
2. the same run scheduled: nothing changes;
   then a changed route (another timeout) is applied while the mirror is live, and
   playbooks/rollback.yml (--check, then for real) puts the first route back, the mirror kept;
3. playbooks/emergency-stop.yml removes the mirror, 4. playbooks/status.yml shows the stop;
5. the candidate answers 5xx; rollout.yml -e restart=true --check --diff persists nothing;
6. the same run for real: the ramp restarts at 0.5 % and rolls back (mirror filters removed, the
   breach recorded).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
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

INVENTORY = REPO_ROOT / "inventories" / "staging"
ENVIRONMENT = "staging"
NAMESPACE = "shop-staging"
SERVICE = "user-service"
STATE_ANNOTATION = "mirror-ramp.io/state"
WORKLOADS = ("user-service-v1", "user-service-v2", "user-service-baseline")
FAILING = "user-service-v2"
HOLD_SECONDS = 1
PERCENTS = (0.5, 1, 5, 10, 20)
STEPS = [{"percent": p, "hold": f"{HOLD_SECONDS}s"} for p in PERCENTS]
WINDOW = "5s"
# The mirror targets of user-service in staging: the candidate, then the baseline shadow.
MIRROR_SERVICES = ("user-service-candidate", "user-service-baseline")
# What staging renders with the Gateway API (monitoring.kind is PodMonitor in staging).
EXPECTED_KINDS = {
    "HTTPRoute",
    "Service",
    "EnvoyFilter",
    "AuthorizationPolicy",
    "PodMonitor",
    "PrometheusRule",
    "Telemetry",
    "HorizontalPodAutoscaler",
}
RAMP_TASK = "mirror_ramp : Mirror of each service: ramp"


def gates_without_judges() -> dict[str, Any]:
    """Staging's gates but its judges: a judge passes only on thousands of requests counted over
    whole minutes (docs/configuration.md, "judge gates"), never within holds of a second."""
    ramp = yaml.safe_load((INVENTORY / "group_vars" / "all" / "ramp.yml").read_text())
    gates = dict(ramp["mirror_ramp_gates"])
    assert gates.pop("judges"), "staging has judge gates"
    return gates


@dataclass
class Stage:
    run: PlaybookRun
    requests: list[RecordedRequest]
    objects: dict[tuple[str, str, str], dict[str, Any]]
    resource_version: int

    def counts(self) -> dict[str, int]:
        return recap_counts(self.run.output)

    def route(self) -> dict[str, Any]:
        return self.objects[("HTTPRoute", NAMESPACE, SERVICE)]

    def state(self) -> dict[str, Any]:
        return json.loads(self.route()["metadata"]["annotations"][STATE_ANNOTATION])

    def writes(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]


# The route change of the "changed" run: a request timeout the inventory does not set.
CHANGED_TIMEOUT = "7s"


def services_with_timeout(timeout: str) -> list[dict[str, Any]]:
    """staging's mirror_services with every service's timeout set to `timeout`."""
    services = yaml.safe_load((INVENTORY / "group_vars" / "all" / "services.yml").read_text())["mirror_services"]
    return [{**service, "timeout": timeout} for service in services]


def rule(route: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [r for r in route["spec"]["rules"] if r.get("name") == name]
    return found


def mirror_filters(route: dict[str, Any]) -> list[dict[str, Any]]:
    """Every RequestMirror filter of every rule."""
    return [f for r in route["spec"]["rules"] for f in r.get("filters", []) if f["type"] == "RequestMirror"]


def without_mirror_filters(route: dict[str, Any]) -> list[dict[str, Any]]:
    """The rules with their RequestMirror filters taken out (an emptied filters list dropped)."""
    rules = []
    for r in route["spec"]["rules"]:
        kept = {key: value for key, value in r.items() if key != "filters"}
        others = [f for f in r.get("filters", []) if f["type"] != "RequestMirror"]
        if others:
            kept["filters"] = others
        rules.append(kept)
    return rules


def shared_percent(filters: list[dict[str, Any]]) -> Fraction:
    """The one share of every mirror filter, exactly: percent, or fraction scaled to percent."""
    shares = set()
    for f in filters:
        mirror = f["requestMirror"]
        if "fraction" in mirror:
            fraction = mirror["fraction"]
            shares.add(Fraction(fraction["numerator"], fraction.get("denominator", 100)) * 100)
        else:
            shares.add(Fraction(mirror["percent"]))
    (share,) = shares
    return share


class RouteWatcher:
    """Polls the live HTTPRoute from a bounded background thread; keeps each new set of mirror filters."""

    def __init__(self, kube: KubeApiServer, max_seconds: float = 600.0) -> None:
        self.kube = kube
        self.seen: list[list[dict[str, Any]]] = []
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="route-watcher", daemon=True)

    def start(self) -> RouteWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started: stopping twice, or before a start, is fine
            self._thread.join(timeout=5)

    def _run(self) -> None:
        # Every 50 ms: a step holds at least a second, so no step is missed.
        for _ in range(int(self._max_seconds / 0.05)):
            for route in self.kube.list_objects("gateway.networking.k8s.io", "v1", "HTTPRoute"):
                if route["metadata"]["name"] == SERVICE:
                    filters = mirror_filters(route)
                    if not self.seen or self.seen[-1] != filters:
                        self.seen.append(filters)
            if self._stop.wait(0.05):
                return


@pytest.fixture(scope="module")
def stack(kube_api_server: KubeApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloutStack]:  # noqa: F811
    with rollout_stack(
        kube_api_server,
        tmp_path_factory.mktemp("prometheus"),
        namespace=NAMESPACE,
        service=SERVICE,
        workloads=WORKLOADS,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def watcher(stack: RolloutStack) -> Iterator[RouteWatcher]:
    route_watcher = RouteWatcher(stack.kube)
    try:
        yield route_watcher
    finally:
        route_watcher.stop()


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("build-staging-gateway-api")


@pytest.fixture(scope="module")
def stages(stack: RolloutStack, watcher: RouteWatcher, build_dir: Path) -> dict[str, Stage]:
    kube, prometheus, feeder = stack.kube, stack.prometheus, stack.feeder
    extra_vars = {
        "mirror_mesh_api": "gateway-api",
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
        "mirror_ramp_gates": gates_without_judges(),
        "mirror_ramp_window": WINDOW,
        "mirror_ramp_min_requests": 10,
        "mirror_ramp_mode": "watch",
        "mirror_ramp_poll_interval": "500ms",
        "mirror_ramp_deadline": "120s",
    }
    # Only the discovery cache of kubernetes.core: the connection itself comes from mirror_kube.
    env = {"TMPDIR": str(kube.tmpdir)}
    out: dict[str, Stage] = {}

    def run(label: str, playbook: str = "rollout.yml", extra: dict[str, Any] | None = None, **options: Any) -> None:
        kube.clear_requests()
        result = run_playbook(playbook, INVENTORY, extra_vars | (extra or {}), env=env, timeout=400, **options)
        assert result.returncode == 0, f"run {label} failed:\n{result.output[-5000:]}"
        out[label] = Stage(result, kube.requests, stored_objects(kube), kube.resource_version)

    watcher.start()
    try:
        run("first")
    finally:
        watcher.stop()
    run("again", extra={"mirror_ramp_mode": "scheduled"})
    # A changed route (another timeout) is applied while the mirror is live at 20 % (a second copy
    # of the manifests is kept), then playbooks/rollback.yml puts the first route back.
    run("changed", extra={"mirror_ramp_mode": "scheduled", "mirror_services": services_with_timeout(CHANGED_TIMEOUT)})
    run("rollback-check", "playbooks/rollback.yml", check=True)
    run("rollback", "playbooks/rollback.yml")
    run("stop", "playbooks/emergency-stop.yml")
    run("status", "playbooks/status.yml")

    feeder.failing.add(FAILING)
    query = error_ratio_query(SERVICE, NAMESPACE, ENVIRONMENT, FAILING, WINDOW)
    poll_until(
        lambda: any(float(s["value"][1]) > 0.2 for s in prometheus.query(query)),
        timeout=30,
        interval=0.5,
        what=f"the 5xx ratio of {FAILING} seen by Prometheus",
    )
    run("check", extra={"restart": True}, check=True, diff=True)
    run("breach", extra={"restart": True})
    return out


# -- 1. the first run: render, apply, ramp ---------------------------------------------------------


def test_first_run_applies_every_rendered_manifest(stages: dict[str, Stage], build_dir: Path) -> None:
    first = stages["first"]
    manifests = rendered_manifests(build_dir)
    assert {m["kind"] for m in manifests} == EXPECTED_KINDS
    services = sorted(m["metadata"]["name"] for m in manifests if m["kind"] == "Service")
    assert services == ["user-service-baseline", "user-service-candidate", "user-service-stable"]
    assert not [key for key in first.objects if key[0] in ("VirtualService", "DestinationRule")]
    for manifest in manifests:
        meta = manifest["metadata"]
        key = (manifest["kind"], meta["namespace"], meta["name"])
        assert key in first.objects, f"{key} not applied"
        stored = first.objects[key]
        assert stored["metadata"]["labels"] == meta["labels"], key
        if manifest["kind"] == "HTTPRoute":
            # The ramp owns the mirror filters since its first write; the rest is as rendered.
            assert without_mirror_filters(stored) == without_mirror_filters(manifest)
            assert stored["spec"]["parentRefs"] == manifest["spec"]["parentRefs"]
        else:
            assert stored["spec"] == manifest["spec"], key
    applied = task_lines(first.run.output, "mirror_apply : Apply the manifests")
    assert applied[-1] == "changed: [localhost]"
    assert sorted(applied[:-1]) == sorted(
        f"changed: {m['kind']} {m['metadata']['namespace']}/{m['metadata']['name']}" for m in manifests
    )
    creates = [r for r in first.requests if r.method == "POST"]
    assert len(creates) == len(manifests)
    assert all(r.status == 201 for r in creates)


def test_first_run_ramps_through_every_step_to_20_percent(stages: dict[str, Stage]) -> None:
    first = stages["first"]
    state = first.state()
    assert state["status"] == "completed", first.run.output[-3000:]
    assert state["step_index"] == len(STEPS) - 1
    assert state["percent"] == 20
    events = [(event["event"], event["step"], event["percent"]) for event in state["history"]]
    assert events == [
        ("start", 0, 0.5),
        ("advance", 1, 1),
        ("advance", 2, 5),
        ("advance", 3, 10),
        ("advance", 4, 20),
        ("complete", 4, 20),
    ]
    started = [event["at"] for event in state["history"]]
    assert all(later - earlier >= HOLD_SECONDS for earlier, later in itertools.pairwise(started)), "a hold was cut"
    filters = rule(first.route(), "mirror")["filters"]
    assert [f["requestMirror"]["backendRef"]["name"] for f in filters] == list(MIRROR_SERVICES)
    assert [f["requestMirror"]["percent"] for f in filters] == [20, 20]
    # Only the rule `mirror` mirrors: gRPC and the catch-all never do.
    assert mirror_filters(first.route()) == filters
    output = first.run.output
    for number, (held, now) in enumerate(itertools.pairwise(PERCENTS), start=1):
        assert (
            f"{ENVIRONMENT}/{SERVICE}: step {number} ({held}%) held {HOLD_SECONDS}s with passing gates: "
            f"now step {number + 1} of {len(STEPS)} ({now}%)"
        ) in output, output[-4000:]
    assert f"{ENVIRONMENT}/{SERVICE}: step 5 (20%) held {HOLD_SECONDS}s with passing gates: ramp completed" in output
    assert service_lines(output, RAMP_TASK) == [f"changed {SERVICE}"]


def test_every_step_wrote_its_exact_share_and_the_half_percent_as_a_fraction(
    stages: dict[str, Stage], watcher: RouteWatcher
) -> None:
    """The live route as seen while the first run ramped: one share per step, 0.5 % as 5/1000."""
    seen = watcher.seen
    mirrored = [filters for filters in seen if filters]
    assert [shared_percent(filters) for filters in mirrored] == [Fraction(p).limit_denominator(1000) for p in PERCENTS]
    half = mirrored[0]
    assert [f["requestMirror"]["fraction"] for f in half] == [{"numerator": 5, "denominator": 1000}] * 2
    assert all("percent" not in f["requestMirror"] for f in half)
    later = [f["requestMirror"] for filters in mirrored[1:] for f in filters]
    assert all("fraction" not in mirror and isinstance(mirror["percent"], int) for mirror in later)


# -- 2. a second run ------------------------------------------------------------------------------


def test_second_run_changes_nothing(stages: dict[str, Stage]) -> None:
    first, again = stages["first"], stages["again"]
    assert again.counts()["changed"] == 0, again.run.output[-3000:]
    applied = task_lines(again.run.output, "mirror_apply : Apply the manifests")
    assert applied and not [line for line in applied if line.startswith("changed")], applied
    assert again.objects == first.objects
    assert again.resource_version == first.resource_version
    assert not [r for r in again.requests if r.method in ("POST", "PUT", "DELETE")]
    assert service_lines(again.run.output, RAMP_TASK) == [f"ok {SERVICE}"]


# -- 3. and 4. emergency stop and status ------------------------------------------------------------


def test_emergency_stop_removes_the_mirror_and_keeps_the_rest(stages: dict[str, Stage]) -> None:
    again, stop = stages["again"], stages["stop"]
    assert mirror_filters(stop.route()) == []
    assert without_mirror_filters(stop.route()) == without_mirror_filters(again.route())
    state = stop.state()
    assert state["status"] == "stopped"
    assert state["percent"] == 0
    assert [event["event"] for event in state["history"]][-1] == "stop"
    # Nothing but the HTTPRoute was written: the stop renders and applies nothing.
    assert {r.path.rsplit("/", 2)[-2] for r in stop.writes()} == {"httproutes"}
    assert stop.counts()["changed"] == 1


def test_status_shows_the_stopped_ramp(stages: dict[str, Stage]) -> None:
    status = stages["status"]
    assert status.writes() == []
    assert status.objects == stages["stop"].objects
    output = status.run.output
    assert re.search(r"service\s+state\s+step\s+percent\s+since\s+next advance", output), output[-3000:]
    # The row of the table: service, state, step, percent (0 since the stop), ...
    assert re.search(rf"\b{SERVICE}\s+stopped\s+\S+\s+0(\.0)?\s", output), output[-3000:]


# -- 5. check mode --------------------------------------------------------------------------------


def test_check_mode_with_diff_persists_nothing_and_shows_the_restart(stages: dict[str, Stage]) -> None:
    before, check = stages["status"], stages["check"]
    assert check.resource_version == before.resource_version
    assert check.objects == before.objects
    writes = check.writes()
    assert writes, "check mode is a server-side dry run: the writes are sent"
    assert all(r.query.get("dryRun") == "All" for r in writes), [(r.method, r.path, r.query) for r in writes]
    assert service_lines(check.run.output, RAMP_TASK) == [f"changed {SERVICE}"]
    output = check.run.output
    assert "--- before: user-service mirror (before)" in output
    # The restart as a real run would write it: stopped at 0 % -> ramping at 0.5 %, as 5/1000.
    assert re.search(r"^-\s+state: stopped$", output, re.M), output[-4000:]
    assert re.search(r"^\+\s+state: ramping$", output, re.M)
    assert re.search(r"^-\s+percent: 0.0$", output, re.M)
    assert re.search(r"^\+\s+percent: 0.5$", output, re.M)
    assert len(re.findall(r"^\+\s+numerator: 5$", output, re.M)) == len(MIRROR_SERVICES)
    assert len(re.findall(r"^\+\s+denominator: 1000$", output, re.M)) == len(MIRROR_SERVICES)


# -- 6. the breach --------------------------------------------------------------------------------


def test_breach_rolls_back_and_removes_the_mirror_filters(stages: dict[str, Stage]) -> None:
    breach = stages["breach"]
    route = breach.route()
    assert mirror_filters(route) == []
    assert without_mirror_filters(route) == without_mirror_filters(stages["first"].route())
    state = breach.state()
    assert state["status"] == "rolled_back"
    assert state["percent"] == 0
    thresholds = yaml.safe_load((INVENTORY / "group_vars" / "all" / "thresholds.yml").read_text())
    critical = thresholds["mirror_thresholds"]["error_ratio"]["critical"]
    rollback = state["rollback"]
    assert rollback["gate"] == "mirror-5xx-ratio"
    assert rollback["threshold"] == critical
    assert rollback["value"] > critical
    events = [(event["event"], event["percent"]) for event in state["history"]]
    assert ("restart", 0.5) in events or ("start", 0.5) in events[-3:], events
    assert events[-1][0] == "rollback"
    assert f"{ENVIRONMENT}/{SERVICE}: rolled back from step 1 (0.5%)" in breach.run.output, breach.run.output[-4000:]
    assert service_lines(breach.run.output, RAMP_TASK) == [f"changed {SERVICE}"]


# -- rollback of the manifests while the mirror is live --------------------------------------------


def test_rollback_reapplies_the_previous_route_and_keeps_the_live_mirror(
    stages: dict[str, Stage], build_dir: Path
) -> None:
    again, changed, rolled = stages["again"], stages["changed"], stages["rollback"]
    assert {r["timeouts"]["request"] for r in changed.route()["spec"]["rules"]} == {CHANGED_TIMEOUT}
    assert mirror_filters(changed.route()) == mirror_filters(again.route()), "the apply kept the live mirror"
    copies = sorted(path.name for path in (build_dir / "applied").iterdir())
    assert len(copies) >= 2, copies
    # Check mode changes nothing; the rollback puts the first route back, the ramp's mirror and
    # state stay as they are live (the rollback is not the ramp's business).
    assert stages["rollback-check"].objects == changed.objects
    assert "re-applying " in rolled.run.output, rolled.run.output[-3000:]
    assert without_mirror_filters(rolled.route()) == without_mirror_filters(again.route())
    assert mirror_filters(rolled.route()) == mirror_filters(changed.route())
    assert mirror_filters(rolled.route()), "no mirror was live at the rollback"
    assert rolled.state() == changed.state()
