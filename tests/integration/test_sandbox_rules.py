"""The sandbox's Prometheus loads the alert rules whatever the order (issue 17, section 5).

The README's order: the sandbox is started before anything is rendered, then rollout.yml (its
render.yml) renders the rules. The start renders the rules itself when they are missing, and a
render that changes them reloads the running Prometheus; a render that changes nothing, or one in
check mode, does not.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator

import pytest

from tests.integration.test_sandbox import Sandbox, http_json, start_sandbox, stop_sandbox
from tests.support.ansible_run import PlaybookRun, recap_counts, run_playbook

pytestmark = pytest.mark.slow

GROUP = "mirror-demo-service"
# inventories/local/group_vars/all/thresholds.yml, with the critical 5xx ratio changed.
THRESHOLDS = {"error_ratio": {"warning": 0.01, "critical": 0.05}, "p99_latency_ms": {"warning": 500, "critical": 1000}}
NEW_CRITICAL = 0.07


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox started from a clean build dir: nothing rendered before it."""
    build = tmp_path_factory.mktemp("build")
    assert not (build / "prometheus").exists()
    sb = start_sandbox(build, load_seconds=0)
    try:
        yield sb
    finally:
        stop_sandbox(sb)


def loaded_groups(sandbox: Sandbox) -> dict[str, dict]:
    """Prometheus's loaded rule groups by name (GET /api/v1/rules)."""
    return {g["name"]: g for g in http_json(f"{sandbox.info['prometheus_url']}/api/v1/rules")["data"]["groups"]}


def critical_error_ratio_query(sandbox: Sandbox) -> str:
    (rule,) = [
        rule
        for rule in loaded_groups(sandbox)[GROUP]["rules"]
        if rule["name"] == "MirrorErrorRatioHigh" and rule["labels"]["severity"] == "critical"
    ]
    return rule["query"]


def last_reload(sandbox: Sandbox) -> float:
    """When Prometheus last loaded its configuration (and with it the rule files)."""
    with urllib.request.urlopen(f"{sandbox.info['prometheus_url']}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^prometheus_config_last_reload_success_timestamp_seconds (\S+)$", text, re.MULTILINE)
    assert match, "Prometheus does not export its last reload time"
    return float(match.group(1))


def render(sandbox: Sandbox, critical: float, *, check: bool = False) -> PlaybookRun:
    thresholds = {**THRESHOLDS, "error_ratio": {**THRESHOLDS["error_ratio"], "critical": critical}}
    run = run_playbook(
        "playbooks/render.yml", extra_vars={**sandbox.extra_vars, "mirror_thresholds": thresholds}, check=check
    )
    assert run.returncode == 0, run.output[-4000:]
    return run


def test_started_before_any_render_loads_the_rules(sandbox: Sandbox) -> None:
    rules_file = sandbox.build / "prometheus" / "mirror-rules.yml"
    assert rules_file.is_file(), "the start did not render the alert rules"
    config = (sandbox.build / "sandbox" / "prometheus" / "prometheus.yaml").read_text()
    assert f'rule_files: ["{rules_file}"]' in config, config
    groups = loaded_groups(sandbox)
    assert GROUP in groups, f"Prometheus loaded no group {GROUP}: {sorted(groups)}"
    assert groups[GROUP]["file"] == str(rules_file)
    assert {rule["name"] for rule in groups[GROUP]["rules"]} == {
        "MirrorErrorRatioHigh",
        "MirrorLatencyP99High",
        "MirrorNoTraffic",
    }
    assert "> 0.05" in critical_error_ratio_query(sandbox)
    # Started again: the rules are there, nothing changes.
    again = sandbox.run("started")
    assert again.returncode == 0, again.output[-4000:]
    assert recap_counts(again.output)["changed"] == 0, again.output[-4000:]


def test_a_render_that_changes_the_rules_reloads_prometheus(sandbox: Sandbox) -> None:
    before = last_reload(sandbox)
    # Check mode: nothing written, nothing reloaded.
    checked = render(sandbox, NEW_CRITICAL, check=True)
    assert "> 0.05" in critical_error_ratio_query(sandbox)
    assert last_reload(sandbox) == before, f"check mode reloaded Prometheus:\n{checked.output[-3000:]}"

    changed = render(sandbox, NEW_CRITICAL)
    assert recap_counts(changed.output)["changed"] > 0
    # The play waited for the reload: the new expression is loaded when it ends.
    assert f"> {NEW_CRITICAL}" in critical_error_ratio_query(sandbox), changed.output[-4000:]
    reloaded = last_reload(sandbox)
    assert reloaded > before

    # The same render again: no change, no reload.
    same = render(sandbox, NEW_CRITICAL)
    assert recap_counts(same.output)["changed"] == 0, same.output[-4000:]
    assert last_reload(sandbox) == reloaded


def test_a_render_for_a_stopped_sandbox_reloads_nothing(sandbox: Sandbox) -> None:
    stop_sandbox(sandbox)
    # Nothing to reload: the render succeeds, and the next start loads the rules it wrote.
    run = render(sandbox, THRESHOLDS["error_ratio"]["critical"])
    assert recap_counts(run.output)["changed"] > 0, "the rules file should have changed back"
