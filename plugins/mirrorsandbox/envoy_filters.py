"""From the EnvoyFilters that role mirror_proxy renders to the HTTP filters of an inbound listener.

Istio applies an EnvoyFilter's `SIDECAR_INBOUND` patches to the inbound listener of every pod its
`workloadSelector` matches, in its own namespace. The sandbox has no istiod: `inbound_http_filters`
does the same for one backend, so that a real Envoy in front of it runs the filters as rendered.

Each patch the role renders inserts one HTTP filter right before the router of the inbound HTTP
connection manager (`INSERT_BEFORE envoy.filters.http.router`). Istio applies the EnvoyFilters by
ascending `priority` (pilot/pkg/model/push_context.go), each insertion lands right before the
router, so the chain is the inserted filters in that order, then the router. The filters are
returned verbatim (`patch.value`, a direct `@type` of the filter's own config), for
`envoy_process.bootstrap_with_rds(inbound_http_filters=...)`, which appends the router.

Only that shape is accepted; any other field or value is refused by its path (a patch the sandbox
does not apply as Istio would must not load as if it did). Envoy itself checks the filters' configs
when it loads them.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from mirrorramp.errors import ConfigError

ENVOY_FILTER_API_VERSION = "networking.istio.io/v1alpha3"
HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
# The wrappers of cncf/xds and udpa: deprecated; the role renders the filter's own @type.
TYPED_STRUCT_TYPES = frozenset(
    {"type.googleapis.com/udpa.type.v1.TypedStruct", "type.googleapis.com/xds.type.v3.TypedStruct"}
)
_TYPE_URL_PREFIX = "type.googleapis.com/"


class _Labels:
    """A shape: pod labels, a mapping of label names to string values."""


class _TypedConfig:
    """A shape: an Any in its JSON form, with a direct `@type` (not a TypedStruct)."""


# The spec of an EnvoyFilter as role mirror_proxy renders it. A dict is a mapping with exactly
# these keys, a list [shape] a non-empty list of that shape, a str that value, a type a value of it.
_PATCH_SHAPE: dict[str, Any] = {
    "applyTo": "HTTP_FILTER",
    "match": {
        "context": "SIDECAR_INBOUND",
        "listener": {"filterChain": {"filter": {"name": HTTP_CONNECTION_MANAGER, "subFilter": {"name": ROUTER}}}},
    },
    "patch": {"operation": "INSERT_BEFORE", "value": {"name": str, "typed_config": _TypedConfig}},
}
_SPEC_SHAPE: dict[str, Any] = {
    "workloadSelector": {"labels": _Labels},
    "priority": int,
    "configPatches": [_PATCH_SHAPE],
}


def load_envoy_filters(k8s_dir: Path) -> list[dict[str, Any]]:
    """The EnvoyFilters among the rendered manifests of `k8s_dir` (one resource per `*.yml` file,
    as the render roles write them), in file name order."""
    documents = (yaml.safe_load(path.read_text()) for path in sorted(k8s_dir.glob("*.yml")))
    return [document for document in documents if isinstance(document, dict) and document.get("kind") == "EnvoyFilter"]


def inbound_http_filters(
    envoy_filters: Iterable[Mapping[str, Any]], *, namespace: str, pod_labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The HTTP filters, in chain order and without the router, that `envoy_filters` insert into
    the inbound listener of a pod in `namespace` with `pod_labels`.

    An EnvoyFilter applies when it is in `namespace` and every label of its workloadSelector is
    among `pod_labels`. Every EnvoyFilter given is checked, applying or not: ConfigError names the
    first field the role does not render, and two applying EnvoyFilters of equal priority (Istio
    would order them by creation time, which rendered manifests do not have).
    """
    applying: list[tuple[int, str, list[dict[str, Any]]]] = []
    for envoy_filter in envoy_filters:
        name, filter_namespace, spec = _checked(envoy_filter)
        selector = spec["workloadSelector"]["labels"]
        if filter_namespace == namespace and all(pod_labels.get(key) == value for key, value in selector.items()):
            inserted = [copy.deepcopy(patch["patch"]["value"]) for patch in spec["configPatches"]]
            applying.append((spec["priority"], f"{filter_namespace}/{name}", inserted))
    applying.sort(key=lambda entry: entry[0])
    for (priority, first, _), (next_priority, second, _) in itertools.pairwise(applying):
        if priority == next_priority:
            raise ConfigError(
                f"EnvoyFilters {first} and {second} both have priority {priority}: Istio would order them by "
                "creation time, which rendered manifests do not carry; give each its own priority"
            )
    return [value for _, _, inserted in applying for value in inserted]


def _checked(envoy_filter: Mapping[str, Any]) -> tuple[str, str, Mapping[str, Any]]:
    """(name, namespace, spec) of an EnvoyFilter of the rendered shape; ConfigError otherwise."""
    metadata = envoy_filter.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    if not (isinstance(name, str) and name and isinstance(namespace, str) and namespace):
        raise ConfigError(f"EnvoyFilter: metadata.name and metadata.namespace must be set; got {metadata!r}")
    where = f"EnvoyFilter {namespace}/{name}"
    for key, expected in (("apiVersion", ENVOY_FILTER_API_VERSION), ("kind", "EnvoyFilter")):
        if envoy_filter.get(key) != expected:
            raise ConfigError(f"{where}: {key} = {envoy_filter.get(key)!r}, role mirror_proxy renders {expected!r}")
    unknown = sorted(set(envoy_filter) - {"apiVersion", "kind", "metadata", "spec"})
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}: not a field role mirror_proxy renders")
    spec = envoy_filter.get("spec")
    _check(spec, _SPEC_SHAPE, f"{where}: spec")
    return name, namespace, spec


def _check(value: Any, shape: Any, path: str) -> None:
    if isinstance(shape, dict):
        _check_mapping(value, shape, path)
    elif isinstance(shape, list):
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{path} = {value!r}: must be a non-empty list")
        for index, item in enumerate(value):
            _check(item, shape[0], f"{path}[{index}]")
    elif isinstance(shape, str):
        if value != shape:
            raise ConfigError(f"{path} = {value!r}: role mirror_proxy renders only {shape!r}")
    elif shape is _Labels:
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{path} = {value!r}: must be a mapping of pod labels to strings")
    elif shape is _TypedConfig:
        _check_typed_config(value, path)
    elif isinstance(value, bool) or not isinstance(value, shape):
        raise ConfigError(f"{path} = {value!r}: must be of type {shape.__name__}")


def _check_mapping(value: Any, shape: dict[str, Any], path: str) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path} = {value!r}: must be a mapping")
    for key in value:
        if key not in shape:
            raise ConfigError(f"{path}.{key}: not a field role mirror_proxy renders (it renders {', '.join(shape)})")
    for key, item_shape in shape.items():
        if key not in value:
            raise ConfigError(f"{path}.{key} is missing (role mirror_proxy always renders it)")
        _check(value[key], item_shape, f"{path}.{key}")


def _check_typed_config(value: Any, path: str) -> None:
    type_url = value.get("@type") if isinstance(value, Mapping) else None
    if not isinstance(type_url, str) or not type_url.startswith(_TYPE_URL_PREFIX):
        raise ConfigError(f"{path}.@type = {type_url!r}: must be the type URL of the filter's config")
    if type_url in TYPED_STRUCT_TYPES:
        raise ConfigError(
            f"{path}.@type = {type_url!r}: TypedStruct is deprecated; role mirror_proxy renders the "
            "filter's own config type as @type"
        )
