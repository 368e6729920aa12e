"""Pure filter: the failures of the service checks of role mirror_preflight, as its messages.

Each check was an assert task of its own that looped over the rows failing it, with a Jinja
condition and a Jinja message: about 0.1 s a task at 100 services even when nothing failed (a
forked worker, the loop expression compiled afresh, the rows walked through Ansible's lazy
containers). Here every check is one function over the rows of filter mirror_preflight_rows, in
the order the tasks had, and the role loops one assert over the messages: a good inventory has none.

Each message is the one the Jinja check gave, word for word, with its values written by Ansible's
own to_json filter and tested by Ansible's own match test. The conditions follow Jinja's tests: a
mapping is a `Mapping`, a list is what Jinja's `sequence` test takes (a mapping too) and is not a
string, a key left out reads as absent (`default(none)`: null).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from numbers import Number
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible.plugins.filter.core import to_json
from ansible.plugins.test.core import match

# The documentation is mirror_preflight_checks.yml beside this file (ansible-doc -t filter).

# What a DNS-1123 label may hold besides its pattern (Kubernetes: at most 63 characters).
_DNS_LABEL_MAX_LENGTH = 63
_ROW_KINDS = ("services", "subsets", "mirrors", "baselines", "ports")

Rows = Mapping[str, list[dict[str, Any]]]
# A check: the rows and the words of its rules (dns_label, dns_label_says) in, its messages out.
Check = Callable[[Rows, Mapping[str, str]], list[str]]


def _is_list(value: Any) -> bool:
    """Jinja's `value is sequence and value is not string` (a mapping passes, as in Jinja)."""
    if isinstance(value, str):
        return False
    try:
        len(value)
        value.__getitem__  # noqa: B018 - the attribute test is Jinja's own test_sequence
    except (TypeError, AttributeError):
        return False
    return True


def _is_whole_number(value: Any) -> bool:
    """Jinja's `value is integer and value is not boolean`."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_dns_label(value: Any, dns_label: str) -> bool:
    return isinstance(value, str) and match(value, dns_label) and len(value) <= _DNS_LABEL_MAX_LENGTH


def _joined(values: list[Any]) -> str:
    """Jinja's `join(', ')`: each value as str()."""
    return ", ".join(str(value) for value in values)


def _names_of_mapping_entries(holder: Mapping[str, Any], key: str, attribute: str) -> list[Any]:
    """`holder[key] | default([]) | select('mapping') | map(attribute=attribute) | list`: a value
    that is not a list names nothing, as Jinja read null, a string and a mapping. An entry without
    the attribute made the Jinja check fail as a whole ("object of type 'dict' has no attribute
    ..."): here it names nothing, and the check of the names or of the list reports it."""
    entries = holder.get(key)
    if isinstance(entries, str | Mapping) or not _is_list(entries):
        return []
    return [entry[attribute] for entry in entries if isinstance(entry, Mapping) and attribute in entry]


def _service_count(rows: Rows, _words: Mapping[str, str]) -> list[str]:
    return [] if rows["services"] else ["mirror_services = []: must list at least one service"]


def _service_names(rows: Rows, words: Mapping[str, str]) -> list[str]:
    return [
        f"{row['path']}.name = {to_json(row['svc'].get('name'))}: must be {words['dns_label_says']}, and unique "
        "among the services"
        for row in rows["services"]
        if not (_is_dns_label(row["svc"].get("name"), words["dns_label"]) and not row["name_taken"])
    ]


def _mirror_percents(rows: Rows, _words: Mapping[str, str]) -> list[str]:
    # mirror_percent is optional: only a service that sets it is checked.
    return [
        f"{row['path']}.mirror_percent = {to_json(percent)}: must be a number from 0 to 100 (fractions such as "
        "0.5 allowed)"
        for row in rows["services"]
        if "mirror_percent" in row["svc"]
        and not (
            isinstance(percent := row["svc"]["mirror_percent"], Number)
            and not isinstance(percent, bool)
            and 0 <= percent <= 100
        )
    ]


def _ports(rows: Rows, _words: Mapping[str, str]) -> list[str]:
    return [
        f"{row['path']} = {to_json(row['value'])}: must be a whole number from 1 to 65535"
        for row in rows["ports"]
        if not (_is_whole_number(row["value"]) and 1 <= row["value"] <= 65535)
    ]


def _subsets(rows: Rows, _words: Mapping[str, str]) -> list[str]:
    return [
        f"{row['path']}.subsets = {to_json(subsets)}: must be a non-empty list of {{name, labels, workload}}"
        for row in rows["services"]
        if not (_is_list(subsets := row["svc"].get("subsets")) and len(subsets) > 0)
    ]


def _subset_names(rows: Rows, words: Mapping[str, str]) -> list[str]:
    return [
        f"{row['path']}.name = {to_json(row['sub'].get('name'))}: must be {words['dns_label_says']}, and unique "
        "among the subsets of the service"
        for row in rows["subsets"]
        if not (_is_dns_label(row["sub"].get("name"), words["dns_label"]) and not row["name_taken"])
    ]


def _subset_labels(rows: Rows, _words: Mapping[str, str]) -> list[str]:
    return [
        f"{row['path']}.labels = {to_json(labels)}: must be a non-empty mapping of pod labels, such as {{version: v2}}"
        for row in rows["subsets"]
        if not (isinstance(labels := row["sub"].get("labels"), Mapping) and len(labels) > 0)
    ]


def _subset_workloads(rows: Rows, words: Mapping[str, str]) -> list[str]:
    # The ramp (mirror_ramp, plugins/mirrorramp/arguments.py) refuses a workload that is not a
    # DNS-1123 label when it starts; the preflight refuses it before anything is rendered or applied.
    return [
        f"{row['path']}.workload = {to_json(workload)}: must be the name of the subset's workload (Deployment), "
        f"as the gates query it in destination_workload, and {words['dns_label_says']}"
        for row in rows["subsets"]
        if not _is_dns_label(workload := row["sub"].get("workload"), words["dns_label"])
    ]


def _primary_subsets(rows: Rows, _words: Mapping[str, str]) -> list[str]:
    failures = []
    for row in rows["services"]:
        names = _names_of_mapping_entries(row["svc"], "subsets", "name")
        # As in Jinja: a primary subset left out (null) is one of the names where a subset's name is null.
        if (primary := row["svc"].get("primary_subset")) not in names:
            failures.append(
                f"{row['path']}.primary_subset = {to_json(primary)}: must be one of the service's subsets "
                f"({_joined(names)})"
            )
    return failures


def _mirrors(rows: Rows, _words: Mapping[str, str]) -> list[str]:
    return [
        f"{row['path']}.mirrors = {to_json(mirrors)}: must be a non-empty list of {{subset}}"
        for row in rows["services"]
        if not (_is_list(mirrors := row["svc"].get("mirrors")) and len(mirrors) > 0)
    ]


def _mirror_subsets(rows: Rows, _words: Mapping[str, str]) -> list[str]:
    return [
        f"{row['path']}.subset = {to_json(row['subset'])}: must be one of the service's subsets "
        f"({_joined(row['subset_names'])}) other than the primary subset {to_json(row['primary'])}"
        for row in rows["mirrors"]
        if not (row["subset"] in row["subset_names"] and row["subset"] != row["primary"])
    ]


def _baseline_subsets(rows: Rows, _words: Mapping[str, str]) -> list[str]:
    # The baseline shadow is one more mirror target (role mirror_istio) whose workload the ramp
    # passes as the baseline, never among the mirror workloads: it must be a subset of its own.
    failures = []
    for row in rows["services"]:
        svc = row["svc"]
        if "baseline_subset" not in svc:
            continue
        baseline = svc["baseline_subset"]
        names = _names_of_mapping_entries(svc, "subsets", "name")
        mirror_subsets = _names_of_mapping_entries(svc, "mirrors", "subset")
        primary = svc.get("primary_subset")
        if not (
            isinstance(baseline, str) and baseline in names and baseline != primary and baseline not in mirror_subsets
        ):
            failures.append(
                f"{row['path']}.baseline_subset = {to_json(baseline)}: must be one of the service's subsets "
                f"({_joined(names)}) other than the primary subset {to_json(primary)} and the mirror subsets "
                f"({_joined(mirror_subsets)}): the subset of the pods that run the primary's version and receive "
                "the mirrored share as the candidate's baseline"
            )
    return failures


def _baseline_labels(rows: Rows, _words: Mapping[str, str]) -> list[str]:
    # Two subsets select disjoint pods only when they set one label to different values: with
    # {version: v1} and {version: v1, track: baseline} the primary would serve users from the
    # baseline's pods too.
    return [
        f"{row['path']}.baseline_subset = {to_json(row['subset'])}: its labels {to_json(row['baseline_labels'])} "
        f"must set a label that the primary subset's labels {to_json(row['primary_labels'])} set to another value "
        "(such as version: v1-baseline), or one subset selects the other's pods"
        for row in rows["baselines"]
        if not row["conflicts"]
    ]


def _retry_policies(rows: Rows, _words: Mapping[str, str]) -> list[str]:
    # Its keys are checked with every other key (tasks/keys.yml).
    return [
        f"{row['path']}.retries = {to_json(retries)}: must be a mapping {{attempts, per_try_timeout, retry_on}}"
        for row in rows["services"]
        if "retries" in row["svc"] and not isinstance(retries := row["svc"]["retries"], Mapping)
    ]


def _retry_attempts(rows: Rows, _words: Mapping[str, str]) -> list[str]:
    return [
        f"{row['path']}.retries.attempts = {to_json(attempts)}: must be a whole number of at least 0"
        for row in rows["services"]
        if isinstance(retries := row["svc"].get("retries"), Mapping)
        and not (_is_whole_number(attempts := retries.get("attempts")) and attempts >= 0)
    ]


# In the order of the messages: the order the checks had as tasks.
_CHECKS: tuple[Check, ...] = (
    _service_count,
    _service_names,
    _mirror_percents,
    _ports,
    _subsets,
    _subset_names,
    _subset_labels,
    _subset_workloads,
    _primary_subsets,
    _mirrors,
    _mirror_subsets,
    _baseline_subsets,
    _baseline_labels,
    _retry_policies,
    _retry_attempts,
)


def mirror_preflight_checks(rows: Any, dns_label: Any, dns_label_says: Any) -> list[str]:
    """The message of every failed service check, in the order of the checks, then of the rows."""
    if not isinstance(rows, Mapping) or any(not isinstance(rows.get(kind), list) for kind in _ROW_KINDS):
        raise AnsibleFilterError(
            f"mirror_preflight_checks: rows = {rows!r}: must be the rows of filter mirror_preflight_rows "
            f"(lists {', '.join(_ROW_KINDS)})"
        )
    for name, value in (("dns_label", dns_label), ("dns_label_says", dns_label_says)):
        if not isinstance(value, str):
            raise AnsibleFilterError(f"mirror_preflight_checks: {name} = {value!r}: must be a string")
    # The services' rows hold each service as it is: role mirror_preflight's argument spec has
    # already refused a service that is not a mapping.
    if any(not isinstance(row.get("svc"), Mapping) for row in rows["services"]):
        raise AnsibleFilterError("mirror_preflight_checks: every services row must hold its service as a mapping (svc)")
    words = {"dns_label": dns_label, "dns_label_says": dns_label_says}
    return [message for check in _CHECKS for message in check(rows, words)]


class FilterModule:
    def filters(self):
        return {"mirror_preflight_checks": mirror_preflight_checks}
