"""The filter mirror_preflight_checks as role mirror_preflight calls it: over the rows of
filter mirror_preflight_rows, each check's message for a failing row held to a message written
out by hand (the words the Jinja checks gave), the messages in the order of the checks, then of
the rows, and a good inventory with no message."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from tests.support.ansible_run import REPO_ROOT
from tests.support.plugin_files import load_filter

mirror_preflight_rows = load_filter("mirror_preflight_rows", "mirror_preflight_rows")
mirror_preflight_checks = load_filter("mirror_preflight_checks", "mirror_preflight_checks")

# The rule's pattern and words, from the one place the role holds them.
ROLE_VARS = yaml.safe_load((REPO_ROOT / "roles" / "mirror_preflight" / "vars" / "main.yml").read_text())
DNS_LABEL = ROLE_VARS["__mirror_preflight_dns_label"]
SAYS = (
    "a DNS-1123 label: at most 63 characters, lowercase letters, digits and '-', starting and ending with a "
    "letter or digit"
)

PRIMARY = {"name": "primary", "labels": {"version": "v1"}, "workload": "reviews-v1"}
CANDIDATE = {"name": "candidate", "labels": {"version": "v2"}, "workload": "reviews-v2"}
BASELINE = {"name": "baseline", "labels": {"version": "v1-baseline"}, "workload": "reviews-baseline"}
GOOD_SERVICE = {
    "name": "reviews",
    "port": 8080,
    "grpc": {"port": 50051},
    "subsets": [PRIMARY, CANDIDATE, BASELINE],
    "primary_subset": "primary",
    "mirrors": [{"subset": "candidate"}],
    "baseline_subset": "baseline",
    "mirror_percent": 0.5,
    "retries": {"attempts": 0, "per_try_timeout": "2s"},
}


def failures(services: list[Any]) -> list[str]:
    rows = mirror_preflight_rows(services, alert_for={"warning": "5m", "critical": "1m"})
    return mirror_preflight_checks(rows, dns_label=DNS_LABEL, dns_label_says=SAYS)


def changed(key: str, value: Any, *, subset: int | None = None) -> list[dict[str, Any]]:
    """The good service with `key` set to `value` (a subset's key with `subset`); value ... drops it."""
    service = copy.deepcopy(GOOD_SERVICE)
    holder = service if subset is None else service["subsets"][subset]
    if value is ...:
        del holder[key]
    else:
        holder[key] = value
    return [service]


def test_the_rule_words_are_the_roles() -> None:
    assert ROLE_VARS["__mirror_preflight_dns_label_says"] == SAYS


def test_a_good_inventory_has_no_failure() -> None:
    second = {**copy.deepcopy(GOOD_SERVICE), "name": "ratings"}
    without_options = {key: GOOD_SERVICE[key] for key in ("name", "port", "subsets", "primary_subset", "mirrors")}
    assert failures([GOOD_SERVICE, second, {**without_options, "name": "details"}]) == []


S0 = "mirror_services[0]"
BASELINE_WORDS = (
    "the subset of the pods that run the primary's version and receive the mirrored share as the candidate's baseline"
)
CASES = [
    ("no-services", [], ["mirror_services = []: must list at least one service"]),
    (
        "service-name-not-a-label",
        changed("name", "Reviews"),
        [f'{S0}.name = "Reviews": must be {SAYS}, and unique among the services'],
    ),
    ("service-name-absent", changed("name", ...), [f"{S0}.name = null: must be {SAYS}, and unique among the services"]),
    (
        "service-name-longer-than-63",
        changed("name", "r" * 64),
        [f'{S0}.name = "{"r" * 64}": must be {SAYS}, and unique among the services'],
    ),
    (
        # to_json writes what is not ASCII as \u escapes.
        "service-name-not-ascii",
        changed("name", "rëviews"),
        [f'{S0}.name = "r\\u00ebviews": must be {SAYS}, and unique among the services'],
    ),
    (
        "service-name-taken",
        [GOOD_SERVICE, GOOD_SERVICE],
        [f'mirror_services[1].name = "reviews": must be {SAYS}, and unique among the services'],
    ),
    (
        "mirror-percent-above-100",
        changed("mirror_percent", 150),
        [f"{S0}.mirror_percent = 150: must be a number from 0 to 100 (fractions such as 0.5 allowed)"],
    ),
    (
        "mirror-percent-a-boolean",
        changed("mirror_percent", True),
        [f"{S0}.mirror_percent = true: must be a number from 0 to 100 (fractions such as 0.5 allowed)"],
    ),
    (
        "mirror-percent-a-string",
        changed("mirror_percent", "ten"),
        [f'{S0}.mirror_percent = "ten": must be a number from 0 to 100 (fractions such as 0.5 allowed)'],
    ),
    (
        "mirror-percent-null",
        changed("mirror_percent", None),
        [f"{S0}.mirror_percent = null: must be a number from 0 to 100 (fractions such as 0.5 allowed)"],
    ),
    ("port-zero", changed("port", 0), [f"{S0}.port = 0: must be a whole number from 1 to 65535"]),
    ("port-a-fraction", changed("port", 80.5), [f"{S0}.port = 80.5: must be a whole number from 1 to 65535"]),
    ("port-absent", changed("port", ...), [f"{S0}.port = null: must be a whole number from 1 to 65535"]),
    (
        "grpc-port-above-65535",
        changed("grpc", {"port": 65536}),
        [f"{S0}.grpc.port = 65536: must be a whole number from 1 to 65535"],
    ),
    (
        "subsets-empty",
        changed("subsets", []),
        [
            f"{S0}.subsets = []: must be a non-empty list of {{name, labels, workload}}",
            f'{S0}.primary_subset = "primary": must be one of the service\'s subsets ()',
            f'{S0}.mirrors[0].subset = "candidate": must be one of the service\'s subsets () other than the primary '
            'subset "primary"',
            f'{S0}.baseline_subset = "baseline": must be one of the service\'s subsets () other than the primary '
            f'subset "primary" and the mirror subsets (candidate): {BASELINE_WORDS}',
        ],
    ),
    (
        "subset-name-not-a-label",
        changed("name", "Candidate", subset=1),
        [
            f'{S0}.subsets[1].name = "Candidate": must be {SAYS}, and unique among the subsets of the service',
            f'{S0}.mirrors[0].subset = "candidate": must be one of the service\'s subsets (primary, Candidate, '
            'baseline) other than the primary subset "primary"',
        ],
    ),
    (
        "subset-name-taken",
        changed("name", "primary", subset=2),
        [
            f'{S0}.subsets[2].name = "primary": must be {SAYS}, and unique among the subsets of the service',
            f'{S0}.baseline_subset = "baseline": must be one of the service\'s subsets (primary, candidate, primary) '
            f'other than the primary subset "primary" and the mirror subsets (candidate): {BASELINE_WORDS}',
        ],
    ),
    (
        "subset-labels-empty",
        changed("labels", {}, subset=1),
        [f"{S0}.subsets[1].labels = {{}}: must be a non-empty mapping of pod labels, such as {{version: v2}}"],
    ),
    (
        "subset-labels-a-list",
        changed("labels", ["version"], subset=1),
        [f'{S0}.subsets[1].labels = ["version"]: must be a non-empty mapping of pod labels, such as {{version: v2}}'],
    ),
    (
        "subset-workload-not-a-label",
        changed("workload", "Reviews_v2", subset=1),
        [
            f'{S0}.subsets[1].workload = "Reviews_v2": must be the name of the subset\'s workload (Deployment), as '
            f"the gates query it in destination_workload, and {SAYS}"
        ],
    ),
    (
        "subset-workload-absent",
        changed("workload", ..., subset=0),
        [
            f"{S0}.subsets[0].workload = null: must be the name of the subset's workload (Deployment), as the gates "
            f"query it in destination_workload, and {SAYS}"
        ],
    ),
    (
        "primary-subset-unknown",
        changed("primary_subset", "main"),
        [f'{S0}.primary_subset = "main": must be one of the service\'s subsets (primary, candidate, baseline)'],
    ),
    (
        # The Jinja check failed as a whole on the subset without a name; the name check reports it.
        "primary-subset-absent-and-a-subset-without-a-name",
        [
            {
                **{key: value for key, value in GOOD_SERVICE.items() if key != "primary_subset"},
                "subsets": [*GOOD_SERVICE["subsets"], {"labels": {"version": "v3"}, "workload": "reviews-v3"}],
            }
        ],
        [
            f"{S0}.subsets[3].name = null: must be {SAYS}, and unique among the subsets of the service",
            f"{S0}.primary_subset = null: must be one of the service's subsets (primary, candidate, baseline)",
        ],
    ),
    (
        # The Jinja check of the baseline failed as a whole on the absent mirrors; the mirrors check reports them.
        "baseline-subset-and-no-mirrors",
        changed("mirrors", ...),
        [f"{S0}.mirrors = null: must be a non-empty list of {{subset}}"],
    ),
    ("mirrors-empty", changed("mirrors", []), [f"{S0}.mirrors = []: must be a non-empty list of {{subset}}"]),
    ("mirrors-absent", changed("mirrors", ...), [f"{S0}.mirrors = null: must be a non-empty list of {{subset}}"]),
    (
        "mirror-subset-is-the-primary",
        changed("mirrors", [{"subset": "candidate"}, {"subset": "primary"}]),
        [
            f'{S0}.mirrors[1].subset = "primary": must be one of the service\'s subsets (primary, candidate, '
            'baseline) other than the primary subset "primary"'
        ],
    ),
    (
        "baseline-subset-is-a-mirror",
        changed("baseline_subset", "candidate"),
        [
            f'{S0}.baseline_subset = "candidate": must be one of the service\'s subsets (primary, candidate, '
            f'baseline) other than the primary subset "primary" and the mirror subsets (candidate): {BASELINE_WORDS}'
        ],
    ),
    (
        "baseline-subset-not-a-string",
        changed("baseline_subset", ["baseline"]),
        [
            f'{S0}.baseline_subset = ["baseline"]: must be one of the service\'s subsets (primary, candidate, '
            f'baseline) other than the primary subset "primary" and the mirror subsets (candidate): {BASELINE_WORDS}'
        ],
    ),
    (
        "baseline-labels-select-the-primarys-pods",
        changed("labels", {"version": "v1", "track": "baseline"}, subset=2),
        [
            f'{S0}.baseline_subset = "baseline": its labels {{"version": "v1", "track": "baseline"}} must set a label '
            'that the primary subset\'s labels {"version": "v1"} set to another value (such as version: '
            "v1-baseline), or one subset selects the other's pods"
        ],
    ),
    (
        "retries-not-a-mapping",
        changed("retries", "3"),
        [f'{S0}.retries = "3": must be a mapping {{attempts, per_try_timeout, retry_on}}'],
    ),
    (
        "retry-attempts-negative",
        changed("retries", {"attempts": -1}),
        [f"{S0}.retries.attempts = -1: must be a whole number of at least 0"],
    ),
    (
        "retry-attempts-a-boolean",
        changed("retries", {"attempts": True}),
        [f"{S0}.retries.attempts = true: must be a whole number of at least 0"],
    ),
    (
        "retry-attempts-absent",
        changed("retries", {"per_try_timeout": "2s"}),
        [f"{S0}.retries.attempts = null: must be a whole number of at least 0"],
    ),
]


@pytest.mark.parametrize(("services", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_each_check_says_what_the_jinja_check_said(services: list[Any], expected: list[str]) -> None:
    assert failures(services) == expected


def test_messages_follow_the_checks_then_the_rows() -> None:
    first = {**copy.deepcopy(GOOD_SERVICE), "name": "A", "port": 0}
    second = {**copy.deepcopy(GOOD_SERVICE), "name": "B", "retries": "3", "mirrors": []}
    second["subsets"][1]["labels"] = {}
    assert failures([first, second]) == [
        f'mirror_services[0].name = "A": must be {SAYS}, and unique among the services',
        f'mirror_services[1].name = "B": must be {SAYS}, and unique among the services',
        "mirror_services[0].port = 0: must be a whole number from 1 to 65535",
        "mirror_services[1].subsets[1].labels = {}: must be a non-empty mapping of pod labels, such as {version: v2}",
        "mirror_services[1].mirrors = []: must be a non-empty list of {subset}",
        'mirror_services[1].retries = "3": must be a mapping {attempts, per_try_timeout, retry_on}',
    ]


@pytest.mark.parametrize(
    ("rows", "dns_label", "says"),
    [
        ([], DNS_LABEL, "rows = []: must be the rows of filter mirror_preflight_rows"),
        ({"services": []}, DNS_LABEL, "must be the rows of filter mirror_preflight_rows"),
        (
            {
                "services": [{"path": "mirror_services[0]", "svc": "reviews"}],
                **{kind: [] for kind in ("subsets", "mirrors", "baselines", "ports")},
            },
            DNS_LABEL,
            "every services row must hold its service as a mapping",
        ),
        ({kind: [] for kind in ("services", "subsets", "mirrors", "baselines", "ports")}, None, "dns_label = None"),
    ],
    ids=["not-a-mapping", "a-kind-missing", "service-not-a-mapping", "no-pattern"],
)
def test_the_filter_refuses_what_is_not_its_rows(rows: Any, dns_label: Any, says: str) -> None:
    with pytest.raises(AnsibleFilterError, match="mirror_preflight_checks") as raised:
        mirror_preflight_checks(rows, dns_label=dns_label, dns_label_says=SAYS)
    assert says in str(raised.value)


# The other check files of the role (tasks/environment.yml, mesh_api.yml, thresholds.yml, proxy.yml
# and ramp.yml), each one filter over the same rows, called as the role calls them.
mirror_preflight_environment_checks = load_filter("mirror_preflight_checks", "mirror_preflight_environment_checks")
mirror_preflight_mesh_api_checks = load_filter("mirror_preflight_checks", "mirror_preflight_mesh_api_checks")
mirror_preflight_threshold_checks = load_filter("mirror_preflight_checks", "mirror_preflight_threshold_checks")
mirror_preflight_proxy_checks = load_filter("mirror_preflight_checks", "mirror_preflight_proxy_checks")
mirror_preflight_ramp_checks = load_filter("mirror_preflight_checks", "mirror_preflight_ramp_checks")
mirror_ramp_step_problems = load_filter("mirror_step_checks", "mirror_ramp_step_problems")

DURATION_SAYS = "a duration such as 500ms, 10s, 5m, 1h or 1h30m (units ns, us, ms, s, m, h)"
ENVOY_SAYS = (
    'a number of seconds with an "s" suffix such as 0.1s, 1s or 60s (the EnvoyFilter takes it unchanged: write '
    "60s, not 1m; 0.5s, not 500ms)"
)
GATEWAY_API_KEYS = {
    # The role's entry is a template of __mirror_preflight_http_route_match_keys.
    "http_route_match_keys": ROLE_VARS["__mirror_preflight_http_route_match_keys"],
    "istio_only_keys": ROLE_VARS["__mirror_preflight_gateway_api_keys"]["istio_only_keys"],
    "istio_only_subset_keys": ROLE_VARS["__mirror_preflight_gateway_api_keys"]["istio_only_subset_keys"],
}
GOOD_INVENTORY: dict[str, Any] = {
    "environment": "dev",
    "namespace": "shop",
    "mesh_api": "istio",
    "services": [GOOD_SERVICE],
    "thresholds": {
        "p99_latency_ms": {"warning": 300, "critical": 500},
        "error_ratio": {"warning": 0.01, "critical": 0.05},
    },
    "alert_window": "5m",
    "no_traffic_for": "10m",
    "alert_for": {"warning": "5m", "critical": "1m"},
    "monitoring": {"kind": "PodMonitor", "interval": "15s"},
    "proxy": {
        "fault": {
            "enabled": True,
            "delay": {"percent": 5, "fixed_delay": "1s"},
            "abort": {"percent": 1, "http_status": 503},
        },
        "rate_limit": {"fill_interval": "0.05s"},
        "adaptive_concurrency": {"concurrency_update_interval": "0.1s", "min_rtt_interval": "0.001s"},
    },
    "gateway_hpa": {
        "enabled": True,
        "namespace": "istio-gateways",
        "min_replicas": 2,
        "max_replicas": 2,
        "cpu_utilization": 100,
    },
    "steps": [{"percent": 0.5, "hold": "5m"}, {"percent": 10, "hold": "10m"}],
    "driver": "envoy",
    "mode": "scheduled",
}


def preflight(**changes: Any) -> dict[str, list[str]]:
    """The messages of each check file for the good inventory with `changes`, the rows built as
    tasks/main.yml builds them (each proxy feature {} where it is not a mapping)."""
    given = {**copy.deepcopy(GOOD_INVENTORY), **changes}
    features = {
        feature: value if isinstance(value := given["proxy"].get(feature, {}), dict) else {}
        for feature in ("rate_limit", "fault", "authorization", "adaptive_concurrency", "cache")
    }
    rows = mirror_preflight_rows(
        given["services"],
        namespace=given["namespace"],
        mesh_api=given["mesh_api"],
        gateway_hpa=given["gateway_hpa"],
        alert_window=given["alert_window"],
        no_traffic_for=given["no_traffic_for"],
        alert_for=given["alert_for"],
        monitoring=given["monitoring"],
        fault=features["fault"],
        thresholds=given["thresholds"],
        ramp_steps=given["steps"],
        proxy_features=features,
        envoy_minimums=ROLE_VARS["__mirror_preflight_envoy_duration_minimums"],
        gateway_api=GATEWAY_API_KEYS,
    )
    return {
        "environment": mirror_preflight_environment_checks(
            rows,
            environment=given["environment"],
            environments=ROLE_VARS["__mirror_preflight_environments"],
            dns_label=DNS_LABEL,
            dns_label_says=SAYS,
        ),
        "mesh_api": mirror_preflight_mesh_api_checks(
            rows,
            mesh_apis=ROLE_VARS["__mirror_preflight_mesh_apis"],
            http_route_match_keys=ROLE_VARS["__mirror_preflight_http_route_match_keys"],
        ),
        "thresholds": mirror_preflight_threshold_checks(
            rows, duration=ROLE_VARS["__mirror_preflight_duration"], duration_says=DURATION_SAYS
        ),
        "proxy": mirror_preflight_proxy_checks(
            rows,
            environment=given["environment"],
            fault=features["fault"],
            envoy_duration=ROLE_VARS["__mirror_preflight_envoy_duration"],
            envoy_duration_says=ENVOY_SAYS,
            monitoring=given["monitoring"],
            monitoring_kinds=ROLE_VARS["__mirror_preflight_monitoring_kinds"],
            gateway_hpa=given["gateway_hpa"],
        ),
        "ramp": mirror_preflight_ramp_checks(
            rows,
            step_problems=mirror_ramp_step_problems(given["steps"], "mirror_ramp_steps"),
            driver=given["driver"],
            driver_resolutions=ROLE_VARS["__mirror_preflight_ramp_driver_resolutions"],
            mode=given["mode"],
            modes=ROLE_VARS["__mirror_preflight_ramp_modes"],
        ),
    }


def with_service(**changes: Any) -> list[dict[str, Any]]:
    """The good service with `changes`."""
    return [{**copy.deepcopy(GOOD_SERVICE), **changes}]


def test_the_duration_words_are_the_roles() -> None:
    assert ROLE_VARS["__mirror_preflight_duration_says"] == DURATION_SAYS
    assert ROLE_VARS["__mirror_preflight_envoy_duration_says"] == ENVOY_SAYS


def test_a_good_inventory_passes_every_check_file() -> None:
    assert preflight() == {file: [] for file in ("environment", "mesh_api", "thresholds", "proxy", "ramp")}


def test_a_good_gateway_api_inventory_passes_every_check_file() -> None:
    gateway_api = with_service(mirror_match=[{"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET"}])
    gateway_api[0]["mirror_all_methods"] = True
    assert preflight(mesh_api="gateway-api", services=gateway_api, driver="gateway-api", proxy={}) == {
        file: [] for file in ("environment", "mesh_api", "thresholds", "proxy", "ramp")
    }


FAULT_ENABLED = {"fault": {"enabled": "yes"}}
FILE_CASES = [
    (
        "environment-unknown",
        "environment",
        {"environment": "qa"},
        ['mirror_environment = "qa": must be one of local, dev, staging, prod'],
    ),
    (
        "namespaces-not-labels",
        "environment",
        {"namespace": "Shop", "services": with_service(namespace="a" * 64)},
        [f'mirror_namespace = "Shop": must be {SAYS}', f'{S0}.namespace = "{"a" * 64}": must be {SAYS}'],
    ),
    (
        "hpa-namespace-null",
        "environment",
        {"gateway_hpa": {**GOOD_INVENTORY["gateway_hpa"], "namespace": None}},
        [f"mirror_gateway_hpa.namespace = null: must be {SAYS}"],
    ),
    (
        "mesh-apis-unknown",
        "mesh_api",
        {"mesh_api": "linkerd", "services": with_service(mesh_api=None)},
        [
            'mirror_mesh_api = "linkerd": must be one of istio, gateway-api',
            f"{S0}.mesh_api = null: must be one of istio, gateway-api",
        ],
    ),
    (
        # The path is the mirror's own index.
        "gateway-api-mirror-host",
        "mesh_api",
        {
            "services": with_service(
                mesh_api="gateway-api", mirrors=[{"subset": "candidate"}, {"subset": "c", "host": "x"}]
            )
        },
        [
            f'{S0}.mirrors[1].host = "x": must be left out for a gateway-api service, which mirrors to its own '
            "versions (the Service <name>-<subset>), not to another host; or render this service with mesh_api: istio"
        ],
    ),
    (
        "gateway-api-istio-matches",
        "mesh_api",
        {
            "mesh_api": "gateway-api",
            "services": with_service(
                mirror_match=[{"uri": {"prefix": "/"}}, {"headers": {"x": "1"}}, {"method": "GET"}]
            ),
        },
        [
            f"{S0}.mirror_match[{index}] = {value}: must be a Gateway API HTTPRouteMatch for a gateway-api service, "
            "with keys among path, headers, queryParams and headers/queryParams as lists of {name, value, type}; "
            "method is set by the ramp (GET and HEAD) unless mirror_all_methods"
            for index, value in enumerate(('{"uri": {"prefix": "/"}}', '{"headers": {"x": "1"}}', '{"method": "GET"}'))
        ],
    ),
    (
        "gateway-api-match-a-mapping-with-every-method",
        "mesh_api",
        {
            "services": with_service(
                mesh_api="gateway-api", mirror_all_methods=True, mirror_match={"queryParams": "a=1", "method": "POST"}
            )
        },
        [
            f'{S0}.mirror_match = {{"queryParams": "a=1", "method": "POST"}}: must be a Gateway API HTTPRouteMatch '
            "for a gateway-api service, with keys among path, headers, queryParams and headers/queryParams as lists "
            "of {name, value, type}"
        ],
    ),
    (
        "thresholds-out-of-range",
        "thresholds",
        {"thresholds": {"p99_latency_ms": {"warning": -1}, "error_ratio": {"warning": True, "critical": 1.5}}},
        [
            "mirror_thresholds.error_ratio.warning = true: must be a number of at least 0 and at most 1 (a ratio)",
            "mirror_thresholds.error_ratio.critical = 1.5: must be a number of at least 0 and at most 1 (a ratio)",
            "mirror_thresholds.p99_latency_ms.warning = -1: must be a number of at least 0",
            "mirror_thresholds.p99_latency_ms.critical = null: must be a number of at least 0",
        ],
    ),
    (
        "threshold-warning-above-critical",
        "thresholds",
        {"thresholds": {"error_ratio": {"warning": 0.5, "critical": 0.25}, "p99_latency_ms": "fast"}},
        [
            "mirror_thresholds.p99_latency_ms.warning = null: must be a number of at least 0",
            "mirror_thresholds.p99_latency_ms.critical = null: must be a number of at least 0",
            'mirror_thresholds.error_ratio = {"warning": 0.5, "critical": 0.25}: warning (0.5) must not be above '
            "critical (0.25)",
        ],
    ),
    (
        "durations-not-go-durations",
        "thresholds",
        {
            "alert_window": "5 minutes",
            "alert_for": {"warning": "5m", "critical": None, "Page": "1d"},
            "services": with_service(timeout=10, retries={"attempts": 1, "per_try_timeout": "2s"}),
        },
        [
            f'mirror_alert_window = "5 minutes": must be {DURATION_SAYS}',
            f"mirror_alert_for.critical = null: must be {DURATION_SAYS}",
            f'mirror_alert_for.Page = "1d": must be {DURATION_SAYS}',
            f"{S0}.timeout = 10: must be {DURATION_SAYS}",
        ],
    ),
    (
        "fault-on-in-prod",
        "proxy",
        {"environment": "prod", "proxy": FAULT_ENABLED},
        [
            'mirror_proxy.fault.enabled = "yes": must be false in prod; fault injection is for test environments '
            "(local, dev, staging)"
        ],
    ),
    (
        "fault-percents-and-status",
        "proxy",
        {"proxy": {"fault": {"delay": {"percent": "5%"}, "abort": {"percent": 101, "http_status": True}}}},
        [
            'mirror_proxy.fault.delay.percent = "5%": must be a number from 0 to 100 (fractions allowed)',
            "mirror_proxy.fault.abort.percent = 101: must be a number from 0 to 100 (fractions allowed)",
            "mirror_proxy.fault.abort.http_status = true: must be an HTTP status from 200 to 599",
        ],
    ),
    (
        "fault-status-null",
        "proxy",
        {"proxy": {"fault": {"abort": {"http_status": None}}}},
        ["mirror_proxy.fault.abort.http_status = null: must be an HTTP status from 200 to 599"],
    ),
    (
        "envoy-durations",
        "proxy",
        {
            "proxy": {
                "rate_limit": {"fill_interval": "0.049s"},
                "adaptive_concurrency": {"concurrency_update_interval": "0s", "min_rtt_interval": "1ms"},
            }
        },
        [
            f'mirror_proxy.rate_limit.fill_interval = "0.049s": must be an Envoy duration of at least 0.05s: {ENVOY_SAYS}',
            'mirror_proxy.adaptive_concurrency.concurrency_update_interval = "0s": must be an Envoy duration of '
            f"above 0s: {ENVOY_SAYS}",
            'mirror_proxy.adaptive_concurrency.min_rtt_interval = "1ms": must be an Envoy duration of at least '
            f"0.001s: {ENVOY_SAYS}",
        ],
    ),
    (
        "monitoring-kind-absent",
        "proxy",
        {"monitoring": {"interval": "15s"}},
        ["mirror_monitoring.kind = null: must be one of PodMonitor, ServiceMonitor"],
    ),
    (
        "hpa-bounds",
        "proxy",
        {
            "gateway_hpa": {
                "namespace": "gw",
                "enabled": True,
                "min_replicas": 3,
                "max_replicas": 2,
                "cpu_utilization": 0,
            }
        },
        [
            "mirror_gateway_hpa.max_replicas = 2: must be a whole number of at least 1 and of at least min_replicas (3)",
            "mirror_gateway_hpa.cpu_utilization = 0: must be a whole percentage from 1 to 100",
        ],
    ),
    (
        # A null renders as nothing inside the message, as it did in Jinja.
        "hpa-bounds-absent",
        "proxy",
        {"gateway_hpa": {"namespace": "gw", "enabled": "true", "min_replicas": 1.5}},
        [
            "mirror_gateway_hpa.min_replicas = 1.5: must be a whole number of at least 1",
            "mirror_gateway_hpa.max_replicas = null: must be a whole number of at least 1 and of at least "
            "min_replicas (1.5)",
            "mirror_gateway_hpa.cpu_utilization = null: must be a whole percentage from 1 to 100",
        ],
    ),
    (
        "hpa-max-without-min",
        "proxy",
        {"gateway_hpa": {"namespace": "gw", "enabled": True, "max_replicas": 0, "cpu_utilization": 50}},
        [
            "mirror_gateway_hpa.min_replicas = null: must be a whole number of at least 1",
            "mirror_gateway_hpa.max_replicas = 0: must be a whole number of at least 1 and of at least min_replicas ()",
        ],
    ),
    ("hpa-off-is-not-checked", "proxy", {"gateway_hpa": {"enabled": False, "min_replicas": 0}}, []),
    (
        "ramp-steps-refused-by-the-engine",
        "ramp",
        {"steps": [{"percent": 1, "hold": "5m"}, {"percent": 0.5, "hold": "soon"}]},
        [
            "mirror_ramp_steps[1].hold = \"soon\": cannot read 'soon'; must be a duration such as 30s, 10m, 12h, 1d, "
            "1.5h, 1h30m, 500ms (units ms, s, m, h, d, w) or a number of seconds (> 0)",
            "mirror_ramp_steps[1].percent = 0.5: must be more than mirror_ramp_steps[0].percent (1): percents must "
            "strictly increase",
        ],
    ),
    (
        "ramp-driver-and-mode-unknown",
        "ramp",
        {"driver": "nginx", "mode": None, "steps": [{"percent": 0.12345, "hold": "5m"}]},
        [
            'mirror_ramp_driver = "nginx": must be one of istio, gateway-api, envoy',
            "mirror_ramp_mode = null: must be one of scheduled, watch",
        ],
    ),
    (
        "percents-finer-than-the-driver",
        "ramp",
        {
            "steps": [{"percent": 0.12345, "hold": "5m"}, {"percent": 10, "hold": "5m"}],
            "services": with_service(mirror_percent=33.33333),
        },
        [
            "mirror_ramp_steps[0].percent = 0.12345: must be a multiple of 0.0001 with mirror_ramp_driver envoy "
            "(the finest percent it can set), such as 0.1234 or 0.1235",
            f"{S0}.mirror_percent = 33.33333: must be a multiple of 0.0001 with mirror_ramp_driver envoy (the "
            "finest percent it can set), such as 33.3333 or 33.3334",
        ],
    ),
    (
        "percents-finer-than-gateway-api",
        "ramp",
        {"driver": "gateway-api", "steps": [{"percent": 0.123456789, "hold": "5m"}]},
        [
            "mirror_ramp_steps[0].percent = 0.123456789: must be a multiple of 1e-07 with mirror_ramp_driver "
            "gateway-api (the finest percent it can set), such as 0.1234567 or 0.1234568",
        ],
    ),
    ("any-percent-for-istio", "ramp", {"driver": "istio", "steps": [{"percent": 0.123456789, "hold": "5m"}]}, []),
]


@pytest.mark.parametrize(
    ("file", "changes", "expected"), [case[1:] for case in FILE_CASES], ids=[case[0] for case in FILE_CASES]
)
def test_each_check_file_says_what_its_jinja_checks_said(
    file: str, changes: dict[str, Any], expected: list[str]
) -> None:
    messages = preflight(**changes)
    assert messages[file] == expected
    assert {other: found for other, found in messages.items() if other != file and found} == {}


def test_the_check_files_follow_the_checks_then_the_rows() -> None:
    messages = preflight(
        environment="prod",
        proxy={"fault": {"enabled": True, "abort": {"http_status": 700}}, "rate_limit": {"fill_interval": "1m"}},
        monitoring={"kind": "Probe", "interval": "15s"},
        gateway_hpa={"namespace": "gw", "enabled": True, "min_replicas": 0, "max_replicas": 1, "cpu_utilization": 50},
        steps=[{"percent": 0.00001, "hold": "5m"}],
        mode="later",
    )
    assert messages["proxy"] == [
        "mirror_proxy.fault.enabled = true: must be false in prod; fault injection is for test environments (local, "
        "dev, staging)",
        "mirror_proxy.fault.abort.http_status = 700: must be an HTTP status from 200 to 599",
        f'mirror_proxy.rate_limit.fill_interval = "1m": must be an Envoy duration of at least 0.05s: {ENVOY_SAYS}',
        'mirror_monitoring.kind = "Probe": must be one of PodMonitor, ServiceMonitor',
        "mirror_gateway_hpa.min_replicas = 0: must be a whole number of at least 1",
    ]
    assert messages["ramp"] == [
        "mirror_ramp_steps[0].percent = 1e-05: must be a multiple of 0.0001 with mirror_ramp_driver envoy (the finest "
        "percent it can set), such as 0.0 or 0.0001",
        'mirror_ramp_mode = "later": must be one of scheduled, watch',
    ]


def test_a_gateway_api_service_names_what_it_does_not_render() -> None:
    service = with_service(mesh_api="gateway-api", retries={"attempts": 1})[0]
    service["subsets"][1] = {**service["subsets"][1], "outlier_detection": {"interval": "10s"}}
    rows = mirror_preflight_rows(
        [service, GOOD_SERVICE],
        alert_for={},
        fault={"enabled": True},
        gateway_api=GATEWAY_API_KEYS,
    )
    assert [(row["path"], row["name"], row["unrendered"]) for row in rows["gateway_apis"]] == [
        (S0, "reviews", ["retries", "subsets[1].outlier_detection", "mirror_proxy.fault"])
    ]


ALL_ROWS = mirror_preflight_rows([GOOD_SERVICE], alert_for={}, gateway_api=GATEWAY_API_KEYS)


@pytest.mark.parametrize(
    ("check", "rows", "arguments", "says"),
    [
        (mirror_preflight_threshold_checks, [], {"duration": "^x$", "duration_says": "x"}, "rows = []: must be"),
        (mirror_preflight_threshold_checks, ALL_ROWS, {"duration": None, "duration_says": "x"}, "duration = None"),
        (
            mirror_preflight_mesh_api_checks,
            {"mesh_apis": []},
            {"mesh_apis": [], "http_route_match_keys": []},
            "(lists mesh_apis, gateway_apis)",
        ),
        (
            mirror_preflight_mesh_api_checks,
            ALL_ROWS,
            {"mesh_apis": "istio", "http_route_match_keys": []},
            "mesh_apis = 'istio': must be a list",
        ),
        (
            mirror_preflight_ramp_checks,
            ALL_ROWS,
            {"step_problems": [], "driver": "istio", "driver_resolutions": [], "mode": "watch", "modes": []},
            "driver_resolutions = []: must be a mapping",
        ),
        (
            mirror_preflight_proxy_checks,
            ALL_ROWS,
            {
                "environment": "dev",
                "fault": None,
                "envoy_duration": "^x$",
                "envoy_duration_says": "x",
                "monitoring": {},
                "monitoring_kinds": [],
                "gateway_hpa": {},
            },
            "fault = None: must be a mapping",
        ),
    ],
    ids=["thresholds-rows", "thresholds-pattern", "mesh-api-rows", "mesh-apis", "ramp-resolutions", "proxy-fault"],
)
def test_each_file_filter_refuses_what_is_not_its_arguments(
    check: Callable[..., Any], rows: Any, arguments: dict[str, Any], says: str
) -> None:
    with pytest.raises(AnsibleFilterError) as raised:
        check(rows, **arguments)
    assert says in str(raised.value)
