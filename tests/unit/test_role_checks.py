"""The filters mirror_proxy_checks and mirror_monitoring_checks as roles mirror_proxy and
mirror_monitoring call them: each check's message for a failing input held to a message written out
by hand (the words the Jinja assert tasks gave), the messages in the order of the checks, then of the
services, a check left out where its feature is off, and a good input with no message."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from tests.support.ansible_run import REPO_ROOT
from tests.support.plugin_files import load_filter

mirror_proxy_checks = load_filter("mirror_proxy_checks")
mirror_monitoring_checks = load_filter("mirror_monitoring_checks")


def _role_vars(role: str) -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "roles" / role / "vars" / "main.yml").read_text())


# The patterns and words from the one place each role holds them.
PROXY_VARS = _role_vars("mirror_proxy")
ENVOY_DURATION = PROXY_VARS["__mirror_proxy_duration_pattern"]
FEATURES = PROXY_VARS["__mirror_proxy_service_features"]
MONITORING_VARS = _role_vars("mirror_monitoring")
PROMETHEUS_DURATION = MONITORING_VARS["__mirror_monitoring_duration"]
PROMETHEUS_SAYS = MONITORING_VARS["__mirror_monitoring_duration_says"]

# ---------------------------------------------------------------------------------------------
# mirror_proxy

PRIMARY = {"name": "primary", "labels": {"version": "v1"}, "workload": "reviews-v1"}
CANDIDATE = {"name": "candidate", "labels": {"version": "v2"}, "workload": "reviews-v2"}
SERVICE = {"name": "reviews", "port": 9080, "primary_subset": "primary", "subsets": [PRIMARY, CANDIDATE]}
GOOD_SETTINGS = {
    "rate_limit": {"enabled": True, "max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "0.05s"},
    "adaptive_concurrency": {
        "enabled": True,
        "sample_percentile": 90,
        "concurrency_update_interval": "0.1s",
        "min_rtt_interval": "0.001s",
        "min_rtt_request_count": 50,
    },
    "cache": {"enabled": True},
    "authorization": {"enabled": True, "principals": ["cluster.local/ns/shop/sa/frontend"]},
}
GOOD_HPA = {
    "enabled": True,
    "namespace": "istio-system",
    "deployment": "istio-ingressgateway",
    "min_replicas": 1,
    "max_replicas": 3,
    "cpu_utilization": 70,
}

NAME_MESSAGE = (
    "mirror_services: every service needs a name (a DNS label, the pods' app label) and a namespace (its own "
    "or mirror_namespace); fix {}."
)
PRIMARY_MESSAGE = (
    "mirror_proxy.filter_workloads is primary, so the EnvoyFilters of {} select its primary subset's pods: "
    "primary_subset ({}) must name one of its subsets, with labels. Fix mirror_services, or set "
    "mirror_proxy.filter_workloads to service to put the filters on every pod of the service, mirror targets "
    "included."
)
OVERLAP_MESSAGE = (
    "mirror_proxy.filter_workloads is primary, but the subsets {} of {} set none of the primary subset's labels "
    "{} to another value, so the EnvoyFilters of the primary would select their pods too: give each subset a "
    "label the primary sets to another value (such as version: v2)."
)
RATE_LIMIT_MESSAGE = (
    "mirror_proxy.rate_limit: max_tokens and tokens_per_fill must be positive integers and fill_interval an "
    'Envoy duration in seconds of at least 0.05s (for example "1s"); got {}.'
)
ADAPTIVE_MESSAGE = (
    "mirror_proxy.adaptive_concurrency: sample_percentile must be in (0, 100], concurrency_update_interval and "
    'min_rtt_interval Envoy durations in seconds ("0.1s", "60s"; min_rtt_interval at least 0.001s) and '
    "min_rtt_request_count a positive integer; got {}."
)
CACHE_MESSAGE = (
    "mirror_proxy.cache is enabled in prod: Envoy marks its cache filter and the in-memory SimpleHttpCache work "
    "in progress, and that storage has no size limit. Set mirror_proxy.cache.enabled to false in inventories/prod."
)
PRINCIPALS_MESSAGE = (
    "mirror_proxy.authorization.principals must list at least one peer identity "
    '("cluster.local/ns/<namespace>/sa/<service account>"); with none the ALLOW policy would deny every caller. '
    "Got {}."
)
HPA_MESSAGE = (
    "mirror_gateway_hpa: needs the namespace and name of the ingress gateway Deployment (istio-proxy is the "
    "sidecar container, not a Deployment), 1 <= min_replicas <= max_replicas and a positive cpu_utilization; "
    "got {}."
)


def proxy_failures(
    services: list[Any] | None = None,
    *,
    settings: dict[str, Any] | None = None,
    environment: str = "dev",
    filter_workloads: str = "primary",
    hpa: dict[str, Any] | None = None,
) -> list[str]:
    """The filter as tasks/preflight.yml calls it, with the enabled features and keys that vars/main.yml
    derives from the settings."""
    settings = copy.deepcopy(GOOD_SETTINGS) if settings is None else settings
    hpa = copy.deepcopy(GOOD_HPA) if hpa is None else hpa
    enabled_keys = [key for key, value in settings.items() if isinstance(value, dict) and value.get("enabled")]
    return mirror_proxy_checks(
        [copy.deepcopy(SERVICE)] if services is None else services,
        namespace="shop",
        environment=environment,
        settings=settings,
        filter_workloads=filter_workloads,
        enabled_features=[feature for feature in FEATURES if feature["key"] in enabled_keys],
        enabled_keys=enabled_keys,
        duration_pattern=ENVOY_DURATION,
        gateway_hpa=hpa,
        gateway_hpa_enabled=bool(hpa.get("enabled")),
    )


def with_setting(feature: str, key: str, value: Any) -> dict[str, Any]:
    settings = copy.deepcopy(GOOD_SETTINGS)
    settings[feature][key] = value
    return settings


def with_hpa(key: str, value: Any) -> dict[str, Any]:
    return {**GOOD_HPA, key: value}


def test_good_proxy_inputs_give_no_message() -> None:
    assert proxy_failures() == []


def test_good_proxy_inputs_at_their_bounds_give_no_message() -> None:
    settings = with_setting("adaptive_concurrency", "sample_percentile", 100)
    settings["adaptive_concurrency"]["concurrency_update_interval"] = "0.001s"
    service = {**SERVICE, "name": "a", "namespace": "", "subsets": [PRIMARY, {**CANDIDATE, "labels": {"version": 2}}]}
    assert proxy_failures([service], settings=settings, hpa=with_hpa("max_replicas", 1)) == []


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        pytest.param(
            [{"port": 80, "namespace": "shop"}],
            [NAME_MESSAGE.format("{'port': 80, 'namespace': 'shop'}")],
            id="name-absent-names-the-whole-service",
        ),
        pytest.param([{**SERVICE, "name": "Reviews"}], [NAME_MESSAGE.format("Reviews")], id="name-not-a-dns-label"),
        pytest.param([{**SERVICE, "name": None}], [NAME_MESSAGE.format("")], id="name-null-written-as-nothing"),
        pytest.param([{**SERVICE, "name": 12}], [NAME_MESSAGE.format("12")], id="name-a-number"),
        pytest.param(
            [{**SERVICE, "namespace": "Shop_1"}], [NAME_MESSAGE.format("reviews")], id="namespace-not-a-dns-label"
        ),
        pytest.param(
            [{**SERVICE, "primary_subset": "gone"}],
            [PRIMARY_MESSAGE.format("reviews", '"gone"')],
            id="primary-subset-unknown",
        ),
        pytest.param(
            [{key: value for key, value in SERVICE.items() if key != "primary_subset"}],
            [PRIMARY_MESSAGE.format("reviews", "null")],
            id="primary-subset-absent",
        ),
        pytest.param(
            [{**SERVICE, "subsets": [{**PRIMARY, "labels": {}}, CANDIDATE]}],
            [PRIMARY_MESSAGE.format("reviews", '"primary"')],
            id="primary-subset-without-labels",
        ),
        pytest.param(
            [{**SERVICE, "subsets": [PRIMARY, {**CANDIDATE, "labels": {"version": "v1", "track": "candidate"}}]}],
            [OVERLAP_MESSAGE.format('["candidate"]', "reviews", '{"version": "v1"}')],
            id="candidate-sets-the-primary-label-to-the-same-value",
        ),
        pytest.param(
            [
                {
                    **SERVICE,
                    "subsets": [
                        {**PRIMARY, "labels": {"version": "v1", "tier": "web"}},
                        {**CANDIDATE, "labels": {"track": "b"}},
                        {"name": "baseline", "labels": {"version": "v1", "tier": "web"}},
                        {"name": "other", "labels": {"tier": "api"}},
                    ],
                }
            ],
            [OVERLAP_MESSAGE.format('["candidate", "baseline"]', "reviews", '{"version": "v1", "tier": "web"}')],
            id="subsets-overlap-in-their-order",
        ),
    ],
)
def test_each_service_check_words_its_failure(services: list[Any], expected: list[str]) -> None:
    assert proxy_failures(services) == expected


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param(
            with_setting("rate_limit", "fill_interval", "1m"),
            RATE_LIMIT_MESSAGE.format(
                '{"enabled": true, "max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "1m"}'
            ),
            id="rate-limit-fill-interval-not-seconds",
        ),
        pytest.param(
            with_setting("rate_limit", "fill_interval", "0.01s"),
            RATE_LIMIT_MESSAGE.format(
                '{"enabled": true, "max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "0.01s"}'
            ),
            id="rate-limit-fill-interval-below-50ms",
        ),
        pytest.param(
            with_setting("rate_limit", "max_tokens", True),
            RATE_LIMIT_MESSAGE.format(
                '{"enabled": true, "max_tokens": true, "tokens_per_fill": 10, "fill_interval": "0.05s"}'
            ),
            id="rate-limit-max-tokens-boolean",
        ),
        pytest.param(
            {**GOOD_SETTINGS, "rate_limit": {"enabled": True, "max_tokens": 10, "fill_interval": "1s"}},
            RATE_LIMIT_MESSAGE.format('{"enabled": true, "max_tokens": 10, "fill_interval": "1s"}'),
            id="rate-limit-tokens-per-fill-absent",
        ),
        pytest.param(
            with_setting("adaptive_concurrency", "sample_percentile", 101),
            ADAPTIVE_MESSAGE.format(
                '{"enabled": true, "sample_percentile": 101, "concurrency_update_interval": "0.1s", '
                '"min_rtt_interval": "0.001s", "min_rtt_request_count": 50}'
            ),
            id="adaptive-percentile-above-100",
        ),
        pytest.param(
            with_setting("adaptive_concurrency", "concurrency_update_interval", "0s"),
            ADAPTIVE_MESSAGE.format(
                '{"enabled": true, "sample_percentile": 90, "concurrency_update_interval": "0s", '
                '"min_rtt_interval": "0.001s", "min_rtt_request_count": 50}'
            ),
            id="adaptive-update-interval-zero",
        ),
        pytest.param(
            with_setting("adaptive_concurrency", "min_rtt_interval", "500ms"),
            ADAPTIVE_MESSAGE.format(
                '{"enabled": true, "sample_percentile": 90, "concurrency_update_interval": "0.1s", '
                '"min_rtt_interval": "500ms", "min_rtt_request_count": 50}'
            ),
            id="adaptive-min-rtt-interval-not-seconds",
        ),
        pytest.param(
            with_setting("adaptive_concurrency", "min_rtt_request_count", 0),
            ADAPTIVE_MESSAGE.format(
                '{"enabled": true, "sample_percentile": 90, "concurrency_update_interval": "0.1s", '
                '"min_rtt_interval": "0.001s", "min_rtt_request_count": 0}'
            ),
            id="adaptive-request-count-zero",
        ),
        pytest.param(
            with_setting("authorization", "principals", []),
            PRINCIPALS_MESSAGE.format("[]"),
            id="principals-empty",
        ),
        pytest.param(
            with_setting("authorization", "principals", ["cluster.local/ns/shop/sa/a", ""]),
            PRINCIPALS_MESSAGE.format('["cluster.local/ns/shop/sa/a", ""]'),
            id="principal-empty-string",
        ),
        pytest.param(
            with_setting("authorization", "principals", "cluster.local/ns/shop/sa/a"),
            PRINCIPALS_MESSAGE.format('"cluster.local/ns/shop/sa/a"'),
            id="principals-a-string",
        ),
        pytest.param(
            {**GOOD_SETTINGS, "authorization": {"enabled": True}},
            PRINCIPALS_MESSAGE.format("[]"),
            id="principals-absent",
        ),
    ],
)
def test_each_feature_check_words_its_failure(settings: dict[str, Any], expected: str) -> None:
    assert proxy_failures(settings=settings) == [expected]


def test_the_cache_is_refused_in_prod_only() -> None:
    assert proxy_failures(environment="prod") == [CACHE_MESSAGE]
    assert proxy_failures(environment="prod", settings={**GOOD_SETTINGS, "cache": {"enabled": False}}) == []


@pytest.mark.parametrize(
    ("hpa", "shown"),
    [
        pytest.param(
            with_hpa("deployment", "istio-proxy"),
            '{"enabled": true, "namespace": "istio-system", "deployment": "istio-proxy", "min_replicas": 1, '
            '"max_replicas": 3, "cpu_utilization": 70}',
            id="deployment-is-the-sidecar",
        ),
        pytest.param(
            with_hpa("namespace", "Istio"),
            '{"enabled": true, "namespace": "Istio", "deployment": "istio-ingressgateway", "min_replicas": 1, '
            '"max_replicas": 3, "cpu_utilization": 70}',
            id="namespace-not-a-dns-label",
        ),
        pytest.param(
            with_hpa("min_replicas", 0),
            '{"enabled": true, "namespace": "istio-system", "deployment": "istio-ingressgateway", "min_replicas": 0, '
            '"max_replicas": 3, "cpu_utilization": 70}',
            id="min-replicas-zero",
        ),
        pytest.param(
            with_hpa("max_replicas", 0),
            '{"enabled": true, "namespace": "istio-system", "deployment": "istio-ingressgateway", "min_replicas": 1, '
            '"max_replicas": 0, "cpu_utilization": 70}',
            id="max-below-min",
        ),
        pytest.param(
            with_hpa("cpu_utilization", 0),
            '{"enabled": true, "namespace": "istio-system", "deployment": "istio-ingressgateway", "min_replicas": 1, '
            '"max_replicas": 3, "cpu_utilization": 0}',
            id="cpu-utilization-zero",
        ),
        pytest.param(
            {"enabled": True},
            '{"enabled": true}',
            id="everything-absent",
        ),
    ],
)
def test_the_gateway_autoscaler_check_words_its_failure(hpa: dict[str, Any], shown: str) -> None:
    assert proxy_failures(hpa=hpa) == [HPA_MESSAGE.format(shown)]


def test_checks_of_features_that_are_off_do_not_run() -> None:
    settings = {
        "rate_limit": {"enabled": False, "max_tokens": 0},
        "adaptive_concurrency": {"enabled": False},
        "cache": {"enabled": False},
        "authorization": {"enabled": False, "principals": []},
    }
    bad_hpa = {"enabled": False, "deployment": "istio-proxy"}
    assert proxy_failures(settings=settings, environment="prod", hpa=bad_hpa) == []


def test_the_primary_subset_checks_run_for_envoy_filters_on_the_primary_only() -> None:
    overlapping = [{**SERVICE, "subsets": [PRIMARY, {**CANDIDATE, "labels": {"version": "v1"}}]}]
    assert proxy_failures(overlapping, filter_workloads="service") == []
    only_authorization = {"authorization": GOOD_SETTINGS["authorization"]}
    assert proxy_failures(overlapping, settings=only_authorization) == []


def test_every_failure_in_the_order_of_the_checks_then_of_the_services() -> None:
    services = [
        {**SERVICE, "name": "a", "primary_subset": "gone"},
        {"port": 1},
        {**SERVICE, "name": "b", "primary_subset": "gone"},
        {**SERVICE, "name": "c", "subsets": [PRIMARY, {**CANDIDATE, "labels": {}}]},
    ]
    settings = with_setting("rate_limit", "fill_interval", "1m")
    settings["authorization"]["principals"] = []
    hpa = with_hpa("min_replicas", 0)
    # The service without a name is not asked for a primary subset; the ones whose primary subset is
    # gone are not compared with the others.
    assert proxy_failures(services, settings=settings, environment="prod", hpa=hpa) == [
        NAME_MESSAGE.format("{'port': 1}"),
        PRIMARY_MESSAGE.format("a", '"gone"'),
        PRIMARY_MESSAGE.format("b", '"gone"'),
        OVERLAP_MESSAGE.format('["candidate"]', "c", '{"version": "v1"}'),
        RATE_LIMIT_MESSAGE.format('{"enabled": true, "max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "1m"}'),
        CACHE_MESSAGE,
        PRINCIPALS_MESSAGE.format("[]"),
        HPA_MESSAGE.format(
            '{"enabled": true, "namespace": "istio-system", "deployment": "istio-ingressgateway", "min_replicas": 0, '
            '"max_replicas": 3, "cpu_utilization": 70}'
        ),
    ]


def test_services_that_are_not_a_list_are_refused_naming_the_filter() -> None:
    with pytest.raises(AnsibleFilterError, match="mirror_proxy_checks: services = 'reviews': must be a list"):
        proxy_failures("reviews")  # type: ignore[arg-type]


def test_settings_that_are_not_a_mapping_are_refused_naming_the_filter() -> None:
    with pytest.raises(AnsibleFilterError, match="mirror_proxy_checks: settings = None: must be a mapping"):
        mirror_proxy_checks([SERVICE], "shop", "dev", None, "primary", [], [], ENVOY_DURATION)


# ---------------------------------------------------------------------------------------------
# mirror_monitoring

GOOD_SCRAPE = {"kind": "PodMonitor", "interval": "30s", "labels": {"release": "prometheus"}}
GOOD_TELEMETRY = {"enabled": True}
GOOD_THRESHOLDS = {
    "error_ratio": {"warning": 0.01, "critical": 0.05},
    "p99_latency_ms": {"warning": 500, "critical": 1000},
}
GOOD_ALERT_FOR = {"warning": "5m", "critical": "1m"}


def monitoring_failures(**overrides: Any) -> list[str]:
    """The filter as tasks/preflight.yml calls it, with good inputs unless overridden."""
    arguments: dict[str, Any] = {
        "scrape": GOOD_SCRAPE,
        "telemetry": GOOD_TELEMETRY,
        "thresholds": GOOD_THRESHOLDS,
        "alert_window": "5m",
        "alert_for": GOOD_ALERT_FOR,
        "no_traffic_for": "1h30m",
        **overrides,
    }
    return mirror_monitoring_checks(
        arguments.pop("scrape"),
        duration_pattern=PROMETHEUS_DURATION,
        duration_says=PROMETHEUS_SAYS,
        **arguments,
    )


def kind_message(scrape: str, telemetry: str) -> str:
    return (
        f"mirror_monitoring = {scrape}, mirror_telemetry = {telemetry}: mirror_monitoring.kind must be PodMonitor or "
        "ServiceMonitor, mirror_monitoring.labels a mapping (or absent), and mirror_telemetry.enabled true or false"
    )


DURATION_SAYS = "a Prometheus duration such as 30s, 5m, 1h or 1h30m (whole numbers; units ms, s, m, h, d, w, y)"


def test_good_monitoring_inputs_give_no_message() -> None:
    assert monitoring_failures() == []
    assert monitoring_failures(scrape={"kind": "ServiceMonitor", "interval": "1d"}, telemetry={"enabled": False}) == []


def test_the_duration_words_are_the_roles() -> None:
    assert PROMETHEUS_SAYS == DURATION_SAYS


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param(
            {"scrape": {**GOOD_SCRAPE, "kind": "Monitor"}},
            kind_message(
                '{"kind": "Monitor", "interval": "30s", "labels": {"release": "prometheus"}}', '{"enabled": true}'
            ),
            id="kind-unknown",
        ),
        pytest.param(
            {"scrape": {"kind": "PodMonitor", "interval": "30s", "labels": None}},
            kind_message('{"kind": "PodMonitor", "interval": "30s", "labels": null}', '{"enabled": true}'),
            id="labels-null",
        ),
        pytest.param(
            {"telemetry": {"enabled": "yes"}},
            kind_message(
                '{"kind": "PodMonitor", "interval": "30s", "labels": {"release": "prometheus"}}', '{"enabled": "yes"}'
            ),
            id="telemetry-enabled-not-a-boolean",
        ),
        pytest.param(
            {"scrape": {"kind": "PodMonitor", "interval": "1.5m"}},
            f'mirror_monitoring.interval = "1.5m": must be {DURATION_SAYS}',
            id="interval-fraction",
        ),
        pytest.param(
            {"scrape": {"kind": "PodMonitor"}},
            f"mirror_monitoring.interval = null: must be {DURATION_SAYS}",
            id="interval-absent",
        ),
        pytest.param({"alert_window": 300}, f"mirror_alert_window = 300: must be {DURATION_SAYS}", id="window-number"),
        pytest.param(
            {"alert_for": {"warning": "5m"}},
            f"mirror_alert_for.critical = null: must be {DURATION_SAYS}",
            id="alert-for-critical-absent",
        ),
        pytest.param(
            {"alert_for": {"warning": "500us", "critical": "1m"}},
            f'mirror_alert_for.warning = "500us": must be {DURATION_SAYS}',
            id="alert-for-warning-microseconds",
        ),
        pytest.param(
            {"no_traffic_for": "10 m"},
            f'mirror_no_traffic_for = "10 m": must be {DURATION_SAYS}',
            id="no-traffic-for-with-a-space",
        ),
        pytest.param(
            {"thresholds": {**GOOD_THRESHOLDS, "error_ratio": {"warning": "0.01", "critical": 0.05}}},
            'mirror_thresholds.error_ratio.warning = "0.01": must be a number',
            id="threshold-a-string",
        ),
        pytest.param(
            {"thresholds": {**GOOD_THRESHOLDS, "p99_latency_ms": {"warning": True, "critical": 1000}}},
            "mirror_thresholds.p99_latency_ms.warning = true: must be a number",
            id="threshold-a-boolean",
        ),
        pytest.param(
            {"thresholds": {"error_ratio": GOOD_THRESHOLDS["error_ratio"], "p99_latency_ms": {"warning": 500}}},
            "mirror_thresholds.p99_latency_ms.critical = null: must be a number",
            id="threshold-absent",
        ),
    ],
)
def test_each_monitoring_check_words_its_failure(overrides: dict[str, Any], expected: str) -> None:
    assert monitoring_failures(**overrides) == [expected]


def test_every_monitoring_failure_in_the_order_of_the_checks() -> None:
    failures = monitoring_failures(
        scrape={"kind": "Monitor", "interval": "30"},
        alert_window="5 m",
        alert_for={"warning": "5m", "critical": "1.5m"},
        no_traffic_for=None,
        thresholds={},
    )
    assert failures == [
        kind_message('{"kind": "Monitor", "interval": "30"}', '{"enabled": true}'),
        f'mirror_monitoring.interval = "30": must be {DURATION_SAYS}',
        f'mirror_alert_window = "5 m": must be {DURATION_SAYS}',
        f'mirror_alert_for.critical = "1.5m": must be {DURATION_SAYS}',
        f"mirror_no_traffic_for = null: must be {DURATION_SAYS}",
        "mirror_thresholds.error_ratio.warning = null: must be a number",
        "mirror_thresholds.error_ratio.critical = null: must be a number",
        "mirror_thresholds.p99_latency_ms.warning = null: must be a number",
        "mirror_thresholds.p99_latency_ms.critical = null: must be a number",
    ]
