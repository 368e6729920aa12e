"""`ansible-playbook rollout.yml` on the local sandbox, end to end, the way `make demo` runs it.

A real Envoy mirrors real load to a real candidate, Prometheus scrapes both backends, the ramp's
envoy driver moves the mirror: the ramp completes on a healthy candidate; once the candidate
fails, the next run removes the mirror, names the gate, and the candidate stops receiving
mirrored requests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_sandbox import Sandbox, alive, http_json, start_sandbox, stop_sandbox
from tests.support.ansible_run import PlaybookRun, recap_counts, run_playbook

pytestmark = pytest.mark.slow

SERVICE = "demo-service"
# Shorter than the inventory's holds; enough requests at 1% of 100 requests/s within seconds.
RAMP = {
    "mirror_ramp_steps": [
        {"percent": 1, "hold": "3s"},
        {"percent": 5, "hold": "3s"},
        {"percent": 10, "hold": "3s"},
        {"percent": 20, "hold": "3s"},
    ],
    "mirror_ramp_min_requests": 10,
    "mirror_ramp_window": "20s",
    "mirror_ramp_poll_interval": "1s",
    "mirror_ramp_deadline": "3m",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, dict]]:
    build = tmp_path_factory.mktemp("build")
    reports = tmp_path_factory.mktemp("reports")
    # The alert rules must exist before Prometheus starts: render first, as `make demo` does.
    render = run_playbook("playbooks/render.yml", extra_vars={"mirror_build_dir": str(build)})
    assert render.returncode == 0, render.output[-4000:]
    sandbox = start_sandbox(build, load_seconds=300, rps=100)  # the load of the demo
    extra = {
        **sandbox.extra_vars,
        **RAMP,
        "mirror_reports_dir": str(reports),
        "mirror_prometheus": {"url": f"http://127.0.0.1:{sandbox.ports['prometheus']}", "timeout": "5s"},
    }
    sandbox.extra_vars = extra
    try:
        yield sandbox, {"reports": reports}
    finally:
        stop_sandbox(sandbox)


def rollout(sandbox: Sandbox) -> PlaybookRun:
    run = run_playbook("rollout.yml", extra_vars=sandbox.extra_vars, timeout=400)
    assert run.returncode == 0, run.output[-6000:]
    return run


def ramp_task(output: str) -> str:
    """The output of the ramp task of rollout.yml."""
    return output.split("TASK [mirror_ramp : Mirror of each service: ramp]", 1)[1].split("PLAY RECAP", 1)[0]


def state(sandbox: Sandbox) -> dict:
    return json.loads((sandbox.build / "sandbox" / "state" / f"{SERVICE}.json").read_text())["state"]


def live_percent(sandbox: Sandbox) -> float:
    return sandbox.live_percent()


def candidate_5xx(sandbox: Sandbox) -> float:
    workload = sandbox.info["candidate"]["workload"]
    query = f'sum(increase(istio_requests_total{{destination_workload="{workload}",response_code=~"5.."}}[20s]))'
    answer = http_json(f"{sandbox.info['prometheus_url']}/api/v1/query?{urllib.parse.urlencode({'query': query})}")
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def test_healthy_candidate_ramp_completes_then_failing_candidate_is_cut_off(stack: tuple[Sandbox, dict]) -> None:
    sandbox, paths = stack
    assert live_percent(sandbox) == 0

    # Act 1: healthy. One watch-mode run walks every step.
    first = rollout(sandbox)
    assert recap_counts(first.output)["changed"] >= 1
    for line in ("step 1 of 4: mirroring 1%", "now step 2 of 4 (5%)", "now step 4 of 4 (20%)", "ramp completed"):
        assert line in first.output, first.output[-3000:]
    assert (state(sandbox)["status"], state(sandbox)["percent"]) == ("completed", 20.0)
    assert live_percent(sandbox) == 20
    before = sandbox.served("candidate", "/load")["count"]
    time.sleep(2)
    assert sandbox.served("candidate", "/load")["count"] > before, "no mirrored load at the candidate at 20%"
    report = paths["reports"] / "local" / f"{SERVICE}.html"
    assert report.exists() and report.with_suffix(".png").stat().st_size > 10_000
    history = report.with_suffix(".jsonl").read_text().splitlines()
    assert {json.loads(line)["percent"] for line in history} >= {1.0, 5.0, 10.0, 20.0}

    # Act 2: the candidate fails half of its requests; once Prometheus has seen it, the next run
    # rolls back.
    sandbox.control("candidate", error_ratio=0.5)
    deadline = time.monotonic() + 30
    while candidate_5xx(sandbox) < 5:
        assert time.monotonic() < deadline, "Prometheus never saw the candidate's 5xx"
        time.sleep(1)
    second = rollout(sandbox)
    assert "rolled back from step 4 (20%), completed: gate failed: " in second.output
    rollback = state(sandbox)["rollback"]
    assert state(sandbox)["status"] == "rolled_back"
    assert rollback["value"] > rollback["threshold"]
    assert f"{rollback['gate']} = " in second.output
    assert live_percent(sandbox) == 0

    # Mirrored traffic at the candidate drops to zero (the primary keeps serving the load).
    settled = sandbox.settled_count("candidate", "/load")
    primary = sandbox.served("primary", "/load")["count"]
    time.sleep(3)
    assert sandbox.served("candidate", "/load")["count"] == settled
    assert sandbox.served("primary", "/load")["count"] > primary

    # A third run keeps the mirror off and changes nothing.
    third = rollout(sandbox)
    assert "ok: [local] demo-service: " in ramp_task(third.output), third.output[-3000:]
    assert live_percent(sandbox) == 0


def test_emergency_stop_with_prometheus_down_holds_until_restart(stack: tuple[Sandbox, dict]) -> None:
    sandbox, _ = stack
    sandbox.control("candidate", error_ratio=0.0)
    scheduled = {**sandbox.extra_vars, "mirror_ramp_mode": "scheduled"}
    scheduled["mirror_ramp_steps"] = [{"percent": 5, "hold": "1h"}, {"percent": 50, "hold": "1h"}]
    restarted = run_playbook("rollout.yml", extra_vars={**scheduled, "restart": True})
    assert restarted.returncode == 0, restarted.output[-4000:]
    assert (state(sandbox)["status"], live_percent(sandbox)) == ("ramping", 5)

    # The on-call engineer stops it while Prometheus is down (the stop asks nothing of it).
    prometheus = sandbox.pids["prometheus"]
    os.kill(prometheus, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while alive(prometheus):
        assert time.monotonic() < deadline, "Prometheus did not stop"
        time.sleep(0.2)
    check = run_playbook("playbooks/emergency-stop.yml", extra_vars=scheduled, check=True)
    assert check.returncode == 0, check.output[-4000:]
    assert "changed: [local] (check mode, nothing written) demo-service: " in check.output
    assert (state(sandbox)["status"], live_percent(sandbox)) == ("ramping", 5), "check mode changed something"
    stop = run_playbook("playbooks/emergency-stop.yml", extra_vars={**scheduled, "reason": "pager: 5xx"})
    assert stop.returncode == 0, stop.output[-4000:]
    assert "emergency stop by " in stop.output and "pager: 5xx; mirror removed" in stop.output
    assert (state(sandbox)["status"], live_percent(sandbox)) == ("stopped", 0)
    assert state(sandbox)["stop"]["reason"] == "pager: 5xx"
    again = run_playbook("playbooks/emergency-stop.yml", extra_vars=scheduled)
    assert recap_counts(again.output)["changed"] == 0

    status = run_playbook("playbooks/status.yml", extra_vars=scheduled)
    assert status.returncode == 0, status.output[-4000:]
    assert re.search(r"demo-service\s+stopped\s+1/2\s+0\s", status.output), status.output[-2000:]

    # Scheduled runs leave it stopped (and need no Prometheus to say so) until restart=true.
    held = run_playbook("rollout.yml", extra_vars=scheduled)
    assert held.returncode == 0, held.output[-4000:]
    assert "ok: [local] demo-service: " in ramp_task(held.output), held.output[-3000:]
    assert (state(sandbox)["status"], live_percent(sandbox)) == ("stopped", 0)


def test_state_file_is_per_service_and_complete_json(stack: tuple[Sandbox, dict]) -> None:
    files = list((stack[0].build / "sandbox" / "state").glob("*.json"))
    assert [f.name for f in files] == [f"{SERVICE}.json"]
    assert not list((stack[0].build / "sandbox" / "state").glob("*.tmp*")), "a temp file was left behind"
    json.loads(files[0].read_text())


def test_render_did_not_write_outside_its_build_dir(stack: tuple[Sandbox, dict]) -> None:
    assert (stack[0].build / "prometheus" / "mirror-rules.yml").exists()
    assert Path(stack[0].info["dir"]).is_relative_to(stack[0].build)
