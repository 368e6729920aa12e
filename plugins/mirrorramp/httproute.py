"""The mirror filters of a Gateway API HTTPRoute: read, set, remove, keep (a routes.RouteApi).

The rule that carries the mirror is the rule named `mirror` (rules[].name, in the standard channel
CRD of v1.6.1). The mirror is one `RequestMirror` filter per target, all at the same share:
`percent` when the percent is whole, else an exact `fraction` (0.5 % is 5/1000, 33.3 % is
333/1000), and no mirror filter at all at 0 %. The targets come from the annotation
`mirror-ramp.io/mirror-targets` (entries {name, port, namespace?}; `host` is taken for `name`),
so the mirror can be put back after a rollback removed every mirror filter. The rule's other
filters are never touched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from mirrorramp.errors import ConfigError, DriverError
from mirrorramp.routes import MIRROR_RULE_NAME, TARGETS_ANNOTATION, annotated_targets, owned_by_ramp

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"
KIND = "HTTPRoute"

MIRROR_FILTER_TYPE = "RequestMirror"
# The CRD's limits: filters per rule, and the int32 of fraction.denominator.
MAX_FILTERS = 16
MAX_DENOMINATOR = 2**31 - 1


@dataclass(frozen=True)
class MirrorBackend:
    """A Service the mirror goes to (Gateway API's backendRef; port is required for a Service)."""

    name: str
    port: int
    namespace: str | None = None

    def backend_ref(self) -> dict[str, Any]:
        # group and kind written out: the API server defaults them, and a read-back must compare
        # equal to what was written, or every pass would see drift.
        ref: dict[str, Any] = {"group": "", "kind": "Service", "name": self.name}
        if self.namespace:
            ref["namespace"] = self.namespace
        ref["port"] = self.port
        return ref


def _rules(route: dict) -> list[dict]:
    return list((route.get("spec") or {}).get("rules") or [])


def mirror_rule_index(route: dict) -> int:
    """Index of the rule named `mirror`; DriverError when the HTTPRoute has none."""
    for index, rule in enumerate(_rules(route)):
        if rule.get("name") == MIRROR_RULE_NAME:
            return index
    name = (route.get("metadata") or {}).get("name", "?")
    raise DriverError(
        f"HTTPRoute {name} has no rule named '{MIRROR_RULE_NAME}': "
        "render it with the mirror roles or name the mirrored rule 'mirror'"
    )


def mirror_rule_pointer(route: dict) -> str:
    return f"/spec/rules/{mirror_rule_index(route)}"


def mirror_targets(route: dict) -> list[MirrorBackend]:
    """The mirror backends recorded by the renderer in the targets annotation."""
    backends = []
    for entry in annotated_targets(route, "{name, port, namespace}"):
        name, port = entry.get("name") or entry.get("host"), entry.get("port")
        if not isinstance(name, str) or not name or isinstance(port, bool) or not isinstance(port, int):
            raise DriverError(f"annotation {TARGETS_ANNOTATION}: {entry} needs a name and a port number")
        backends.append(MirrorBackend(name, port, entry.get("namespace")))
    return backends


def mirror_share(percent: float) -> dict[str, Any]:
    """`percent` as a RequestMirror share: {"percent": n} when whole, else an exact `fraction`.

    The fraction is the percent as written, in decimal places over 100 (0.5 -> 5/1000,
    0.25 -> 25/10000): never rounded, so a read-back gives the very percent that was set.
    """
    if isinstance(percent, bool) or not 0 < percent <= 100:
        raise DriverError(f"HTTPRoute mirror percent {percent!r}: expected more than 0 and at most 100")
    # repr: the shortest decimal that reads back as this float (0.1, not 0.1000000000000000055...).
    written = Decimal(repr(float(percent)))
    if written == written.to_integral_value():
        return {"percent": int(written)}
    places = -written.normalize().as_tuple().exponent
    numerator, denominator = int(written.scaleb(places)), 100 * 10**places
    if denominator > MAX_DENOMINATOR:
        raise DriverError(
            f"HTTPRoute mirror percent {percent!r}: a fraction's denominator is an int32, "
            "at most 7 decimal places (e.g. 0.0000125)"
        )
    return {"fraction": {"numerator": numerator, "denominator": denominator}}


def check_percent(percent: float) -> float:
    """`percent` when an HTTPRoute can carry it exactly; ConfigError (before any write) otherwise."""
    if percent != 0:
        try:
            mirror_share(percent)
        except DriverError as e:
            raise ConfigError(str(e)) from e
    return percent


def share_percent(request_mirror: dict) -> float:
    """The percent of one requestMirror: 100 without percent or fraction (the API's default)."""
    if "percent" in request_mirror:
        return float(request_mirror["percent"])
    if "fraction" in request_mirror:
        fraction = request_mirror["fraction"] or {}
        # Exact, then rounded once: 333/1000 reads back as 33.3, not 33.300000000000004.
        return float(Fraction(100 * int(fraction.get("numerator", 0)), int(fraction.get("denominator", 100))))
    return 100.0


def _is_mirror(filter_: dict) -> bool:
    return filter_.get("type") == MIRROR_FILTER_TYPE


def rule_mirror_percent(rule: dict) -> float:
    """The mirrored percent of one rule: 0 without mirror filters."""
    values = {share_percent(f.get("requestMirror") or {}) for f in rule.get("filters") or [] if _is_mirror(f)}
    # The ramp always sets every target to the same percent; anything else is not ours.
    return max(values) if values else 0.0


def read_mirror_percent(route: dict) -> float:
    return rule_mirror_percent(_rules(route)[mirror_rule_index(route)])


def mirror_filters(percent: float, targets: list[MirrorBackend]) -> list[dict[str, Any]]:
    """The RequestMirror filters that mirror `percent` % to `targets`; none for 0."""
    if percent <= 0:
        return []
    if not targets:
        raise DriverError("no mirror targets to mirror to")
    share = mirror_share(percent)
    return [
        {"type": MIRROR_FILTER_TYPE, "requestMirror": {"backendRef": t.backend_ref(), **copy.deepcopy(share)}}
        for t in targets
    ]


def _set_mirror_filters(rule: dict, mirrors: list[dict]) -> None:
    """Replace the rule's RequestMirror filters by `mirrors`, where the first one was; others stay."""
    filters = rule.get("filters") or []
    others = [f for f in filters if not _is_mirror(f)]
    at = next((i for i, f in enumerate(filters) if _is_mirror(f)), len(filters))
    # The position among the other filters: those before the first mirror filter stay before.
    before = sum(1 for f in filters[:at] if not _is_mirror(f))
    new = others[:before] + mirrors + others[before:]
    if len(new) > MAX_FILTERS:
        raise DriverError(f"rule '{rule.get('name')}' would have {len(new)} filters, the API allows {MAX_FILTERS}")
    if new:
        rule["filters"] = new
    else:
        rule.pop("filters", None)


def with_mirror_percent(route: dict, percent: float) -> dict:
    """A copy of `route` whose mirror rule mirrors `percent` % (0 removes every mirror filter)."""
    new = copy.deepcopy(route)
    rule = new["spec"]["rules"][mirror_rule_index(new)]
    _set_mirror_filters(rule, mirror_filters(percent, mirror_targets(new) if percent > 0 else []))
    return new


def mirror_settings(route: dict) -> dict[str, Any]:
    """The RequestMirror filters of the mirror rule, for --diff and the result; {} without any."""
    filters = [f for f in _rules(route)[mirror_rule_index(route)].get("filters") or [] if _is_mirror(f)]
    return {"filters": filters} if filters else {}


def keep_live_mirror(rendered: dict, live: dict | None) -> dict:
    """The rendered HTTPRoute with the mirror filters of the live one, once the ramp owns them.

    The ramp owns the mirror from its first run (the state annotation is there): a re-apply of the
    manifests must neither put back a mirror the ramp removed nor reset its share.
    """
    if rendered.get("kind") != KIND or live is None or not owned_by_ramp(live):
        return rendered
    live_rules = {r.get("name"): r for r in _rules(live) if r.get("name")}
    new = copy.deepcopy(rendered)
    for rule in (new.get("spec") or {}).get("rules") or []:
        live_rule = live_rules.get(rule.get("name"))
        if live_rule is not None:
            _set_mirror_filters(rule, [copy.deepcopy(f) for f in live_rule.get("filters") or [] if _is_mirror(f)])
    return new
