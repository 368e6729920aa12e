"""The filter mirror_preflight_checks as role mirror_preflight calls it: over the rows of
filter mirror_preflight_rows, each check's message for a failing row held to a message written
out by hand (the words the Jinja checks gave), the messages in the order of the checks, then of
the rows, and a good inventory with no message."""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from tests.support.ansible_run import REPO_ROOT


def _filter(module_name: str, filter_name: str) -> Callable[..., Any]:
    spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / "filter_plugins" / f"{module_name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()[filter_name]


mirror_preflight_rows = _filter("mirror_preflight_rows", "mirror_preflight_rows")
mirror_preflight_checks = _filter("mirror_preflight_checks", "mirror_preflight_checks")

# The rule's pattern and words, from the one place the role holds them.
ROLE_VARS = yaml.safe_load((REPO_ROOT / "roles" / "mirror_preflight" / "vars" / "main.yml").read_text())
DNS_LABEL = ROLE_VARS["__mirror_preflight_dns_label"]
SAYS = (
    "a DNS-1123 label: at most 63 characters, lowercase letters, digits and '-', starting and ending with a "
    "letter or digit"
)

PRIMARY = {"name": "primary", "labels": {"version": "v1"}, "workload": "reviews-v1"}
CANDIDATE = {"name": "candidate", "labels": {"version": "v2"}, "workload": "reviews-v2"}
BASELINE = {"name": "baseline", "labels": {"version": "v1-baseline"}, "workload": "reviews-baseline"}
GOOD_SERVICE = {
    "name": "reviews",
    "port": 8080,
    "grpc": {"port": 50051},
    "subsets": [PRIMARY, CANDIDATE, BASELINE],
    "primary_subset": "primary",
    "mirrors": [{"subset": "candidate"}],
    "baseline_subset": "baseline",
    "mirror_percent": 0.5,
    "retries": {"attempts": 0, "per_try_timeout": "2s"},
}


def failures(services: list[Any]) -> list[str]:
    rows = mirror_preflight_rows(services, alert_for={"warning": "5m", "critical": "1m"})
    return mirror_preflight_checks(rows, dns_label=DNS_LABEL, dns_label_says=SAYS)


def changed(key: str, value: Any, *, subset: int | None = None) -> list[dict[str, Any]]:
    """The good service with `key` set to `value` (a subset's key with `subset`); value ... drops it."""
    service = copy.deepcopy(GOOD_SERVICE)
    holder = service if subset is None else service["subsets"][subset]
    if value is ...:
        del holder[key]
    else:
        holder[key] = value
    return [service]


def test_the_rule_words_are_the_roles() -> None:
    assert ROLE_VARS["__mirror_preflight_dns_label_says"] == SAYS


def test_a_good_inventory_has_no_failure() -> None:
    second = {**copy.deepcopy(GOOD_SERVICE), "name": "ratings"}
    without_options = {key: GOOD_SERVICE[key] for key in ("name", "port", "subsets", "primary_subset", "mirrors")}
    assert failures([GOOD_SERVICE, second, {**without_options, "name": "details"}]) == []


S0 = "mirror_services[0]"
BASELINE_WORDS = (
    "the subset of the pods that run the primary's version and receive the mirrored share as the candidate's baseline"
)
CASES = [
    ("no-services", [], ["mirror_services = []: must list at least one service"]),
    (
        "service-name-not-a-label",
        changed("name", "Reviews"),
        [f'{S0}.name = "Reviews": must be {SAYS}, and unique among the services'],
    ),
    ("service-name-absent", changed("name", ...), [f"{S0}.name = null: must be {SAYS}, and unique among the services"]),
    (
        "service-name-longer-than-63",
        changed("name", "r" * 64),
        [f'{S0}.name = "{"r" * 64}": must be {SAYS}, and unique among the services'],
    ),
    (
        # to_json writes what is not ASCII as \u escapes.
        "service-name-not-ascii",
        changed("name", "rëviews"),
        [f'{S0}.name = "r\\u00ebviews": must be {SAYS}, and unique among the services'],
    ),
    (
        "service-name-taken",
        [GOOD_SERVICE, GOOD_SERVICE],
        [f'mirror_services[1].name = "reviews": must be {SAYS}, and unique among the services'],
    ),
    (
        "mirror-percent-above-100",
        changed("mirror_percent", 150),
        [f"{S0}.mirror_percent = 150: must be a number from 0 to 100 (fractions such as 0.5 allowed)"],
    ),
    (
        "mirror-percent-a-boolean",
        changed("mirror_percent", True),
        [f"{S0}.mirror_percent = true: must be a number from 0 to 100 (fractions such as 0.5 allowed)"],
    ),
    (
        "mirror-percent-a-string",
        changed("mirror_percent", "ten"),
        [f'{S0}.mirror_percent = "ten": must be a number from 0 to 100 (fractions such as 0.5 allowed)'],
    ),
    (
        "mirror-percent-null",
        changed("mirror_percent", None),
        [f"{S0}.mirror_percent = null: must be a number from 0 to 100 (fractions such as 0.5 allowed)"],
    ),
    ("port-zero", changed("port", 0), [f"{S0}.port = 0: must be a whole number from 1 to 65535"]),
    ("port-a-fraction", changed("port", 80.5), [f"{S0}.port = 80.5: must be a whole number from 1 to 65535"]),
    ("port-absent", changed("port", ...), [f"{S0}.port = null: must be a whole number from 1 to 65535"]),
    (
        "grpc-port-above-65535",
        changed("grpc", {"port": 65536}),
        [f"{S0}.grpc.port = 65536: must be a whole number from 1 to 65535"],
    ),
    (
        "subsets-empty",
        changed("subsets", []),
        [
            f"{S0}.subsets = []: must be a non-empty list of {{name, labels, workload}}",
            f'{S0}.primary_subset = "primary": must be one of the service\'s subsets ()',
            f'{S0}.mirrors[0].subset = "candidate": must be one of the service\'s subsets () other than the primary '
            'subset "primary"',
            f'{S0}.baseline_subset = "baseline": must be one of the service\'s subsets () other than the primary '
            f'subset "primary" and the mirror subsets (candidate): {BASELINE_WORDS}',
        ],
    ),
    (
        "subset-name-not-a-label",
        changed("name", "Candidate", subset=1),
        [
            f'{S0}.subsets[1].name = "Candidate": must be {SAYS}, and unique among the subsets of the service',
            f'{S0}.mirrors[0].subset = "candidate": must be one of the service\'s subsets (primary, Candidate, '
            'baseline) other than the primary subset "primary"',
        ],
    ),
    (
        "subset-name-taken",
        changed("name", "primary", subset=2),
        [
            f'{S0}.subsets[2].name = "primary": must be {SAYS}, and unique among the subsets of the service',
            f'{S0}.baseline_subset = "baseline": must be one of the service\'s subsets (primary, candidate, primary) '
            f'other than the primary subset "primary" and the mirror subsets (candidate): {BASELINE_WORDS}',
        ],
    ),
    (
        "subset-labels-empty",
        changed("labels", {}, subset=1),
        [f"{S0}.subsets[1].labels = {{}}: must be a non-empty mapping of pod labels, such as {{version: v2}}"],
    ),
    (
        "subset-labels-a-list",
        changed("labels", ["version"], subset=1),
        [f'{S0}.subsets[1].labels = ["version"]: must be a non-empty mapping of pod labels, such as {{version: v2}}'],
    ),
    (
        "subset-workload-not-a-label",
        changed("workload", "Reviews_v2", subset=1),
        [
            f'{S0}.subsets[1].workload = "Reviews_v2": must be the name of the subset\'s workload (Deployment), as '
            f"the gates query it in destination_workload, and {SAYS}"
        ],
    ),
    (
        "subset-workload-absent",
        changed("workload", ..., subset=0),
        [
            f"{S0}.subsets[0].workload = null: must be the name of the subset's workload (Deployment), as the gates "
            f"query it in destination_workload, and {SAYS}"
        ],
    ),
    (
        "primary-subset-unknown",
        changed("primary_subset", "main"),
        [f'{S0}.primary_subset = "main": must be one of the service\'s subsets (primary, candidate, baseline)'],
    ),
    (
        # The Jinja check failed as a whole on the subset without a name; the name check reports it.
        "primary-subset-absent-and-a-subset-without-a-name",
        [
            {
                **{key: value for key, value in GOOD_SERVICE.items() if key != "primary_subset"},
                "subsets": [*GOOD_SERVICE["subsets"], {"labels": {"version": "v3"}, "workload": "reviews-v3"}],
            }
        ],
        [
            f"{S0}.subsets[3].name = null: must be {SAYS}, and unique among the subsets of the service",
            f"{S0}.primary_subset = null: must be one of the service's subsets (primary, candidate, baseline)",
        ],
    ),
    (
        # The Jinja check of the baseline failed as a whole on the absent mirrors; the mirrors check reports them.
        "baseline-subset-and-no-mirrors",
        changed("mirrors", ...),
        [f"{S0}.mirrors = null: must be a non-empty list of {{subset}}"],
    ),
    ("mirrors-empty", changed("mirrors", []), [f"{S0}.mirrors = []: must be a non-empty list of {{subset}}"]),
    ("mirrors-absent", changed("mirrors", ...), [f"{S0}.mirrors = null: must be a non-empty list of {{subset}}"]),
    (
        "mirror-subset-is-the-primary",
        changed("mirrors", [{"subset": "candidate"}, {"subset": "primary"}]),
        [
            f'{S0}.mirrors[1].subset = "primary": must be one of the service\'s subsets (primary, candidate, '
            'baseline) other than the primary subset "primary"'
        ],
    ),
    (
        "baseline-subset-is-a-mirror",
        changed("baseline_subset", "candidate"),
        [
            f'{S0}.baseline_subset = "candidate": must be one of the service\'s subsets (primary, candidate, '
            f'baseline) other than the primary subset "primary" and the mirror subsets (candidate): {BASELINE_WORDS}'
        ],
    ),
    (
        "baseline-subset-not-a-string",
        changed("baseline_subset", ["baseline"]),
        [
            f'{S0}.baseline_subset = ["baseline"]: must be one of the service\'s subsets (primary, candidate, '
            f'baseline) other than the primary subset "primary" and the mirror subsets (candidate): {BASELINE_WORDS}'
        ],
    ),
    (
        "baseline-labels-select-the-primarys-pods",
        changed("labels", {"version": "v1", "track": "baseline"}, subset=2),
        [
            f'{S0}.baseline_subset = "baseline": its labels {{"version": "v1", "track": "baseline"}} must set a label '
            'that the primary subset\'s labels {"version": "v1"} set to another value (such as version: '
            "v1-baseline), or one subset selects the other's pods"
        ],
    ),
    (
        "retries-not-a-mapping",
        changed("retries", "3"),
        [f'{S0}.retries = "3": must be a mapping {{attempts, per_try_timeout, retry_on}}'],
    ),
    (
        "retry-attempts-negative",
        changed("retries", {"attempts": -1}),
        [f"{S0}.retries.attempts = -1: must be a whole number of at least 0"],
    ),
    (
        "retry-attempts-a-boolean",
        changed("retries", {"attempts": True}),
        [f"{S0}.retries.attempts = true: must be a whole number of at least 0"],
    ),
    (
        "retry-attempts-absent",
        changed("retries", {"per_try_timeout": "2s"}),
        [f"{S0}.retries.attempts = null: must be a whole number of at least 0"],
    ),
]


@pytest.mark.parametrize(("services", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_each_check_says_what_the_jinja_check_said(services: list[Any], expected: list[str]) -> None:
    assert failures(services) == expected


def test_messages_follow_the_checks_then_the_rows() -> None:
    first = {**copy.deepcopy(GOOD_SERVICE), "name": "A", "port": 0}
    second = {**copy.deepcopy(GOOD_SERVICE), "name": "B", "retries": "3", "mirrors": []}
    second["subsets"][1]["labels"] = {}
    assert failures([first, second]) == [
        f'mirror_services[0].name = "A": must be {SAYS}, and unique among the services',
        f'mirror_services[1].name = "B": must be {SAYS}, and unique among the services',
        "mirror_services[0].port = 0: must be a whole number from 1 to 65535",
        "mirror_services[1].subsets[1].labels = {}: must be a non-empty mapping of pod labels, such as {version: v2}",
        "mirror_services[1].mirrors = []: must be a non-empty list of {subset}",
        'mirror_services[1].retries = "3": must be a mapping {attempts, per_try_timeout, retry_on}',
    ]


@pytest.mark.parametrize(
    ("rows", "dns_label", "says"),
    [
        ([], DNS_LABEL, "rows = []: must be the rows of filter mirror_preflight_rows"),
        ({"services": []}, DNS_LABEL, "must be the rows of filter mirror_preflight_rows"),
        (
            {
                "services": [{"path": "mirror_services[0]", "svc": "reviews"}],
                **{kind: [] for kind in ("subsets", "mirrors", "baselines", "ports")},
            },
            DNS_LABEL,
            "every services row must hold its service as a mapping",
        ),
        ({kind: [] for kind in ("services", "subsets", "mirrors", "baselines", "ports")}, None, "dns_label = None"),
    ],
    ids=["not-a-mapping", "a-kind-missing", "service-not-a-mapping", "no-pattern"],
)
def test_the_filter_refuses_what_is_not_its_rows(rows: Any, dns_label: Any, says: str) -> None:
    with pytest.raises(AnsibleFilterError, match="mirror_preflight_checks") as raised:
        mirror_preflight_checks(rows, dns_label=dns_label, dns_label_says=SAYS)
    assert says in str(raised.value)
