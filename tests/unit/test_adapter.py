"""The task's arguments to a run of the engine: operations, approvals, freeze windows, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirrorramp.adapter import ARGUMENT_SPEC, RampRequest, execute
from mirrorramp.errors import ConfigError
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
    import importlib.util

    import yaml

    path = Path(__file__).resolve().parents[2] / "plugins" / "modules" / "mirror_ramp.py"
    spec = importlib.util.spec_from_file_location("mirror_ramp_doc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    documented = yaml.safe_load(module.DOCUMENTATION)["options"]
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
