"""The GitOps examples (examples/gitops/) and what docs/gitops.md says of them, tested.

(a) The examples lint, parse and carry what the doc names. (b) The Argo CD jqPathExpressions, run
by a real jq the way Argo CD's diff normalizer runs them (`del(<expression>)` on the live and on
the desired object, then empty maps and lists dropped: util/argo/normalizers/diff_normalizer.go),
hide exactly the ramp's edits: a rendered route and the same route after a ramp compare equal,
any other edit still shows. (c) On the Kubernetes API double: the ramp's write is booked to the
field manager mirror-ramp; an apply of the rendered manifest by a GitOps controller's manager is
refused without force and removes the mirror with it; an apply of the manifest that carries the
live mirror (mirrorramp.routes.keep_live_mirror, the mirror_keep_live path) keeps it.

The routes: the Istio one is the golden render of mirror_istio (tests/manifests/golden, which
tests/manifests/test_istio_render.py holds equal to the role's output); the HTTPRoute is the golden
render of mirror_gateway_api (held equal by tests/manifests/test_gateway_api_render.py).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import jq
import jsonpatch
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mirrorramp import httproute, routes, virtualservice
from mirrorramp.drivers.kube import FIELD_MANAGER, GatewayApiDriver, IstioDriver, KubeRouteDriver
from mirrorramp.machine import reconcile
from mirrorramp.plan import fingerprint, parse_steps
from mirrorramp.routes import STATE_ANNOTATION, TARGETS_ANNOTATION
from mirrorramp.state import RampState
from tests.fakes.kube_api import KubeApiServer
from tests.fakes.kube_fixtures import kube_api, kube_api_server  # noqa: F401
from tests.support.ansible_run import REPO_ROOT, VENV_BIN

EXAMPLES = REPO_ROOT / "examples" / "gitops"
ARGOCD_APPLICATION = EXAMPLES / "argocd-application.yaml"
FLUX_KUSTOMIZATION = EXAMPLES / "flux-kustomization.yaml"
DOC = REPO_ROOT / "docs" / "gitops.md"
GOLDEN_VIRTUAL_SERVICE = (
    REPO_ROOT / "tests" / "manifests" / "golden" / "istio-dev" / "virtualservice-shop-dev-user-service.yml.golden"
)
GOLDEN_HTTP_ROUTE = (
    REPO_ROOT / "tests" / "manifests" / "golden" / "gateway-api-dev" / "httproute-shop-dev-user-service.yml.golden"
)

NAMESPACE = "shop-dev"
SERVICE = "user-service"
# The GitOps controllers' field managers: Argo CD's server-side apply, Flux's kustomize-controller.
GITOPS_MANAGERS = ("argocd-controller", "kustomize-controller")
FLUX_SSA_ANNOTATION = "kustomize.toolkit.fluxcd.io/ssa"
# The ramp 1 -> 5 -> 10 -> 20 %, entered by a fractional step, on to a third and to all.
STEPS = parse_steps([{"percent": p, "hold": "1h"} for p in (0.5, 1, 5, 10, 20, 33.3, 100)])
# Every percent the ramp sets, 0 being its rollback.
RAMP_PERCENTS = (0.0, *(step.percent for step in STEPS))


@dataclass(frozen=True)
class RouteKind:
    """One route API as this test drives it."""

    api: ModuleType
    driver: type[KubeRouteDriver]
    rules_field: str  # the atomic list that holds the mirror rule

    @property
    def group(self) -> str:
        return self.api.GROUP

    def rendered(self, percent: float, *, baseline: bool = False) -> dict[str, Any]:
        """The route as the role renders it with `mirror_percent: percent`; with `baseline`, a
        second mirror target (the baseline shadow): the form with one entry per target."""
        route = (
            yaml.safe_load(GOLDEN_VIRTUAL_SERVICE.read_text()) if self.api is virtualservice else rendered_http_route()
        )
        if baseline:
            annotations = route["metadata"]["annotations"]
            targets = json.loads(annotations[TARGETS_ANNOTATION])
            key = "subset" if self.api is virtualservice else "name"
            targets.append({**targets[0], key: targets[0][key].replace("candidate", "baseline")})
            annotations[TARGETS_ANNOTATION] = json.dumps(targets, sort_keys=True, separators=(",", ":"))
        return self.api.with_mirror_percent(route, percent)


def rendered_http_route() -> dict[str, Any]:
    """user-service as roles/mirror_gateway_api renders it (the golden render of dev with its match
    in HTTPRouteMatch form, held equal to the role's output by tests/manifests/test_gateway_api_render.py),
    without its mirror: the counterpart of the golden VirtualService."""
    return httproute.with_mirror_percent(yaml.safe_load(GOLDEN_HTTP_ROUTE.read_text()), 0)


ISTIO = RouteKind(virtualservice, IstioDriver, "http")
GATEWAY_API = RouteKind(httproute, GatewayApiDriver, "rules")
KINDS = pytest.mark.parametrize("kind", [ISTIO, GATEWAY_API], ids=["VirtualService", "HTTPRoute"])


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def ramping_state(percent: float, now: float) -> RampState:
    """The state the ramp records at the step of `percent`."""
    index = next(i for i, step in enumerate(STEPS) if step.percent == percent)
    return RampState.initial().with_event(
        now,
        "start" if index == 0 else "advance",
        status="ramping",
        step_index=index,
        percent=percent,
        step_started_at=now,
        updated_at=now,
        plan=fingerprint(STEPS),
    )


def rolled_back_state(now: float) -> RampState:
    return RampState.initial().with_event(now, "rollback", status="rolled_back", percent=0.0, updated_at=now)


def after_ramp(kind: RouteKind, rendered: dict[str, Any], percent: float) -> dict[str, Any]:
    """`rendered` as the ramp leaves it at `percent`: its mirror and its state annotation."""
    ramped = kind.api.with_mirror_percent(rendered, percent)
    now = 1_700_000_000.0
    state = ramping_state(percent, now) if percent else rolled_back_state(now)
    ramped["metadata"]["annotations"][STATE_ANNOTATION] = state.to_json()
    return ramped


# ---------------------------------------------------------------------------------------------
# (a) the examples


def ignore_rules() -> dict[str, dict[str, Any]]:
    """The Argo CD example's ignoreDifferences, by kind."""
    return {rule["kind"]: rule for rule in load_yaml(ARGOCD_APPLICATION)["spec"]["ignoreDifferences"]}


def jq_expressions(kind: RouteKind) -> list[str]:
    return ignore_rules()[kind.api.KIND]["jqPathExpressions"]


def doc_yaml_blocks() -> list[Any]:
    """The YAML blocks of docs/gitops.md, parsed."""
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)]


def test_the_examples_pass_yamllint_strict() -> None:
    lint = subprocess.run(
        [str(VENV_BIN / "yamllint"), "--strict", "-c", str(REPO_ROOT / ".yamllint"), str(EXAMPLES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_argocd_application_has_what_the_doc_names() -> None:
    application = load_yaml(ARGOCD_APPLICATION)
    assert (application["apiVersion"], application["kind"]) == ("argoproj.io/v1alpha1", "Application")
    spec = application["spec"]
    assert spec["syncPolicy"]["automated"]["selfHeal"] is True, "the setting that reverts ramps without the rest"
    assert set(spec["syncPolicy"]["syncOptions"]) == {"RespectIgnoreDifferences=true", "ApplyOutOfSyncOnly=true"}
    assert "ServerSideApply=true" not in spec["syncPolicy"]["syncOptions"]
    rules = ignore_rules()
    assert [(rule["group"], kind) for kind, rule in rules.items()] == [
        (virtualservice.GROUP, virtualservice.KIND),
        (httproute.GROUP, httproute.KIND),
    ]
    for kind, rule in rules.items():
        # No name: every route of the Application (the expressions pick the rule named `mirror`).
        assert set(rule) == {"group", "kind", "jqPathExpressions"}, kind
        assert not any(TARGETS_ANNOTATION in expression for expression in rule["jqPathExpressions"])
    shown = next(block for block in doc_yaml_blocks() if isinstance(block, dict) and "ignoreDifferences" in block)
    assert shown == {key: spec[key] for key in ("ignoreDifferences", "syncPolicy")}, (
        "the doc shows the example as it is"
    )


def test_the_flux_kustomization_marks_exactly_the_routes_if_not_present() -> None:
    kustomization = load_yaml(FLUX_KUSTOMIZATION)
    assert (kustomization["apiVersion"], kustomization["kind"]) == ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")
    assert kustomization["spec"]["prune"] is True
    assert {FLUX_SSA_ANNOTATION: "IfNotPresent"} in doc_yaml_blocks()
    patched_kinds = []
    for entry in kustomization["spec"]["patches"]:
        kind = {virtualservice.KIND: ISTIO, httproute.KIND: GATEWAY_API}[entry["target"]["kind"]]
        assert entry["target"] == {"group": kind.group, "kind": kind.api.KIND}
        patched_kinds.append(kind.api.KIND)
        # The patch as kustomize applies it (RFC 6902) to the rendered route, with and without a mirror.
        for percent in (0, 0.5):
            rendered = kind.rendered(percent)
            patched = jsonpatch.apply_patch(rendered, yaml.safe_load(entry["patch"]))
            assert patched["metadata"]["annotations"][FLUX_SSA_ANNOTATION] == "IfNotPresent"
            del patched["metadata"]["annotations"][FLUX_SSA_ANNOTATION]
            assert patched == rendered, "the patch adds the annotation and nothing else"
    assert patched_kinds == [virtualservice.KIND, httproute.KIND]


# ---------------------------------------------------------------------------------------------
# (b) the Argo CD expressions select exactly the ramp's fields


def remove_empty_objects(value: Any) -> Any:
    """Argo CD's removeEmptyObjects after the ignore patches: empty maps and lists go, at any depth
    of maps, and map items of lists that end up empty go too (lists of scalars stay as they are)."""
    if not isinstance(value, dict):
        return value
    cleaned: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            item = remove_empty_objects(item)
            if not item:
                continue
        elif isinstance(item, list):
            item = [remove_empty_objects(e) for e in item if not isinstance(e, dict) or remove_empty_objects(e)]
            if not item:
                continue
        cleaned[key] = item
    return cleaned


def argocd_normalized(obj: dict[str, Any], expressions: list[str]) -> dict[str, Any]:
    """`obj` as Argo CD's ignore normalizer leaves it: `del(<expression>)` each, then empties dropped.

    Argo CD skips an expression that fails (logged at debug level only): here a failure raises, so
    an expression that would silently ignore nothing cannot pass.
    """
    document = copy.deepcopy(obj)
    for expression in expressions:
        results = jq.compile(f"del({expression})").input_value(document).all()
        assert len(results) == 1, f"{expression!r} gave {len(results)} documents; Argo CD needs one"
        document = results[0]
    return remove_empty_objects(document)


def test_the_normalizer_model_against_hand_made_cases() -> None:
    """The two halves of the model, checked on small cases worked out by hand."""
    assert remove_empty_objects(
        {"a": {}, "b": [], "c": [{}, {"d": {}}], "e": [1, {"f": 1}], "g": {"h": {"i": []}}}
    ) == {"e": [1, {"f": 1}]}
    rule = {"name": "mirror", "filters": [{"type": "RequestMirror"}, {"type": "X"}, {"type": "RequestMirror"}]}
    other = {"name": "primary", "filters": [{"type": "RequestMirror"}]}
    route = {"spec": {"rules": [rule, other]}, "metadata": {"annotations": {STATE_ANNOTATION: "{}", "k": "v"}}}
    assert argocd_normalized(route, jq_expressions(GATEWAY_API)) == {
        "spec": {"rules": [{"name": "mirror", "filters": [{"type": "X"}]}, other]},
        "metadata": {"annotations": {"k": "v"}},
    }
    # Objects without the lists or the annotations: the expressions delete nothing and fail on nothing.
    for kind in (ISTIO, GATEWAY_API):
        assert argocd_normalized({"metadata": {"name": "x"}}, jq_expressions(kind)) == {"metadata": {"name": "x"}}


def http_edits() -> dict[str, Any]:
    """Edits the ignore rules must still show, on a route as the ramp left it (by name)."""

    def rule(route: dict[str, Any], name: str) -> dict[str, Any]:
        return next(r for r in route["spec"]["rules"] if r["name"] == name)

    header_filter = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}
    stranger_mirror = {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": "elsewhere", "port": 80}},
    }
    return {
        "mirror-rule-timeout": lambda r: rule(r, "mirror")["timeouts"].update(request="9s"),
        "another-filter-on-the-mirror-rule": lambda r: (
            rule(r, "mirror").setdefault("filters", []).append(header_filter)
        ),
        "a-mirror-on-another-rule": lambda r: rule(r, "primary").setdefault("filters", []).append(stranger_mirror),
        "mirror-rule-match": lambda r: rule(r, "mirror")["matches"].pop(),
        "targets-annotation": lambda r: r["metadata"]["annotations"].update({TARGETS_ANNOTATION: "[]"}),
        "a-label": lambda r: r["metadata"]["labels"].update(team="x"),
    }


def istio_edits() -> dict[str, Any]:
    def route(vs: dict[str, Any], name: str) -> dict[str, Any]:
        return next(r for r in vs["spec"]["http"] if r["name"] == name)

    return {
        "mirror-route-timeout": lambda vs: route(vs, "mirror").update(timeout="9s"),
        "mirror-route-retries": lambda vs: route(vs, "mirror")["retries"].update(attempts=5),
        "a-mirror-on-another-route": lambda vs: route(vs, "primary").update(
            mirror={"host": "elsewhere"}, mirrorPercentage={"value": 1.0}
        ),
        "mirror-route-destination": lambda vs: route(vs, "mirror")["route"][0]["destination"].update(subset="x"),
        "targets-annotation": lambda vs: vs["metadata"]["annotations"].update({TARGETS_ANNOTATION: "[]"}),
        "a-label": lambda vs: vs["metadata"]["labels"].update(team="x"),
    }


@KINDS
@pytest.mark.parametrize("render_percent", [0, 0.5], ids=["rendered-off", "rendered-0.5"])
@pytest.mark.parametrize("baseline", [False, True], ids=["one-target", "two-targets"])
def test_the_ramps_edits_compare_equal(kind: RouteKind, render_percent: float, baseline: bool) -> None:
    rendered = kind.rendered(render_percent, baseline=baseline)
    expressions = jq_expressions(kind)
    desired = argocd_normalized(rendered, expressions)
    for percent in RAMP_PERCENTS:
        ramped = after_ramp(kind, rendered, percent)
        assert ramped != rendered
        if baseline and percent:
            assert len(kind.api.mirror_targets(ramped)) == 2
            assert kind is GATEWAY_API or "mirrors" in kind.api.mirror_settings(ramped), "one entry per target"
        assert argocd_normalized(ramped, expressions) == desired, f"the ramp at {percent}% shows as a difference"


@KINDS
def test_every_other_edit_still_shows(kind: RouteKind) -> None:
    rendered = kind.rendered(0)
    expressions = jq_expressions(kind)
    desired = argocd_normalized(rendered, expressions)
    edits = istio_edits() if kind is ISTIO else http_edits()
    for name, edit in edits.items():
        for percent in (0, 5):
            edited = after_ramp(kind, rendered, percent)
            edit(edited)
            assert argocd_normalized(edited, expressions) != desired, f"{name} at {percent}% is hidden"


# ---------------------------------------------------------------------------------------------
# (c) field ownership on the Kubernetes API double


def objects_api(kube: KubeApiServer) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api_client())


def server_side_apply(
    kube: KubeApiServer, kind: RouteKind, body: dict[str, Any], manager: str, *, force: bool = False
) -> dict[str, Any]:
    return objects_api(kube).patch_namespaced_custom_object(
        kind.group,
        kind.api.VERSION,
        NAMESPACE,
        kind.api.PLURAL,
        SERVICE,
        body,
        field_manager=manager,
        force=force,
        _content_type="application/apply-patch+yaml",
    )


def live_route(kube: KubeApiServer, kind: RouteKind) -> dict[str, Any]:
    route = kube.get_object(kind.group, kind.api.VERSION, kind.api.KIND, NAMESPACE, SERVICE)
    assert route is not None
    return route


def owners(route: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["manager"], e["operation"]): e["fieldsV1"] for e in route["metadata"]["managedFields"]}


def ramp_to(kube: KubeApiServer, kind: RouteKind, percent: float) -> RampState:
    """The ramp's own write, through its driver: mirror and state in one JSON patch."""
    driver = kind.driver(kube.api_client(), NAMESPACE, SERVICE)
    state = ramping_state(percent, time.time())
    driver.write(driver.read(), state, percent, dry_run=False)
    return state


def create_as_gitops(kube: KubeApiServer, kind: RouteKind, rendered: dict[str, Any]) -> None:
    client.CoreV1Api(kube.api_client()).create_namespace({"metadata": {"name": NAMESPACE}})
    server_side_apply(kube, kind, rendered, "argocd-controller")


@pytest.mark.slow  # the API double: a server on loopback
@KINDS
def test_the_ramps_write_is_booked_to_mirror_ramp(kube_api: KubeApiServer, kind: RouteKind) -> None:  # noqa: F811
    create_as_gitops(kube_api, kind, kind.rendered(0))
    ramp_to(kube_api, kind, 5.0)
    live = live_route(kube_api, kind)
    assert kind.api.read_mirror_percent(live) == 5.0
    assert FIELD_MANAGER == "mirror-ramp"
    # The list holding the mirror rule is atomic: the ramp's change inside it books all of it.
    assert owners(live)[(FIELD_MANAGER, "Update")] == {
        "f:metadata": {"f:annotations": {f"f:{STATE_ANNOTATION}": {}}},
        "f:spec": {f"f:{kind.rules_field}": {}},
    }
    applied = owners(live)[("argocd-controller", "Apply")]
    assert f"f:{kind.rules_field}" not in applied["f:spec"], "the GitOps manager lost the list to the ramp"
    assert f"f:{TARGETS_ANNOTATION}" in applied["f:metadata"]["f:annotations"], "the render's annotation stays its"
    if kind is GATEWAY_API:
        shown = next(block for block in doc_yaml_blocks() if isinstance(block, dict) and "managedFields" in block)
        assert shown["managedFields"] == [
            {key: entry[key] for key in ("manager", "operation", "fieldsV1")}
            for entry in live["metadata"]["managedFields"]
        ], "docs/gitops.md shows the managedFields as they are"


@pytest.mark.slow  # the API double: a server on loopback
@KINDS
@pytest.mark.parametrize("manager", GITOPS_MANAGERS)
def test_a_non_forced_apply_of_the_render_is_refused_naming_mirror_ramp(
    kube_api: KubeApiServer,  # noqa: F811
    kind: RouteKind,
    manager: str,
) -> None:
    rendered = kind.rendered(0)
    create_as_gitops(kube_api, kind, rendered)
    ramp_to(kube_api, kind, 5.0)
    before = live_route(kube_api, kind)
    with pytest.raises(ApiException) as refused:
        server_side_apply(kube_api, kind, rendered, manager)
    assert refused.value.status == 409
    status = json.loads(refused.value.body)
    assert status["message"] == (
        f'Apply failed with 1 conflict: conflict with "{FIELD_MANAGER}" using {kind.group}/{kind.api.VERSION}: '
        f".spec.{kind.rules_field}"
    )
    assert [cause["field"] for cause in status["details"]["causes"]] == [f".spec.{kind.rules_field}"]
    assert live_route(kube_api, kind) == before, "a refused apply changes nothing"


@pytest.mark.slow  # the API double: a server on loopback
@KINDS
@pytest.mark.parametrize("manager", GITOPS_MANAGERS)
def test_a_forced_apply_of_the_render_removes_the_mirror_and_the_ramp_sees_it(
    kube_api: KubeApiServer,  # noqa: F811
    kind: RouteKind,
    manager: str,
) -> None:
    rendered = kind.rendered(0)
    create_as_gitops(kube_api, kind, rendered)
    recorded = ramp_to(kube_api, kind, 5.0)
    forced = server_side_apply(kube_api, kind, rendered, manager, force=True)
    assert kind.api.read_mirror_percent(forced) == 0.0
    assert kind.api.mirror_settings(forced) == {}
    assert f"f:{kind.rules_field}" not in owners(forced).get((FIELD_MANAGER, "Update"), {}).get("f:spec", {})
    # The state annotation is the ramp's alone, and git's manifest does not name it: it stays.
    assert forced["metadata"]["annotations"][STATE_ANNOTATION] == recorded.to_json()

    # The ramp's next run: no mirror live while the record says 5 %. It records a rollback and
    # leaves the mirror off (until restart=true); it never claims a percent it does not have.
    snapshot = kind.driver(kube_api.api_client(), NAMESPACE, SERVICE).read()
    assert (snapshot.state.percent, snapshot.percent) == (5.0, 0.0)
    fix = reconcile(snapshot.state, STEPS, snapshot.percent, snapshot.mirror_drift, time.time())
    assert fix is not None
    assert (fix.state.status, fix.state.percent) == ("rolled_back", 0.0)
    assert "no mirror is live" in fix.reason


@pytest.mark.slow  # the API double: a server on loopback
@KINDS
def test_a_forced_apply_of_a_render_with_a_mirror_puts_that_mirror_back(
    kube_api: KubeApiServer,  # noqa: F811
    kind: RouteKind,
) -> None:
    """Why the doc says render with mirror_percent: 0: git's mirror comes back after a rollback."""
    rendered = kind.rendered(0.5)
    create_as_gitops(kube_api, kind, rendered)
    ramp_to(kube_api, kind, 5.0)
    driver = kind.driver(kube_api.api_client(), NAMESPACE, SERVICE)
    driver.write(driver.read(), rolled_back_state(time.time()), 0.0, dry_run=False)
    assert kind.api.read_mirror_percent(live_route(kube_api, kind)) == 0.0
    forced = server_side_apply(kube_api, kind, rendered, "kustomize-controller", force=True)
    assert kind.api.read_mirror_percent(forced) == 0.5, "a rolled-back candidate is mirrored again"


@pytest.mark.slow  # the API double: a server on loopback
@KINDS
def test_an_apply_that_carries_the_live_mirror_keeps_it(kube_api: KubeApiServer, kind: RouteKind) -> None:  # noqa: F811
    """The project's own path (mirror_apply: mirror_keep_live over routes.keep_live_mirror): the
    applied manifest holds the live mirror, so no apply can take it away, forced or not."""
    rendered = kind.rendered(0.5)
    create_as_gitops(kube_api, kind, rendered)
    ramp_to(kube_api, kind, 5.0)
    live = live_route(kube_api, kind)
    kept = routes.keep_live_mirror(rendered, live)
    assert kind.api.mirror_settings(kept) == kind.api.mirror_settings(live)

    for manager in GITOPS_MANAGERS:
        applied = server_side_apply(kube_api, kind, kept, manager)
        assert kind.api.read_mirror_percent(applied) == 5.0, manager
    forced = server_side_apply(kube_api, kind, kept, "argocd-controller", force=True)
    assert kind.api.read_mirror_percent(forced) == 5.0
    # What kubernetes.core.k8s (state: present) sends for a custom resource: a merge patch.
    merged = objects_api(kube_api).patch_namespaced_custom_object(
        kind.group, kind.api.VERSION, NAMESPACE, kind.api.PLURAL, SERVICE, kept
    )
    assert kind.api.read_mirror_percent(merged) == 5.0
    # A render changed meanwhile (here: the timeout) goes through, the mirror with it.
    changed = copy.deepcopy(rendered)
    rule = changed["spec"][kind.rules_field][[r["name"] for r in changed["spec"][kind.rules_field]].index("mirror")]
    if kind is ISTIO:
        rule["timeout"] = "9s"
    else:
        rule["timeouts"]["request"] = "9s"
    after = server_side_apply(
        kube_api, kind, routes.keep_live_mirror(changed, live_route(kube_api, kind)), "argocd-controller", force=True
    )
    assert kind.api.read_mirror_percent(after) == 5.0
    mirror_rule = next(r for r in after["spec"][kind.rules_field] if r["name"] == "mirror")
    assert (mirror_rule.get("timeout") or mirror_rule["timeouts"]["request"]) == "9s"
