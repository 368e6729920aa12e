"""mirrorsandbox.envoy_filters: the EnvoyFilters role mirror_proxy renders, applied to one inbound listener
as istiod applies them (selector, namespace, priority), and every other shape refused by its path.

The manifests here have the rendered shape (tests/manifests/test_proxy_render.py holds the role to it;
tests/integration/test_envoy_filters_acting.py loads the real render into a real Envoy).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirrorramp.errors import ConfigError
from mirrorsandbox.envoy_filters import inbound_http_filters, load_envoy_filters

NAMESPACE = "shop-dev"
PRIMARY_PODS = {"app": "user-service", "version": "v1", "pod-template-hash": "5d9c"}
CANDIDATE_PODS = {"app": "user-service", "version": "v2", "pod-template-hash": "77f1"}
LOCAL_RATELIMIT = {
    "name": "envoy.filters.http.local_ratelimit",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "http_local_rate_limiter",
        "token_bucket": {"max_tokens": 1000, "tokens_per_fill": 1000, "fill_interval": "1s"},
    },
}
ADAPTIVE_CONCURRENCY = {
    "name": "envoy.filters.http.adaptive_concurrency",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency",
        "gradient_controller_config": {"sample_aggregate_percentile": {"value": 90.0}},
    },
}
CACHE = {
    "name": "envoy.filters.http.cache",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cache.v3.CacheConfig",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.cache.simple_http_cache.v3.SimpleHttpCacheConfig"
        },
    },
}


def envoy_filter(
    name: str, inserted: dict[str, Any], priority: int, selector: dict[str, str] | None = None
) -> dict[str, Any]:
    """An EnvoyFilter of the shape role mirror_proxy renders (roles/mirror_proxy/templates/envoyfilter.yml.j2)."""
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "mirror-ramp"}},
        "spec": {
            "workloadSelector": {"labels": selector or {"app": "user-service", "version": "v1"}},
            "priority": priority,
            "configPatches": [
                {
                    "applyTo": "HTTP_FILTER",
                    "match": {
                        "context": "SIDECAR_INBOUND",
                        "listener": {
                            "filterChain": {
                                "filter": {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "subFilter": {"name": "envoy.filters.http.router"},
                                }
                            }
                        },
                    },
                    "patch": {"operation": "INSERT_BEFORE", "value": copy.deepcopy(inserted)},
                }
            ],
        },
    }


def rendered() -> list[dict[str, Any]]:
    return [
        envoy_filter("user-service-local-ratelimit", LOCAL_RATELIMIT, 10),
        envoy_filter("user-service-adaptive-concurrency", ADAPTIVE_CONCURRENCY, 20),
        envoy_filter("user-service-response-cache", CACHE, 30),
    ]


def test_primary_gets_the_filters_in_priority_order_verbatim() -> None:
    filters = rendered()
    shuffled = filters[:]
    random.Random(18).shuffle(shuffled)
    assert [f["metadata"]["name"] for f in shuffled] != [f["metadata"]["name"] for f in filters]
    chain = inbound_http_filters(shuffled, namespace=NAMESPACE, pod_labels=PRIMARY_PODS)
    # Istio applies by ascending priority and each INSERT_BEFORE lands right before the router.
    assert chain == [LOCAL_RATELIMIT, ADAPTIVE_CONCURRENCY, CACHE]


def test_the_filters_are_copies() -> None:
    filters = rendered()
    chain = inbound_http_filters(filters, namespace=NAMESPACE, pod_labels=PRIMARY_PODS)
    chain[0]["typed_config"]["token_bucket"]["max_tokens"] = 1
    assert filters[0]["spec"]["configPatches"][0]["patch"]["value"] == LOCAL_RATELIMIT


@pytest.mark.parametrize(
    ("namespace", "pod_labels"),
    [
        pytest.param(NAMESPACE, CANDIDATE_PODS, id="candidate-other-version"),
        pytest.param(NAMESPACE, {"app": "user-service"}, id="pod-without-version"),
        pytest.param(NAMESPACE, {"app": "order-service", "version": "v1"}, id="other-service"),
        pytest.param("shop-staging", PRIMARY_PODS, id="other-namespace"),
    ],
)
def test_pods_the_selector_does_not_match_get_no_filter(namespace: str, pod_labels: dict[str, str]) -> None:
    assert inbound_http_filters(rendered(), namespace=namespace, pod_labels=pod_labels) == []


def test_a_selector_on_the_app_label_alone_matches_the_candidate_too() -> None:
    filters = [envoy_filter("user-service-response-cache", CACHE, 30, selector={"app": "user-service"})]
    assert inbound_http_filters(filters, namespace=NAMESPACE, pod_labels=CANDIDATE_PODS) == [CACHE]


def test_equal_priorities_of_applying_filters_are_refused() -> None:
    filters = [envoy_filter("a", LOCAL_RATELIMIT, 10), envoy_filter("b", CACHE, 10)]
    with pytest.raises(ConfigError, match="EnvoyFilters shop-dev/a and shop-dev/b both have priority 10"):
        inbound_http_filters(filters, namespace=NAMESPACE, pod_labels=PRIMARY_PODS)


def test_equal_priorities_on_other_pods_do_not_matter() -> None:
    filters = [envoy_filter("a", LOCAL_RATELIMIT, 10), envoy_filter("b", CACHE, 10, selector={"app": "other"})]
    assert inbound_http_filters(filters, namespace=NAMESPACE, pod_labels=PRIMARY_PODS) == [LOCAL_RATELIMIT]


def patch_of(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["configPatches"][0]


REFUSALS = [
    ("api-version", lambda d: d.update(apiVersion="networking.istio.io/v1"), "apiVersion = 'networking.istio.io/v1'"),
    ("kind", lambda d: d.update(kind="Sidecar"), "kind = 'Sidecar'"),
    ("extra-top-level", lambda d: d.update(status={}), "status: not a field role mirror_proxy renders"),
    ("no-namespace", lambda d: d["metadata"].pop("namespace"), "metadata.name and metadata.namespace must be set"),
    (
        "target-refs",
        lambda d: d["spec"].update(targetRefs=[{"kind": "Gateway", "name": "gw"}]),
        "spec.targetRefs: not a field role mirror_proxy renders (it renders workloadSelector, priority, configPatches)",
    ),
    ("no-selector", lambda d: d["spec"].pop("workloadSelector"), "spec.workloadSelector is missing"),
    ("selector-not-labels", lambda d: d["spec"]["workloadSelector"].update(labels=["app"]), "pod labels to strings"),
    ("priority-text", lambda d: d["spec"].update(priority="10"), "spec.priority = '10': must be of type int"),
    ("priority-bool", lambda d: d["spec"].update(priority=True), "spec.priority = True: must be of type int"),
    ("no-patches", lambda d: d["spec"].update(configPatches=[]), "spec.configPatches = []: must be a non-empty list"),
    (
        "apply-to-cluster",
        lambda d: patch_of(d).update(applyTo="CLUSTER"),
        "spec.configPatches[0].applyTo = 'CLUSTER': role mirror_proxy renders only 'HTTP_FILTER'",
    ),
    (
        "outbound",
        lambda d: patch_of(d)["match"].update(context="SIDECAR_OUTBOUND"),
        "spec.configPatches[0].match.context = 'SIDECAR_OUTBOUND'",
    ),
    (
        "port-number",
        lambda d: patch_of(d)["match"]["listener"].update(portNumber=8080),
        "spec.configPatches[0].match.listener.portNumber: not a field",
    ),
    (
        "proxy-version",
        lambda d: patch_of(d)["match"].update(proxy={"proxyVersion": "^1.2"}),
        "spec.configPatches[0].match.proxy: not a field",
    ),
    (
        "other-sub-filter",
        lambda d: patch_of(d)["match"]["listener"]["filterChain"]["filter"]["subFilter"].update(
            name="envoy.filters.http.cors"
        ),
        "filter.subFilter.name = 'envoy.filters.http.cors': role mirror_proxy renders only 'envoy.filters.http.router'",
    ),
    (
        "insert-first",
        lambda d: patch_of(d)["patch"].update(operation="INSERT_FIRST"),
        "spec.configPatches[0].patch.operation = 'INSERT_FIRST'",
    ),
    (
        "filter-class",
        lambda d: patch_of(d)["patch"].update(filterClass="AUTHZ"),
        "spec.configPatches[0].patch.filterClass: not a field",
    ),
    (
        "no-typed-config",
        lambda d: patch_of(d)["patch"]["value"].pop("typed_config"),
        "spec.configPatches[0].patch.value.typed_config is missing",
    ),
    (
        "no-type-url",
        lambda d: patch_of(d)["patch"]["value"]["typed_config"].pop("@type"),
        "patch.value.typed_config.@type = None: must be the type URL",
    ),
    (
        "typed-struct",
        lambda d: patch_of(d)["patch"]["value"].update(
            typed_config={
                "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
                "type_url": LOCAL_RATELIMIT["typed_config"]["@type"],
                "value": {"stat_prefix": "x"},
            }
        ),
        "'type.googleapis.com/udpa.type.v1.TypedStruct': TypedStruct is deprecated",
    ),
    (
        "xds-typed-struct",
        lambda d: patch_of(d)["patch"]["value"]["typed_config"].update(
            {"@type": "type.googleapis.com/xds.type.v3.TypedStruct"}
        ),
        "TypedStruct is deprecated",
    ),
]


@pytest.mark.parametrize(("change", "message"), [pytest.param(c, m, id=i) for i, c, m in REFUSALS])
def test_shapes_the_role_does_not_render_are_refused_by_path(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    filters = rendered()
    change(filters[1])
    with pytest.raises(ConfigError) as raised:
        # A filter on other pods is checked too: a bad render cannot hide behind its selector.
        inbound_http_filters(filters, namespace="elsewhere", pod_labels={})
    assert message in str(raised.value)
    assert str(raised.value).startswith("EnvoyFilter")


def test_load_reads_only_the_envoy_filters_in_file_name_order(tmp_path: Path) -> None:
    filters = rendered()
    for doc in filters:
        (tmp_path / f"envoyfilter-{NAMESPACE}-{doc['metadata']['name']}.yml").write_text(
            "---\n# Rendered by the role mirror_proxy.\n" + yaml.safe_dump(doc, sort_keys=False)
        )
    (tmp_path / "authorizationpolicy-shop-dev-user-service-allow-callers.yml").write_text(
        yaml.safe_dump({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {}})
    )
    (tmp_path / "notes.txt").write_text("kind: EnvoyFilter\n")
    loaded = load_envoy_filters(tmp_path)
    assert loaded == sorted(filters, key=lambda doc: f"envoyfilter-{NAMESPACE}-{doc['metadata']['name']}.yml")
