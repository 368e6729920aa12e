"""Pure filter: the mirror rule of a rendered HTTPRoute, as the ramp engine writes and reads it.

The role mirror_gateway_api decides which version Services a service mirrors to; where the
mirror lives in the HTTPRoute (the rule name, the RequestMirror filters with their exact share,
the targets annotation) is the engine's knowledge (mirrorramp.httproute), so the render and the
ramp cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING

from ansible.errors import AnsibleFilterError

from mirrorramp.errors import MirrorRampError
from mirrorramp.routes import MIRROR_RULE_NAME, TARGETS_ANNOTATION

if TYPE_CHECKING:
    from mirrorramp.httproute import MirrorBackend

# The documentation is mirror_gateway_api_route.yml beside this file (ansible-doc -t filter).


def _backend(entry: object, index: int) -> MirrorBackend:
    from mirrorramp.httproute import MirrorBackend  # imported when used: see mirror_gateway_api_route

    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise AnsibleFilterError(f"mirror_gateway_api_route: target [{index}] = {entry!r}, expected {{name, port}}")
    port = entry.get("port")
    if isinstance(port, bool) or not isinstance(port, int):
        raise AnsibleFilterError(f"mirror_gateway_api_route: target [{index}] has port {port!r}, expected an integer")
    return MirrorBackend(name=entry["name"], port=port)


def mirror_gateway_api_route(targets, percent):
    """The mirror rule's part the ramp owns: its `name`, the RequestMirror `filters` that mirror
    `percent` % to `targets` ({name, port} each; none at 0 %) and the `annotations` that record the
    targets (the ramp puts the mirror back from them after a rollback removed every mirror filter)."""
    if not isinstance(targets, list):
        raise AnsibleFilterError(f"mirror_gateway_api_route: expected a list of targets, got {type(targets).__name__}")
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise AnsibleFilterError(f"mirror_gateway_api_route: percent {percent!r} is not a number")
    # Imported here, not at the top: Ansible's worker for every task imports every filter file,
    # and mirrorramp.httproute took about 0.15 s of each task's time (64 render tasks).
    from mirrorramp.httproute import mirror_filters

    backends = [_backend(entry, index) for index, entry in enumerate(targets)]
    try:
        filters = mirror_filters(percent, backends)
    except MirrorRampError as e:
        raise AnsibleFilterError(f"mirror_gateway_api_route: {e}") from e
    # Compact JSON with sorted keys, without the absent namespace: byte-identical renders.
    recorded = json.dumps(
        [{k: v for k, v in asdict(b).items() if v is not None} for b in backends],
        sort_keys=True,
        separators=(",", ":"),
    )
    return {"name": MIRROR_RULE_NAME, "filters": filters, "annotations": {TARGETS_ANNOTATION: recorded}}


class FilterModule:
    def filters(self):
        return {"mirror_gateway_api_route": mirror_gateway_api_route}
