"""Killed runs and a record that disagrees with the live mirror, with real processes.

- The envoy driver (route file and state file: two writes) on a standalone Envoy 1.40 whose
  routes come from a hand-written route file with one marked route, killed with SIGKILL at each
  write boundary of a raise and of a stop, by a hook in the test's worker (ramp_worker.py), never
  by sleeps: right after the kill the record is never below the mirror Envoy runs (a raise not
  yet confirmed says so), and the next run finishes or reverts the half-done change.
- The istio driver (one write) against the Kubernetes API double: a mirror put back by hand on
  a stopped ramp is removed by the next run, shown by status, and named by the emergency stop.
- ansible-playbook killed while its watch runs: the worker it leaves behind stops ramping.

Prometheus is the scripted stand-in answering 0 to every query (every gate passes at once, no
traffic minimum): only the writes are under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirrorramp.adapter import execute
from mirrorramp.arguments import ARGUMENT_SPEC, RampRequest
from mirrorramp.drivers.envoy import EnvoyDriver
from mirrorramp.model import Step
from mirrorramp.plan import fingerprint
from mirrorramp.state import RampState
from mirrorramp.virtualservice import STATE_ANNOTATION, read_mirror_percent, with_mirror_percent
from tests.fakes.kube_api import KubeApiServer
from tests.fakes.kube_fixtures import kube_api, kube_api_server  # noqa: F401
from tests.integration.test_ramp_istio_races import live, ramp_arguments, request_for, seed
from tests.support.ansible_run import REPO_ROOT, VENV_BIN, ansible_env
from tests.support.driver_envoy import NAME, envoy_without_upstreams
from tests.support.prometheus_server import ScriptedPrometheus, poll_until, vector_reply

pytestmark = pytest.mark.slow

SERVICE = "demo-service"
PERCENTS = (1.0, 5.0, 10.0, 20.0)
STEPS = [{"percent": p, "hold": "1h"} for p in PERCENTS]
PLAN = tuple(Step(p, 3600.0) for p in PERCENTS)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[ScriptedPrometheus]:
    scripted = ScriptedPrometheus()
    scripted.default = vector_reply("0")
    scripted.start()
    yield scripted
    scripted.stop()


@pytest.fixture
def envoy_options(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The envoy driver's options for a fresh Envoy running the hand-written route file (no mirror
    yet) and an empty state directory; the Envoy is stopped by its PID afterwards."""
    envoy = envoy_without_upstreams(tmp_path)
    try:
        yield {
            "route_path": str(envoy.route_path),
            "route_config_name": NAME,
            "admin_url": envoy.admin_url,
            "state_dir": str(tmp_path / "state"),
            "confirm_timeout": 2.0,
            "http_timeout": 2.0,
        }
    finally:
        envoy.stop()


def envoy_arguments(envoy_options: dict[str, Any], prometheus: ScriptedPrometheus, **overrides: Any) -> dict[str, Any]:
    """The task of the service on its Envoy, every default filled in."""
    arguments = {name: spec.get("default") for name, spec in ARGUMENT_SPEC.items()}
    arguments.update(
        service=SERVICE,
        namespace="local",
        environment="local",
        driver="envoy",
        envoy=envoy_options,
        steps=STEPS,
        gates={"thresholds": [{"name": "mirror-5xx-ratio", "metric": "error_ratio", "operator": "<", "value": 0.05}]},
        min_requests=0,
        window="5s",
        workloads={"primary": "demo-service-v1", "mirror": ["demo-service-v2"]},
        prometheus={"url": prometheus.url, "timeout": "2s", "retries": 1, "validate_certs": True},
    )
    arguments.update(overrides)
    return arguments


def put(driver: EnvoyDriver, state: RampState, percent: float) -> None:
    """Set Envoy's mirror and the state file as a finished run leaves them."""
    driver.write(driver.read(), state, percent, dry_run=False)


def at_step(index: int, held_for: float) -> RampState:
    return RampState(
        status="ramping",
        step_index=index,
        percent=PERCENTS[index],
        step_started_at=time.time() - held_for,
        plan=fingerprint(PLAN),
    )


def killed_at(tmp_path: Path, arguments: dict[str, Any], boundary: str) -> str:
    """Run the ramp in a worker that kills itself at `boundary`; its output."""
    path = tmp_path / "arguments.json"
    path.write_text(json.dumps(arguments))
    worker = subprocess.run(
        [sys.executable, "-m", "tests.integration.ramp_worker", str(path), boundary],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stdout + worker.stderr
    return worker.stdout


def assert_record_at_or_above_live(driver: EnvoyDriver) -> RampState:
    """The promise of the write order: what Envoy runs never exceeds what the record allows; a
    raise whose intent is recorded but not confirmed is marked so."""
    snapshot = driver.read()  # the percent from Envoy's config_dump, the state from the state file
    state = snapshot.state
    allowed = state.percent if state.status in ("ramping", "paused", "completed") else 0.0
    assert snapshot.percent <= allowed, f"live {snapshot.percent}% above the record {state}"
    confirmed = state.unconfirmed["percent"] if state.unconfirmed else allowed
    assert snapshot.percent <= confirmed or state.unconfirmed is not None
    return state


# -- the envoy driver killed at each write boundary of a raise -----------------------------------


@pytest.mark.parametrize(
    ("boundary", "unconfirmed", "live_after_kill", "next_event"),
    [
        # 1st write: the intent (step 2, 5%, unconfirmed) is recorded; Envoy still at 1%.
        pytest.param("write:1", True, 1.0, "revert", id="after-the-intent"),
        # 2nd write: Envoy runs 5%, the state file not written.
        pytest.param("inside-write:2", True, 5.0, "confirm", id="proxy-raised-state-not-written"),
        # 2nd write done, read back, the confirmation not written.
        pytest.param("write:2", True, 5.0, "confirm", id="before-the-confirmation"),
        # Confirmed: nothing half-done.
        pytest.param("write:3", False, 5.0, None, id="after-the-confirmation"),
    ],
)
def test_a_raise_killed_at_each_boundary_is_finished_or_reverted_by_the_next_run(
    envoy_options: dict[str, Any],
    prometheus: ScriptedPrometheus,
    tmp_path: Path,
    boundary: str,
    unconfirmed: bool,
    live_after_kill: float,
    next_event: str | None,
) -> None:
    driver = EnvoyDriver.from_options(SERVICE, envoy_options)
    put(driver, at_step(0, held_for=7200), 1.0)
    arguments = envoy_arguments(envoy_options, prometheus)
    killed_at(tmp_path, arguments, boundary)

    state = assert_record_at_or_above_live(driver)
    assert (state.unconfirmed is not None, driver.read().percent) == (unconfirmed, live_after_kill)

    result = execute(RampRequest.from_arguments(arguments, check_mode=False, diff=False))
    after = driver.read()
    assert after.state.unconfirmed is None
    assert (after.state.status, after.state.step_index, after.state.percent, after.percent) == (
        "ramping",
        1,
        5.0,
        5.0,
    ), result["msg"]
    assert after.mirror_drift == ""
    events = [event["event"] for event in after.state.history]
    if next_event:
        assert next_event in events, events
    if next_event == "revert":  # the previous step had held: the raise is made again, through the gates
        assert events[-2:] == ["revert", "advance"], events


def test_a_stop_killed_between_the_proxy_and_the_state_file_leaves_the_mirror_off(
    envoy_options: dict[str, Any], prometheus: ScriptedPrometheus, tmp_path: Path
) -> None:
    driver = EnvoyDriver.from_options(SERVICE, envoy_options)
    put(driver, at_step(1, held_for=10), 5.0)
    arguments = envoy_arguments(envoy_options, prometheus, operation="stop", reason="pager", by="alice")
    killed_at(tmp_path, arguments, "inside-write:1")
    killed = driver.read()
    assert (killed.percent, killed.state.status) == (0.0, "ramping")  # the proxy first: the mirror is off
    assert_record_at_or_above_live(driver)

    # A scheduled run never puts it back: no live mirror under a recorded step is a cut-short removal.
    result = execute(
        RampRequest.from_arguments(envoy_arguments(envoy_options, prometheus), check_mode=False, diff=False)
    )
    after = driver.read()
    assert (after.state.status, after.percent) == ("rolled_back", 0.0), result["msg"]
    assert "a rollback or stop cut short" in result["msg"]
    # The on-call engineer's stop, run again, records the stop and says nothing was live.
    stop = execute(RampRequest.from_arguments(arguments, check_mode=False, diff=False))
    assert "mirror removed (none was live)" in stop["msg"] and driver.read().state.status == "stopped"


def test_a_mirror_left_on_under_a_stopped_record_is_removed_and_named_by_the_stop(
    envoy_options: dict[str, Any], prometheus: ScriptedPrometheus
) -> None:
    """The case seen with the old write order: state stopped, 0 %, while the proxy mirrored 5 %."""
    driver = EnvoyDriver.from_options(SERVICE, envoy_options)
    stopped = RampState(status="stopped", percent=0.0, stop={"reason": "x", "at": time.time() - 60, "by": "alice"})
    put(driver, stopped, 5.0)
    stop = execute(
        RampRequest.from_arguments(
            envoy_arguments(envoy_options, prometheus, operation="stop", reason="again", by="bob"),
            check_mode=False,
            diff=False,
        )
    )
    assert stop["changed"] and "a live mirror of 5% was still on" in stop["msg"]
    assert driver.read().percent == 0.0


# -- the istio driver: drift found by the ramp, by status and by the stop -------------------------------


def hand_edit_mirror(kube: KubeApiServer, percent: float) -> None:
    """Someone re-applies a manifest with a mirror, or edits the VirtualService by hand."""
    from kubernetes import client

    vs = with_mirror_percent(live(kube), percent)
    api = client.CustomObjectsApi(kube.api_client())
    api.replace_namespaced_custom_object(
        "networking.istio.io", "v1", vs["metadata"]["namespace"], "virtualservices", vs["metadata"]["name"], vs
    )


def test_a_mirror_put_back_by_hand_on_a_stopped_ramp_is_removed_and_shown(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
) -> None:
    seed(kube_api, 1)
    execute(request_for(kube_api, prometheus, operation="stop", reason="pager", by="alice"))
    hand_edit_mirror(kube_api, 5.0)

    status = execute(request_for(kube_api, prometheus, operation="status"))
    assert "the live mirror is 5%, the record says no mirror (stopped)" in status["status"]["attention"]
    assert status["status"]["percent"] == 5.0

    result = execute(request_for(kube_api, prometheus))
    vs = live(kube_api)
    assert read_mirror_percent(vs) == 0.0
    state = RampState.from_json(vs["metadata"]["annotations"][STATE_ANNOTATION])
    assert state.status == "stopped" and state.history[-1]["event"] == "drift"
    assert any("drift: the live mirror is 5%" in warning for warning in result["warnings"])
    assert execute(request_for(kube_api, prometheus, operation="status"))["status"]["attention"] == ""


def test_a_mirror_raised_by_hand_above_the_step_is_lowered_never_kept(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
) -> None:
    seed(kube_api, 1, held_for=0.1)  # step 2 (5%), its hold of 1 s not over
    hand_edit_mirror(kube_api, 20.0)
    result = execute(request_for(kube_api, prometheus))
    assert read_mirror_percent(live(kube_api)) == 5.0, result["msg"]
    assert "lowered to 5%" in result["msg"]


# -- ansible-playbook killed during a watch ---------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_a_watch_whose_ansible_playbook_is_killed_stops_ramping(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
    tmp_path: Path,
) -> None:
    seed(kube_api, None)
    arguments = ramp_arguments(kube_api, prometheus, mode="watch")
    arguments = {key: value for key, value in arguments.items() if value is not None and value != []}
    playbook = tmp_path / "watch.yml"
    task = {"name": "Ramp in watch mode", "mirror_ramp": arguments}
    playbook.write_text(json.dumps([{"name": "Watch", "hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
    controller = subprocess.Popen(
        [str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", "localhost,", "-c", "local"],
        cwd=REPO_ROOT,
        env=ansible_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def at_step_2() -> bool:
            state = (live(kube_api)["metadata"].get("annotations") or {}).get(STATE_ANNOTATION)
            return bool(state) and (RampState.from_json(state).step_index or 0) >= 1

        poll_until(at_step_2, timeout=60, interval=0.05, what="the watch at step 2")
        workers = _children(controller.pid)
        assert workers, "ansible-playbook runs its task in a worker process"
        controller.send_signal(signal.SIGKILL)
        controller.wait(timeout=10)
    finally:
        if controller.poll() is None:
            controller.kill()
    poll_until(lambda: not any(_running(pid) for pid in workers), timeout=10, interval=0.1, what="the worker gone")
    left = live(kube_api)["metadata"]["resourceVersion"]
    time.sleep(2.5)  # more than two holds: a watch still going would have advanced meanwhile
    assert live(kube_api)["metadata"]["resourceVersion"] == left
    state = RampState.from_json(live(kube_api)["metadata"]["annotations"][STATE_ANNOTATION])
    assert state.status == "ramping" and state.step_index < len(PERCENTS) - 1


# -- an emergency stop while a watch run with restart=true is going -----------------------------------


def test_an_emergency_stop_during_a_watch_started_with_restart_sticks(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
    tmp_path: Path,
) -> None:
    """The on-call report: `rollout.yml -e restart=true` watching, then emergency-stop.yml; the
    mirror went to 0 and 2 s later back to 1 %. Here: the watch's worker and the stop as two
    processes against the API double."""
    seed(kube_api, 1)
    execute(request_for(kube_api, prometheus, operation="stop", reason="first", by="alice"))
    path = tmp_path / "arguments.json"
    path.write_text(json.dumps(ramp_arguments(kube_api, prometheus, mode="watch", restart=True, deadline="60s")))
    watch = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.ramp_worker", str(path)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def restarted() -> bool:
            state = RampState.from_json(live(kube_api)["metadata"]["annotations"][STATE_ANNOTATION])
            return state.status == "ramping"

        poll_until(restarted, timeout=30, interval=0.05, what="the watch's restart")
        stop = execute(request_for(kube_api, prometheus, operation="stop", reason="again", by="bob"))
        assert stop["changed"] and "mirror removed (it was live at" in stop["msg"]
        output, _ = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, output
    result = json.loads(output.rsplit("RESULT ", 1)[1])
    assert "stopped by bob" in result["msg"] and "while this run was watching" in result["msg"], result["msg"]
    vs = live(kube_api)
    state = RampState.from_json(vs["metadata"]["annotations"][STATE_ANNOTATION])
    assert (state.status, read_mirror_percent(vs)) == ("stopped", 0.0)
    assert [event["event"] for event in state.history].count("restart") == 1
    assert state.history[-1]["event"] == "stop"
