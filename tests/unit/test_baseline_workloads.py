"""The baseline shadow's workload, from mirror_services to the gates' query context.

The filters (mirror_service_workloads, mirror_ramp_targets) add `baseline` for a service with a
baseline_subset; the ramp's argument spec takes it and hands it to the gates as
`baseline_workload`, never among the mirror workloads (which the gates count as the candidate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from mirrorramp.arguments import ARGUMENT_RULES, ARGUMENT_SPEC, requests_from_arguments
from mirrorramp.errors import ConfigError
from mirrorramp.promql import QueryContext
from tests.support.plugin_files import load_filter
from tests.unit.test_adapter import arguments


def _filter(name: str) -> Callable[..., Any]:
    return load_filter("mirror_filters", name)


def _service(**keys: Any) -> dict[str, Any]:
    service = {
        "name": "user-service",
        "subsets": [
            {"name": "stable", "labels": {"version": "v1"}, "workload": "user-service-v1"},
            {"name": "candidate", "labels": {"version": "v2"}, "workload": "user-service-v2"},
            {"name": "baseline", "labels": {"version": "v1-baseline"}, "workload": "user-service-baseline"},
        ],
        "primary_subset": "stable",
        "mirrors": [{"subset": "candidate"}],
    }
    service.update(keys)
    return service


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        pytest.param({}, {"primary": "user-service-v1", "mirror": ["user-service-v2"]}, id="no-baseline-as-before"),
        pytest.param(
            {"baseline_subset": "baseline"},
            {"primary": "user-service-v1", "mirror": ["user-service-v2"], "baseline": "user-service-baseline"},
            id="baseline-apart-from-the-mirrors",
        ),
    ],
)
def test_service_workloads(keys: dict, expected: dict) -> None:
    assert _filter("mirror_service_workloads")(_service(**keys)) == expected


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        pytest.param({"baseline_subset": "shadow"}, "lacks 'shadow'", id="unknown-subset"),
        pytest.param(
            {"baseline_subset": "candidate"}, "workload 'user-service-v2' of the primary or a mirror", id="a-mirror"
        ),
        pytest.param(
            {"baseline_subset": "stable"}, "workload 'user-service-v1' of the primary or a mirror", id="the-primary"
        ),
    ],
)
def test_a_baseline_that_is_not_a_workload_of_its_own_is_refused(keys: dict, says: str) -> None:
    with pytest.raises(AnsibleFilterError, match="mirror_service_workloads: service 'user-service'") as caught:
        _filter("mirror_service_workloads")(_service(**keys))
    assert says in str(caught.value)


def test_ramp_targets_carry_the_baseline_and_the_spec_takes_them() -> None:
    targets = _filter("mirror_ramp_targets")([_service(baseline_subset="baseline"), _service(name="other")], "shop")
    given = {
        k: v for k, v in arguments(services=targets).items() if v is not None and k not in ("service", "workloads")
    }

    result = ArgumentSpecValidator(ARGUMENT_SPEC, **ARGUMENT_RULES).validate(given)

    assert result.error_messages == []
    assert result.validated_parameters["services"][0]["workloads"]["baseline"] == "user-service-baseline"
    first, second = requests_from_arguments(result.validated_parameters, check_mode=False, diff=False)
    assert first.config.query_context == {
        "service": "user-service",
        "namespace": "shop",
        "environment": "prod",
        "primary_workload": "user-service-v1",
        "mirror_workloads": ["user-service-v2"],
        "baseline_workload": "user-service-baseline",
    }
    # The gates read it; ${mirror_workload}, which the other gates' queries select, leaves it out.
    context = QueryContext.of(first.config.query_context)
    assert context.baseline_workload == "user-service-baseline"
    assert "baseline" not in context.values()["mirror_workload"]
    assert context.values()["mirror_workload"] == "user-service-v2"
    # Without a baseline the context is what it was: the judge falls back to the primary.
    assert "baseline_workload" not in second.config.query_context
    assert QueryContext.of(second.config.query_context).baseline_workload is None


@pytest.mark.parametrize(
    ("baseline", "says"),
    [
        pytest.param(
            "user-service-v2", "workloads.baseline='user-service-v2' is the primary or a mirror", id="a-mirror"
        ),
        pytest.param(
            "user-service-v1", "workloads.baseline='user-service-v1' is the primary or a mirror", id="the-primary"
        ),
        pytest.param("User_Baseline", "workloads.baseline='User_Baseline' is not a DNS-1123 label", id="not-a-label"),
    ],
)
def test_the_ramp_refuses_a_baseline_counted_as_the_candidate_or_misnamed(baseline: str, says: str) -> None:
    workloads = {"primary": "user-service-v1", "mirror": ["user-service-v2"], "baseline": baseline}
    with pytest.raises(ConfigError) as caught:
        requests_from_arguments(arguments(workloads=workloads), check_mode=False, diff=False)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("driver", "mesh_api", "own", "expected"),
    [
        pytest.param("istio", "istio", None, "istio", id="istio-env"),
        pytest.param("istio", "istio", "gateway-api", "gateway-api", id="a-gateway-api-service-in-an-istio-env"),
        pytest.param("gateway-api", "gateway-api", None, "gateway-api", id="gateway-api-env"),
        pytest.param("gateway-api", "gateway-api", "istio", "istio", id="an-istio-service-in-a-gateway-api-env"),
        pytest.param("envoy", "gateway-api", None, None, id="envoy-ramps-files-whatever-rendered-them"),
    ],
)
def test_ramp_targets_give_each_service_the_driver_of_its_mesh_api(driver, mesh_api, own, expected) -> None:
    service = _service() if own is None else _service(mesh_api=own)
    (target,) = _filter("mirror_ramp_targets")([service], "shop", mesh_api, driver)
    assert target.get("driver") == expected
    # The spec takes what the filter gives.
    given = {
        k: v for k, v in arguments(services=[target]).items() if v is not None and k not in ("service", "workloads")
    }
    assert ArgumentSpecValidator(ARGUMENT_SPEC, **ARGUMENT_RULES).validate(given).error_messages == []


def test_ramp_targets_refuse_an_unknown_mesh_api() -> None:
    with pytest.raises(AnsibleFilterError, match="mesh API 'linkerd', expected one of istio, gateway-api"):
        _filter("mirror_ramp_targets")([_service(mesh_api="linkerd")], "shop", "istio", "istio")
