"""The task's arguments to a run of the engine: operations, approvals, freeze windows, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirrorramp.adapter import execute
from mirrorramp.arguments import ARGUMENT_RULES, ARGUMENT_SPEC, RampRequest, requests_from_arguments
from mirrorramp.errors import ConfigError, DriverError
from mirrorramp.results import combined_result, row_line
from mirrorramp.state import RampState
from tests.unit.test_runner import MemoryTarget, ScriptedPrometheus, ramping


def arguments(**given) -> dict:
    """The arguments as Ansible's validate_argument_spec hands them over: defaults filled in."""
    args = {name: spec.get("default") for name, spec in ARGUMENT_SPEC.items()}
    args.update(
        service="user-service",
        namespace="shop",
        environment="prod",
        steps=[{"percent": p, "hold": "1h"} for p in (1, 5, 10, 20)],
        gates={"thresholds": [{"name": "mirror-5xx-ratio", "metric": "error_ratio", "operator": "<", "value": 0.05}]},
        min_requests=10,
        workloads={"primary": "user-service-v1", "mirror": ["user-service-v2"]},
        prometheus={"url": "http://127.0.0.1:1", "timeout": "1s", "retries": 0, "validate_certs": True},
    )
    args.update(given)
    return args


def request(**given) -> RampRequest:
    return RampRequest.from_arguments(arguments(**given), check_mode=given.pop("check_mode", False), diff=False)


def test_approvals_of_this_service_only_are_taken() -> None:
    policy = request(approval_steps=[3, 4], approve=["user-service:4", "other-service:3"]).config.policy
    assert (policy.approval_steps, policy.approved) == ({3, 4}, {4})
    assert policy.approve_hint.format(step=3) == "-e approve=user-service:3"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"approve": ["user-service"]}, "'user-service' is not <service>:<step>"),
        ({"approve": ["user-service:x"]}, "is not <service>:<step>"),
        ({"approve": ["user-service:9"]}, "names step 9; user-service has steps 1..4"),
        ({"approval_steps": [0, 5]}, r"approval_steps: \[0, 5\] not among the steps 1..4"),
        ({"freeze": [{"days": ["someday"]}]}, "'someday' is not a weekday"),
    ],
)
def test_bad_operational_arguments_are_refused(given: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        request(**given)


def test_emergency_stop_needs_no_prometheus_and_is_verified() -> None:
    target = MemoryTarget(ramping(1, 1_000_000.0), percent=5)
    down = ScriptedPrometheus(down=True)
    result = execute(request(operation="stop", reason="pager", by="alice"), driver=target, prometheus=down)
    assert result["changed"] and (result["state"], result["percent"]) == ("stopped", 0)
    assert (target.state.status, target.percent, target.state.stop["by"]) == ("stopped", 0, "alice")
    assert down.queries == []
    assert "emergency stop by alice at step 2 (5%): pager; mirror removed" in result["msg"]
    # A second stop changes nothing; a mirror put back by hand is removed again.
    assert not execute(request(operation="stop"), driver=target, prometheus=down)["changed"]
    target.percent = 5
    again = execute(request(operation="stop"), driver=target, prometheus=down)
    assert again["changed"] and target.percent == 0


def test_emergency_stop_in_check_mode_writes_nothing() -> None:
    target = MemoryTarget(ramping(1, 1_000_000.0), percent=5)
    result = execute(request(operation="stop", check_mode=True), driver=target, prometheus=ScriptedPrometheus())
    assert result["changed"] and target.writes == 0 and target.percent == 5


def test_status_reads_only() -> None:
    state = ramping(1, 1_000_000.0)
    target = MemoryTarget(state, percent=5)
    prometheus = ScriptedPrometheus()
    result = execute(request(operation="status"), driver=target, prometheus=prometheus)
    assert not result["changed"] and target.writes == 0 and prometheus.queries == []
    row = result["status"]
    assert row["state"] == "ramping" and row["step"] == "2/4" and row["percent"] == 5
    assert row["since"] == "1970-01-12T13:46:40Z" and row["next_advance"] == "1970-01-12T14:46:40Z"


def test_each_pass_goes_into_the_report_but_check_mode_records_nothing(tmp_path: Path) -> None:
    target = MemoryTarget(RampState.initial())
    result = execute(request(report_dir=str(tmp_path)), driver=target, prometheus=ScriptedPrometheus())
    html = Path(result["report"])
    assert html == tmp_path / "prod" / "user-service.html" and html.with_suffix(".png").exists()
    (line,) = html.with_suffix(".jsonl").read_text().splitlines()
    assert json.loads(line)["action"] == "start"
    execute(request(report_dir=str(tmp_path), check_mode=True), driver=target, prometheus=ScriptedPrometheus())
    assert len(html.with_suffix(".jsonl").read_text().splitlines()) == 1


def test_the_module_documentation_matches_the_argument_spec() -> None:
    import yaml

    from tests.support.plugin_files import plugin_module

    documented = yaml.safe_load(plugin_module("plugins/modules/mirror_ramp.py").DOCUMENTATION)["options"]
    assert sorted(documented) == sorted(ARGUMENT_SPEC)
    for name, option in ARGUMENT_SPEC.items():
        doc = documented[name]
        assert (doc.get("type"), doc.get("default"), doc.get("choices")) == (
            option.get("type"),
            option.get("default"),
            option.get("choices"),
        ), name


def test_min_requests_inside_gates_is_refused_not_silently_overridden() -> None:
    gates = {"min_requests": 5, "thresholds": []}
    with pytest.raises(ConfigError, match=r"gates\.min_requests: set min_requests as an argument of the task"):
        request(gates=gates)


def test_restart_left_on_does_not_recheck_a_ramp_in_progress() -> None:
    # restart only acts on rolled_back/stopped: a ramping ramp with Prometheus down is judged as usual.
    blind = ramping(1, 1_000_000.0).evolve(inconclusive_streak=3)
    target = MemoryTarget(blind, percent=5)
    given = {"restart": True, "inconclusive_budget": 3, "inconclusive_action": "rollback"}
    result = execute(request(**given), driver=target, prometheus=ScriptedPrometheus(down=True))
    assert result["action"] == "rollback", result["msg"]
    assert (target.state.status, target.percent) == ("rolled_back", 0)


def test_emergency_stop_rereads_after_a_lost_race_and_says_so() -> None:
    target = MemoryTarget(ramping(1, 1_000_000.0), percent=5)
    # Another run advances the ramp just before the stop writes: the stop re-reads and still stops.
    target.conflicts_to_inject = [(ramping(2, 1_000_100.0), 10.0)]
    result = execute(request(operation="stop", by="bob"), driver=target, prometheus=ScriptedPrometheus(down=True))
    assert (target.state.status, target.percent) == ("stopped", 0)
    assert result["conflicts"] == 1
    assert any("re-read and stopped again (attempt 1)" in w for w in result["warnings"])


def test_a_run_that_changes_nothing_records_its_pass_without_redrawing(tmp_path: Path) -> None:
    target = MemoryTarget(RampState.initial())
    html = Path(execute(request(report_dir=str(tmp_path)), driver=target, prometheus=ScriptedPrometheus())["report"])
    drawn = html.stat().st_mtime_ns
    held = execute(request(report_dir=str(tmp_path)), driver=target, prometheus=ScriptedPrometheus())
    assert not held["changed"]
    assert len(html.with_suffix(".jsonl").read_text().splitlines()) == 2
    assert html.stat().st_mtime_ns == drawn


def services_arguments(*entries: dict, **given) -> dict:
    args = arguments(services=list(entries), **given)
    for key in ("service", "workloads"):
        args[key] = None
    return args


def entry(name: str, **given) -> dict:
    return {"name": name, "workloads": {"primary": f"{name}-v1", "mirror": [f"{name}-v2"]}, **given}


def test_services_give_one_request_each_with_the_task_settings() -> None:
    args = services_arguments(entry("user-service"), entry("order-service", namespace="orders", virtual_service="vs"))
    first, second = requests_from_arguments(args, check_mode=True, diff=False)
    assert (first.config.service, first.config.namespace, first.driver_options["virtual_service"]) == (
        "user-service",
        "shop",
        None,
    )
    assert (second.config.service, second.config.namespace, second.driver_options["virtual_service"]) == (
        "order-service",
        "orders",
        "vs",
    )
    assert second.config.query_context["mirror_workloads"] == ["order-service-v2"]
    assert first.config.plan == second.config.plan and first.config.dry_run and second.config.dry_run


@pytest.mark.parametrize(
    ("entries", "given", "message"),
    [
        ((), {}, "services is empty"),
        ((entry("user-service"), entry("user-service")), {}, "shop/user-service is listed twice"),
        ((entry("user-service"),), {"namespace": None}, r"services\[0\] \('user-service'\) has no namespace"),
        ((entry("user-service"), entry("Bad_Name")), {}, "service='Bad_Name' is not a DNS-1123 label"),
    ],
)
def test_bad_services_are_refused_before_anything_runs(entries, given, message) -> None:
    with pytest.raises(ConfigError, match=message):
        requests_from_arguments(services_arguments(*entries, **given), check_mode=False, diff=False)


def test_with_services_an_approval_naming_none_of_them_is_refused_unless_stopping() -> None:
    typo = services_arguments(
        entry("user-service"), entry("order-service"), approval_steps=[2], approve=["order-service:2", "user-servce:2"]
    )
    with pytest.raises(ConfigError, match=r"approve: 'user-servce:2' names no service of this run; its services: "):
        requests_from_arguments(typo, check_mode=False, diff=False)
    # A stray approval never stands in the way of an emergency stop.
    for operation in ("stop", "status"):
        for approve in (["user-servce:2"], ["order-service"], ["order-service:9"]):
            given = {**typo, "operation": operation, "approve": approve}
            requests = requests_from_arguments(given, check_mode=False, diff=False)
            assert [(r.operation, r.config.policy.approved) for r in requests] == [(operation, frozenset())] * 2
    given = {**typo, "approve": ["order-service:2"]}
    first, second = requests_from_arguments(given, check_mode=False, diff=False)
    assert (first.config.policy.approved, second.config.policy.approved) == (frozenset(), {2})


def test_service_and_services_together_or_neither_are_refused_by_the_spec() -> None:
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    validator = ArgumentSpecValidator(ARGUMENT_SPEC, **ARGUMENT_RULES)
    both = {k: v for k, v in arguments(services=[entry("a")]).items() if v is not None}
    assert "mutually exclusive: service|services" in " ".join(validator.validate(both).error_messages)
    services_and_workloads = {
        k: v
        for k, v in arguments(services=[entry("a")], virtual_service="vs").items()
        if v is not None and k != "service"
    }
    refused = " ".join(validator.validate(services_and_workloads).error_messages)
    assert "mutually exclusive: workloads|services, virtual_service|services" in refused
    neither = {k: v for k, v in arguments().items() if v is not None and k != "service"}
    assert "one of the following is required: service, services" in " ".join(validator.validate(neither).error_messages)


def test_combined_result_has_a_row_per_service_and_fails_for_the_failed_one() -> None:
    requests = requests_from_arguments(
        services_arguments(entry("user-service"), entry("order-service")), check_mode=False, diff=True
    )
    target = MemoryTarget()
    ok = execute(requests[0], driver=target, prometheus=ScriptedPrometheus())
    result = combined_result(requests, [ok, DriverError("VirtualService shop/order-service: HTTP 503")])
    assert result["changed"] and result["failed"]
    assert [row["service"] for row in result["results"]] == ["user-service", "order-service"]
    assert result["results"][1] == {
        "service": "order-service",
        "namespace": "shop",
        "environment": "prod",
        "changed": False,
        "failed": True,
        "msg": "order-service: VirtualService shop/order-service: HTTP 503",
    }
    assert result["msg"] == "2 service(s): 1 changed, 0 unchanged, 1 failed: " + result["results"][1]["msg"]
    assert result["diff"] == [ok["diff"]] and "diff" not in result["results"][0]
    assert row_line(result["results"][0]).startswith("changed: [prod] user-service: ")
    assert row_line(result["results"][1]).startswith("failed: [prod] order-service: ")
