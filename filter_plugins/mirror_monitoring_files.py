"""Pure filter: every file role mirror_monitoring renders, one entry per file, for mirror_render_files.

The list was a Jinja loop in roles/mirror_monitoring/vars/main.yml (a combine per service and
per file, each list written as YAML and read back): about half of the role's render time at 100
services. Here it is one pass in Python with the same entries, in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

# The documentation is mirror_monitoring_files.yml beside this file (ansible-doc -t filter).

RULES_FILE_ENTRY = {"kind": "rules file", "name": "mirror-rules", "template": "prometheus-rules.yml.j2"}


def _target(entry: Mapping[str, Any], index: int) -> dict[str, Any]:
    """A service as the alert rules read it: service, namespace and its workloads (primary, mirror, baseline)."""
    try:
        return {"service": entry["name"], "namespace": entry["namespace"], **entry["workloads"]}
    except (KeyError, TypeError) as e:
        raise AnsibleFilterError(
            f"mirror_monitoring_files: targets[{index}] = {entry!r}, expected {{name, namespace, workloads}} "
            "(filter mirror_ramp_targets)"
        ) from e


def mirror_monitoring_files(
    targets: Sequence[Mapping[str, Any]],
    kinds: Sequence[Mapping[str, Any]],
    build_dir: str,
    rules_file: str,
) -> list[dict[str, Any]]:
    """Per namespace of the targets (sorted), one entry per kind with the targets in that
    namespace, then the plain rules file with every target."""
    if not isinstance(targets, Sequence) or isinstance(targets, str):
        raise AnsibleFilterError(f"mirror_monitoring_files: expected a list of targets, got {type(targets).__name__}")
    rows = [_target(entry, index) for index, entry in enumerate(targets)]
    # Namespaces are DNS-1123 labels (lowercase), so this order is the one Jinja's sort gave.
    namespaces = sorted({row["namespace"] for row in rows})
    files = []
    for namespace in namespaces:
        in_namespace = [row for row in rows if row["namespace"] == namespace]
        for kind in kinds:
            path = f"{build_dir}/k8s/{kind['kind'].lower()}-{namespace}-{kind['name']}.yml"
            files.append({**kind, "namespace": namespace, "targets": in_namespace, "path": path})
    files.append({**RULES_FILE_ENTRY, "targets": rows, "path": rules_file})
    return files


class FilterModule:
    def filters(self):
        return {"mirror_monitoring_files": mirror_monitoring_files}
