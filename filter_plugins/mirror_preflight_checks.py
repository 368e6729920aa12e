"""Pure filters: the failures of the checks of role mirror_preflight, as its messages.

Each check was an assert task of its own that looped over the rows failing it, with a Jinja
condition and a Jinja message: about 0.1 s a task at 100 services even when nothing failed (a
forked worker, the loop expression compiled afresh, the rows walked through Ansible's lazy
containers). Here every check is one function over the rows of filter mirror_preflight_rows, and
each check file of the role (tasks/services.yml, environment.yml, mesh_api.yml, thresholds.yml,
proxy.yml, ramp.yml) is one filter that runs its checks in the order the tasks had: the role loops
one assert over the messages, and a good inventory has none.

Each message is the one the Jinja check gave, word for word, with its values written by Ansible's
own to_json filter and tested by Ansible's own match test. The conditions follow Jinja's tests: a
mapping is a `Mapping`, a list is what Jinja's `sequence` test takes (a mapping too) and is not a
string, a key left out reads as absent (`default(none)`: null).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from math import ceil, floor
from numbers import Number
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible.plugins.filter.core import to_bool, to_json
from ansible.plugins.test.core import match
from jinja2.tests import test_sequence

# The documentation is mirror_preflight_checks.yml beside this file (ansible-doc -t filter).

# What a DNS-1123 label may hold besides its pattern (Kubernetes: at most 63 characters).
_DNS_LABEL_MAX_LENGTH = 63
_ROW_KINDS = ("services", "subsets", "mirrors", "baselines", "ports")

Rows = Mapping[str, list[dict[str, Any]]]
# A check: the rows and the words of its rules (dns_label, dns_label_says) in, its messages out.
Check = Callable[[Rows, Mapping[str, str]], list[str]]


def _is_list(value: Any) -> bool:
    """Jinja's `value is sequence and value is not string` (a mapping passes, as in Jinja)."""
    return not isinstance(value, str) and test_sequence(value)


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
    _require_rows("mirror_preflight_checks", rows, _ROW_KINDS)
    _require_strings("mirror_preflight_checks", dns_label=dns_label, dns_label_says=dns_label_says)
    # The services' rows hold each service as it is: role mirror_preflight's argument spec has
    # already refused a service that is not a mapping.
    if any(not isinstance(row.get("svc"), Mapping) for row in rows["services"]):
        raise AnsibleFilterError("mirror_preflight_checks: every services row must hold its service as a mapping (svc)")
    words = {"dns_label": dns_label, "dns_label_says": dns_label_says}
    return [message for check in _CHECKS for message in check(rows, words)]


# The other check files of the role, one filter each, called the same way: the rows of filter
# mirror_preflight_rows in, the words of the rules as arguments, every failure's message out.


def _require_rows(filter_name: str, rows: Any, kinds: tuple[str, ...]) -> None:
    if not isinstance(rows, Mapping) or any(not isinstance(rows.get(kind), list) for kind in kinds):
        raise AnsibleFilterError(
            f"{filter_name}: rows = {rows!r}: must be the rows of filter mirror_preflight_rows (lists {', '.join(kinds)})"
        )


def _require_strings(filter_name: str, **values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, str):
            raise AnsibleFilterError(f"{filter_name}: {name} = {value!r}: must be a string")


def _require_lists(filter_name: str, **values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, list):
            raise AnsibleFilterError(f"{filter_name}: {name} = {value!r}: must be a list")


def _is_number(value: Any) -> bool:
    """Jinja's `value is number and value is not boolean`."""
    return isinstance(value, Number) and not isinstance(value, bool)


def _is_on(value: Any) -> bool:
    """`value | default(false) | bool`, value None where it is left out: every value that is false
    reads as false (a null too, without the bool filter's warning)."""
    return to_bool(value or False)


def _rendered(value: Any) -> str:
    """A value as a Jinja expression inside a message writes it: null as nothing (Ansible's finalize)."""
    return "" if value is None else str(value)


def _one_of(variable: str, value: Any, allowed: list[Any]) -> list[str]:
    """The message of a variable that must be one of a list, [] when it is."""
    return [] if value in allowed else [f"{variable} = {to_json(value)}: must be one of {_joined(allowed)}"]


# tasks/environment.yml


def _namespaces(rows: Rows, dns_label: str, dns_label_says: str) -> list[str]:
    return [
        f"{row['path']} = {to_json(row['value'])}: must be {dns_label_says}"
        for row in rows["namespaces"]
        if not _is_dns_label(row["value"], dns_label)
    ]


def mirror_preflight_environment_checks(
    rows: Any, environment: Any, environments: Any, dns_label: Any, dns_label_says: Any
) -> list[str]:
    """The message of every failed check of tasks/environment.yml: the environment is a known one,
    every namespace is a DNS-1123 label."""
    _require_rows("mirror_preflight_environment_checks", rows, ("namespaces",))
    _require_lists("mirror_preflight_environment_checks", environments=environments)
    _require_strings("mirror_preflight_environment_checks", dns_label=dns_label, dns_label_says=dns_label_says)
    return [
        *_one_of("mirror_environment", environment, environments),
        *_namespaces(rows, dns_label, dns_label_says),
    ]


# tasks/mesh_api.yml: role mirror_gateway_api renders the gateway-api services, mirror_istio the others.


def _mesh_apis(rows: Rows, mesh_apis: list[Any]) -> list[str]:
    return [message for row in rows["mesh_apis"] for message in _one_of(row["path"], row["value"], mesh_apis)]


def _gateway_api_hosts(rows: Rows) -> list[str]:
    # Gateway API routes to Services: a mirror target is a version of the service (a Service
    # <name>-<subset>), never a host of another service.
    return [
        f"{mirror['path']}.host = {to_json(mirror['host'])}: must be left out for a gateway-api service, which "
        "mirrors to its own versions (the Service <name>-<subset>), not to another host; or render this service "
        "with mesh_api: istio"
        for row in rows["gateway_apis"]
        for mirror in row["mirror_hosts"]
    ]


def _gateway_api_matches(rows: Rows, match_keys: list[Any]) -> list[str]:
    # An HTTPRouteMatch holds path, headers and queryParams (method is the ramp's: GET and HEAD
    # unless mirror_all_methods). Istio's keys (uri, headers as a map) would be refused by the API server.
    return [
        f"{match['path']} = {to_json(match['value'])}: must be a Gateway API HTTPRouteMatch for a gateway-api "
        f"service, with keys among {_joined(match_keys)} and headers/queryParams as lists of {{name, value, type}}"
        + ("" if match["all_methods"] else "; method is set by the ramp (GET and HEAD) unless mirror_all_methods")
        for row in rows["gateway_apis"]
        for match in row["bad_matches"]
    ]


def mirror_preflight_mesh_api_checks(rows: Any, mesh_apis: Any, http_route_match_keys: Any) -> list[str]:
    """The message of every failed check of tasks/mesh_api.yml: every mesh API is a known one, a
    gateway-api service's mirrors name no host, its mirror_match entries are HTTPRouteMatch entries."""
    _require_rows("mirror_preflight_mesh_api_checks", rows, ("mesh_apis", "gateway_apis"))
    _require_lists("mirror_preflight_mesh_api_checks", mesh_apis=mesh_apis, http_route_match_keys=http_route_match_keys)
    return [*_mesh_apis(rows, mesh_apis), *_gateway_api_hosts(rows), *_gateway_api_matches(rows, http_route_match_keys)]


# tasks/thresholds.yml


def _threshold_values(rows: Rows) -> list[str]:
    failures = []
    for row in rows["thresholds"]:
        is_ratio = row["key"] == "error_ratio"
        for severity in ("warning", "critical"):
            value = row["value"].get(severity)
            if not (_is_number(value) and value >= 0 and (not is_ratio or value <= 1)):
                failures.append(
                    f"{row['path']}.{severity} = {to_json(value)}: must be a number of at least 0"
                    + (" and at most 1 (a ratio)" if is_ratio else "")
                )
    return failures


def _threshold_order(rows: Rows) -> list[str]:
    # Only two numbers are compared (a boolean too, as Jinja's number test takes it): the check
    # above reports any other value.
    return [
        f"{row['path']} = {to_json(thresholds)}: warning ({warning}) must not be above critical ({critical})"
        for row in rows["thresholds"]
        if isinstance(warning := (thresholds := row["value"]).get("warning"), Number)
        and isinstance(critical := thresholds.get("critical"), Number)
        and not warning <= critical
    ]


def _durations(rows: Rows, duration: str, duration_says: str) -> list[str]:
    return [
        f"{row['path']} = {to_json(row['value'])}: must be {duration_says}"
        for row in rows["durations"]
        if not (isinstance(row["value"], str) and match(row["value"], duration))
    ]


def mirror_preflight_threshold_checks(rows: Any, duration: Any, duration_says: Any) -> list[str]:
    """The message of every failed check of tasks/thresholds.yml: every threshold is a number of at
    least 0 (an error ratio at most 1), no warning is above its critical, every duration is a Go /
    Istio duration."""
    _require_rows("mirror_preflight_threshold_checks", rows, ("thresholds", "durations"))
    _require_strings("mirror_preflight_threshold_checks", duration=duration, duration_says=duration_says)
    return [*_threshold_values(rows), *_threshold_order(rows), *_durations(rows, duration, duration_says)]


# tasks/proxy.yml


def _fault_in_prod(environment: Any, fault: Mapping[str, Any]) -> list[str]:
    if not (environment == "prod" and _is_on(fault.get("enabled"))):
        return []
    return [
        f"mirror_proxy.fault.enabled = {to_json(fault.get('enabled'))}: must be false in prod; fault injection is "
        "for test environments (local, dev, staging)"
    ]


def _fault_percents(fault: Mapping[str, Any]) -> list[str]:
    percents = [
        (f"mirror_proxy.fault.{kind}.percent", settings.get("percent"))
        for kind in ("delay", "abort")
        if isinstance(settings := fault.get(kind), Mapping)
    ]
    return [
        f"{path} = {to_json(value)}: must be a number from 0 to 100 (fractions allowed)"
        for path, value in percents
        if value is not None and not (_is_number(value) and 0 <= value <= 100)
    ]


def _fault_status(fault: Mapping[str, Any]) -> list[str]:
    abort = fault.get("abort")
    if not (isinstance(abort, Mapping) and "http_status" in abort):
        return []
    status = abort["http_status"]
    if _is_whole_number(status) and 200 <= status <= 599:
        return []
    return [f"mirror_proxy.fault.abort.http_status = {to_json(status)}: must be an HTTP status from 200 to 599"]


def _envoy_durations(rows: Rows, envoy_duration: str, envoy_duration_says: str) -> list[str]:
    failures = []
    for row in rows["envoy_durations"]:
        value, minimum = row["value"], row["minimum"]
        if isinstance(value, str) and match(value, envoy_duration):
            seconds = float(value[:-1])
            if seconds >= minimum if row["inclusive"] else seconds > minimum:
                continue
        bound = f"{'at least ' if row['inclusive'] else 'above '}{minimum}s"
        failures.append(
            f"{row['path']} = {to_json(value)}: must be an Envoy duration of {bound}: {envoy_duration_says}"
        )
    return failures


def _gateway_hpa(hpa: Mapping[str, Any]) -> list[str]:
    if not _is_on(hpa.get("enabled")):
        return []
    min_replicas, max_replicas, cpu = (hpa.get(key) for key in ("min_replicas", "max_replicas", "cpu_utilization"))
    checks = (
        ("min_replicas", _is_whole_number(min_replicas) and min_replicas >= 1, "a whole number of at least 1"),
        (
            "max_replicas",
            _is_whole_number(max_replicas)
            and max_replicas >= 1
            and (not isinstance(min_replicas, Number) or max_replicas >= min_replicas),
            f"a whole number of at least 1 and of at least min_replicas ({_rendered(min_replicas)})",
        ),
        ("cpu_utilization", _is_whole_number(cpu) and 1 <= cpu <= 100, "a whole percentage from 1 to 100"),
    )
    return [
        f"mirror_gateway_hpa.{key} = {to_json(hpa.get(key))}: must be {allowed}"
        for key, ok, allowed in checks
        if not ok
    ]


def mirror_preflight_proxy_checks(
    rows: Any,
    environment: Any,
    fault: Any,
    envoy_duration: Any,
    envoy_duration_says: Any,
    monitoring: Any,
    monitoring_kinds: Any,
    gateway_hpa: Any,
) -> list[str]:
    """The message of every failed check of tasks/proxy.yml: no fault injection in prod, the fault's
    percents and HTTP status, the Envoy durations, the monitoring kind, the gateway autoscaler."""
    _require_rows("mirror_preflight_proxy_checks", rows, ("envoy_durations",))
    _require_strings(
        "mirror_preflight_proxy_checks", envoy_duration=envoy_duration, envoy_duration_says=envoy_duration_says
    )
    _require_lists("mirror_preflight_proxy_checks", monitoring_kinds=monitoring_kinds)
    # The argument spec has made mirror_monitoring and mirror_gateway_hpa mappings, and
    # __mirror_preflight_fault is {} where the fault is absent or not a mapping.
    for name, value in (("fault", fault), ("monitoring", monitoring), ("gateway_hpa", gateway_hpa)):
        if not isinstance(value, Mapping):
            raise AnsibleFilterError(f"mirror_preflight_proxy_checks: {name} = {value!r}: must be a mapping")
    return [
        *_fault_in_prod(environment, fault),
        *_fault_percents(fault),
        *_fault_status(fault),
        *_envoy_durations(rows, envoy_duration, envoy_duration_says),
        *_one_of("mirror_monitoring.kind", monitoring.get("kind"), monitoring_kinds),
        *_gateway_hpa(gateway_hpa),
    ]


# tasks/ramp.yml


def _step_problems(step_problems: list[Mapping[str, Any]]) -> list[str]:
    # The rows of filter mirror_ramp_step_problems: the ramp engine's own parsers answered.
    return [f"{row['path']} = {to_json(row['value'])}: {row['says']}" for row in step_problems]


def _driver_percents(rows: Rows, driver: Any, resolutions: Mapping[str, Any]) -> list[str]:
    # The driver writes the percent as it can say it: envoy's runtime_fraction counts millionths,
    # so a step of 0.12345 would pass every other check and fail only when the ramp wrote it.
    resolution = resolutions.get(driver) if isinstance(driver, str) else None
    if resolution is None:
        return []
    failures = []
    for row in rows["percents"]:
        steps = row["value"] / resolution
        # Jinja's round: Python's, to the even number.
        if abs(steps - round(steps, 0)) >= 1e-6:
            below, above = (round(float(to_step(steps)) * resolution, 10) for to_step in (floor, ceil))
            failures.append(
                f"{row['path']} = {to_json(row['value'])}: must be a multiple of {resolution} with mirror_ramp_driver "
                f"{driver} (the finest percent it can set), such as {below} or {above}"
            )
    return failures


def mirror_preflight_ramp_checks(
    rows: Any, step_problems: Any, driver: Any, driver_resolutions: Any, mode: Any, modes: Any
) -> list[str]:
    """The message of every failed check of tasks/ramp.yml: every value of the steps that the ramp
    refuses (the rows of filter mirror_ramp_step_problems), the driver is a known one, every
    percent is one the driver can set, the mode is a known one."""
    _require_rows("mirror_preflight_ramp_checks", rows, ("percents",))
    _require_lists("mirror_preflight_ramp_checks", step_problems=step_problems, modes=modes)
    if not isinstance(driver_resolutions, Mapping):
        raise AnsibleFilterError(
            f"mirror_preflight_ramp_checks: driver_resolutions = {driver_resolutions!r}: must be a mapping"
        )
    return [
        *_step_problems(step_problems),
        *_one_of("mirror_ramp_driver", driver, list(driver_resolutions)),
        *_driver_percents(rows, driver, driver_resolutions),
        *_one_of("mirror_ramp_mode", mode, modes),
    ]


class FilterModule:
    def filters(self):
        return {
            "mirror_preflight_checks": mirror_preflight_checks,
            "mirror_preflight_environment_checks": mirror_preflight_environment_checks,
            "mirror_preflight_mesh_api_checks": mirror_preflight_mesh_api_checks,
            "mirror_preflight_threshold_checks": mirror_preflight_threshold_checks,
            "mirror_preflight_proxy_checks": mirror_preflight_proxy_checks,
            "mirror_preflight_ramp_checks": mirror_preflight_ramp_checks,
        }
