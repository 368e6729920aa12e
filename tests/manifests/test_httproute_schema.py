"""HTTPRoutes against the Gateway API v1.6.1 standard CRD, its CEL rules included
(tests/support/crd_validation.py).

No package on PyPI or npm carries that CRD with its CEL rules (checked 5 December 2026: no
cloudcoil models for Gateway API; PyPI's `gateway-api` is an unrelated project; npm's
@kubernetes-models/gateway-api 2.0.0 has JSON schemas generated from the Go types, without
x-kubernetes-validations), so the CRD is read from ../shared/schemas beside the checkout. A clone
without it reports these tests skipped, with the reason.

The first tests check the validator itself on a small CRD written here (they run everywhere);
then every HTTPRoute the ramp writes (mirrorramp.httproute) at every percent it can set, 0
included; the last ones every HTTPRoute that roles/mirror_gateway_api renders for each
environment with mirror_mesh_api=gateway-api, at the inventory's percent, 0.5 and 33.3, and its
version Services (those against Kubernetes' own schema, kubernetes_validate, everywhere).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirrorramp.httproute import read_mirror_percent, with_mirror_percent
from mirrorramp.routes import TARGETS_ANNOTATION
from tests.support.crd_validation import Finding, load_crd, validate
from tests.support.gateway_api_render import (
    ENVIRONMENTS,
    gateway_api_only_render_playbook,
    inventory_services,
    render_gateway_api,
)
from tests.support.validate_build import validate_manifest_file

REPO_ROOT = Path(__file__).resolve().parents[2]
HTTPROUTE_CRD = REPO_ROOT.parent / "shared" / "schemas" / "gateway-api-v1.6.1-standard-httproutes.yaml"
NOT_THERE = f"the Gateway API v1.6.1 HTTPRoute CRD is not at {HTTPROUTE_CRD} (no registry package carries it)"

TINY_CRD: dict[str, Any] = {
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "names": {"kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                    "unit": {"type": "string", "enum": ["cm", "in"], "default": "cm"},
                                    "namespace": {"type": "string"},
                                    "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                                },
                                "x-kubernetes-validations": [
                                    {"rule": "self.unit == 'cm' || self.size <= 4", "message": "inches: 4 at most"},
                                    {"rule": "!has(self.__namespace__) || self.__namespace__ != 'kube-system'"},
                                ],
                            },
                        },
                    }
                },
            }
        ],
    },
}


def widget(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}


def kinds(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.field, f.kind) for f in findings]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"size": 3}, []),
        ({"size": 3, "unit": "in"}, []),
        ({"size": "3"}, [("spec.size", "type")]),
        ({"size": True}, [("spec.size", "type")]),
        ({"size": 11}, [("spec.size", "maximum")]),
        ({"size": 0}, [("spec.size", "minimum")]),
        ({"size": 3, "unit": "mm"}, [("spec.unit", "enum")]),
        ({"size": 3, "tags": ["a", "b", "c"]}, [("spec.tags", "maxItems")]),
        ({"size": 3, "colour": "red"}, [("spec.colour", "unknown")]),
        # CEL's || is true when either side is, even if the other can't be evaluated
        ({"unit": "cm"}, [("spec.size", "required")]),
        ({"unit": "in"}, [("spec.size", "required"), ("spec", "rule-error")]),
        # the default (cm) is applied before the rules: 8 is fine without a unit, not in inches
        ({"size": 8}, []),
        ({"size": 8, "unit": "in"}, [("spec", "rule")]),
        # a property named like a CEL keyword is escaped (__namespace__), as Kubernetes does
        ({"size": 3, "namespace": "kube-system"}, [("spec", "rule")]),
        ({"size": 3, "namespace": "default"}, []),
    ],
)
def test_the_validator_on_a_small_crd(spec: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert kinds(validate(widget(**spec), TINY_CRD)) == expected


def test_rule_findings_carry_the_rules_message() -> None:
    [finding] = validate(widget(size=8, unit="in"), TINY_CRD)
    assert finding.message == "Invalid value: FieldValueInvalid: inches: 4 at most"


# ---------------------------------------------------------------------------------------------
# The upstream HTTPRoute CRD


@pytest.fixture(scope="module")
def httproute_crd() -> dict[str, Any]:
    if not HTTPROUTE_CRD.is_file():
        pytest.skip(NOT_THERE)
    return load_crd(HTTPROUTE_CRD)


def mirror(**share: Any) -> dict[str, Any]:
    return {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "reviews-v2", "port": 9080}, **share}}


def route(filters: list[dict[str, Any]]) -> dict[str, Any]:
    """A GAMMA route (parentRef: the Service) mirroring GET to reviews-v2."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
            "rules": [
                {
                    "name": "mirror",
                    "matches": [{"method": "GET"}, {"method": "HEAD"}],
                    "backendRefs": [{"name": "reviews-v1", "port": 9080}],
                    "filters": filters,
                    "timeouts": {"request": "10s"},
                }
            ],
        },
    }


FILTER = "spec.rules[0].filters[0]"


@pytest.mark.parametrize(
    "filters",
    [
        [mirror(percent=5)],
        [mirror(percent=100)],
        [mirror(fraction={"numerator": 5, "denominator": 1000})],
        [mirror(fraction={"numerator": 33})],  # denominator defaults to 100
        [mirror(percent=1), {**mirror(percent=1), "requestMirror": {"backendRef": {"name": "b", "port": 80}}}],
        [],
    ],
    ids=["percent", "percent-100", "fraction", "fraction-default-denominator", "two-mirrors", "no-filter"],
)
def test_good_routes_are_accepted(httproute_crd: dict[str, Any], filters: list[dict[str, Any]]) -> None:
    assert validate(route(filters), httproute_crd) == []


@pytest.mark.parametrize(
    ("filters", "field", "kind", "says"),
    [
        (
            [mirror(percent=5, fraction={"numerator": 1, "denominator": 100})],
            f"{FILTER}.requestMirror",
            "rule",
            "Only one of percent or fraction may be specified",
        ),
        (
            [mirror(fraction={"numerator": 5, "denominator": 4})],
            f"{FILTER}.requestMirror.fraction",
            "rule",
            "numerator must be less than or equal to denominator",
        ),
        (
            [mirror(fraction={"numerator": 333})],  # over the default denominator, 100
            f"{FILTER}.requestMirror.fraction",
            "rule",
            "numerator must be less than or equal to denominator",
        ),
        ([mirror(percent=101)], f"{FILTER}.requestMirror.percent", "maximum", "less than or equal to 100"),
        ([mirror(percent=-1)], f"{FILTER}.requestMirror.percent", "minimum", "greater than or equal to 0"),
        ([mirror(percent="5")], f"{FILTER}.requestMirror.percent", "type", "must be of type integer"),
        ([mirror(percent=5, weight=1)], f"{FILTER}.requestMirror.weight", "unknown", "unknown field"),
        (
            [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "reviews-v2"}}}],
            f"{FILTER}.requestMirror.backendRef",
            "rule",
            "Must have port for Service reference",
        ),
        ([{"type": "RequestMirror"}], FILTER, "rule", "filter.requestMirror must be specified for RequestMirror"),
        ([{"type": "Mirror"}], f"{FILTER}.type", "enum", "Unsupported value"),
        ([mirror(percent=1)] * 17, "spec.rules[0].filters", "maxItems", "at most 16"),
        (
            [
                {"type": "RequestRedirect", "requestRedirect": {"statusCode": 302}},
                {"type": "RequestRedirect", "requestRedirect": {"statusCode": 301}},
            ],
            "spec.rules[0].filters",
            "rule",
            "RequestRedirect filter cannot be repeated",
        ),
    ],
    ids=[
        "percent-and-fraction",
        "numerator-over-denominator",
        "numerator-over-default-denominator",
        "percent-101",
        "percent-negative",
        "percent-string",
        "unknown-field",
        "service-without-port",
        "type-without-its-field",
        "unknown-type",
        "17-filters",
        "two-redirects",
    ],
)
def test_bad_routes_are_refused(
    httproute_crd: dict[str, Any], filters: list[dict[str, Any]], field: str, kind: str, says: str
) -> None:
    findings = validate(route(filters), httproute_crd)
    assert any(f.field == field and f.kind == kind and says in f.message for f in findings), findings


def test_a_route_level_rule_with_an_escaped_property(httproute_crd: dict[str, Any]) -> None:
    """parentRefs' uniqueness rule reads p.__namespace__: two refs to one Service are refused,
    and in two namespaces they are not."""
    duplicated = route([mirror(percent=5)])
    parent = duplicated["spec"]["parentRefs"][0]
    duplicated["spec"]["parentRefs"] = [parent, copy.deepcopy(parent)]
    assert [f.field for f in validate(duplicated, httproute_crd) if f.kind == "rule"] == ["spec.parentRefs"]
    apart = copy.deepcopy(duplicated)
    apart["spec"]["parentRefs"][1]["namespace"] = "other"
    assert validate(apart, httproute_crd) == []


def test_a_backend_request_timeout_longer_than_the_request_is_refused(httproute_crd: dict[str, Any]) -> None:
    too_long = route([])
    too_long["spec"]["rules"][0]["timeouts"] = {"request": "1s", "backendRequest": "2s"}
    assert [f.field for f in validate(too_long, httproute_crd)] == ["spec.rules[0].timeouts"]


# ---------------------------------------------------------------------------------------------
# What the ramp writes (plugins/mirrorramp/httproute.py)

RAMP_PERCENTS = [0.1, 0.5, 1, 5, 10, 20, 33.3, 100, 0]


def rendered_route() -> dict[str, Any]:
    """A route as the roles render it: the rule named `mirror`, a header filter the ramp must
    keep, and two mirror targets (one in another namespace) in the targets annotation."""
    rendered = route(
        [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}]
    )
    targets = [{"name": "reviews-v2", "port": 9080}, {"name": "reviews-shadow", "port": 9080, "namespace": "shadow"}]
    rendered["metadata"]["annotations"] = {TARGETS_ANNOTATION: json.dumps(targets)}
    return rendered


@pytest.mark.parametrize("percent", RAMP_PERCENTS)
def test_every_route_the_ramp_writes_is_valid(httproute_crd: dict[str, Any], percent: float) -> None:
    written = with_mirror_percent(rendered_route(), percent)
    assert validate(written, httproute_crd) == []
    assert read_mirror_percent(written) == percent
    filters = written["spec"]["rules"][0]["filters"]
    assert filters[0]["type"] == "RequestHeaderModifier"
    assert sum(f["type"] == "RequestMirror" for f in filters) == (2 if percent else 0)


# ---------------------------------------------------------------------------------------------
# What the role renders (roles/mirror_gateway_api), every environment with mirror_mesh_api=gateway-api

# The percents rendered beside each inventory's own: a fractional one (a fraction of 1000) and
# one that is not a whole tenth of a whole (333/1000).
RENDERED_PERCENTS = (0.5, 33.3)


def renamed(service: dict[str, Any], percent: float) -> dict[str, Any]:
    """The service under another name at `percent`: one render carries every percent."""
    return {**service, "name": f"{service['name']}-at-{str(percent).replace('.', '-')}", "mirror_percent": percent}


@pytest.fixture(scope="module")
def gateway_api_renders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[list, Path]]]:
    """environment -> (the services rendered, the k8s directory): each service as the inventory
    has it and once more at each of RENDERED_PERCENTS."""
    base = tmp_path_factory.mktemp("gateway-api-schema")
    playbook = gateway_api_only_render_playbook(base)
    services = {
        env: [*inventory_services(env), *(renamed(s, p) for p in RENDERED_PERCENTS for s in inventory_services(env))]
        for env in ENVIRONMENTS
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            env: pool.submit(render_gateway_api, playbook, env, base / env, {"mirror_services": services[env]})
            for env in ENVIRONMENTS
        }
        yield {env: (services[env], future.result()) for env, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_rendered_route_of_every_environment_is_valid(
    httproute_crd: dict[str, Any], gateway_api_renders: dict[str, tuple[list, Path]], environment: str
) -> None:
    services, k8s = gateway_api_renders[environment]
    routes = {path.name: yaml.safe_load(path.read_text()) for path in sorted(k8s.glob("httproute-*.yml"))}
    assert len(routes) == len(services)
    for service in services:
        namespace = service.get("namespace", routes[next(iter(routes))]["metadata"]["namespace"])
        written = routes[f"httproute-{namespace}-{service['name']}.yml"]
        assert validate(written, httproute_crd) == [], service["name"]
        assert read_mirror_percent(written) == service["mirror_percent"], service["name"]
    shares = [
        f["requestMirror"].get("fraction")
        for written in routes.values()
        for rule in written["spec"]["rules"]
        for f in rule.get("filters", [])
    ]
    assert {"numerator": 5, "denominator": 1000} in shares
    assert {"numerator": 333, "denominator": 1000} in shares


@pytest.mark.slow
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_rendered_version_service_is_valid(
    gateway_api_renders: dict[str, tuple[list, Path]], environment: str
) -> None:
    services, k8s = gateway_api_renders[environment]
    files = sorted(k8s.glob("service-*.yml"))
    assert len(files) == sum(len(service["subsets"]) for service in services)
    for file in files:
        assert validate_manifest_file(file) == (1, []), file.name
