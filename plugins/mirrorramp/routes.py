"""What the ramp asks of a route API, and which one a kind of object is.

The ramp drives the mirror of one object of the Kubernetes API: an Istio VirtualService or a
Gateway API HTTPRoute. Where the mirror lives in that object is known by one small module per
API (virtualservice, httproute), each one a RouteApi; the driver, the drift check and the
`mirror_keep_live` filter go through this interface and never branch on the API.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Protocol

from mirrorramp.errors import DriverError

# The rule (HTTPRoute) or http route (VirtualService) that carries the mirror, as rendered.
MIRROR_RULE_NAME = "mirror"
# JSON list of the mirror destinations, written by the renderer: the mirror can be put back after
# a rollback removed every mirror field.
TARGETS_ANNOTATION = "mirror-ramp.io/mirror-targets"
# The ramp's state (mirrorramp.state.RampState as JSON), written with the mirror in one patch.
STATE_ANNOTATION = "mirror-ramp.io/state"


class RouteApi(Protocol):
    """Where the mirror lives in one kind of route object; implemented by a module per API."""

    GROUP: str
    VERSION: str  # the version the driver asks for when the task names none
    PLURAL: str
    KIND: str

    def mirror_rule_pointer(self, route: dict) -> str:
        """JSON pointer of the rule that carries the mirror (DriverError when there is none)."""
        ...

    def read_mirror_percent(self, route: dict) -> float:
        """The mirrored percent of the mirror rule: 0 without a mirror."""
        ...

    def with_mirror_percent(self, route: dict, percent: float) -> dict:
        """A copy of `route` mirroring `percent` % to the annotated targets (0: no mirror at all)."""
        ...

    def mirror_targets(self, route: dict) -> Sequence[object]:
        """The mirror destinations recorded in TARGETS_ANNOTATION."""
        ...

    def mirror_settings(self, route: dict) -> dict:
        """The mirror fields of the mirror rule, for --diff, the result and the drift check."""
        ...

    def keep_live_mirror(self, rendered: dict, live: dict | None) -> dict:
        """The rendered object with the live mirror once the ramp owns it (STATE_ANNOTATION)."""
        ...


def route_api_for_kind(kind: str | None) -> RouteApi | None:
    """The route API of objects of `kind`; None for a kind without a mirror the ramp drives."""
    # Imported here: the route modules import this module's annotation names.
    from mirrorramp import httproute, virtualservice

    apis: tuple[RouteApi, ...] = (virtualservice, httproute)
    return next((api for api in apis if kind == api.KIND), None)


def keep_live_mirror(rendered: dict, live: dict | None) -> dict:
    """`rendered` with the live mirror kept, by the route API of its kind (other kinds as they are)."""
    api = route_api_for_kind(rendered.get("kind"))
    return rendered if api is None else api.keep_live_mirror(rendered, live)


def route_collections(manifests: Iterable[dict]) -> list[tuple[str | None, str, str | None]]:
    """(apiVersion, kind, namespace) of every route among `manifests`, each once, in first-seen
    order: what to LIST to know their live mirrors (a read per namespace, not one per route)."""
    seen: dict[tuple[str | None, str, str | None], None] = {}
    for manifest in manifests:
        if route_api_for_kind(manifest.get("kind")) is not None:
            namespace = (manifest.get("metadata") or {}).get("namespace")
            seen.setdefault((manifest.get("apiVersion"), manifest["kind"], namespace), None)
    return list(seen)


def keep_live_mirrors(manifests: Sequence[dict], live_objects: Iterable[dict]) -> list[dict]:
    """Each of `manifests` with the live mirror of its own live object (keep_live_mirror): the
    object of `live_objects` with the same kind, namespace and name. Items of a LIST may come
    without kind (the API server omits it for built-in kinds): such an object stands for any kind
    of its namespace and name."""
    live_by_key: dict[tuple[str | None, str | None, str | None], dict] = {}
    for obj in live_objects:
        if isinstance(obj, dict):
            meta = obj.get("metadata") or {}
            live_by_key.setdefault((obj.get("kind"), meta.get("namespace"), meta.get("name")), obj)

    def live_of(manifest: dict) -> dict | None:
        meta = manifest.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        found = live_by_key.get((manifest.get("kind"), namespace, name))
        return found if found is not None else live_by_key.get((None, namespace, name))

    return [keep_live_mirror(manifest, live_of(manifest)) for manifest in manifests]


def owned_by_ramp(live: dict | None) -> bool:
    """Whether the ramp has written `live` (it carries the state): its mirror is the ramp's from then on."""
    return bool(live) and STATE_ANNOTATION in ((live.get("metadata") or {}).get("annotations") or {})


def annotated_targets(route: dict, entry_keys: str) -> list[dict]:
    """The entries of TARGETS_ANNOTATION, a JSON list of objects (`entry_keys` names them in errors)."""
    metadata = route.get("metadata") or {}
    raw = (metadata.get("annotations") or {}).get(TARGETS_ANNOTATION)
    if not raw:
        raise DriverError(
            f"{route.get('kind', 'route')} {metadata.get('name', '?')} has no annotation {TARGETS_ANNOTATION}: "
            "render it with the mirror roles"
        )
    try:
        entries = json.loads(raw)
    except ValueError as e:
        raise DriverError(f"annotation {TARGETS_ANNOTATION} is not a JSON list of {entry_keys}: {e}") from e
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise DriverError(f"annotation {TARGETS_ANNOTATION} is not a JSON list of {entry_keys}: {raw}")
    return entries


def mirror_drift(api: RouteApi, route: dict, percent: float) -> str:
    """How the live mirror differs from what the ramp writes for `percent`; "" when it does not."""
    live = api.mirror_settings(route)
    try:
        wanted = api.mirror_settings(api.with_mirror_percent(route, percent))
    except DriverError as e:  # no targets annotation: the ramp could not write any mirror
        return str(e) if live else ""
    if live == wanted:
        return ""
    return f"live mirror fields {json.dumps(live, sort_keys=True)}, expected {json.dumps(wanted, sort_keys=True)}"
