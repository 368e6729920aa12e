"""From the arguments of the mirror_ramp task to a run of the engine, and back to a result.

No Ansible import here: the action plugin hands over the validated arguments (the spec below is
what ActionBase.validate_argument_spec checks) and gets back one JSON-safe dict.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mirrorramp import report
from mirrorramp.batch import BatchedPrometheus
from mirrorramp.drivers.base import Driver, TargetSnapshot
from mirrorramp.drivers.istio import IstioDriver, KubeConnection, api_client, preload_namespaces
from mirrorramp.durations import parse_duration, prometheus_duration
from mirrorramp.errors import ConfigError, MirrorRampError
from mirrorramp.freeze import parse_freeze_windows
from mirrorramp.gates import parse_gates
from mirrorramp.machine import Policy, reconcile, when
from mirrorramp.notify import DEFAULT_EVENTS, EVENT_KINDS, FORMATS, Notifier
from mirrorramp.plan import parse_steps
from mirrorramp.prometheus import PrometheusClient
from mirrorramp.runner import RampConfig, Runner, RunOutcome, run_all

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS1123_SUBDOMAIN = rf"{DNS1123_LABEL}(\.{DNS1123_LABEL})*"

_WORKLOADS_SPEC: dict[str, Any] = {
    "type": "dict",
    "options": {
        "primary": {"type": "str", "required": True},
        "mirror": {"type": "list", "elements": "str", "required": True},
        # The baseline shadow's workload: the primary's version, mirrored the same share.
        "baseline": {"type": "str"},
    },
}

ARGUMENT_SPEC: dict[str, Any] = {
    # One service (service, namespace, workloads), or many in one run (services).
    "service": {"type": "str"},
    "services": {
        "type": "list",
        "elements": "dict",
        "options": {
            "name": {"type": "str", "required": True},
            "namespace": {"type": "str"},
            "virtual_service": {"type": "str"},
            "workloads": {**_WORKLOADS_SPEC, "required": True},
        },
    },
    "namespace": {"type": "str"},
    "environment": {"type": "str", "required": True},
    "driver": {"type": "str", "choices": ["istio", "envoy"], "default": "istio"},
    "virtual_service": {"type": "str"},
    "api_version": {"type": "str", "choices": ["v1", "v1beta1", "v1alpha3"], "default": "v1"},
    "kubeconfig": {"type": "path"},
    "context": {"type": "str"},
    "host": {"type": "str"},
    "api_key": {"type": "str", "no_log": True},
    "validate_certs": {"type": "bool"},
    "ca_cert": {"type": "path"},
    "envoy": {
        "type": "dict",
        "options": {
            "route_path": {"type": "path", "required": True},
            "route_config_name": {"type": "str", "required": True},
            "admin_url": {"type": "str", "required": True},
            "state_dir": {"type": "path", "required": True},
            "confirm_timeout": {"type": "float", "default": 2.0},
            "http_timeout": {"type": "float", "default": 2.0},
        },
    },
    "steps": {"type": "list", "elements": "dict", "required": True},
    "gates": {"type": "dict", "default": {}},
    "min_requests": {"type": "int", "default": 100},
    "window": {"type": "str", "default": "10m"},
    "workloads": _WORKLOADS_SPEC,
    "prometheus": {
        "type": "dict",
        "required": True,
        "options": {
            "url": {"type": "str", "required": True},
            "token": {"type": "str", "no_log": True},
            "ca_cert": {"type": "path"},
            "validate_certs": {"type": "bool", "default": True},
            "timeout": {"type": "str", "default": "10s"},
            "retries": {"type": "int", "default": 3},
        },
    },
    "mode": {"type": "str", "choices": ["scheduled", "watch"], "default": "scheduled"},
    "poll_interval": {"type": "str", "default": "30s"},
    "deadline": {"type": "str", "default": "1h"},
    "inconclusive_budget": {"type": "int", "default": 10},
    "inconclusive_action": {"type": "str", "choices": ["hold", "rollback"], "default": "hold"},
    "notify": {"type": "list", "elements": "str", "default": [], "no_log": True},
    "notify_format": {"type": "str", "choices": list(FORMATS), "default": "slack"},
    "notify_events": {
        "type": "list",
        "elements": "str",
        "choices": list(EVENT_KINDS),
        "default": sorted(DEFAULT_EVENTS),
    },
    "restart": {"type": "bool", "default": False},
    "pause": {"type": "bool", "default": False},
    "resume": {"type": "bool", "default": False},
    "report_dir": {"type": "path"},
    "operation": {"type": "str", "choices": ["ramp", "stop", "status"], "default": "ramp"},
    "reason": {"type": "str", "default": ""},
    "by": {"type": "str", "default": ""},
    "approval_steps": {"type": "list", "elements": "int", "default": []},
    "approve": {"type": "list", "elements": "str", "default": []},
    "freeze": {"type": "list", "elements": "dict", "default": []},
}
# The rules between arguments, checked with the spec (ActionBase.validate_argument_spec).
ARGUMENT_RULES: dict[str, Any] = {
    # With services, each entry names its own workloads and VirtualService.
    "mutually_exclusive": [["service", "services"], ["workloads", "services"], ["virtual_service", "services"]],
    "required_one_of": [["service", "services"]],
    "required_by": {"service": ["namespace", "workloads"]},
}


def _baseline_context(workloads: dict) -> dict[str, str]:
    """{baseline_workload} when the service has a baseline shadow, which is never a mirror workload
    (the gates would count its requests as the candidate's)."""
    baseline = workloads.get("baseline")
    if baseline is None:
        return {}
    _check_name("workloads.baseline", baseline)
    if baseline == workloads["primary"] or baseline in workloads["mirror"]:
        raise ConfigError(
            f"workloads.baseline={baseline!r} is the primary or a mirror workload: "
            "the baseline shadow needs a workload of its own"
        )
    return {"baseline_workload": baseline}


def _check_name(argument: str, value: str) -> str:
    # fullmatch: "$" alone would accept a trailing newline (a YAML block scalar).
    if not isinstance(value, str) or not re.fullmatch(DNS1123_LABEL, value):
        raise ConfigError(
            f"{argument}={value!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return value


def _check_subdomain(argument: str, value: str) -> str:
    """A DNS-1123 subdomain (the names of Kubernetes objects such as a VirtualService)."""
    if not isinstance(value, str) or len(value) > 253 or not re.fullmatch(DNS1123_SUBDOMAIN, value):
        raise ConfigError(
            f"{argument}={value!r} is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters)"
        )
    return value


def _check_url(argument: str, value: str) -> str:
    """An http(s) URL with a host and, if given, a port 1..65535."""
    parts = urlsplit(str(value))
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or port == 0:
        raise ConfigError(f"{argument}={value!r} must be an http:// or https:// URL with a host (and a port 1..65535)")
    return value


@dataclass(frozen=True)
class RampRequest:
    """Everything one task asked for, parsed and checked; building it touches nothing."""

    config: RampConfig
    driver_name: str
    driver_options: dict
    prometheus: dict
    notifier: Notifier  # its repr shows only scheme://host:port of each webhook
    diff: bool
    report_dir: str | None = None
    operation: str = "ramp"
    reason: str = ""
    by: str = ""

    @classmethod
    def from_arguments(cls, args: dict, *, check_mode: bool, diff: bool) -> RampRequest:
        service = _check_name("service", args["service"])
        namespace = _check_name("namespace", args["namespace"])
        environment = _check_name("environment", args["environment"])
        workloads = args["workloads"]
        if not workloads["mirror"]:
            raise ConfigError("workloads.mirror is empty: name at least one mirror workload")
        for index, name in enumerate([workloads["primary"], *workloads["mirror"]]):
            _check_name("workloads.primary" if index == 0 else f"workloads.mirror[{index - 1}]", name)
        plan = parse_steps(args["steps"])
        window = parse_duration(args["window"], name="window")
        if "min_requests" in args["gates"]:
            # One place only: a gates.min_requests would silently lose to the task's argument.
            raise ConfigError("gates.min_requests: set min_requests as an argument of the task, not inside gates")
        gates = parse_gates({**args["gates"], "min_requests": args["min_requests"]})
        if args["inconclusive_budget"] < 0:
            raise ConfigError(f"inconclusive_budget={args['inconclusive_budget']} must be 0 or more")
        if args["pause"] and args["resume"]:
            raise ConfigError("pause and resume are both true: ask for one")
        prometheus = dict(args["prometheus"])
        prometheus["timeout"] = parse_duration(prometheus["timeout"], name="prometheus.timeout")
        if prometheus["retries"] < 0 or prometheus["retries"] > 10:
            raise ConfigError(f"prometheus.retries={prometheus['retries']} is outside 0..10")
        _check_url("prometheus.url", prometheus["url"])
        if args["min_requests"] < 0:
            raise ConfigError(f"min_requests={args['min_requests']} must be 0 or more")
        if args.get("virtual_service") is not None:
            _check_subdomain("virtual_service", args["virtual_service"])
        notifier = Notifier(args["notify"], format=args["notify_format"], events=args["notify_events"])
        approval_steps = frozenset(args["approval_steps"])
        bad_steps = sorted(s for s in approval_steps if not 1 <= s <= len(plan))
        if bad_steps:
            raise ConfigError(f"approval_steps: {bad_steps} not among the steps 1..{len(plan)}")
        if args["driver"] == "envoy" and not args.get("envoy"):
            raise ConfigError(
                "driver=envoy needs the envoy options (route_path, route_config_name, admin_url, state_dir)"
            )
        if args["driver"] == "envoy":
            # Refused before anything is read: a step the driver cannot set would fail at its write,
            # mid-ramp (preflight checks it too; playbooks/ramp.yml runs no preflight).
            from mirrorramp.drivers.envoy import check_percent

            for index, step in enumerate(plan):
                try:
                    check_percent(step.percent)
                except ConfigError as e:
                    raise ConfigError(f"steps[{index}].percent: {e}") from e
        config = RampConfig(
            service=service,
            namespace=namespace,
            environment=environment,
            plan=plan,
            gates=gates,
            query_context={
                "service": service,
                "namespace": namespace,
                "environment": environment,
                "primary_workload": workloads["primary"],
                "mirror_workloads": list(workloads["mirror"]),
            }
            | _baseline_context(workloads),
            window_seconds=window,
            policy=Policy(
                inconclusive_budget=args["inconclusive_budget"],
                inconclusive_action=args["inconclusive_action"],
                restart=args["restart"],
                pause=args["pause"],
                resume=args["resume"],
                approval_steps=approval_steps,
                # Only a ramp reads approvals: a stray or malformed one never stands in the way of a stop.
                approved=_approved(args["approve"], service, len(plan)) if args["operation"] == "ramp" else frozenset(),
                approve_hint=f"-e approve={service}:{{step}}",
                freeze=parse_freeze_windows(args["freeze"]),
            ),
            mode=args["mode"],
            poll_interval=parse_duration(args["poll_interval"], name="poll_interval"),
            deadline_seconds=parse_duration(args["deadline"], name="deadline"),
            dry_run=check_mode,
        )
        driver_options = {
            key: args.get(key) for key in ("virtual_service", "api_version", "kubeconfig", "context", "host", "api_key")
        } | {
            "validate_certs": args.get("validate_certs"),
            "ca_cert": args.get("ca_cert"),
            "envoy": args.get("envoy"),
        }
        return cls(
            config=config,
            driver_name=args["driver"],
            driver_options=driver_options,
            prometheus=prometheus,
            notifier=notifier,
            diff=diff,
            report_dir=args.get("report_dir"),
            operation=args["operation"],
            reason=args["reason"],
            by=args["by"],
        )


def requests_from_arguments(args: dict, *, check_mode: bool, diff: bool) -> list[RampRequest]:
    """One RampRequest per service of the task: `service` alone, or each entry of `services`."""
    if args.get("services") is None:
        return [RampRequest.from_arguments(args, check_mode=check_mode, diff=diff)]
    entries = args["services"]
    if not entries:
        raise ConfigError("services is empty: name at least one service")
    requests, seen = [], set()
    for index, entry in enumerate(entries):
        namespace = entry.get("namespace") or args.get("namespace")
        if not namespace:
            raise ConfigError(f"services[{index}] ({entry['name']!r}) has no namespace: give it one, or namespace")
        if (entry["name"], namespace) in seen:
            raise ConfigError(f"services[{index}]: {namespace}/{entry['name']} is listed twice")
        seen.add((entry["name"], namespace))
        one = {**args, "service": entry["name"], "namespace": namespace, "workloads": entry["workloads"]}
        one["virtual_service"] = entry.get("virtual_service")
        requests.append(RampRequest.from_arguments(one, check_mode=check_mode, diff=diff))
    if args["operation"] == "ramp":
        _check_approvals_name_a_service(args["approve"], [request.config.service for request in requests])
    return requests


def _check_approvals_name_a_service(entries: list[str], services: list[str]) -> None:
    """With `services`, the task holds every service of the run, so an approval naming none of them
    is a typo that would leave its step waiting without a word. (With `service` alone, entries of
    other services are expected: a playbook may loop over services with one list of approvals.)
    Only when ramping: a stray approval must never stand in the way of an emergency stop."""
    known = set(services)
    for entry in entries:
        name = str(entry).partition(":")[0]
        if name not in known:
            raise ConfigError(
                f"approve: {entry!r} names no service of this run; its services: {', '.join(sorted(known))}"
            )


def _approved(entries: list[str], service: str, steps: int) -> frozenset[int]:
    """The steps of `service` approved by `approve` entries "<service>:<step>" (other services' are ignored)."""
    approved = set()
    for entry in entries:
        name, sep, step = str(entry).partition(":")
        if not sep or not step.isdigit() or not name:
            raise ConfigError(f"approve: {entry!r} is not <service>:<step> (for example {service}:3)")
        if name == service:
            if not 1 <= int(step) <= steps:
                raise ConfigError(f"approve: {entry!r} names step {step}; {service} has steps 1..{steps}")
            approved.add(int(step))
    return frozenset(approved)


def build_api_client(request: RampRequest):
    """The Kubernetes API client of the task's connection options (the istio driver's)."""
    options = request.driver_options
    connection = KubeConnection(
        kubeconfig=options["kubeconfig"],
        context=options["context"],
        host=options["host"],
        api_key=options["api_key"],
        validate_certs=options["validate_certs"],
        ca_cert=options["ca_cert"],
    )
    return api_client(connection)


def build_driver(request: RampRequest, api=None) -> Driver:
    """The driver of the request's target; `api`: a Kubernetes API client to share."""
    options = request.driver_options
    cfg = request.config
    if request.driver_name == "istio":
        return IstioDriver(
            api or build_api_client(request),
            cfg.namespace,
            options["virtual_service"] or cfg.service,
            version=options["api_version"],
        )
    from mirrorramp.drivers.envoy import EnvoyDriver

    return EnvoyDriver.from_options(cfg.service, options["envoy"])


def started_by_alive() -> Callable[[], bool]:
    """Whether the process that started this one is still its parent.

    Ansible runs the task in a worker process forked from ansible-playbook; killed, the parent
    leaves the worker running, re-parented. A watch that outlived its controller would go on
    ramping unseen, so it asks this before every pass and while it waits.
    """
    parent = os.getppid()
    return lambda: os.getppid() == parent


def build_prometheus(request: RampRequest) -> PrometheusClient:
    p = request.prometheus
    return PrometheusClient(
        p["url"],
        token=p.get("token") or None,
        ca_cert=p.get("ca_cert") or None,
        validate_certs=p["validate_certs"],
        timeout=p["timeout"],
        retries=p["retries"],
    )


@dataclass
class _Job:
    """One service of a run: its request, its runner, and the passes the report records."""

    request: RampRequest
    runner: Runner
    records: list[report.HistoryRecord]


def _job(
    request: RampRequest,
    driver: Driver,
    prometheus,
    progress: Callable[[str], None],
    debug: Callable[[str], None],
    warn: Callable[[str], None] | None = None,
) -> _Job:
    debug(f"mirror_ramp: {request.config.service} on {driver.description}, mode {request.config.mode}")
    records: list[report.HistoryRecord] = []
    runner = Runner(
        request.config,
        driver,
        prometheus,
        request.notifier,
        progress=progress if request.config.mode == "watch" else debug,
        warn=warn,
        on_pass=lambda outcome: records.append(report.HistoryRecord.from_run(request.config, outcome, time.time())),
    )
    return _Job(request, runner, records)


def _operate(job: _Job) -> dict:
    """The on-call operations: an emergency stop, or a look at the status."""
    request = job.request
    if request.operation == "stop":
        return result_of(request, job.runner.stop(request.reason or "emergency stop", request.by or "unknown"))
    looked = job.runner.status()
    return result_of(request, looked) | {"status": status_row(request.config, looked)}


def _finished(job: _Job, outcome: RunOutcome) -> dict:
    """The result of a ramp, with its report published."""
    request = job.request
    result = result_of(request, outcome)
    # Check mode records nothing: the report shows what happened, not what would have.
    if request.report_dir and job.records and not request.config.dry_run:
        try:
            # Redrawn when the ramp moved: a hold on every scheduled run would cost ~2 s a service.
            redraw = outcome.changed
            result["report"] = str(report.publish(Path(request.report_dir), *job.records, redraw=redraw))
        except (OSError, ValueError) as e:  # a report that cannot be written never fails the ramp
            result["warnings"].append(f"ramp report not written: {e}")
    return result


def execute(
    request: RampRequest,
    *,
    progress: Callable[[str], None] = lambda _m: None,
    debug: Callable[[str], None] = lambda _m: None,
    warn: Callable[[str], None] | None = None,
    driver: Driver | None = None,
    prometheus: PrometheusClient | None = None,
) -> dict:
    """One service: run the ramp once (or watch it), or stop it, or look; its task result.

    Errors are raised (MirrorRampError); execute_all runs many services and reports them.
    """
    job = _job(request, driver or build_driver(request), prometheus or build_prometheus(request), progress, debug, warn)
    if request.operation != "ramp":
        return _operate(job)
    return _finished(job, job.runner.run(alive=started_by_alive()))


def execute_all(
    requests: list[RampRequest],
    *,
    progress: Callable[[str], None] = lambda _m: None,
    debug: Callable[[str], None] = lambda _m: None,
    warn: Callable[[str], None] | None = None,
) -> dict:
    """Every service of a task in one run, with the fixed costs paid once, not per service.

    One Prometheus client and one Kubernetes client for all; one query per gate for all services
    (batch.BatchedPrometheus); one LIST of VirtualServices per namespace at the start of each
    pass. A service that fails is reported in its row and fails the task, after the others ran.
    """
    first = requests[0]
    client = build_prometheus(first)
    api = build_api_client(first) if first.driver_name == "istio" else None
    drivers = [build_driver(request, api) for request in requests]
    prometheus: PrometheusClient | BatchedPrometheus = client
    if first.operation == "ramp":
        contexts = [request.config.query_context for request in requests]
        prometheus = BatchedPrometheus(client, first.config.gates, contexts, first.config.window_seconds)
    jobs = [
        _job(request, driver, prometheus, progress, debug, warn)
        for request, driver in zip(requests, drivers, strict=True)
    ]

    def before_pass(runners: list[Runner]) -> None:
        if isinstance(prometheus, BatchedPrometheus):
            prometheus.new_pass()
        if api is not None:
            preload_namespaces([runner.driver for runner in runners])

    results: list[dict | MirrorRampError] = []
    try:
        if first.operation == "ramp":
            outcomes = run_all([job.runner for job in jobs], before_pass=before_pass, alive=started_by_alive())
            for job, outcome in zip(jobs, outcomes, strict=True):
                results.append(outcome if isinstance(outcome, MirrorRampError) else _finished(job, outcome))
        else:
            before_pass([job.runner for job in jobs])
            for job in jobs:
                try:
                    results.append(_operate(job))
                except MirrorRampError as e:
                    results.append(e)
    finally:
        client.close()
    return combined_result(requests, results)


def combined_result(requests: list[RampRequest], results: list[dict | MirrorRampError]) -> dict:
    """The task result of many services: one row each under `results`, as a loop registers them."""
    rows, failed, warnings, diffs = [], [], [], []
    for request, result in zip(requests, results, strict=True):
        cfg = request.config
        if isinstance(result, MirrorRampError):
            row = {
                "service": cfg.service,
                "namespace": cfg.namespace,
                "environment": cfg.environment,
                "changed": False,
                "failed": True,
                "msg": f"{cfg.service}: {result}",
            }
            failed.append(row["msg"])
        else:
            row = dict(result)
            warnings.extend(f"{cfg.service}: {warning}" for warning in row.pop("warnings", []))
            if "diff" in row:  # shown once, at the task's level (a list: one per service)
                diffs.append(row.pop("diff"))
        rows.append(row)
    changed = sum(1 for row in rows if row["changed"])
    combined: dict[str, Any] = {
        "changed": changed > 0,
        "results": rows,
        "warnings": warnings,
        "msg": f"{len(rows)} service(s): {changed} changed, {len(rows) - changed - len(failed)} unchanged"
        + (f", {len(failed)} failed: " + "; ".join(failed) if failed else ""),
    }
    if failed:
        combined["failed"] = True
    if diffs:
        combined["diff"] = diffs
    return combined


def row_line(row: dict) -> str:
    """One line per service in the task's output: what happened to it and why."""
    word = "failed" if row.get("failed") else "changed" if row["changed"] else "ok"
    return f"{word}: [{row['environment']}] {row['msg']}"


def status_row(config: RampConfig, outcome: RunOutcome, now: float | None = None) -> dict:
    """One row of playbooks/status.yml: where the ramp is and what it last saw."""
    state = outcome.after.state
    now = time.time() if now is None else now
    index = state.step_index
    next_advance = None
    # A plan changed since the state was written may be shorter: the next run re-maps the ramp.
    if state.status == "ramping" and index is not None and index < len(config.plan) and state.step_started_at:
        next_advance = when(state.step_started_at + config.plan[index].hold_seconds)
    since = state.step_started_at if state.status in ("ramping", "paused") else state.updated_at
    gates = [
        {key: g.get(key) for key in ("name", "verdict", "value", "operator", "threshold")}
        for g in state.last_gates
        if "(whole step)" not in str(g.get("name"))
    ]
    return {
        "service": config.service,
        "environment": config.environment,
        "state": state.status + (" (unconfirmed)" if state.unconfirmed else ""),
        "step": f"{index + 1}/{len(config.plan)}" if index is not None else f"-/{len(config.plan)}",
        "percent": outcome.after.percent,
        "since": when(since) if since is not None else "-",
        "next_advance": next_advance or "-",
        "last_gates": gates,
        "attention": _disagreement(config, outcome.after, now),
    }


def _disagreement(config: RampConfig, snapshot: TargetSnapshot, now: float) -> str:
    """What the next run will do to make the record and the live mirror agree; "" when they do."""
    fix = reconcile(snapshot.state, config.plan, snapshot.percent, snapshot.mirror_drift, now)
    if fix is None or not fix.reason:
        return ""
    return f"the record and the live mirror disagree; the next run reconciles them: {fix.reason}"


def _settings(snapshot: TargetSnapshot) -> dict:
    return {"percent": snapshot.percent, "state": snapshot.state.status, "mirror": snapshot.mirror_settings}


def result_of(request: RampRequest, outcome: RunOutcome) -> dict:
    cfg = request.config
    state = outcome.after.state
    decision = outcome.last
    step_index = state.step_index
    result: dict[str, Any] = {
        "changed": outcome.changed,
        "service": cfg.service,
        "namespace": cfg.namespace,
        "environment": cfg.environment,
        "state": state.status,
        "step": (step_index + 1) if step_index is not None else 0,
        "steps": len(cfg.plan),
        "percent": outcome.after.percent,
        "previous_percent": outcome.before.percent,
        "action": str(decision.action) if decision else "none",
        "gates": [g.as_dict() for g in outcome.gates],
        "conflicts": outcome.conflicts,
        "passes": outcome.passes,
        "rollback": state.rollback,
        "seconds_left": decision.seconds_left if decision else None,
        "window": prometheus_duration(cfg.window_seconds),
        "msg": _summary(cfg.service, outcome, request.config.dry_run),
        "warnings": list(outcome.warnings),
    }
    if request.diff and outcome.changed:
        result["diff"] = {
            "before_header": f"{cfg.service} mirror (before)",
            "after_header": f"{cfg.service} mirror (after)",
            "before": _settings(outcome.before),
            "after": _settings(outcome.after),
        }
    return result


def _summary(service: str, outcome: RunOutcome, dry_run: bool) -> str:
    decision = outcome.last
    reason = decision.reason if decision else "nothing decided"
    prefix = "(check mode, nothing written) " if dry_run and outcome.changed else ""
    conflict = f"; {outcome.conflicts} conflict(s) with another run" if outcome.conflicts else ""
    return f"{prefix}{service}: {reason}{conflict}"
