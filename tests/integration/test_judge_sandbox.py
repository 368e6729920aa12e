"""The judge on the local sandbox, as scripts/demo-judge and the README show it: a candidate
whose latency is 50 % higher than the primary's (log-normal, median 30 ms against 20 ms, the same
spread) passes every gate of the sandbox's inventory, and is rolled back by the latency judge.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.test_sandbox import Sandbox, http_json, start_sandbox, stop_sandbox
from tests.support.ansible_run import PlaybookRun, run_playbook

pytestmark = pytest.mark.slow

SERVICE = "demo-service"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "judge-demo"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    build = tmp_path_factory.mktemp("build")
    render = run_playbook("playbooks/render.yml", extra_vars={"mirror_build_dir": str(build)})
    assert render.returncode == 0, render.output[-4000:]
    stack = start_sandbox(build, load_seconds=300, rps=100)
    stack.extra_vars = {
        **stack.extra_vars,
        "mirror_reports_dir": str(tmp_path_factory.mktemp("reports")),
        "mirror_prometheus": {"url": f"http://127.0.0.1:{stack.ports['prometheus']}", "timeout": "5s"},
    }
    try:
        yield stack
    finally:
        stop_sandbox(stack)


def rollout(sandbox: Sandbox, *files: str, **extra) -> PlaybookRun:
    extra_vars = dict(sandbox.extra_vars)
    for name in files:
        extra_vars.update(yaml.safe_load((EXAMPLE / name).read_text()))
    run = run_playbook("rollout.yml", extra_vars={**extra_vars, **extra}, timeout=300)
    assert run.returncode == 0, run.output[-6000:]
    return run


def state(sandbox: Sandbox) -> dict:
    return json.loads((sandbox.build / "sandbox" / "state" / f"{SERVICE}.json").read_text())["state"]


def test_a_50_percent_slower_candidate_passes_the_old_gates_and_the_judge_rolls_it_back(sandbox: Sandbox) -> None:
    for side, median in (("primary", 20.0), ("candidate", 30.0)):
        http_json(sandbox.info[side]["control_url"], {"latency_median_ms": median, "latency_spread": 0.5, "seed": 7})

    old = rollout(sandbox, "ramp.yml")
    assert (state(sandbox)["status"], state(sandbox)["percent"]) == ("completed", 20.0), old.output[-3000:]
    assert "judge-latency" not in old.output

    # The next run, the judge added: it judges the same mirrored traffic (the step so far).
    judged = rollout(sandbox, "ramp.yml", "judges.yml")
    final = state(sandbox)
    assert final["status"] == "rolled_back", judged.output[-4000:]
    assert final["rollback"]["gate"] == "judge-latency"
    assert "latency shift" in judged.output and "tol 1.1" in judged.output
    shift = final["rollback"]["value"]
    assert 1.2 < shift < 1.9, shift  # the true shift is x1.5
