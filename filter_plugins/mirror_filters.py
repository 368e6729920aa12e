"""Pure filters over the engine package (installed into the venv by the set-up)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from mirrorramp.errors import MirrorRampError
from mirrorramp.routes import keep_live_mirrors
from mirrorramp.wording import number

# The documentation of each filter is in <filter name>.yml beside this file (ansible-doc -t filter).


def mirror_keep_live(rendered, live_resources):
    """`rendered` is one manifest, or a list of them; `live_resources` the live objects (k8s_info
    `resources`), any number: the one of the same kind, namespace and name, if any, is the live
    one (routes.keep_live_mirrors). A list is answered in one call: mapped manifest by manifest,
    each call took its own copy of every live object (minutes for 600 manifests against 100 live
    routes)."""
    manifests = rendered if isinstance(rendered, list) else [rendered]
    for manifest in manifests:
        if not isinstance(manifest, dict):
            raise AnsibleFilterError(f"mirror_keep_live: expected a manifest (dict), got {type(manifest).__name__}")
    try:
        kept = keep_live_mirrors(manifests, live_resources or [])
    except MirrorRampError as e:
        raise AnsibleFilterError(f"mirror_keep_live: {e}") from e
    return kept if isinstance(rendered, list) else kept[0]


def mirror_service_workloads(service):
    """{primary, mirror} workload names of one entry of mirror_services, and `baseline` (the
    baseline shadow's workload) when the service has a baseline_subset. The baseline is never
    among the mirror workloads: the gates count those as the candidate."""
    try:
        by_subset = {s["name"]: s["workload"] for s in service["subsets"]}
        workloads = {
            "primary": by_subset[service["primary_subset"]],
            "mirror": [by_subset[m["subset"]] for m in service["mirrors"]],
        }
        if service.get("baseline_subset") is not None:
            workloads["baseline"] = by_subset[service["baseline_subset"]]
    except (KeyError, TypeError, AttributeError) as e:
        name = service.get("name", "?") if isinstance(service, dict) else service
        raise AnsibleFilterError(
            f"mirror_service_workloads: service {name!r} lacks {e} (subsets, mirrors, baseline_subset)"
        ) from e
    if workloads.get("baseline") in {workloads["primary"], *workloads["mirror"]}:
        raise AnsibleFilterError(
            f"mirror_service_workloads: service {service.get('name', '?')!r}: baseline_subset "
            f"{service['baseline_subset']!r} has the workload {workloads['baseline']!r} of the primary or a "
            "mirror: the baseline shadow needs a workload of its own"
        )
    return workloads


# The ramp driver of each mesh API, where the mirror lives in a Kubernetes route object.
ROUTE_DRIVERS = {"istio": "istio", "gateway-api": "gateway-api"}


def mirror_ramp_targets(services, namespace, mesh_api=None, driver=None):
    """The `services` argument of mirror_ramp: name, namespace and workloads of each service, and
    the driver of the service's own mesh API when the ramp drives Kubernetes routes."""
    if not isinstance(services, list):
        raise AnsibleFilterError(f"mirror_ramp_targets: expected a list of services, got {type(services).__name__}")
    targets = []
    for service in services:
        workloads = mirror_service_workloads(service)  # names the service that lacks something
        target = {"name": service["name"], "namespace": service.get("namespace") or namespace, "workloads": workloads}
        # The envoy driver ramps a proxy's files whichever API rendered them.
        if driver in ROUTE_DRIVERS.values():
            api = service.get("mesh_api") or mesh_api
            if api not in ROUTE_DRIVERS:
                raise AnsibleFilterError(
                    f"mirror_ramp_targets: service {service['name']}: mesh API {api!r}, expected one of "
                    + ", ".join(ROUTE_DRIVERS)
                )
            target["driver"] = ROUTE_DRIVERS[api]
        targets.append(target)
    return targets


def mirror_prometheus_options(options):
    """mirror_prometheus without null or empty values, which the mirror_ramp defaults then fill."""
    if not isinstance(options, dict):
        raise AnsibleFilterError(f"mirror_prometheus_options: expected a dict, got {type(options).__name__}")
    cleaned = {key: value for key, value in options.items() if value is not None and value != ""}
    return cleaned


STATUS_COLUMNS = ("service", "state", "step", "percent", "since", "next_advance")


def mirror_status_table(rows):
    """The status rows of mirror_ramp (operation status) as lines: a table, each ramp's gates under it."""
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise AnsibleFilterError(f"mirror_status_table: expected a list of status rows, got {type(rows).__name__}")
    cells = [[column.replace("_", " ") for column in STATUS_COLUMNS]]
    cells += [[number(row.get(column, "-")) for column in STATUS_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(STATUS_COLUMNS))]
    lines = []
    for index, line in enumerate(cells):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if index and rows[index - 1].get("attention"):
            lines.append(f"    ATTENTION    {rows[index - 1]['attention']}")
        for gate in rows[index - 1].get("last_gates") or [] if index else []:
            limit = (
                f" {gate.get('operator') or ''} {number(gate['threshold'])}"
                if gate.get("threshold") is not None
                else ""
            )
            value = "-" if gate.get("value") is None else number(gate["value"])
            lines.append(f"    {gate.get('verdict', '?'):<12} {gate.get('name')} = {value}{limit}")
    return lines


class FilterModule:
    def filters(self):
        return {
            "mirror_keep_live": mirror_keep_live,
            "mirror_service_workloads": mirror_service_workloads,
            "mirror_ramp_targets": mirror_ramp_targets,
            "mirror_prometheus_options": mirror_prometheus_options,
            "mirror_status_table": mirror_status_table,
        }
