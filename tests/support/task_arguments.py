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
