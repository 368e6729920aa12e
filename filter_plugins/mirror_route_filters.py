"""Pure filter: the mirror route of a rendered VirtualService, as the ramp engine writes and reads it.

The role mirror_istio decides which targets a service mirrors to; where the mirror lives in the
VirtualService (the route name, the mirror fields, the targets annotation) is the engine's
knowledge (mirrorramp.virtualservice), so the render and the ramp cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict

from ansible.errors import AnsibleFilterError

from mirrorramp.errors import MirrorRampError
from mirrorramp.virtualservice import MIRROR_ROUTE_NAME, TARGETS_ANNOTATION, MirrorTarget, mirror_fields

# The documentation is mirror_istio_route.yml beside this file (ansible-doc -t filter).


def _mirror_target(entry: object, index: int) -> MirrorTarget:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("host"), str) or not entry["host"]:
        raise AnsibleFilterError(f"mirror_istio_route: target [{index}] = {entry!r}, expected {{host, subset, port}}")
    port = entry.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
        raise AnsibleFilterError(f"mirror_istio_route: target [{index}] has port {port!r}, expected an integer")
    return MirrorTarget(host=entry["host"], subset=entry.get("subset"), port=port)


def mirror_istio_route(targets, percent):
    """The mirror route's part the ramp owns: its `name`, the `fields` that mirror `percent` % to
    `targets` ({host, subset, port} each; none at 0 %) and the `annotations` that record the targets
    (the ramp puts the mirror back from them after a rollback removed every mirror field)."""
    if not isinstance(targets, list):
        raise AnsibleFilterError(f"mirror_istio_route: expected a list of targets, got {type(targets).__name__}")
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise AnsibleFilterError(f"mirror_istio_route: percent {percent!r} is not a number")
    mirror_targets = [_mirror_target(entry, index) for index, entry in enumerate(targets)]
    try:
        fields = mirror_fields(percent, mirror_targets)
    except MirrorRampError as e:
        raise AnsibleFilterError(f"mirror_istio_route: {e}") from e
    # Compact JSON with sorted keys: the annotation is byte-identical from one render to the next.
    recorded = json.dumps([asdict(target) for target in mirror_targets], sort_keys=True, separators=(",", ":"))
    return {"name": MIRROR_ROUTE_NAME, "fields": fields, "annotations": {TARGETS_ANNOTATION: recorded}}


class FilterModule:
    def filters(self):
        return {"mirror_istio_route": mirror_istio_route}
