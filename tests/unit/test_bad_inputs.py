"""Malformed mirror_ramp arguments: refused with a message naming the argument and the bad value,
before the target is read or written and before Prometheus is asked anything.

Each case goes the way the action plugin goes: the task's arguments through Ansible's own
argument validation (tests/support/task_arguments.py: the bad value passes Ansible's type layer,
so the engine is the one that must catch it), `RampRequest.from_arguments`, then `execute` with
a recording target (at step 2, mirroring 5%) and a scripted Prometheus.

What is checked where:
- from_arguments: names, steps, durations, gate structure and placeholders, URLs' schemes,
  budgets, approvals, freeze windows (the table below);
- building the driver: the envoy options (test_envoy_options_...);
- the first pass, before any query: gate templates rendered against the workloads
  (test_templates_that_cannot_render_...);
- Prometheus itself, at the start's query check: PromQL syntax (test_promql_syntax_is_left_...;
  the real parser's refusals are in tests/integration/test_faults.py).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mirrorramp.adapter import execute
from mirrorramp.arguments import RampRequest
from mirrorramp.errors import ConfigError
from mirrorramp.state import RampState
from tests.support.recording_target import RecordingTarget
from tests.support.task_arguments import validated
from tests.unit.test_runner import ScriptedPrometheus

# The task as a playbook writes it; Ansible fills in the rest from ARGUMENT_SPEC.
TASK: dict[str, Any] = {
    "service": "user-service",
    "namespace": "shop",
    "environment": "prod",
    "steps": [{"percent": p, "hold": "1h"} for p in (1, 5, 10, 20)],
    "gates": {"thresholds": [{"name": "mirror-5xx-ratio", "metric": "error_ratio", "operator": "<", "value": 0.05}]},
    "min_requests": 10,
    "workloads": {"primary": "user-service-v1", "mirror": ["user-service-v2"]},
    "prometheus": {"url": "http://127.0.0.1:9090", "timeout": "1s", "retries": 0},
}
ERROR_GATE = TASK["gates"]["thresholds"][0]


def prometheus(**given: Any) -> dict[str, Any]:
    return {"prometheus": {**TASK["prometheus"], **given}}


def steps(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"steps": list(entries)}


def threshold(**given: Any) -> dict[str, Any]:
    return {"gates": {"thresholds": [{**ERROR_GATE, **given}]}}


def query_gate(query: str) -> dict[str, Any]:
    return {"gates": {"thresholds": [{"name": "custom", "query": query, "operator": "<", "value": 1}]}}


def workloads(primary: str = "user-service-v1", *mirror: str) -> dict[str, Any]:
    return {"workloads": {"primary": primary, "mirror": list(mirror)}}


def ramping_at_5_percent() -> RampState:
    """Step 2 of 4 (5%), started long ago: a run that got this far would advance."""
    return replace(RampState.initial(), status="ramping", step_index=1, percent=5.0, step_started_at=1_000.0)


def request_for(given: dict[str, Any]) -> RampRequest:
    return RampRequest.from_arguments(validated({**TASK, **given}), check_mode=False, diff=False)


def run_task(given: dict[str, Any], target: RecordingTarget, scripted: ScriptedPrometheus) -> dict:
    """What the action plugin does with these arguments."""
    return execute(request_for(given), driver=target, prometheus=scripted)


def assert_untouched(target: RecordingTarget, scripted: ScriptedPrometheus) -> None:
    """Not read, not written, mirror still at 5%, Prometheus not asked."""
    assert target.log == []
    assert (target.writes, target.percent, target.state) == (0, 5.0, ramping_at_5_percent())
    assert scripted.queries == []


ENVOY_OPTIONS = {
    "route_path": "/nonexistent/routes/route.yaml",
    "route_config_name": "demo-service",
    "admin_url": "http://127.0.0.1:9",
    "state_dir": "/nonexistent/state",
}

BAD_INPUTS = [
    # -- steps ---------------------------------------------------------------------------
    pytest.param(steps(), ["steps: got []", "non-empty list"], id="steps-empty"),
    pytest.param(
        steps({"percent": 0, "hold": "1h"}), ["steps[0].percent: got 0", "0 < percent <= 100"], id="percent-0"
    ),
    pytest.param(steps({"percent": 150, "hold": "1h"}), ["steps[0].percent: got 150", "<= 100"], id="percent-over-100"),
    pytest.param(
        steps({"percent": 10, "hold": "1h"}, {"percent": 5, "hold": "1h"}),
        ["steps[1].percent: got 5", "more than steps[0].percent (10)", "strictly increase"],
        id="percent-decreasing",
    ),
    pytest.param(
        steps({"percent": 5, "hold": "1h"}, {"percent": "5%", "hold": "1h"}),
        ["steps[1].percent: got '5%'", "more than steps[0].percent (5)"],
        id="percent-duplicate",
    ),
    pytest.param(
        steps({"percent": 1, "hold": "1 fortnight"}),
        ["steps[0].hold: got '1 fortnight'", "units ms, s"],
        id="hold-fortnight",
    ),
    pytest.param(steps({"percent": 1, "hold": "-1h"}), ["steps[0].hold: got '-1h'", "negative"], id="hold-negative"),
    pytest.param(steps({"percent": 1, "hold": "0s"}), ["steps[0].hold: got '0s'", "zero"], id="hold-zero"),
    pytest.param(steps({"percent": 1, "hodl": "1h"}), ["steps[0]: unknown key(s) hodl"], id="step-key-misspelt"),
    # -- gates ---------------------------------------------------------------------------
    pytest.param({"gates": {"treshold": []}}, ["gates: unknown key 'treshold'"], id="gates-unknown-key"),
    pytest.param(
        threshold(operator="=~"),
        ["gates.thresholds[0].operator: got '=~'", "expected one of <, <=, >, >="],
        id="operator-regex-match",
    ),
    pytest.param(
        threshold(value="five percent"),
        ["gates.thresholds[0].value: got 'five percent'", "finite number"],
        id="threshold-not-a-number",
    ),
    pytest.param(
        {"gates": {"comparisons": [{"name": "delta", "metric": "error_ratio", "max_delta": 0.01, "max_ratio": 1.5}]}},
        ["gates.comparisons[0].max_ratio: not used with metric error_ratio; give max_delta"],
        id="comparison-both-limits",
    ),
    pytest.param(
        query_gate('sum(rate(istio_requests_total{destination_workload="${nope}"}[${window}]))'),
        ["gate 'custom': unknown placeholder ${nope}", "${mirror_workload}"],
        id="placeholder-unknown",
    ),
    pytest.param(
        query_gate('up{destination_service_name="$service"}'),
        ["gate 'custom': write ${service} (with braces), not $service"],
        id="placeholder-without-braces",
    ),
    pytest.param(
        query_gate('up{destination_service_name="${service"}'),
        ["gate 'custom': unknown placeholder ${service\"}"],
        id="placeholder-unclosed",
    ),
    pytest.param(
        {"gates": {"alerts": [{"name": "any", "matchers": {"destination-workload": "x"}}]}},
        ["gates.alerts[0].matchers: label 'destination-workload' is not a valid Prometheus label name"],
        id="alert-label-name",
    ),
    pytest.param({"min_requests": -1}, ["min_requests: got -1", "integer >= 0"], id="min-requests-negative"),
    # -- durations -----------------------------------------------------------------------
    pytest.param({"window": "1y"}, ["window: got '1y'", "cannot read"], id="window-years"),
    pytest.param({"poll_interval": "-5m"}, ["poll_interval: got '-5m'", "negative"], id="poll-interval-negative"),
    pytest.param({"deadline": "5mm"}, ["deadline: got '5mm'", "unknown unit in '5mm'"], id="deadline-unit-twice"),
    pytest.param(prometheus(timeout="0s"), ["prometheus.timeout: got '0s'", "zero"], id="prometheus-timeout-zero"),
    pytest.param(prometheus(retries=11), ["prometheus.retries=11 is outside 0..10"], id="prometheus-retries"),
    # -- URLs ----------------------------------------------------------------------------
    pytest.param(
        prometheus(url="ftp://prometheus:9090"),
        ["prometheus.url='ftp://prometheus:9090' must be an http:// or https:// URL with a host"],
        id="prometheus-url-ftp",
    ),
    pytest.param(
        prometheus(url="127.0.0.1:9090"),
        ["prometheus.url='127.0.0.1:9090' must be an http:// or https:// URL with a host"],
        id="prometheus-url-no-scheme",
    ),
    pytest.param(
        {"notify": ["javascript:alert(document.cookie)"]},
        ["notify[0] must be an http:// or https:// URL with a host"],
        id="notify-javascript",
    ),
    # -- names with shell or PromQL metacharacters ----------------------------------------
    pytest.param({"service": "a;rm -rf /"}, ["service='a;rm -rf /' is not a DNS-1123 label"], id="service-shell"),
    pytest.param({"service": 'svc"}'}, ["service='svc\"}' is not a DNS-1123 label"], id="service-promql-quote"),
    pytest.param({"service": "svc$(id)"}, ["service='svc$(id)' is not a DNS-1123 label"], id="service-subshell"),
    pytest.param(
        {"namespace": "Shop"}, ["namespace='Shop' is not a DNS-1123 label", "lower-case"], id="namespace-upper"
    ),
    pytest.param(
        {"environment": "prod env"}, ["environment='prod env' is not a DNS-1123 label"], id="environment-space"
    ),
    pytest.param(
        workloads('user"v1', "user-service-v2"),
        ["workloads.primary='user\"v1' is not a DNS-1123 label"],
        id="primary-quote",
    ),
    pytest.param(
        workloads("user-service-v1", 'v2",namespace=~".*'),
        ["workloads.mirror[0]='v2\",namespace=~\".*' is not a DNS-1123 label"],
        id="mirror-matcher-injection",
    ),
    pytest.param(workloads("user-service-v1"), ["workloads.mirror is empty"], id="mirror-none"),
    # -- budgets, requests, approvals, freeze windows -------------------------------------
    pytest.param({"inconclusive_budget": -1}, ["inconclusive_budget: got -1", "integer >= 0"], id="budget-negative"),
    pytest.param({"pause": True, "resume": True}, ["pause and resume are both true"], id="pause-and-resume"),
    pytest.param(
        {"approve": ["user-service:0"]},
        ["approve: 'user-service:0' names step 0; user-service has steps 1..4"],
        id="approve-step-0",
    ),
    pytest.param({"approve": [":3"]}, ["approve: ':3' is not <service>:<step>"], id="approve-no-service"),
    pytest.param(
        {"approve": ["user-service: 2"]}, ["approve: 'user-service: 2' is not <service>:<step>"], id="approve-space"
    ),
    pytest.param({"approval_steps": [5]}, ["approval_steps: [5] not among the steps 1..4"], id="approval-step-5"),
    pytest.param(
        {"freeze": [{"name": "night", "hours": "22-30"}]},
        ["freeze[0].hours: '22-30' must have START 0..23, END 0..24"],
        id="freeze-hour-30",
    ),
    pytest.param(
        {"freeze": [{"name": "weekend", "days": "sat,sun"}]},
        ["freeze[0].days: got 'sat,sun', expected a list"],
        id="freeze-days-string",
    ),
    pytest.param(
        {"freeze": [{"name": "cet", "days": ["fri"], "utc_offset": "+1"}]},
        ["freeze[0].utc_offset: got '+1'", '"+HH:MM"'],
        id="freeze-offset",
    ),
    pytest.param(
        {"freeze": [{"name": "xmas", "from": "12-24"}]},
        ["freeze[0]: unknown key(s) from"],
        id="freeze-unknown-key",
    ),
    pytest.param({"driver": "envoy"}, ["driver=envoy needs the envoy options"], id="envoy-without-options"),
    pytest.param(
        {"driver": "envoy", "envoy": ENVOY_OPTIONS, "steps": [{"percent": 0.00005, "hold": "1h"}]},
        ["steps[0].percent:", "5e-05", "at most four decimals"],
        id="envoy-step-finer-than-a-millionth",
    ),
]


@pytest.mark.parametrize(("given", "fragments"), BAD_INPUTS)
def test_a_malformed_argument_is_refused_before_anything_is_touched(given: dict, fragments: list[str]) -> None:
    target, scripted = RecordingTarget(ramping_at_5_percent(), percent=5.0), ScriptedPrometheus()
    with pytest.raises(ConfigError) as refused:
        run_task(given, target, scripted)
    message = str(refused.value)
    for fragment in fragments:
        assert fragment in message, message
    assert_untouched(target, scripted)


def test_the_table_is_broad() -> None:
    assert len(BAD_INPUTS) >= 25


def test_a_bad_webhook_url_is_refused_without_echoing_it() -> None:
    """Webhook URLs are secrets (Slack's carry a token): the message names the entry, not the URL."""
    with pytest.raises(ConfigError) as refused:
        request_for({"notify": ["http://127.0.0.1:8080/hooks/T0K3N", "hooks.slack.com/services/T0K3N"]})
    assert str(refused.value) == "notify[1] must be an http:// or https:// URL with a host"


# -- found by this table, then fixed: each must stay a clear ConfigError ---------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:notaport", id="port-not-a-number"),
        pytest.param("http://127.0.0.1:99999", id="port-out-of-range"),
        pytest.param("http://", id="no-host"),
    ],
)
def test_a_prometheus_url_that_does_not_parse_is_a_config_error(url: str) -> None:
    target = RecordingTarget(ramping_at_5_percent(), percent=5.0)
    with pytest.raises(ConfigError, match=re.escape(f"prometheus.url={url!r}")):
        # No client given: execute builds it from the arguments, as the action plugin does.
        execute(request_for(prometheus(url=url)), driver=target)
    assert len(target.accesses("read")) == 0 and target.writes == 0


@pytest.mark.parametrize(
    "given",
    [
        pytest.param({"service": "user-service\n"}, id="service"),
        pytest.param({"namespace": "shop\n"}, id="namespace"),
        pytest.param(workloads("user-service-v1", "user-service-v2", "v3\n"), id="mirror-workload"),
    ],
)
def test_a_name_with_a_trailing_newline_is_refused(given: dict) -> None:
    target, scripted = RecordingTarget(ramping_at_5_percent(), percent=5.0), ScriptedPrometheus()
    with pytest.raises(ConfigError, match=r"is not a DNS-1123 label"):
        run_task(given, target, scripted)
    assert_untouched(target, scripted)


@pytest.mark.parametrize("name", ["user-service;rm -rf /", 'vs"}', "../other"], ids=["shell", "quote", "path"])
def test_a_virtual_service_name_with_metacharacters_is_refused(name: str) -> None:
    target, scripted = RecordingTarget(ramping_at_5_percent(), percent=5.0), ScriptedPrometheus()
    with pytest.raises(ConfigError, match=re.escape(f"virtual_service={name!r}")):
        run_task({"virtual_service": name}, target, scripted)
    assert_untouched(target, scripted)


# -- what is checked later, still before anything changes --------------------------------------


@pytest.mark.parametrize(
    ("admin_url", "message"),
    [
        pytest.param(
            "ftp://127.0.0.1:9901",
            "envoy admin_url is 'ftp://127.0.0.1:9901', expected an http(s):// URL",
            id="admin-url-scheme",
        ),
        pytest.param(
            "http://admin:secret@127.0.0.1:9901",
            "envoy admin_url carries credentials; Envoy's admin takes none",
            id="admin-url-credentials",
        ),
    ],
)
def test_envoy_options_are_checked_when_the_driver_is_built_before_any_io(
    tmp_path: Path, admin_url: str, message: str
) -> None:
    options = {
        "route_path": str(tmp_path / "routes" / "route.yaml"),
        "route_config_name": "demo-service",
        "admin_url": admin_url,
        "state_dir": str(tmp_path / "state"),
    }
    request = request_for({"driver": "envoy", "envoy": options})
    scripted = ScriptedPrometheus()
    with pytest.raises(ConfigError) as refused:
        execute(request, prometheus=scripted)
    assert message in str(refused.value)
    assert "secret" not in str(refused.value)
    assert list(tmp_path.iterdir()) == [] and scripted.queries == []


THREE_WORKLOADS = workloads("user-service-v1", "user-service-v2", "user-service-v3")


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        pytest.param(
            query_gate('sum(rate(istio_requests_total{destination_workload="${mirror_workload_exact}"}[${window}]))'),
            "gate 'custom': ${mirror_workload_exact} needs exactly one mirror workload, this service has 2",
            id="exact-placeholder-in-a-query",
        ),
        pytest.param(
            {
                "gates": {
                    "alerts": [{"name": "mirror-alerts", "matchers": {"destination_workload": "${mirror_workload}"}}]
                }
            },
            "gate 'mirror-alerts': ${mirror_workload} needs exactly one mirror workload, this service has 2",
            id="mirror-placeholder-in-an-alert-matcher",
        ),
    ],
)
@pytest.mark.parametrize("started", [False, True], ids=["pending", "ramping"])
def test_templates_that_cannot_render_fail_the_run_before_any_query_or_write(
    gates: dict, message: str, started: bool
) -> None:
    """from_arguments does not render the templates against the workloads; the first pass does,
    before its first query, so the run fails with nothing asked and nothing written."""
    state, percent = (ramping_at_5_percent(), 5.0) if started else (RampState.initial(), 0.0)
    target, scripted = RecordingTarget(state, percent=percent), ScriptedPrometheus()
    with pytest.raises(ConfigError) as refused:
        run_task({**THREE_WORKLOADS, **gates}, target, scripted)
    assert message in str(refused.value)
    assert (len(target.accesses("read")), target.writes, target.percent, target.state) == (1, 0, percent, state)
    assert scripted.queries == []


UNBALANCED = 'sum(rate(istio_requests_total{response_code=~"5.."[${window}]))'
JINJA_LEFT_OVER = "sum(rate(istio_requests_total{{ mirror_selector }}[${window}]))"
UNCLOSED_CALL = "sum(increase(istio_requests_total[${window}])"


@pytest.mark.parametrize(
    ("given", "query"),
    [
        pytest.param(query_gate(UNBALANCED), UNBALANCED, id="unbalanced-brace"),
        pytest.param(query_gate(JINJA_LEFT_OVER), JINJA_LEFT_OVER, id="jinja-left-over"),
        pytest.param({"gates": {"request_query": UNCLOSED_CALL}}, UNCLOSED_CALL, id="request-query"),
    ],
)
def test_promql_syntax_is_left_to_prometheus(given: dict, query: str) -> None:
    """No PromQL parser here: the query is kept as written, and the start's query check sends it
    to Prometheus, whose refusal fails the task naming the gate before any write (the real parser:
    tests/integration/test_faults.py::test_a_query_prometheus_refuses_fails_the_start_before_any_write)."""
    gates = request_for(given).config.gates
    assert query in [gates.request_query, *(gate.query for gate in gates.thresholds)]


def test_a_number_without_a_unit_is_seconds() -> None:
    """Documented, not refused: YAML hands numbers over as text, and "10" is ten seconds."""
    config = request_for({"window": "10", **steps({"percent": 1, "hold": "90"}, {"percent": 5, "hold": 120})}).config
    assert (config.window_seconds, [step.hold_seconds for step in config.plan]) == (10.0, [90.0, 120.0])


def test_label_values_with_promql_metacharacters_are_quoted_in_the_query_sent() -> None:
    """Alert matchers are the one place free text reaches a query: each value is one string literal."""
    injected = 'critical"} or vector(1) #'
    path = 'a"b\\c\n}'
    target, scripted = RecordingTarget(), ScriptedPrometheus()
    result = run_task(
        {"gates": {"alerts": [{"name": "injected", "matchers": {"severity": injected, "path": path}}]}},
        target,
        scripted,
    )
    assert result["action"] == "start"
    (alert_query,) = [query for query in scripted.queries if query.startswith("max_over_time(ALERTS")]
    assert alert_query.startswith(
        'max_over_time(ALERTS{alertstate="firing",severity="critical\\"} or vector(1) #",path="a\\"b\\\\c\\n}"}['
    )
