"""The mirror fields of an Istio VirtualService: read, set, remove, keep (a routes.RouteApi).

One place knows where the mirror lives in a VirtualService, used by the istio driver (which
patches the live object) and by the `mirror_keep_live` filter (which stops a re-apply of the
rendered manifest from undoing what the ramp did).

The route that carries the mirror is the http route named `mirror` (rendered by the
mirror_istio role). Its destinations come from the annotation `mirror-ramp.io/mirror-targets`,
so the mirror can be put back after a rollback removed every mirror field.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from mirrorramp.errors import DriverError
from mirrorramp.routes import MIRROR_RULE_NAME, TARGETS_ANNOTATION, annotated_targets, owned_by_ramp
from mirrorramp.routes import STATE_ANNOTATION as STATE_ANNOTATION  # imported from here by the sandbox and tests

GROUP = "networking.istio.io"
VERSION = "v1"
PLURAL = "virtualservices"
KIND = "VirtualService"

MIRROR_ROUTE_NAME = MIRROR_RULE_NAME
MIRROR_FIELDS = ("mirror", "mirrorPercentage", "mirrors")


@dataclass(frozen=True)
class MirrorTarget:
    host: str
    subset: str | None = None
    port: int | None = None

    def destination(self) -> dict[str, Any]:
        dest: dict[str, Any] = {"host": self.host}
        if self.subset:
            dest["subset"] = self.subset
        if self.port:
            dest["port"] = {"number": self.port}
        return dest


def _routes(vs: dict) -> list[dict]:
    return list((vs.get("spec") or {}).get("http") or [])


def mirror_route_index(vs: dict) -> int:
    """Index of the route named `mirror`; DriverError when the VirtualService has none."""
    for index, route in enumerate(_routes(vs)):
        if route.get("name") == MIRROR_ROUTE_NAME:
            return index
    name = (vs.get("metadata") or {}).get("name", "?")
    raise DriverError(
        f"VirtualService {name} has no http route named '{MIRROR_ROUTE_NAME}': "
        "render it with the mirror_istio role or name the mirrored route 'mirror'"
    )


def mirror_rule_pointer(vs: dict) -> str:
    return f"/spec/http/{mirror_route_index(vs)}"


def mirror_targets(vs: dict) -> list[MirrorTarget]:
    """The mirror destinations recorded by the renderer in the targets annotation."""
    entries = annotated_targets(vs, "{host, subset, port}")
    try:
        return [MirrorTarget(e["host"], e.get("subset"), e.get("port")) for e in entries]
    except KeyError as e:
        raise DriverError(f"annotation {TARGETS_ANNOTATION}: an entry has no {e}") from e


def route_mirror_percent(route: dict) -> float:
    """The mirrored percent of one route: 0 without mirror fields, 100 for a bare `mirror`."""
    if "mirrors" in route:
        values = {float((m.get("percentage") or {"value": 100.0}).get("value", 0.0)) for m in route["mirrors"]}
        # The ramp always sets every target to the same percent; anything else is not ours.
        return max(values) if values else 0.0
    if "mirror" in route:
        return float((route.get("mirrorPercentage") or {"value": 100.0}).get("value", 0.0))
    return 0.0


def read_mirror_percent(vs: dict) -> float:
    return route_mirror_percent(_routes(vs)[mirror_route_index(vs)])


def mirror_fields(percent: float, targets: list[MirrorTarget]) -> dict[str, Any]:
    """The route fields that mirror `percent` % to `targets`; {} for 0 (no mirror at all)."""
    if percent <= 0:
        return {}
    if not targets:
        raise DriverError("no mirror targets to mirror to")
    if len(targets) == 1:
        return {"mirror": targets[0].destination(), "mirrorPercentage": {"value": float(percent)}}
    return {"mirrors": [{"destination": t.destination(), "percentage": {"value": float(percent)}} for t in targets]}


def with_mirror_percent(vs: dict, percent: float) -> dict:
    """A copy of `vs` whose mirror route mirrors `percent` % (0 removes every mirror field)."""
    new = copy.deepcopy(vs)
    route = new["spec"]["http"][mirror_route_index(new)]
    for field in MIRROR_FIELDS:
        route.pop(field, None)
    route.update(mirror_fields(percent, mirror_targets(new) if percent > 0 else []))
    return new


def mirror_settings(vs: dict) -> dict[str, Any]:
    """The mirror fields of the mirror route, for --diff and the result."""
    route = _routes(vs)[mirror_route_index(vs)]
    return {field: route[field] for field in MIRROR_FIELDS if field in route}


def keep_live_mirror(rendered: dict, live: dict | None) -> dict:
    """The rendered VirtualService with the mirror fields of the live one, once the ramp owns them.

    The ramp owns the mirror from its first run (the state annotation is there): a re-apply of the
    manifests must neither put back a mirror the ramp removed nor reset its percentage.
    """
    if rendered.get("kind") != KIND or not owned_by_ramp(live):
        return rendered
    live_routes = {r.get("name"): r for r in _routes(live) if r.get("name")}
    new = copy.deepcopy(rendered)
    for route in (new.get("spec") or {}).get("http") or []:
        live_route = live_routes.get(route.get("name"))
        if live_route is None:
            continue
        for field in MIRROR_FIELDS:
            route.pop(field, None)
            if field in live_route:
                route[field] = copy.deepcopy(live_route[field])
    return new
