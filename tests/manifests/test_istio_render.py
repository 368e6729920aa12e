"""The VirtualServices and DestinationRules rendered by role mirror_istio.

Every render runs playbooks/render.yml without the other roles' tasks (preflight, mirror_proxy,
mirror_monitoring are tested on their own and take most of the run time): what stays is this role
between the start of `mirror_rendered_files` and the prune, so a file the role forgets to record
is deleted. Each environment is rendered once per module, the independent renders side by side.
Besides dev and prod, one render of the local inventory with a custom `mirror_services`
(CUSTOM_SERVICES) covers the method and match combinations that no inventory has.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirrorramp.virtualservice import with_mirror_percent
from tests.support.ansible_run import REPO_ROOT, PlaybookRun, recap_counts, run_playbook
from tests.support.validate_build import validate_manifest_file

pytestmark = pytest.mark.slow

RENDER = REPO_ROOT / "playbooks" / "render.yml"
ROLE = "mirror_istio"
API_VERSION = "networking.istio.io/v1"
MIRROR_FIELDS = ("mirror", "mirrorPercentage", "mirrors")
TARGETS_ANNOTATION = "mirror-ramp.io/mirror-targets"
SAFE_METHODS = {"method": {"regex": "GET|HEAD"}}
GRPC_MATCH = [{"headers": {"content-type": {"prefix": "application/grpc"}}}]
GOLDEN_DEV = Path(__file__).parent / "golden" / "istio-dev"


def _subsets(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "labels": {"version": name}, "workload": f"demo-{name}"} for name in names]


def _service(name: str, **keys: Any) -> dict[str, Any]:
    service = {
        "name": name,
        "port": 8080,
        "subsets": _subsets("v1", "v2", "v3"),
        "primary_subset": "v1",
        "mirrors": [{"subset": "v2"}],
        "mirror_percent": 5,
        "mirror_all_methods": False,
    }
    service.update(keys)
    return service


# Rendered with the local inventory (namespace sandbox, fault injection off).
CUSTOM_SERVICES = [
    _service("safe-methods", mirrors=[{"subset": "v2", "host": "shadow.other.svc.cluster.local"}]),
    _service("all-methods", mirror_all_methods=True, grpc={"port": 9090}),
    _service("all-methods-matched", mirror_all_methods=True, mirror_match={"uri": {"prefix": "/api"}}),
    _service(
        "several-matches",
        mirror_percent=2.5,
        mirror_match=[{"headers": {"x-beta": {"exact": "1"}}}, {"queryParams": {"shadow": {"exact": "1"}}}],
    ),
    _service("percent-zero", mirror_percent=0, mirrors=[{"subset": "v2"}, {"subset": "v3"}]),
    _service("percent-zero-all-methods", mirror_percent=0, mirror_all_methods=True, grpc={"port": 9090}),
    # The baseline shadow: one more mirror target, after the mirrors.
    _service("baseline", subsets=_subsets("v1", "v2", "v3", "base"), baseline_subset="base"),
    _service(
        "baseline-two-mirrors",
        subsets=_subsets("v1", "v2", "v3", "base"),
        mirrors=[{"subset": "v2"}, {"subset": "v3", "host": "shadow.other.svc.cluster.local"}],
        mirror_percent=2.5,
        baseline_subset="base",
    ),
    _service("baseline-percent-zero", subsets=_subsets("v1", "v2", "base"), mirror_percent=0, baseline_subset="base"),
    # A subset's own traffic policy, beside the service's.
    _service(
        "subset-policy",
        subsets=[
            *_subsets("v1"),
            {
                **_subsets("v2")[0],
                "connection_pool": {"tcp": {"connect_timeout": "2s"}, "http": {"http2_max_requests": 50}},
                "outlier_detection": {
                    "consecutive_5xx_errors": 0,
                    "consecutive_gateway_errors": 3,
                    "interval": "1s",
                    "base_ejection_time": "5s",
                    "max_ejection_percent": 100,
                },
            },
            *_subsets("v3"),
        ],
        connection_pool={"tcp": {"max_connections": 100}},
    ),
]


@dataclass(frozen=True)
class Render:
    playbook: Path
    build_dir: Path
    run: PlaybookRun

    @property
    def k8s(self) -> Path:
        return self.build_dir / "k8s"

    def text(self, kind: str, namespace: str, name: str) -> str:
        return (self.k8s / f"{kind.lower()}-{namespace}-{name}.yml").read_text()

    def doc(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return yaml.safe_load(self.text(kind, namespace, name))

    def istio_files(self) -> dict[str, bytes]:
        paths = [*self.k8s.glob("virtualservice-*.yml"), *self.k8s.glob("destinationrule-*.yml")]
        return {path.name: path.read_bytes() for path in sorted(paths)}


def _istio_only_render_playbook(directory: Path) -> Path:
    """playbooks/render.yml without the tasks that import a role other than mirror_istio."""
    plays = yaml.safe_load(RENDER.read_text())
    for play in plays:
        play["tasks"] = [
            task for task in play["tasks"] if task.get("ansible.builtin.import_role", {"name": ROLE})["name"] == ROLE
        ]
    path = directory / "render-istio-only.yml"
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return path


def _render(
    playbook: Path, inventory: str, build_dir: Path, extra: dict | None = None, *, check: bool = False
) -> Render:
    run = run_playbook(
        str(playbook),
        f"inventories/{inventory}",
        {"mirror_build_dir": str(build_dir), **(extra or {})},
        check=check,
    )
    assert run.returncode == 0, run.output[-4000:]
    return Render(playbook, build_dir, run)


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Render]]:
    base = tmp_path_factory.mktemp("istio")
    playbook = _istio_only_render_playbook(base)
    jobs = {
        "dev": ("dev", None, False),
        "prod": ("prod", None, False),
        "custom": ("local", {"mirror_services": CUSTOM_SERVICES}, False),
        "check": ("prod", None, True),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            key: pool.submit(_render, playbook, inventory, base / key, extra, check=check)
            for key, (inventory, extra, check) in jobs.items()
        }
        yield {key: future.result() for key, future in futures.items()}


@pytest.fixture(scope="module")
def dev(renders: dict[str, Render]) -> Render:
    return renders["dev"]


@pytest.fixture(scope="module")
def prod(renders: dict[str, Render]) -> Render:
    return renders["prod"]


@pytest.fixture(scope="module")
def custom(renders: dict[str, Render]) -> Render:
    return renders["custom"]


def _routes(vs: dict[str, Any]) -> list[dict[str, Any]]:
    return vs["spec"]["http"]


def _route(vs: dict[str, Any], name: str) -> dict[str, Any]:
    (route,) = [route for route in _routes(vs) if route.get("name") == name]
    return route


def _keys_anywhere(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | set().union(*(_keys_anywhere(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_keys_anywhere(value) for value in node))
    return set()


def _destination(host: str, subset: str, port: int) -> dict[str, Any]:
    return {"host": host, "subset": subset, "port": {"number": port}}


def _group_vars(env: str, name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "inventories" / env / "group_vars" / "all" / f"{name}.yml").read_text())


# --- every rendered resource -----------------------------------------------------------------


RESOURCES = [
    pytest.param("dev", "shop-dev", "user-service", id="dev-user-service"),
    pytest.param("dev", "shop-dev", "order-service", id="dev-order-service"),
    pytest.param("prod", "shop", "user-service", id="prod-user-service"),
    *(pytest.param("custom", "sandbox", svc["name"], id=f"custom-{svc['name']}") for svc in CUSTOM_SERVICES),
]


@pytest.mark.parametrize(("render", "namespace", "name"), RESOURCES)
@pytest.mark.parametrize("kind", ["VirtualService", "DestinationRule"])
def test_resource_is_valid_labelled_and_named(
    renders: dict[str, Render], render: str, namespace: str, name: str, kind: str
) -> None:
    env = {"custom": "local"}.get(render, render)
    result = renders[render]
    path = result.k8s / f"{kind.lower()}-{namespace}-{name}.yml"
    doc = result.doc(kind, namespace, name)

    assert (doc["apiVersion"], doc["kind"]) == (API_VERSION, kind)
    assert (doc["metadata"]["name"], doc["metadata"]["namespace"]) == (name, namespace)
    assert doc["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "mirror-ramp",
        "app.kubernetes.io/part-of": "mirror-ramp",
        "mirror-ramp.io/environment": env,
    }
    assert path.read_text().startswith("---\n")
    # Parts shared between routes must not come out as YAML anchors and aliases.
    assert "&id" not in path.read_text() and "*id" not in path.read_text()
    assert validate_manifest_file(path) == (1, [])


@pytest.mark.parametrize(("render", "namespace", "name"), RESOURCES)
def test_mirror_route_shape(renders: dict[str, Render], render: str, namespace: str, name: str) -> None:
    """One route named `mirror`; at most one catch-all, last; never mirror and mirrors together."""
    routes = _routes(renders[render].doc("VirtualService", namespace, name))
    catch_alls = [route for route in routes if "match" not in route]

    assert [route["name"] for route in routes].count("mirror") == 1
    assert len(catch_alls) == 1
    assert routes[-1] is catch_alls[0]
    for route in routes:
        assert not ("mirror" in route and "mirrors" in route), route
        assert ("mirror" in route) == ("mirrorPercentage" in route), route


# --- dev: fractional percent, header match, several targets, timeout/retries/fault, gRPC ----


def test_dev_fractional_percent_is_kept(dev: Render) -> None:
    route = _route(dev.doc("VirtualService", "shop-dev", "user-service"), "mirror")

    assert route["mirrorPercentage"] == {"value": 0.5}
    assert route["mirror"] == _destination("user-service", "candidate", 8080)


def test_dev_header_matched_mirror_then_catch_all(dev: Render) -> None:
    routes = _routes(dev.doc("VirtualService", "shop-dev", "user-service"))

    assert [route["name"] for route in routes] == ["mirror", "primary"]
    mirror, primary = routes
    assert mirror["match"] == [{"headers": {"x-user-type": {"exact": "beta-tester"}}, **SAFE_METHODS}]
    assert "match" not in primary
    assert not set(MIRROR_FIELDS) & set(primary)
    for route in routes:
        assert route["route"] == [{"destination": _destination("user-service", "stable", 8080)}]


def test_dev_two_targets_use_mirrors(dev: Render) -> None:
    vs = dev.doc("VirtualService", "shop-dev", "order-service")
    route = _route(vs, "mirror")

    assert all("mirror" not in r and "mirrorPercentage" not in r for r in _routes(vs))
    assert route["mirrors"] == [
        {"destination": _destination("order-service", subset, 8080), "percentage": {"value": 10.0}}
        for subset in ("candidate", "perf")
    ]
    assert route["match"] == [SAFE_METHODS]


@pytest.mark.parametrize(
    ("render", "namespace", "name", "targets"),
    [
        pytest.param(
            "dev",
            "shop-dev",
            "order-service",
            [
                {"host": "order-service", "port": 8080, "subset": "candidate"},
                {"host": "order-service", "port": 8080, "subset": "perf"},
            ],
            id="dev-two-targets",
        ),
        pytest.param(
            "prod",
            "shop",
            "user-service",
            [
                {"host": "user-service", "port": 8080, "subset": "candidate"},
                {"host": "user-service", "port": 8080, "subset": "baseline"},
            ],
            id="prod-candidate-and-baseline",
        ),
        pytest.param(
            "custom",
            "sandbox",
            "baseline-two-mirrors",
            [
                {"host": "baseline-two-mirrors", "port": 8080, "subset": "v2"},
                {"host": "shadow.other.svc.cluster.local", "port": 8080, "subset": "v3"},
                {"host": "baseline-two-mirrors", "port": 8080, "subset": "base"},
            ],
            id="custom-baseline-after-the-mirrors",
        ),
        pytest.param(
            "custom",
            "sandbox",
            "safe-methods",
            [{"host": "shadow.other.svc.cluster.local", "port": 8080, "subset": "v2"}],
            id="custom-other-host",
        ),
    ],
)
def test_targets_annotation_is_compact_sorted_json(
    renders: dict[str, Render], render: str, namespace: str, name: str, targets: list[dict]
) -> None:
    raw = renders[render].doc("VirtualService", namespace, name)["metadata"]["annotations"][TARGETS_ANNOTATION]

    assert json.loads(raw) == targets
    assert raw == json.dumps(targets, sort_keys=True, separators=(",", ":"))


def test_dev_timeout_retries_and_fault_on_every_route(dev: Render) -> None:
    fault = _group_vars("dev", "proxy")["mirror_proxy"]["fault"]
    assert fault["enabled"] is True
    expected_fault = {
        "delay": {
            "percentage": {"value": float(fault["delay"]["percent"])},
            "fixedDelay": fault["delay"]["fixed_delay"],
        },
        "abort": {
            "percentage": {"value": float(fault["abort"]["percent"])},
            "httpStatus": fault["abort"]["http_status"],
        },
    }
    user = _routes(dev.doc("VirtualService", "shop-dev", "user-service"))
    order = _routes(dev.doc("VirtualService", "shop-dev", "order-service"))

    for route in user + order:
        assert route["timeout"] == "5s"
        assert route["fault"] == expected_fault
    for route in user:
        assert route["retries"] == {
            "attempts": 2,
            "perTryTimeout": "2s",
            "retryOn": "connect-failure,refused-stream,unavailable",
        }
    assert all("retries" not in route for route in order)


@pytest.mark.parametrize(
    ("render", "namespace", "name", "host"),
    [
        pytest.param("dev", "shop-dev", "order-service", "order-service", id="dev-order-service"),
        pytest.param("prod", "shop", "user-service", "user-service", id="prod-user-service"),
    ],
)
def test_grpc_route_comes_first_unmirrored(
    renders: dict[str, Render], render: str, namespace: str, name: str, host: str
) -> None:
    first = _routes(renders[render].doc("VirtualService", namespace, name))[0]

    assert first["name"] == "grpc"
    assert first["match"] == GRPC_MATCH
    assert first["route"] == [{"destination": _destination(host, "stable", 50051)}]
    assert not set(MIRROR_FIELDS) & set(first)


# --- prod: percent 0, retries, no fault -------------------------------------------------------


def test_prod_percent_zero_renders_no_mirror_field(prod: Render) -> None:
    vs = prod.doc("VirtualService", "shop", "user-service")

    assert not set(MIRROR_FIELDS) & _keys_anywhere(vs)
    # The route the ramp will mirror on is there, restricted to the safe methods.
    assert _route(vs, "mirror")["match"] == [SAFE_METHODS]


def test_prod_retries_without_fault(prod: Render) -> None:
    for route in _routes(prod.doc("VirtualService", "shop", "user-service")):
        assert "fault" not in route
        assert route["timeout"] == "10s"
        assert route["retries"] == {
            "attempts": 3,
            "perTryTimeout": "2s",
            "retryOn": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        }


# --- custom services: methods and matches -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "names", "mirror_match"),
    [
        pytest.param("safe-methods", ["mirror", "primary"], [SAFE_METHODS], id="get-head-by-default"),
        pytest.param("all-methods", ["grpc", "mirror"], None, id="all-methods-single-catch-all"),
        pytest.param(
            "all-methods-matched",
            ["mirror", "primary"],
            [{"uri": {"prefix": "/api"}}],
            id="all-methods-match-without-method",
        ),
        pytest.param(
            "several-matches",
            ["mirror", "primary"],
            [
                {"headers": {"x-beta": {"exact": "1"}}, **SAFE_METHODS},
                {"queryParams": {"shadow": {"exact": "1"}}, **SAFE_METHODS},
            ],
            id="every-match-entry-and-methods",
        ),
    ],
)
def test_custom_method_and_match(custom: Render, name: str, names: list[str], mirror_match: list | None) -> None:
    vs = custom.doc("VirtualService", "sandbox", name)
    mirror = _route(vs, "mirror")

    assert [route["name"] for route in _routes(vs)] == names
    assert mirror.get("match") == mirror_match
    assert "mirror" in mirror or "mirrors" in mirror
    if mirror_match is None:
        assert "method" not in _keys_anywhere(vs["spec"])


def test_custom_mirror_to_another_host(custom: Render) -> None:
    route = _route(custom.doc("VirtualService", "sandbox", "safe-methods"), "mirror")

    assert route["mirror"] == _destination("shadow.other.svc.cluster.local", "v2", 8080)
    assert route["mirrorPercentage"] == {"value": 5.0}
    assert route["route"] == [{"destination": _destination("safe-methods", "v1", 8080)}]


def test_custom_grpc_never_mirrored_even_with_all_methods(custom: Render) -> None:
    # The ramp owns only the route `mirror`: a gRPC mirror would survive a rollback.
    grpc = _route(custom.doc("VirtualService", "sandbox", "all-methods"), "grpc")

    assert grpc["route"] == [{"destination": _destination("all-methods", "v1", 9090)}]
    assert not {"mirror", "mirrorPercentage", "mirrors"} & set(grpc)


def test_custom_fractional_percent_on_every_match(custom: Render) -> None:
    route = _route(custom.doc("VirtualService", "sandbox", "several-matches"), "mirror")

    assert route["mirrorPercentage"] == {"value": 2.5}


@pytest.mark.parametrize("name", ["percent-zero", "percent-zero-all-methods"])
def test_custom_percent_zero_renders_no_mirror_field(custom: Render, name: str) -> None:
    vs = custom.doc("VirtualService", "sandbox", name)

    assert not set(MIRROR_FIELDS) & _keys_anywhere(vs)
    assert json.loads(vs["metadata"]["annotations"][TARGETS_ANNOTATION])


def test_custom_without_optional_keys(custom: Render) -> None:
    for route in _routes(custom.doc("VirtualService", "sandbox", "safe-methods")):
        assert not {"timeout", "retries", "fault"} & set(route)
    assert "trafficPolicy" not in custom.doc("DestinationRule", "sandbox", "safe-methods")["spec"]


# --- the baseline shadow ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "percent", "subsets"),
    [
        pytest.param("baseline", 5.0, ["v2", "base"], id="one-mirror-and-the-baseline"),
        pytest.param("baseline-two-mirrors", 2.5, ["v2", "v3", "base"], id="two-mirrors-and-the-baseline"),
    ],
)
def test_custom_baseline_is_one_more_mirrors_entry_at_the_same_percent(
    custom: Render, name: str, percent: float, subsets: list[str]
) -> None:
    vs = custom.doc("VirtualService", "sandbox", name)
    route = _route(vs, "mirror")

    assert "mirror" not in route and "mirrorPercentage" not in route
    assert [entry["destination"]["subset"] for entry in route["mirrors"]] == subsets
    assert [entry["percentage"] for entry in route["mirrors"]] == [{"value": percent}] * len(subsets)
    assert route["mirrors"][-1]["destination"] == _destination(name, "base", 8080)
    assert [t["subset"] for t in json.loads(vs["metadata"]["annotations"][TARGETS_ANNOTATION])] == subsets
    # The baseline is a mirror target only: no route sends users to it.
    assert all(r["route"][0]["destination"]["subset"] == "v1" for r in _routes(vs))


def test_custom_baseline_at_percent_zero_is_in_the_annotation_only(custom: Render) -> None:
    vs = custom.doc("VirtualService", "sandbox", "baseline-percent-zero")

    assert not set(MIRROR_FIELDS) & _keys_anywhere(vs)
    assert [t["subset"] for t in json.loads(vs["metadata"]["annotations"][TARGETS_ANNOTATION])] == ["v2", "base"]


@pytest.mark.parametrize("percent", [0.5, 20.0])
def test_prod_ramp_sets_the_candidate_and_the_baseline_together(prod: Render, percent: float) -> None:
    """The ramp mirrors from the annotation: the rendered baseline gets every percent it sets."""
    vs = prod.doc("VirtualService", "shop", "user-service")

    route = _route(with_mirror_percent(vs, percent), "mirror")

    assert route["mirrors"] == [
        {"destination": _destination("user-service", subset, 8080), "percentage": {"value": percent}}
        for subset in ("candidate", "baseline")
    ]
    assert not set(MIRROR_FIELDS) & set(_route(with_mirror_percent(vs, 0), "mirror"))


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_staging_and_prod_have_a_baseline_shadow_of_the_primarys_version(env: str) -> None:
    (service,) = _group_vars(env, "services")["mirror_services"]
    subsets = {subset["name"]: subset for subset in service["subsets"]}
    baseline, primary = subsets[service["baseline_subset"]], subsets[service["primary_subset"]]

    assert service["baseline_subset"] not in {mirror["subset"] for mirror in service["mirrors"]}
    assert baseline["workload"] not in {
        primary["workload"],
        *(subsets[m["subset"]]["workload"] for m in service["mirrors"]),
    }
    # One label set to another value: neither subset selects the other's pods.
    assert any(baseline["labels"].get(key) not in (None, value) for key, value in primary["labels"].items())


def test_dev_without_baseline_renders_byte_for_byte_what_it_did_before(dev: Render) -> None:
    """Golden files rendered before baseline_subset existed: a service without it is unchanged."""
    golden = {path.name.removesuffix(".golden"): path.read_bytes() for path in sorted(GOLDEN_DEV.glob("*.golden"))}

    assert len(golden) == 4
    assert dev.istio_files() == golden


# --- DestinationRule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("render", "namespace", "name", "subsets", "policy"),
    [
        pytest.param(
            "dev",
            "shop-dev",
            "user-service",
            [("stable", "v1"), ("candidate", "v2")],
            {
                "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user-id"}},
                "connectionPool": {
                    "tcp": {"maxConnections": 100, "connectTimeout": "1s"},
                    "http": {"http1MaxPendingRequests": 100, "http2MaxRequests": 100, "maxRequestsPerConnection": 10},
                },
                "outlierDetection": {
                    "consecutive5xxErrors": 3,
                    "interval": "10s",
                    "baseEjectionTime": "30s",
                    "maxEjectionPercent": 50,
                },
            },
            id="dev-user-service-full-policy",
        ),
        pytest.param(
            "dev",
            "shop-dev",
            "order-service",
            [("stable", "v1"), ("candidate", "v2"), ("perf", "v2-perf")],
            None,
            id="dev-order-service-no-policy",
        ),
        pytest.param(
            "prod",
            "shop",
            "user-service",
            [("stable", "v1"), ("candidate", "v2"), ("baseline", "v1-baseline")],
            {
                "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user-id"}},
                "connectionPool": {
                    "tcp": {"maxConnections": 1000, "connectTimeout": "1s"},
                    "http": {
                        "http1MaxPendingRequests": 1000,
                        "http2MaxRequests": 1000,
                        "maxRequestsPerConnection": 100,
                    },
                },
                "outlierDetection": {
                    "consecutive5xxErrors": 5,
                    "interval": "10s",
                    "baseEjectionTime": "30s",
                    "maxEjectionPercent": 50,
                },
            },
            id="prod-user-service-full-policy",
        ),
        pytest.param(
            "custom",
            "sandbox",
            "baseline",
            [("v1", "v1"), ("v2", "v2"), ("v3", "v3"), ("base", "base")],
            None,
            id="custom-baseline-subset",
        ),
    ],
)
def test_destination_rule(
    renders: dict[str, Render],
    render: str,
    namespace: str,
    name: str,
    subsets: list[tuple[str, str]],
    policy: dict | None,
) -> None:
    spec = renders[render].doc("DestinationRule", namespace, name)["spec"]

    assert spec["host"] == name
    assert spec["subsets"] == [{"name": sub, "labels": {"version": version}} for sub, version in subsets]
    assert spec.get("trafficPolicy") == policy


def test_a_subset_policy_is_that_subsets_traffic_policy(custom: Render) -> None:
    text = custom.text("DestinationRule", "sandbox", "subset-policy")
    spec = yaml.safe_load(text)["spec"]

    assert spec["trafficPolicy"] == {"connectionPool": {"tcp": {"maxConnections": 100}}}
    assert spec["subsets"] == [
        {"name": "v1", "labels": {"version": "v1"}},
        {
            "name": "v2",
            "labels": {"version": "v2"},
            "trafficPolicy": {
                "connectionPool": {"tcp": {"connectTimeout": "2s"}, "http": {"http2MaxRequests": 50}},
                "outlierDetection": {
                    "consecutive5xxErrors": 0,
                    "consecutiveGatewayErrors": 3,
                    "interval": "1s",
                    "baseEjectionTime": "5s",
                    "maxEjectionPercent": 100,
                },
            },
        },
        {"name": "v3", "labels": {"version": "v3"}},
    ]
    # Counts as YAML integers, durations as strings, as for the service's own policy.
    assert "        consecutiveGatewayErrors: 3\n" in text and "        interval: 1s\n" in text


# --- determinism, check mode ------------------------------------------------------------------


def test_second_render_is_identical_and_unchanged(dev: Render) -> None:
    first = dev.istio_files()
    assert len(first) == 4

    again = _render(dev.playbook, "dev", dev.build_dir)

    assert recap_counts(again.run.output)["changed"] == 0
    assert again.istio_files() == first


def test_check_mode_writes_nothing(renders: dict[str, Render]) -> None:
    check = renders["check"]

    assert recap_counts(check.run.output)["changed"] > 0
    assert not check.build_dir.exists() or not any(check.build_dir.rglob("*"))


# --- mirror_render_files against ansible.builtin.template -------------------------------------

# Templates shaped like the roles' (sets, a namespace, an include that reads `item`, to_nice_yaml)
# and the edges of one Jinja call for many entries: a first line that is empty (trim_blocks after
# the loop's tag), no trailing newline, two trailing newlines, a role variable read per file.
REFERENCE_TEMPLATES = {
    "_meta.yml.j2": "name: {{ item.name }}\n",
    "one.yml.j2": (
        "---\n# {{ ansible_managed }}\n{% set ns = namespace(rows=[]) %}\n"
        "{% for n in range(item.count) %}{% set ns.rows = ns.rows + [n] %}{% endfor %}\n"
        "{% include '_meta.yml.j2' +%}\n"
        "rows: {{ ns.rows | to_json }}\n{{ {'shared': shared_var, 'item': item.name} | to_nice_yaml(indent=2) }}"
    ),
    "leading.yml.j2": "\n{% if item.count %}count: {{ item.count }}{% endif %}",
    "trailing.yml.j2": "value: {{ item.name | upper }}\n\n",
}


def _reference_playbook(tmp_path: Path, fail: bool) -> Path:
    """A playbook beside its templates: the batch render into out/, the template module into ref/."""
    templates = tmp_path / "templates"
    templates.mkdir(exist_ok=True)
    for name, text in REFERENCE_TEMPLATES.items():
        (templates / name).write_text(text)
    (templates / "broken.yml.j2").write_text("value: {{ item.name | undefined_filter_xyz }}\n")
    rows = [
        {"template": template, "name": f"svc-{index}", "count": index, "key": f"{template}-{index}"}
        for index in range(3)
        for template in ("one.yml.j2", "leading.yml.j2", "trailing.yml.j2")
    ]
    if fail:
        rows.insert(2, {"template": "broken.yml.j2", "name": "svc-broken", "count": 0, "key": "broken"})
    playbook = tmp_path / "render.yml"
    play = {
        "name": "Render with mirror_render_files and with ansible.builtin.template",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {
            "ansible_python_interpreter": sys.executable,
            "shared_var": "{{ ['a', 'b'] | map('upper') | list }}",
            "rows": rows,
            "base": str(tmp_path),
        },
        "tasks": [
            {
                "name": "Render every row in one task",
                "mirror_render_files": {
                    "files": [{**row, "path": f"{tmp_path}/out/{row['key']}"} for row in rows],
                    "root": f"{tmp_path}/out",
                },
            },
            {
                "name": "Render every row with the template module",
                "ansible.builtin.template": {"src": "{{ item.template }}", "dest": "{{ base }}/ref/{{ item.key }}"},
                "loop": "{{ rows }}",
                "when": "ref | default(true) | bool",
            },
        ],
    }
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    (tmp_path / "ref").mkdir(exist_ok=True)
    return playbook


def test_render_files_matches_the_template_module(tmp_path: Path) -> None:
    playbook = _reference_playbook(tmp_path, fail=False)
    first = run_playbook(str(playbook), inventory="localhost,")
    assert first.returncode == 0, first.output[-3000:]
    ours = {path.name: path.read_bytes() for path in (tmp_path / "out").iterdir()}
    reference = {path.name: path.read_bytes() for path in (tmp_path / "ref").iterdir()}
    assert len(ours) == 9
    assert ours == reference
    assert ours["trailing.yml.j2-1"] == b"value: SVC-1\n\n"

    again = run_playbook(str(playbook), inventory="localhost,", extra_vars={"ref": False}, diff=True)
    assert again.returncode == 0, again.output[-3000:]
    assert recap_counts(again.output)["changed"] == 0

    (tmp_path / "out" / "one.yml.j2-2").write_text("stale\n")
    checked = run_playbook(str(playbook), inventory="localhost,", extra_vars={"ref": False}, check=True, diff=True)
    assert checked.returncode == 0, checked.output[-3000:]
    assert "changed: one.yml.j2-2" in checked.output
    assert "-stale" in checked.output
    assert (tmp_path / "out" / "one.yml.j2-2").read_text() == "stale\n"


def test_render_files_error_names_the_file(tmp_path: Path) -> None:
    playbook = _reference_playbook(tmp_path, fail=True)
    run = run_playbook(str(playbook), inventory="localhost,", extra_vars={"ref": False})
    assert run.returncode != 0
    assert f"broken.yml.j2 -> {tmp_path}/out/broken" in run.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"files": "one.yml"}, "files = 'one.yml': must be a list of entries"),
        ({"files": ["one.yml"]}, "files[0] = 'one.yml': must be a mapping with template and path"),
        ({"files": [], "root": ["out"]}, "root = ['out']: must be a path"),
        ({"files": [], "dest": "out"}, "unknown argument(s) ['dest']: allowed are ['files', 'root']"),
    ],
)
def test_render_files_refuses_bad_arguments_naming_them(tmp_path: Path, arguments: dict, message: str) -> None:
    play = {
        "name": "Render with bad arguments",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "tasks": [{"name": "Render", "mirror_render_files": arguments}],
    }
    playbook = tmp_path / "bad.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    run = run_playbook(str(playbook), inventory="localhost,")
    assert run.returncode != 0
    assert f"mirror_render_files: {message}" in run.output, run.output[-2000:]
