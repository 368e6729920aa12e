"""The mirror_ramp arguments exactly as the action plugin hands them to the engine.

The action plugin runs `validate_argument_spec(ARGUMENT_SPEC)` before anything else; this does
the same with Ansible's own validator, so a test's bad value is one that a playbook can really
deliver (Ansible's type layer let it through, the engine must catch it), with every default
filled in the way Ansible fills it.

    args = validated({"service": "user-service", ..., "steps": []})
    RampRequest.from_arguments(args, check_mode=False, diff=False)
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from mirrorramp.arguments import ARGUMENT_RULES, ARGUMENT_SPEC


def validated(task_args: dict[str, Any]) -> dict[str, Any]:
    """`task_args` after Ansible's argument validation; AssertionError if Ansible refuses them."""
    result = ArgumentSpecValidator(ARGUMENT_SPEC, **ARGUMENT_RULES).validate(task_args)
    assert not result.error_messages, f"Ansible's argument validation refused these: {result.error_messages}"
    return result.validated_parameters


def double_arguments(kube_url: str, token: str, prometheus_url: str, **overrides: Any) -> dict[str, Any]:
    """The mirror_ramp arguments of a run against the Kubernetes API double and a scripted
    Prometheus, every default filled in as the action plugin passes them on: user-service in
    shop-dev (v1 primary, v2 mirror), one error-ratio gate, no minimum of requests, scheduled.
    `overrides` replace any of them (steps are the caller's: there is no sensible default)."""
    arguments = {name: spec.get("default") for name, spec in ARGUMENT_SPEC.items()}
    arguments.update(
        service="user-service",
        namespace="shop-dev",
        environment="dev",
        host=kube_url,
        api_key=token,
        validate_certs=False,
        gates={"thresholds": [{"name": "mirror-5xx-ratio", "metric": "error_ratio", "operator": "<", "value": 0.05}]},
        min_requests=0,
        window="5s",
        workloads={"primary": "user-service-v1", "mirror": ["user-service-v2"]},
        prometheus={
            "url": prometheus_url,
            "token": None,
            "ca_cert": None,
            "validate_certs": True,
            "timeout": "2s",
            "retries": 1,
        },
        mode="scheduled",
        deadline="30s",
    )
    arguments.update(overrides)
    return arguments
