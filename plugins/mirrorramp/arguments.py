"""The arguments of the mirror_ramp task, parsed and checked into RampRequests.

No Ansible import here: the action plugin checks the arguments against ARGUMENT_SPEC and
ARGUMENT_RULES (ActionBase.validate_argument_spec), and RampRequest.from_arguments checks what
the spec cannot say. Building a request touches nothing: no target is read, no query is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mirrorramp.durations import parse_duration
from mirrorramp.errors import ConfigError
from mirrorramp.freeze import parse_freeze_windows
from mirrorramp.gates import parse_gates
from mirrorramp.machine import Policy
from mirrorramp.notify import DEFAULT_EVENTS, EVENT_KINDS, FORMATS, Notifier
from mirrorramp.plan import parse_steps
from mirrorramp.runner import RampConfig
from mirrorramp.wiring import DRIVERS

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
            # This service's driver when it differs from the task's (a service on another mesh API).
            "driver": {"type": "str", "choices": list(DRIVERS)},
        },
    },
    "namespace": {"type": "str"},
    "environment": {"type": "str", "required": True},
    "driver": {"type": "str", "choices": list(DRIVERS), "default": "istio"},
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
        # parse_gates refuses a negative min_requests.
        gates = parse_gates({**args["gates"], "min_requests": args["min_requests"]})
        prometheus = dict(args["prometheus"])
        prometheus["timeout"] = parse_duration(prometheus["timeout"], name="prometheus.timeout")
        if prometheus["retries"] < 0 or prometheus["retries"] > 10:
            raise ConfigError(f"prometheus.retries={prometheus['retries']} is outside 0..10")
        _check_url("prometheus.url", prometheus["url"])
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
        check_percent = DRIVERS[args["driver"]].check_percent
        if check_percent is not None:
            # Refused before anything is read: a step the driver cannot set would fail at its write,
            # mid-ramp (preflight checks it too; playbooks/ramp.yml runs no preflight).
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
            # Policy refuses a negative budget and pause with resume or restart: checked there only.
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
        one["driver"] = entry.get("driver") or args["driver"]
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
