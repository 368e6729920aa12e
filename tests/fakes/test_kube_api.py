"""The Kubernetes API test double, driven by the real kubernetes python client (and, for the
server-side apply of kubernetes.core, by one playbook run)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.fakes.kube_api import KubeApiServer
from tests.fakes.kube_fixtures import kube_api, kube_api_server, kube_client, kube_env  # noqa: F401
from tests.support.ansible_run import run_playbook

pytestmark = pytest.mark.slow

ISTIO = "networking.istio.io"
NS = "default"


def virtual_service(name: str = "reviews", percent: Any = 1.0, labels: dict | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{ISTIO}/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {"app": name}},
        "spec": {
            "hosts": [name],
            "http": [
                {
                    "route": [{"destination": {"host": name, "subset": "v1"}}],
                    "mirror": {"host": name, "subset": "v2"},
                    "mirrorPercentage": {"value": percent},
                }
            ],
        },
    }


def status_of(error: ApiException) -> dict[str, Any]:
    body = json.loads(error.body)
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == error.status
    return body


def raw(server: KubeApiServer, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {server.token}", **kwargs.pop("headers", {})}
    return requests.request(method, server.url + path, headers=headers, timeout=10, **kwargs)


@pytest.fixture
def objects(kube_client: Any) -> client.CustomObjectsApi:  # noqa: F811
    return client.CustomObjectsApi(kube_client)


def create_vs(objects: client.CustomObjectsApi, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return objects.create_namespaced_custom_object(ISTIO, "v1", NS, "virtualservices", body or virtual_service())


def test_discovery_documents(kube_api: KubeApiServer) -> None:  # noqa: F811
    groups = raw(kube_api, "GET", "/apis").json()
    assert groups["kind"] == "APIGroupList"
    for group in groups["groups"]:
        assert group["preferredVersion"] in group["versions"], group["name"]
    istio = next(g for g in groups["groups"] if g["name"] == ISTIO)
    assert [v["version"] for v in istio["versions"]] == ["v1", "v1beta1", "v1alpha3"]

    def names(path: str) -> set[str]:
        return {r["name"] for r in raw(kube_api, "GET", path).json()["resources"]}

    assert names("/api/v1") == {"namespaces", "configmaps", "services", "secrets"}
    assert "envoyfilters" in names(f"/apis/{ISTIO}/v1alpha3")
    assert "envoyfilters" not in names(f"/apis/{ISTIO}/v1")
    assert names("/apis/monitoring.coreos.com/v1") == {"servicemonitors", "podmonitors", "prometheusrules"}
    assert raw(kube_api, "GET", "/version").json()["major"] == "1"


def test_requests_without_the_token_are_unauthorized(kube_api: KubeApiServer) -> None:  # noqa: F811
    answer = requests.get(kube_api.url + "/apis", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert answer.status_code == 401
    assert answer.json()["reason"] == "Unauthorized"
    assert kube_api.token not in repr(kube_api.requests)


def test_virtual_service_lifecycle(kube_api: KubeApiServer, objects: client.CustomObjectsApi) -> None:  # noqa: F811
    created = create_vs(objects)
    meta = created["metadata"]
    assert meta["generation"] == 1
    assert isinstance(meta["resourceVersion"], str)
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")

    # One store per group/resource: the same object at every served version.
    old = objects.get_namespaced_custom_object(ISTIO, "v1alpha3", NS, "virtualservices", "reviews")
    assert old["apiVersion"] == f"{ISTIO}/v1alpha3"
    assert old["metadata"]["uid"] == meta["uid"]

    patch = {"spec": {"http": [{**virtual_service()["spec"]["http"][0], "mirrorPercentage": {"value": 5.0}}]}}
    patched = objects.patch_namespaced_custom_object(ISTIO, "v1", NS, "virtualservices", "reviews", patch)
    assert patched["metadata"]["generation"] == 2
    assert int(patched["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])

    same = objects.patch_namespaced_custom_object(ISTIO, "v1", NS, "virtualservices", "reviews", patch)
    assert same == patched, "a no-op patch changes nothing"

    labelled = objects.patch_namespaced_custom_object(
        ISTIO, "v1", NS, "virtualservices", "reviews", {"metadata": {"labels": {"step": "2"}}}
    )
    assert labelled["metadata"]["generation"] == 2, "metadata changes do not bump generation"
    assert labelled["metadata"]["resourceVersion"] != patched["metadata"]["resourceVersion"]

    path = "/spec/http/0/mirrorPercentage/value"
    json_patch = [{"op": "test", "path": path, "value": 5.0}, {"op": "replace", "path": path, "value": 10.0}]
    done = objects.patch_namespaced_custom_object(
        ISTIO, "v1", NS, "virtualservices", "reviews", json_patch, _content_type="application/json-patch+json"
    )
    assert done["spec"]["http"][0]["mirrorPercentage"]["value"] == 10.0
    with pytest.raises(ApiException) as failed_test:
        objects.patch_namespaced_custom_object(
            ISTIO, "v1", NS, "virtualservices", "reviews", json_patch, _content_type="application/json-patch+json"
        )
    assert failed_test.value.status == 422
    assert status_of(failed_test.value)["reason"] == "Invalid"

    stale = {**done, "metadata": {**done["metadata"], "resourceVersion": meta["resourceVersion"]}}
    with pytest.raises(ApiException) as conflict:
        objects.replace_namespaced_custom_object(ISTIO, "v1", NS, "virtualservices", "reviews", stale)
    assert conflict.value.status == 409
    assert status_of(conflict.value)["reason"] == "Conflict"

    unconditional = {**done, "metadata": {k: v for k, v in done["metadata"].items() if k != "resourceVersion"}}
    with pytest.raises(ApiException) as no_version:
        objects.replace_namespaced_custom_object(ISTIO, "v1", NS, "virtualservices", "reviews", unconditional)
    assert no_version.value.status == 422
    assert status_of(no_version.value)["details"]["causes"][0]["field"] == "metadata.resourceVersion"

    done["spec"]["hosts"] = ["reviews", "reviews.default.svc.cluster.local"]
    replaced = objects.replace_namespaced_custom_object(ISTIO, "v1", NS, "virtualservices", "reviews", done)
    assert replaced["metadata"]["generation"] == done["metadata"]["generation"] + 1

    deleted = objects.delete_namespaced_custom_object(
        ISTIO, "v1", NS, "virtualservices", "reviews", body=client.V1DeleteOptions()
    )
    assert deleted["metadata"]["name"] == "reviews"
    for call in (objects.get_namespaced_custom_object, objects.delete_namespaced_custom_object):
        with pytest.raises(ApiException) as gone:
            call(ISTIO, "v1", NS, "virtualservices", "reviews")
        assert gone.value.status == 404
        assert status_of(gone.value)["details"] == {"name": "reviews", "group": ISTIO, "kind": "virtualservices"}
    assert kube_api.get_object(ISTIO, "v1", "VirtualService", NS, "reviews") is None


def test_create_errors(kube_api: KubeApiServer, objects: client.CustomObjectsApi) -> None:  # noqa: F811
    create_vs(objects)
    with pytest.raises(ApiException) as exists:
        create_vs(objects)
    assert (exists.value.status, status_of(exists.value)["reason"]) == (409, "AlreadyExists")

    elsewhere = virtual_service("ratings")
    elsewhere["metadata"]["namespace"] = "istio-system"
    with pytest.raises(ApiException) as mismatch:
        create_vs(objects, elsewhere)
    assert (mismatch.value.status, status_of(mismatch.value)["reason"]) == (400, "BadRequest")

    homeless = virtual_service("x")
    del homeless["metadata"]["namespace"]
    with pytest.raises(ApiException) as no_namespace:
        objects.create_namespaced_custom_object(ISTIO, "v1", "absent", "virtualservices", homeless)
    assert no_namespace.value.status == 404


@pytest.mark.parametrize(
    ("plural", "body", "field"),
    [
        pytest.param(
            "virtualservices",
            virtual_service(percent="abc"),
            "spec.http[0].mirrorPercentage.value",
            id="virtualservice-percentage-string",
        ),
        pytest.param(
            "destinationrules",
            {"apiVersion": f"{ISTIO}/v1", "kind": "DestinationRule", "metadata": {"name": "r"}, "spec": {"host": 3}},
            "spec.host",
            id="destinationrule-host-number",
        ),
        pytest.param(
            "prometheusrules",
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {"name": "r"},
                "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "labels": "x"}]}]},
            },
            "spec.groups[0].rules[0].labels",
            id="prometheusrule-labels-string",
        ),
    ],
)
def test_wrong_type_is_invalid_naming_the_field(
    kube_api: KubeApiServer,  # noqa: F811
    objects: client.CustomObjectsApi,
    plural: str,
    body: dict,
    field: str,
) -> None:
    group, version = body["apiVersion"].split("/")
    with pytest.raises(ApiException) as error:
        objects.create_namespaced_custom_object(group, version, NS, plural, body)
    status = status_of(error.value)
    assert (error.value.status, status["reason"]) == (422, "Invalid")
    assert field in status["message"]
    assert status["details"]["causes"][0]["field"] == field
    assert kube_api.list_objects(group, version, body["kind"]) == []


def test_unknown_fields_are_pruned_with_a_warning_or_refused_when_strict(kube_api: KubeApiServer) -> None:  # noqa: F811
    body = virtual_service()
    body["spec"]["http"][0]["mirrorShare"] = 5  # a typo: mirrorPercent would be a (deprecated) field
    path = f"/apis/{ISTIO}/v1/namespaces/{NS}/virtualservices"
    strict = raw(kube_api, "POST", path + "?fieldValidation=Strict", json=body)
    assert strict.status_code == 400
    assert 'unknown field "spec.http[0].mirrorShare"' in strict.json()["message"]

    warned = raw(kube_api, "POST", path, json=body)
    assert warned.status_code == 201
    assert 'unknown field \\"spec.http[0].mirrorShare\\"' in warned.headers["Warning"]
    assert "mirrorShare" not in warned.json()["spec"]["http"][0]


def test_strategic_merge(kube_api: KubeApiServer, kube_client: Any, objects: client.CustomObjectsApi) -> None:  # noqa: F811
    create_vs(objects)
    with pytest.raises(ApiException) as refused:
        objects.patch_namespaced_custom_object(
            ISTIO,
            "v1",
            NS,
            "virtualservices",
            "reviews",
            {"spec": {"hosts": ["x"]}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert (refused.value.status, status_of(refused.value)["reason"]) == (415, "UnsupportedMediaType")

    apps = client.AppsV1Api(kube_client)
    container = {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}
    apps.create_namespaced_deployment(
        NS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "app"},
            "spec": {
                "selector": {"matchLabels": {"app": "app"}},
                "template": {
                    "metadata": {"labels": {"app": "app"}},
                    "spec": {"containers": [container, {"name": "sidecar", "image": "side:1"}]},
                },
            },
        },
    )
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}}
    apps.patch_namespaced_deployment("app", NS, patch)  # a dict body goes as strategic merge
    assert kube_api.requests[-1].content_type == "application/strategic-merge-patch+json"
    stored = kube_api.get_object("apps", "v1", "Deployment", NS, "app")
    containers = stored["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("app", "app:2"), ("sidecar", "side:1")]
    assert containers[0]["env"] == container["env"], "merged by name, not replaced"
    assert stored["metadata"]["generation"] == 2


def test_horizontal_pod_autoscaler(kube_api: KubeApiServer, kube_client: Any) -> None:  # noqa: F811
    hpa = client.AutoscalingV2Api(kube_client)
    hpa.create_namespaced_horizontal_pod_autoscaler(
        "istio-system",
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "mirror-gateway"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mirror-gateway"},
                "minReplicas": 2,
                "maxReplicas": 6,
            },
        },
    )
    listed = hpa.list_horizontal_pod_autoscaler_for_all_namespaces()
    assert [(i.metadata.namespace, i.spec.max_replicas) for i in listed.items] == [("istio-system", 6)]


@pytest.mark.parametrize(
    ("label_selector", "field_selector", "expected"),
    [
        pytest.param("", "", ["a", "b", "c", "d"], id="all"),
        pytest.param("tier=web", "", ["a", "b"], id="equals"),
        pytest.param("tier==web,track!=canary", "", ["a"], id="double-equals-and-not-equals"),
        pytest.param("track", "", ["b", "c"], id="exists"),
        pytest.param("!track", "", ["a", "d"], id="not-exists"),
        pytest.param("tier in (web, db)", "", ["a", "b", "c"], id="in"),
        pytest.param("tier notin (web)", "", ["c", "d"], id="notin-includes-unlabelled"),
        pytest.param("", "metadata.name=c", ["c"], id="field-name"),
        pytest.param("", "metadata.namespace!=default", ["d"], id="field-namespace"),
    ],
)
def test_list_selectors(
    kube_api: KubeApiServer,  # noqa: F811
    kube_client: Any,  # noqa: F811
    label_selector: str,
    field_selector: str,
    expected: list[str],
) -> None:
    core = client.CoreV1Api(kube_client)
    labels = {
        "a": {"tier": "web"},
        "b": {"tier": "web", "track": "canary"},
        "c": {"tier": "db", "track": "stable"},
        "d": {},
    }
    for name, wanted in labels.items():
        namespace = "istio-system" if name == "d" else NS
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": wanted}})
    found = core.list_config_map_for_all_namespaces(label_selector=label_selector, field_selector=field_selector)
    assert sorted(item.metadata.name for item in found.items) == expected


def test_dry_run_persists_nothing(kube_api: KubeApiServer, objects: client.CustomObjectsApi) -> None:  # noqa: F811
    created = objects.create_namespaced_custom_object(
        ISTIO, "v1", NS, "virtualservices", virtual_service(), dry_run="All"
    )
    assert created["metadata"]["uid"]
    assert kube_api.get_object(ISTIO, "v1", "VirtualService", NS, "reviews") is None

    create_vs(objects)
    before = kube_api.get_object(ISTIO, "v1", "VirtualService", NS, "reviews")
    answer = objects.patch_namespaced_custom_object(
        ISTIO, "v1", NS, "virtualservices", "reviews", {"spec": {"hosts": ["x"]}}, dry_run="All"
    )
    assert answer["spec"]["hosts"] == ["x"]
    objects.delete_namespaced_custom_object(ISTIO, "v1", NS, "virtualservices", "reviews", dry_run="All")
    assert kube_api.get_object(ISTIO, "v1", "VirtualService", NS, "reviews") == before
    with pytest.raises(ApiException) as invalid:
        objects.patch_namespaced_custom_object(
            ISTIO, "v1", NS, "virtualservices", "reviews", virtual_service(percent="abc"), dry_run="All"
        )
    assert invalid.value.status == 422, "a dry run still validates"


@pytest.mark.parametrize(
    ("status", "reason"),
    [pytest.param(409, "Conflict", id="conflict"), pytest.param(500, "InternalError", id="internal-error")],
)
def test_injected_faults(
    kube_api: KubeApiServer,  # noqa: F811
    objects: client.CustomObjectsApi,
    status: int,
    reason: str,
) -> None:
    create_vs(objects)
    kube_api.inject(verb="PATCH", path_regex=".*/virtualservices/.*", status=status, times=1)

    def patch() -> dict:
        return objects.patch_namespaced_custom_object(
            ISTIO, "v1", NS, "virtualservices", "reviews", {"metadata": {"labels": {"x": "y"}}}
        )

    with pytest.raises(ApiException) as injected:
        patch()
    assert (injected.value.status, status_of(injected.value)["reason"]) == (status, reason)
    assert objects.get_namespaced_custom_object(ISTIO, "v1", NS, "virtualservices", "reviews")
    assert patch()["metadata"]["labels"]["x"] == "y", "only the next matching request fails"


def test_injected_delay(kube_api: KubeApiServer, objects: client.CustomObjectsApi) -> None:  # noqa: F811
    kube_api.inject(verb="GET", path_regex="/virtualservices/reviews$", delay=0.5, times=1)
    create_vs(objects)
    started = time.monotonic()
    objects.get_namespaced_custom_object(ISTIO, "v1", NS, "virtualservices", "reviews")
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    objects.get_namespaced_custom_object(ISTIO, "v1", NS, "virtualservices", "reviews")
    assert time.monotonic() - started < 0.5


def test_server_side_apply(kube_api: KubeApiServer, objects: client.CustomObjectsApi) -> None:  # noqa: F811
    def apply(body: dict, manager: str | None = "mirror-ramp") -> dict:
        return objects.patch_namespaced_custom_object(
            ISTIO,
            "v1",
            NS,
            "virtualservices",
            "reviews",
            body,
            field_manager=manager,
            _content_type="application/apply-patch+yaml",
        )

    with pytest.raises(ApiException) as no_manager:
        apply(virtual_service(), manager=None)
    assert no_manager.value.status == 422

    apply(virtual_service(labels={"app": "reviews", "step": "1"}))
    assert kube_api.requests[-1].status == 201, "apply creates when absent"
    first = kube_api.get_object(ISTIO, "v1", "VirtualService", NS, "reviews")
    again = apply(virtual_service(labels={"app": "reviews", "step": "1"}))
    assert again == first, "the same apply again changes nothing"
    later = apply(virtual_service(percent=5.0))
    assert later["metadata"]["labels"] == {"app": "reviews"}, "a field the manager stopped applying goes"
    assert later["spec"]["http"][0]["mirrorPercentage"]["value"] == 5.0
    assert later["metadata"]["generation"] == 2


# ---------------------------------------------------------------------------------------------
# Gateway API HTTPRoute, version Services, field ownership (metadata.managedFields)

GATEWAY = "gateway.networking.k8s.io"
MIRROR_PATH = "/spec/rules/0/filters"


def http_route(filters: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The route as the manifests render it (GAMMA: parentRef the Service), no mirror."""
    rule: dict[str, Any] = {
        "matches": [{"method": "GET"}],
        "backendRefs": [{"name": "reviews-v1", "port": 9080}],
    }
    if filters is not None:
        rule["filters"] = filters
    return {
        "apiVersion": f"{GATEWAY}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "reviews", "namespace": NS, "labels": labels or {"app": "reviews"}},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
            "rules": [rule],
        },
    }


def mirror_filter(numerator: int = 5, denominator: int = 1000) -> dict[str, Any]:
    return {
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {"name": "reviews-v2", "port": 9080},
            "fraction": {"numerator": numerator, "denominator": denominator},
        },
    }


def route_call(objects: client.CustomObjectsApi, verb: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    method = getattr(objects, f"{verb}_namespaced_custom_object")
    return method(GATEWAY, "v1", NS, "httproutes", *args, **kwargs)


def ramp_sets_mirror(objects: client.CustomObjectsApi, filters: list[dict[str, Any]]) -> dict[str, Any]:
    """The ramp's write: a JSON patch under its own field manager (an Update operation)."""
    return route_call(
        objects,
        "patch",
        "reviews",
        [{"op": "add", "path": MIRROR_PATH, "value": filters}],
        field_manager="mirror-ramp",
        _content_type="application/json-patch+json",
    )


def server_side_apply(
    objects: client.CustomObjectsApi, body: dict[str, Any], manager: str, force: bool = False
) -> dict[str, Any]:
    return route_call(
        objects,
        "patch",
        "reviews",
        body,
        field_manager=manager,
        force=force,
        _content_type="application/apply-patch+yaml",
    )


def owners(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """managedFields by (manager, operation)."""
    return {(e["manager"], e["operation"]): e["fieldsV1"] for e in obj["metadata"]["managedFields"]}


def test_http_route_and_services_are_served(
    kube_api: KubeApiServer,  # noqa: F811
    kube_client: Any,  # noqa: F811
    objects: client.CustomObjectsApi,
) -> None:
    groups = {g["name"]: g for g in raw(kube_api, "GET", "/apis").json()["groups"]}
    assert [v["version"] for v in groups[GATEWAY]["versions"]] == ["v1", "v1beta1"]
    assert groups[GATEWAY]["preferredVersion"]["version"] == "v1"
    resources = raw(kube_api, "GET", f"/apis/{GATEWAY}/v1").json()["resources"]
    assert [(r["name"], r["kind"], r["namespaced"]) for r in resources] == [("httproutes", "HTTPRoute", True)]

    created = route_call(objects, "create", http_route())
    assert created["metadata"]["generation"] == 1
    beta = objects.get_namespaced_custom_object(GATEWAY, "v1beta1", NS, "httproutes", "reviews")
    assert beta["apiVersion"] == f"{GATEWAY}/v1beta1", "one store served at both versions"
    assert beta["spec"] == created["spec"]
    with pytest.raises(ApiException) as strategic:
        route_call(objects, "patch", "reviews", {"spec": {}}, _content_type="application/strategic-merge-patch+json")
    assert strategic.value.status == 415, "a custom resource takes no strategic merge"
    stale = {**created, "metadata": {**created["metadata"], "resourceVersion": "1"}}
    with pytest.raises(ApiException) as conflict:
        route_call(objects, "replace", "reviews", stale)
    assert conflict.value.status == 409
    patched = ramp_sets_mirror(objects, [mirror_filter()])
    assert patched["metadata"]["generation"] == 2
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    listed = route_call(objects, "list")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["reviews"]
    assert route_call(objects, "delete", "reviews")["kind"] == "HTTPRoute", "a custom resource's DELETE returns it"

    core = client.CoreV1Api(kube_client)
    for version in ("v1", "v2"):
        core.create_namespaced_service(
            NS,
            {
                "metadata": {"name": f"reviews-{version}"},
                "spec": {"selector": {"app": "reviews", "version": version}, "ports": [{"port": 9080}]},
            },
        )
    services = core.list_namespaced_service(NS, label_selector="")
    assert sorted(s.metadata.name for s in services.items) == ["reviews-v1", "reviews-v2"]


def test_every_write_records_its_field_manager(
    kube_api: KubeApiServer,  # noqa: F811
    objects: client.CustomObjectsApi,
) -> None:
    created = route_call(objects, "create", http_route(), field_manager="manifests")
    [entry] = created["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"], entry["apiVersion"]) == ("manifests", "Update", f"{GATEWAY}/v1")
    assert entry["fieldsType"] == "FieldsV1"
    assert entry["fieldsV1"] == {
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {"f:parentRefs": {}, "f:rules": {}},
    }, "atomic lists (parentRefs, rules) are owned whole"

    patched = ramp_sets_mirror(objects, [mirror_filter()])
    by_owner = owners(patched)
    assert by_owner[("mirror-ramp", "Update")] == {"f:spec": {"f:rules": {}}}, "a change inside rules takes rules"
    assert by_owner[("manifests", "Update")] == {
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {"f:parentRefs": {}},
    }
    again = ramp_sets_mirror(objects, [mirror_filter()])
    assert again == patched, "a no-op write changes nothing, managedFields included"

    labelled = route_call(objects, "patch", "reviews", {"metadata": {"labels": {"team": "a"}}})
    assert owners(labelled)[("OpenAPI-Generator", "Update")] == {"f:metadata": {"f:labels": {"f:team": {}}}}, (
        "without fieldManager the manager is the User-Agent's product"
    )


def test_a_no_op_write_by_a_manager_listed_first_keeps_the_entries_and_their_order(
    kube_api: KubeApiServer,  # noqa: F811
    objects: client.CustomObjectsApi,
) -> None:
    """The API server never reorders managedFields: a re-apply that changes nothing (kubernetes.core
    compares the whole object, managedFields included) must report no change."""
    route_call(objects, "create", http_route(), field_manager="manifests")
    ramp_sets_mirror(objects, [mirror_filter()])  # a second manager, listed after the first
    stored = route_call(objects, "get", "reviews")
    assert [e["manager"] for e in stored["metadata"]["managedFields"]] == ["manifests", "mirror-ramp"]

    again = route_call(
        objects, "patch", "reviews", {"metadata": {"labels": {"app": "reviews"}}}, field_manager="manifests"
    )

    assert again == stored, "the first manager's no-op write moved its entry to the end"


def test_a_forced_apply_of_the_manifests_removes_the_ramps_mirror(
    kube_api: KubeApiServer,  # noqa: F811
    objects: client.CustomObjectsApi,
) -> None:
    """rules is an atomic list: the ramp's write makes it the owner of all of rules, so an
    apply of the manifests by another manager conflicts, and a forced one takes rules back."""
    server_side_apply(objects, http_route(), "argocd-controller")
    ramp_sets_mirror(objects, [mirror_filter()])

    with pytest.raises(ApiException) as refused:
        server_side_apply(objects, http_route(), "argocd-controller")
    body = status_of(refused.value)
    assert refused.value.status == 409 and body["reason"] == "Conflict"
    assert body["message"] == (
        f'Apply failed with 1 conflict: conflict with "mirror-ramp" using {GATEWAY}/v1: .spec.rules'
    )
    assert body["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "mirror-ramp" using {GATEWAY}/v1',
            "field": ".spec.rules",
        }
    ]
    live = kube_api.get_object(GATEWAY, "v1", "HTTPRoute", NS, "reviews")
    assert live["spec"]["rules"][0]["filters"] == [mirror_filter()], "a refused apply changes nothing"

    forced = server_side_apply(objects, http_route(), "argocd-controller", force=True)
    assert "filters" not in forced["spec"]["rules"][0], "the forced apply replaced the atomic rules"
    assert ("mirror-ramp", "Update") not in owners(forced)
    assert owners(forced)[("argocd-controller", "Apply")]["f:spec"] == {"f:parentRefs": {}, "f:rules": {}}


def test_applies_that_keep_the_mirror(
    kube_api: KubeApiServer,  # noqa: F811
    objects: client.CustomObjectsApi,
) -> None:
    server_side_apply(objects, http_route(), "argocd-controller")
    ramp_sets_mirror(objects, [mirror_filter()])

    # An apply of fields outside rules only: no conflict, the mirror stays.
    labels_only = {
        "apiVersion": f"{GATEWAY}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "reviews", "labels": {"tier": "web"}},
    }
    relabelled = server_side_apply(objects, labels_only, "labeller")
    assert relabelled["spec"]["rules"][0]["filters"] == [mirror_filter()]
    assert relabelled["metadata"]["labels"] == {"app": "reviews", "tier": "web"}

    # The manifests as rendered (rules without the mirror): the ramp owns rules, a conflict.
    with pytest.raises(ApiException) as rendered:
        server_side_apply(objects, http_route(), "argocd-controller")
    assert rendered.value.status == 409

    # The manifests with the live mirror in them (what Argo CD applies with ignoreDifferences and
    # RespectIgnoreDifferences=true): the same value is no conflict; both own rules.
    with_mirror = server_side_apply(objects, http_route(filters=[mirror_filter()]), "argocd-controller")
    assert with_mirror["spec"]["rules"][0]["filters"] == [mirror_filter()]
    by_owner = owners(with_mirror)
    assert by_owner[("mirror-ramp", "Update")] == {"f:spec": {"f:rules": {}}}
    assert by_owner[("argocd-controller", "Apply")]["f:spec"]["f:rules"] == {}

    # The ramp's next step, then the same apply again: a conflict on the new value, not a removal.
    ramp_sets_mirror(objects, [mirror_filter(numerator=1, denominator=100)])
    with pytest.raises(ApiException) as refused:
        server_side_apply(objects, http_route(filters=[mirror_filter()]), "argocd-controller")
    assert refused.value.status == 409
    live = kube_api.get_object(GATEWAY, "v1", "HTTPRoute", NS, "reviews")
    assert live["spec"]["rules"][0]["filters"] == [mirror_filter(numerator=1, denominator=100)]


def test_a_client_side_apply_of_the_manifests_removes_the_mirror(
    kube_api: KubeApiServer,  # noqa: F811
    objects: client.CustomObjectsApi,
) -> None:
    """kubernetes.core's `apply: true` without server_side_apply sends a merge patch holding
    every list that differs from the live object: rules, whole (an Update never conflicts)."""
    route_call(objects, "create", http_route(), field_manager="manifests")
    ramp_sets_mirror(objects, [mirror_filter()])
    patched = route_call(
        objects, "patch", "reviews", {"spec": {"rules": http_route()["spec"]["rules"]}}, field_manager="manifests"
    )
    assert "filters" not in patched["spec"]["rules"][0]
    assert ("mirror-ramp", "Update") not in owners(patched)


def test_apply_removes_only_fields_no_other_manager_owns(
    kube_api: KubeApiServer,  # noqa: F811
    objects: client.CustomObjectsApi,
) -> None:
    """Maps are owned key by key: an applier that drops a label removes it only when no other
    manager owns it too."""
    server_side_apply(objects, http_route(labels={"app": "reviews", "a": "1", "shared": "x"}), "first")
    with pytest.raises(ApiException) as refused:
        server_side_apply(objects, http_route(labels={"app": "reviews", "a": "2"}), "second")
    assert status_of(refused.value)["details"]["causes"][0]["field"] == ".metadata.labels.a"
    second = server_side_apply(objects, http_route(labels={"app": "reviews", "b": "1", "shared": "x"}), "second")
    assert second["metadata"]["labels"] == {"app": "reviews", "a": "1", "shared": "x", "b": "1"}
    first = server_side_apply(objects, http_route(labels={"app": "reviews"}), "first")
    assert first["metadata"]["labels"] == {"app": "reviews", "shared": "x", "b": "1"}, (
        "a goes (first alone owned it), shared stays (second owns it too)"
    )
    assert "f:shared" not in owners(first)[("first", "Apply")]["f:metadata"]["f:labels"]


def test_apply_merges_keyed_lists_item_by_item(kube_api: KubeApiServer, kube_client: Any) -> None:  # noqa: F811
    """Lists of type map (a Deployment's containers, by name) are owned item by item."""
    apps = client.AppsV1Api(kube_client)

    def deployment(containers: list[str]) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "reviews", "namespace": NS},
            "spec": {
                "selector": {"matchLabels": {"app": "reviews"}},
                "template": {
                    "metadata": {"labels": {"app": "reviews"}},
                    "spec": {"containers": [{"name": c, "image": f"{c}:1"} for c in containers]},
                },
            },
        }

    def apply(body: dict[str, Any], manager: str) -> Any:
        return apps.patch_namespaced_deployment(
            "reviews", NS, body, field_manager=manager, _content_type="application/apply-patch+yaml"
        )

    apply(deployment(["app"]), "manifests")
    apply(deployment(["sidecar"]), "injector")
    live = kube_api.get_object("apps", "v1", "Deployment", NS, "reviews")
    assert [c["name"] for c in live["spec"]["template"]["spec"]["containers"]] == ["app", "sidecar"]
    apply(deployment([]), "injector")
    live = kube_api.get_object("apps", "v1", "Deployment", NS, "reviews")
    assert [c["name"] for c in live["spec"]["template"]["spec"]["containers"]] == ["app"]


def test_a_dry_run_apply_records_no_owner(
    kube_api: KubeApiServer,  # noqa: F811
    objects: client.CustomObjectsApi,
) -> None:
    route_call(objects, "create", http_route(), field_manager="manifests")
    before = kube_api.get_object(GATEWAY, "v1", "HTTPRoute", NS, "reviews")
    answer = route_call(
        objects,
        "patch",
        "reviews",
        http_route(labels={"app": "reviews", "x": "1"}),
        field_manager="other",
        dry_run="All",
        _content_type="application/apply-patch+yaml",
    )
    assert ("other", "Apply") in owners(answer), "the dry run answers as the write would"
    assert kube_api.get_object(GATEWAY, "v1", "HTTPRoute", NS, "reviews") == before


def test_kubernetes_core_server_side_apply_of_the_manifests_against_the_ramps_mirror(
    kube_api: KubeApiServer,  # noqa: F811
    kube_env: dict[str, str],  # noqa: F811
    objects: client.CustomObjectsApi,
    tmp_path: Path,
) -> None:
    """What kubernetes.core 6.2 sends for `apply: true` with `server_side_apply` (an apply patch
    with fieldManager and force), and what it does to the ramp's live mirror: refused without
    force_conflicts, removed with it."""
    route_call(objects, "create", http_route(), field_manager="gitops")
    ramp_sets_mirror(objects, [mirror_filter()])
    kube_api.clear_requests()

    def apply_task(force: bool) -> dict[str, Any]:
        return {
            "kubernetes.core.k8s": {
                "state": "present",
                "definition": http_route(),
                "apply": True,
                "server_side_apply": {"field_manager": "gitops", "force_conflicts": force},
            },
            "register": "forced" if force else "unforced",
            "ignore_errors": not force,
        }

    playbook = tmp_path / "apply.yml"
    play = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": [apply_task(force=False), apply_task(force=True)],
    }
    playbook.write_text(json.dumps([play]))  # JSON is YAML
    run = run_playbook(str(playbook), inventory="localhost,", env=kube_env, timeout=240)
    assert run.returncode == 0, run.output[-2000:]

    applies = [r for r in kube_api.requests if r.method == "PATCH"]
    assert [(r.content_type, r.query, r.status) for r in applies] == [
        ("application/apply-patch+yaml", {"fieldManager": "gitops", "force": "false"}, 409),
        ("application/apply-patch+yaml", {"fieldManager": "gitops", "force": "true"}, 200),
    ]
    assert "Apply failed with 1 conflict" in run.output and "mirror-ramp" in run.output
    live = kube_api.get_object(GATEWAY, "v1", "HTTPRoute", NS, "reviews")
    assert "filters" not in live["spec"]["rules"][0], "the forced apply took the atomic rules back"
