"""Pure filter: every file role mirror_proxy renders, one entry per resource, for mirror_render_files.

The list was a Jinja loop in roles/mirror_proxy/vars/main.yml (a combine per entry, the whole list
written as YAML and read back): about a second of the render per hundred services, more than
rendering the files themselves. Here it is one pass in Python with the same entries, in the same
order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

# The documentation is mirror_proxy_resources.yml beside this file (ansible-doc -t filter).

FILTER_WORKLOADS = ("primary", "service")


def _path(build_dir: str, kind: str, namespace: str, name: str) -> str:
    """One file per resource: <build dir>/k8s/<kind>-<namespace>-<name>.yml."""
    return f"{build_dir}/k8s/{kind.lower()}-{namespace}-{name}.yml"


def _selection(service: Mapping[str, Any], filter_workloads: str) -> dict[str, Any]:
    """The pod labels a service's EnvoyFilters select (workload_labels) and those pods in words
    (selects): the app label, plus the primary subset's labels when filter_workloads is primary
    (the labels of its DestinationRule subset, so the filters sit on exactly the pods the primary
    route reaches)."""
    name = service["name"]
    if filter_workloads != "primary":
        return {"workload_labels": {"app": name}, "selects": "every pod of the service"}
    subsets = service.get("subsets") or []
    wanted = service.get("primary_subset")
    primary = next((s for s in subsets if isinstance(s, Mapping) and "name" in s and s["name"] == wanted), {})
    return {
        "workload_labels": {"app": name, **(primary.get("labels") or {})},
        "selects": f"its primary subset {primary.get('name', '?')} only",
    }


def mirror_proxy_resources(
    services: Sequence[Mapping[str, Any]],
    features: Sequence[Mapping[str, Any]],
    namespace: str,
    build_dir: str,
    filter_workloads: str = "primary",
    gateway_hpa: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Per service, one entry per enabled feature (the feature's fields, the selection, the
    resource's namespace, name, service and path), then the gateway HPA's when `gateway_hpa` is
    given."""
    if not isinstance(services, Sequence) or isinstance(services, str):
        raise AnsibleFilterError(f"mirror_proxy_resources: expected a list of services, got {type(services).__name__}")
    if filter_workloads not in FILTER_WORKLOADS:
        raise AnsibleFilterError(
            f"mirror_proxy_resources: filter_workloads {filter_workloads!r}, expected one of {', '.join(FILTER_WORKLOADS)}"
        )
    resources: list[dict[str, Any]] = []
    for index, service in enumerate(services):
        if not isinstance(service, Mapping) or not isinstance(service.get("name"), str):
            raise AnsibleFilterError(f"mirror_proxy_resources: services[{index}] has no name: {service!r}")
        service_namespace = service.get("namespace") or namespace
        selection = _selection(service, filter_workloads)
        for feature in features:
            name = f"{service['name']}-{feature['suffix']}"
            resources.append(
                {
                    **feature,
                    **selection,
                    "namespace": service_namespace,
                    "name": name,
                    "service": service["name"],
                    "path": _path(build_dir, feature["kind"], service_namespace, name),
                }
            )
    if gateway_hpa is not None:
        kind, hpa_namespace, name = "HorizontalPodAutoscaler", gateway_hpa["namespace"], gateway_hpa["deployment"]
        resources.append(
            {
                "key": "gateway_hpa",
                "kind": kind,
                "template": "horizontalpodautoscaler.yml.j2",
                "namespace": hpa_namespace,
                "name": name,
                "path": _path(build_dir, kind, hpa_namespace, name),
            }
        )
    return resources


class FilterModule:
    def filters(self):
        return {"mirror_proxy_resources": mirror_proxy_resources}
