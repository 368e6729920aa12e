"""Pure filter: the keys of the inventory's inputs that no role reads (role mirror_preflight)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

from ansible.errors import AnsibleFilterError

# The documentation is mirror_unknown_keys.yml beside this file (ansible-doc -t filter).

# A near miss is suggested from this similarity on (difflib's ratio: 'mirror_precent' against
# 'mirror_percent' is 0.93, 'colour' against 'port' 0.4).
CLOSE_ENOUGH = 0.6


def _suboptions(spec, path):
    """The options of one argument-spec entry, or None when its value is not looked into."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise AnsibleFilterError(f"mirror_unknown_keys: the spec of {path} is {spec!r}, expected a mapping")
    options = spec.get("options")
    if options is not None and not isinstance(options, Mapping):
        raise AnsibleFilterError(f"mirror_unknown_keys: the options of {path} are {options!r}, expected a mapping")
    return options


def _walk(value, options, path, rows):
    if isinstance(value, Mapping):
        allowed = sorted(str(name) for name in options)
        for key, child in value.items():
            name = str(key)
            child_path = f"{path}.{name}"
            if name not in options:
                rows.append(
                    {
                        "path": child_path,
                        "parent": path,
                        "key": name,
                        "value": child,
                        "allowed": allowed,
                        "close": difflib.get_close_matches(name, allowed, n=1, cutoff=CLOSE_ENOUGH),
                    }
                )
                continue
            suboptions = _suboptions(options[name], child_path)
            if suboptions is not None:
                _walk(child, suboptions, child_path, rows)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        # A list of entries (type list, elements dict): each entry against the same options.
        for index, entry in enumerate(value):
            _walk(entry, options, f"{path}[{index}]", rows)
    # Anything else is a value of the wrong type: the other checks of the preflight report it.


def mirror_unknown_keys(inputs, options):
    """Every key, at any depth of `inputs` ({input name: value}), that `options` (argument-spec
    options, {input name: {options: {...}}}) does not list, as one row per key."""
    if not isinstance(inputs, Mapping):
        raise AnsibleFilterError(
            f"mirror_unknown_keys: expected a mapping of input name to value, got {type(inputs).__name__}"
        )
    if not isinstance(options, Mapping):
        raise AnsibleFilterError(
            f"mirror_unknown_keys: expected the options as a mapping of input name to spec, got {options!r}"
        )
    rows: list[dict] = []
    for name, value in inputs.items():
        if name not in options:
            raise AnsibleFilterError(
                f"mirror_unknown_keys: no options for input {name!r}; options are given for: "
                f"{', '.join(sorted(str(key) for key in options))}"
            )
        suboptions = _suboptions(options[name], name)
        if suboptions is not None:
            _walk(value, suboptions, str(name), rows)
    return rows


class FilterModule:
    def filters(self):
        return {"mirror_unknown_keys": mirror_unknown_keys}
