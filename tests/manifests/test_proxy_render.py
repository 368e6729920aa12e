"""The proxy features rendered by role mirror_proxy, per environment.

Each environment is rendered once per module by a private playbook that runs only this role (the
other render roles are tested on their own). Expected values are read from the inventories, so the
tests follow the data model instead of copying it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudcoil.models.istio.networking.v1alpha3 import EnvoyFilter
from cloudcoil.models.istio.security.v1 import AuthorizationPolicy

from tests.support.ansible_run import REPO_ROOT, PlaybookRun, recap_counts, run_playbook

pytestmark = pytest.mark.slow

ENVIRONMENTS = ("local", "dev", "staging", "prod")
ROUTER = "envoy.filters.http.router"
HCM = "envoy.filters.network.http_connection_manager"
# Inserted HTTP filter -> the Envoy v3 message its typed_config is (a direct @type).
FILTER_TYPES = {
    "envoy.filters.http.local_ratelimit": (
        "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
    ),
    "envoy.filters.http.adaptive_concurrency": (
        "type.googleapis.com/envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency"
    ),
    "envoy.filters.http.cache": "type.googleapis.com/envoy.extensions.filters.http.cache.v3.CacheConfig",
}
SIMPLE_HTTP_CACHE = "type.googleapis.com/envoy.extensions.http.cache.simple_http_cache.v3.SimpleHttpCacheConfig"
HPA = "horizontalpodautoscaler-istio-system-istio-ingressgateway.yml"

PLAYBOOK = """\
---
- name: Render only the proxy features
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Start the list of rendered files
      ansible.builtin.set_fact:
        mirror_rendered_files: []

    - name: Render the proxy features
      ansible.builtin.import_role:
        name: mirror_proxy

    - name: Keep the list of rendered files for the test
      ansible.builtin.copy:
        content: "{{ mirror_rendered_files | to_json }}"
        dest: "{{ rendered_list }}"
        mode: "0644"
"""


@dataclass(frozen=True)
class Render:
    env: str
    build_dir: Path
    run: PlaybookRun
    rendered_list: Path

    @property
    def k8s(self) -> Path:
        return self.build_dir / "k8s"

    def files(self) -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in sorted(self.k8s.glob("*.yml"))}

    def docs(self) -> dict[str, dict[str, Any]]:
        return {name: yaml.safe_load(data) for name, data in self.files().items()}

    def of_kind(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        return ((name, doc) for name, doc in self.docs().items() if doc["kind"] == kind)

    def rendered_files(self) -> list[str]:
        return json.loads(self.rendered_list.read_text())


def group_vars(env: str, name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "inventories" / env / "group_vars" / "all" / f"{name}.yml").read_text())


def render(playbook: Path, workdir: Path, env: str, extra: dict[str, Any] | None = None, **kw: Any) -> Render:
    build_dir = workdir / env / "build"
    rendered_list = workdir / env / "rendered.json"
    extra_vars = {"mirror_build_dir": str(build_dir), "rendered_list": str(rendered_list), **(extra or {})}
    run = run_playbook(str(playbook), f"inventories/{env}", extra_vars, **kw)
    return Render(env, build_dir, run, rendered_list)


@pytest.fixture(scope="module")
def playbook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("proxy-playbook") / "render-proxy.yml"
    path.write_text(PLAYBOOK)
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy-render")


@pytest.fixture(scope="module")
def renders(playbook: Path, workdir: Path) -> dict[str, Render]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(
            zip(ENVIRONMENTS, pool.map(lambda env: render(playbook, workdir, env), ENVIRONMENTS), strict=True)
        )
    for result in results.values():
        assert result.run.returncode == 0, result.run.output[-3000:]
    return results


def service_files(namespace: str, service: str, *features: str) -> set[str]:
    kinds = {"allow-callers": "authorizationpolicy"}
    return {f"{kinds.get(feature, 'envoyfilter')}-{namespace}-{service}-{feature}.yml" for feature in features}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param("local", {HPA}, id="local-hpa-only"),
        pytest.param(
            "dev",
            {HPA}
            | service_files(
                "shop-dev", "user-service", "local-ratelimit", "adaptive-concurrency", "response-cache", "allow-callers"
            )
            | service_files(
                "shop-dev",
                "order-service",
                "local-ratelimit",
                "adaptive-concurrency",
                "response-cache",
                "allow-callers",
            ),
            id="dev-everything",
        ),
        pytest.param(
            "staging",
            {HPA} | service_files("shop-staging", "user-service", "local-ratelimit", "allow-callers"),
            id="staging-ratelimit-authz-hpa",
        ),
        pytest.param(
            "prod",
            {HPA} | service_files("shop", "user-service", "local-ratelimit", "allow-callers"),
            id="prod-ratelimit-authz-hpa",
        ),
    ],
)
def test_resources_follow_the_enabled_flags(renders: dict[str, Render], env: str, expected: set[str]) -> None:
    result = renders[env]
    assert set(result.files()) == expected
    # The prune step keeps exactly what was written, each path once.
    rendered = result.rendered_files()
    assert len(rendered) == len(set(rendered))
    assert {Path(path) for path in rendered} == {result.k8s / name for name in expected}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_resource_carries_the_project_labels(renders: dict[str, Render], env: str) -> None:
    for name, doc in renders[env].docs().items():
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "mirror-ramp", name
        assert labels["app.kubernetes.io/part-of"] == "mirror-ramp", name
        assert labels["mirror-ramp.io/environment"] == env, name


def primary_pod_labels(service: dict[str, Any]) -> dict[str, str]:
    (primary,) = (subset for subset in service["subsets"] if subset["name"] == service["primary_subset"])
    return {"app": service["name"], **primary["labels"]}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_envoy_filters_insert_before_the_router(renders: dict[str, Render], env: str) -> None:
    services = {service["name"]: service for service in group_vars(env, "services")["mirror_services"]}
    for name, doc in renders[env].of_kind("EnvoyFilter"):
        EnvoyFilter.model_validate(doc)
        assert doc["apiVersion"] == "networking.istio.io/v1alpha3"
        service = doc["spec"]["workloadSelector"]["labels"]["app"]
        assert service in services, name
        # The primary's pods only: on a mirror target the filters would answer or refuse mirrored requests.
        assert doc["spec"]["workloadSelector"] == {"labels": primary_pod_labels(services[service])}, name
        assert doc["metadata"]["name"].startswith(f"{service}-"), name
        for patch in doc["spec"]["configPatches"]:
            assert patch["applyTo"] == "HTTP_FILTER", name
            assert patch["match"]["context"] == "SIDECAR_INBOUND", name
            assert patch["match"]["listener"]["filterChain"]["filter"] == {
                "name": HCM,
                "subFilter": {"name": ROUTER},
            }, name
            assert patch["patch"]["operation"] == "INSERT_BEFORE", name
            inserted = patch["patch"]["value"]
            assert inserted["name"] != ROUTER, name
            assert inserted["name"] in FILTER_TYPES, name
            assert inserted["typed_config"]["@type"] == FILTER_TYPES[inserted["name"]], name


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_envoy_filter_uses_the_deprecated_typed_struct(renders: dict[str, Render], env: str) -> None:
    for name, data in renders[env].files().items():
        assert b"TypedStruct" not in data, name
        assert b"type_url" not in data, name


def typed_value(result: Render, name: str) -> dict[str, Any]:
    """The filter's own message, without its @type (the router test checks that)."""
    doc = result.docs()[name]
    (patch,) = doc["spec"]["configPatches"]
    return {key: value for key, value in patch["patch"]["value"]["typed_config"].items() if key != "@type"}


def test_local_rate_limit_is_the_token_bucket_of_the_inventory(renders: dict[str, Render]) -> None:
    settings = group_vars("prod", "proxy")["mirror_proxy"]["rate_limit"]
    value = typed_value(renders["prod"], "envoyfilter-shop-user-service-local-ratelimit.yml")
    assert value["token_bucket"] == {
        "max_tokens": settings["max_tokens"],
        "tokens_per_fill": settings["tokens_per_fill"],
        "fill_interval": settings["fill_interval"],
    }
    for flag in ("filter_enabled", "filter_enforced"):
        assert value[flag]["runtime_key"]
        assert value[flag]["default_value"] == {"numerator": 100, "denominator": "HUNDRED"}


@pytest.mark.parametrize("service", ["user-service", "order-service"])
def test_adaptive_concurrency_has_the_gradient_controller(renders: dict[str, Render], service: str) -> None:
    settings = group_vars("dev", "proxy")["mirror_proxy"]["adaptive_concurrency"]
    value = typed_value(renders["dev"], f"envoyfilter-shop-dev-{service}-adaptive-concurrency.yml")
    controller = value["gradient_controller_config"]
    assert controller["sample_aggregate_percentile"] == {"value": settings["sample_percentile"]}
    assert (
        controller["concurrency_limit_params"]["concurrency_update_interval"]
        == (settings["concurrency_update_interval"])
    )
    assert controller["min_rtt_calc_params"] == {
        "interval": settings["min_rtt_interval"],
        "request_count": settings["min_rtt_request_count"],
    }


@pytest.mark.parametrize("service", ["user-service", "order-service"])
def test_cache_has_a_storage_typed_config(renders: dict[str, Render], service: str) -> None:
    value = typed_value(renders["dev"], f"envoyfilter-shop-dev-{service}-response-cache.yml")
    # SimpleHttpCacheConfig has no fields: the storage is its type and nothing else.
    assert value == {"typed_config": {"@type": SIMPLE_HTTP_CACHE}}


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_authorization_policy_allows_the_inventory_principals(renders: dict[str, Render], env: str) -> None:
    principals = group_vars(env, "proxy")["mirror_proxy"]["authorization"]["principals"]
    policies = dict(renders[env].of_kind("AuthorizationPolicy"))
    services = [service["name"] for service in group_vars(env, "services")["mirror_services"]]
    assert len(policies) == len(services)
    for service in services:
        (doc,) = (doc for doc in policies.values() if doc["metadata"]["name"] == f"{service}-allow-callers")
        AuthorizationPolicy.model_validate(doc)
        assert doc["apiVersion"] == "security.istio.io/v1"
        assert doc["spec"] == {
            "selector": {"matchLabels": {"app": service}},
            "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": principals}}]}],
        }


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_hpa_scales_the_ingress_gateway_deployment(renders: dict[str, Render], env: str) -> None:
    hpa = group_vars(env, "proxy")["mirror_gateway_hpa"]
    doc = renders[env].docs()[HPA]
    assert doc["apiVersion"] == "autoscaling/v2"
    assert doc["metadata"]["namespace"] == hpa["namespace"] == "istio-system"
    assert doc["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "istio-ingressgateway",
    }
    assert doc["spec"]["minReplicas"] == hpa["min_replicas"]
    assert doc["spec"]["maxReplicas"] == hpa["max_replicas"]
    assert doc["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": hpa["cpu_utilization"]},
            },
        }
    ]


def test_second_render_is_byte_identical_and_unchanged(
    renders: dict[str, Render], playbook: Path, workdir: Path
) -> None:
    first = renders["dev"].files()
    again = render(playbook, workdir, "dev")
    assert again.run.returncode == 0, again.run.output[-3000:]
    assert recap_counts(again.run.output)["changed"] == 0
    assert again.files() == first


def test_check_mode_writes_nothing(playbook: Path, tmp_path: Path) -> None:
    result = render(playbook, tmp_path, "local", check=True, diff=True)
    assert result.run.returncode == 0, result.run.output[-3000:]
    assert not result.build_dir.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            {"mirror_proxy": {"cache": {"enabled": True}}},
            "mirror_proxy.cache is enabled in prod",
            id="cache-refused-in-prod",
        ),
        pytest.param(
            {
                "mirror_gateway_hpa": {
                    "enabled": True,
                    "namespace": "istio-system",
                    "deployment": "istio-proxy",
                    "min_replicas": 1,
                    "max_replicas": 3,
                    "cpu_utilization": 70,
                }
            },
            "istio-proxy is the sidecar container",
            id="hpa-on-istio-proxy",
        ),
        pytest.param(
            {
                "mirror_proxy": {
                    "rate_limit": {"enabled": True, "max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "1m"}
                }
            },
            "fill_interval an Envoy duration",
            id="fill-interval-not-seconds",
        ),
        pytest.param(
            {"mirror_proxy": {"filter_workloads": "candidate", "rate_limit": {"enabled": False}}},
            "value of filter_workloads must be one of: primary, service, got: candidate",
            id="filter-workloads-unknown",
        ),
    ],
)
def test_preflight_refuses_invalid_settings(playbook: Path, tmp_path: Path, extra: dict, message: str) -> None:
    result = render(playbook, tmp_path, "prod", extra)
    assert result.run.returncode != 0
    assert message in " ".join(result.run.output.split())
    assert not result.k8s.exists()


def test_filter_workloads_service_selects_every_pod_of_the_service(playbook: Path, tmp_path: Path) -> None:
    settings = {**group_vars("dev", "proxy")["mirror_proxy"], "filter_workloads": "service"}
    result = render(playbook, tmp_path, "dev", {"mirror_proxy": settings})
    assert result.run.returncode == 0, result.run.output[-3000:]
    services = [service["name"] for service in group_vars("dev", "services")["mirror_services"]]
    selectors = {doc["metadata"]["name"]: doc["spec"]["workloadSelector"] for _, doc in result.of_kind("EnvoyFilter")}
    assert selectors == {
        f"{service}-{suffix}": {"labels": {"app": service}}
        for service in services
        for suffix in ("local-ratelimit", "adaptive-concurrency", "response-cache")
    }


@pytest.mark.parametrize(
    ("services", "message"),
    [
        pytest.param(
            [{**service, "primary_subset": "gone"} for service in group_vars("prod", "services")["mirror_services"]],
            'primary_subset ("gone") must name one of its subsets, with labels',
            id="primary-subset-unknown",
        ),
        pytest.param(
            [
                {**service, "subsets": [{**subset, "labels": {}} for subset in service["subsets"]]}
                for service in group_vars("prod", "services")["mirror_services"]
            ],
            "the EnvoyFilters of user-service select its primary subset's pods",
            id="primary-subset-without-labels",
        ),
        pytest.param(
            [
                {
                    **service,
                    # The primary keeps {version: v1}; the others add a label to it instead of changing it.
                    "subsets": [
                        subset
                        if subset["name"] == service["primary_subset"]
                        else {**subset, "labels": {"version": "v1", "track": subset["name"]}}
                        for subset in service["subsets"]
                    ],
                }
                for service in group_vars("prod", "services")["mirror_services"]
            ],
            'the subsets ["candidate", "baseline"] of user-service set none of the primary subset\'s labels',
            id="candidate-labels-overlap-the-primary",
        ),
    ],
)
def test_filters_on_the_primary_need_its_labels(
    playbook: Path, tmp_path: Path, services: list[dict[str, Any]], message: str
) -> None:
    result = render(playbook, tmp_path, "prod", {"mirror_services": services})
    assert result.run.returncode != 0
    assert message in " ".join(result.run.output.split())
    assert not result.k8s.exists()
