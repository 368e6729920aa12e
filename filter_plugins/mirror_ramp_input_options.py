"""Pure filter: the keys the ramp engine reads in one of its inputs, for the role mirror_preflight.

The preflight's unknown-key check (filter mirror_unknown_keys) takes the keys each input may hold
in the form of argument-spec options. For the ramp's gates and steps those keys are the engine's
own (mirrorramp.gates, mirrorramp.plan): asking the engine keeps the preflight from holding a copy
that could drift from what the ramp reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from ansible.errors import AnsibleFilterError

# The documentation is mirror_ramp_input_options.yml beside this file (ansible-doc -t filter).

_INPUTS = ("gates", "steps")


def mirror_ramp_input_options(engine_input, without=()):
    """The options (argument-spec form) of `engine_input`, less the keys in `without`."""
    # Imported here, not at the top: Ansible's worker for every task imports every filter file,
    # and these engine modules took about 0.25 s of each task's time (64 render tasks).
    from mirrorramp.gates import GATE_ENTRY_KEYS, GATES_KEYS
    from mirrorramp.plan import STEP_KEYS

    if engine_input not in _INPUTS:
        raise AnsibleFilterError(
            f"mirror_ramp_input_options: input = {engine_input!r}: must be one of {', '.join(_INPUTS)}"
        )
    if isinstance(without, str) or not isinstance(without, Sequence):
        raise AnsibleFilterError(f"mirror_ramp_input_options: without = {without!r}: must be a list of keys")
    if engine_input == "steps":
        options = {key: {} for key in STEP_KEYS}
    else:
        options = {
            key: {"options": {entry_key: {} for entry_key in GATE_ENTRY_KEYS[key]}} if key in GATE_ENTRY_KEYS else {}
            for key in GATES_KEYS
        }
    unknown = sorted(set(without) - set(options))
    if unknown:
        raise AnsibleFilterError(
            f"mirror_ramp_input_options: without = {list(without)!r}: {unknown[0]!r} is not a key of the {engine_input}"
        )
    return {key: spec for key, spec in options.items() if key not in without}


class FilterModule:
    def filters(self):
        return {"mirror_ramp_input_options": mirror_ramp_input_options}
