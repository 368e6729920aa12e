"""The Kubernetes API test double, driven by the real kubernetes python client."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.fakes.kube_api import KubeApiServer
from tests.fakes.kube_fixtures import kube_api, kube_api_server, kube_client  # noqa: F401

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
