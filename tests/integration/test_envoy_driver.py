"""The envoy driver against a real Envoy 1.40 (filesystem RDS): set, read back, remove, refuse, conflict, timing."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirrorramp.drivers import envoy as envoy_driver
from mirrorramp.drivers.envoy import EnvoyDriver
from mirrorramp.errors import ConflictError, DriverError
from mirrorramp.state import RampState
from mirrorsandbox.envoy_process import ROUTE_FILE_NAME, EnvoyProcess, RoutedEnvoy, admin_get, counter, write_route_file
from tests.support.driver_envoy import CANDIDATE, NAME, envoy_without_upstreams, hand_written_routes
from tests.unit.test_runner import Clock, ScriptedPrometheus, make_runner

pytestmark = pytest.mark.slow

TIMED_WRITES = 20


@pytest.fixture
def routed_envoy(tmp_path: Path) -> Iterator[RoutedEnvoy]:
    envoy = envoy_without_upstreams(tmp_path)
    try:
        yield envoy
    finally:
        envoy.stop()


@pytest.fixture
def envoy(routed_envoy: RoutedEnvoy) -> EnvoyProcess:
    return routed_envoy.process


@pytest.fixture
def route_dir(routed_envoy: RoutedEnvoy) -> Path:
    return routed_envoy.route_dir


def make_driver(envoy: EnvoyProcess, route_dir: Path, tmp_path: Path) -> EnvoyDriver:
    return EnvoyDriver(
        "demo-service",
        route_dir / ROUTE_FILE_NAME,
        NAME,
        envoy.admin_url,
        tmp_path / "state",
        confirm_timeout=2.0,
    )


@pytest.fixture
def driver(envoy: EnvoyProcess, route_dir: Path, tmp_path: Path) -> EnvoyDriver:
    return make_driver(envoy, route_dir, tmp_path)


def ramping(percent: float) -> RampState:
    return RampState.initial().evolve(status="ramping", step_index=0, percent=percent, step_started_at=1.0)


def live_routes(envoy: EnvoyProcess) -> list[dict[str, Any]]:
    """The routes Envoy runs, straight from its admin (not through the driver)."""
    dump = json.loads(admin_get(envoy.admin_url, "/config_dump?resource=dynamic_route_configs"))
    (config,) = [entry["route_config"] for entry in dump["configs"] if entry["route_config"]["name"] == NAME]
    return config["virtual_hosts"][0]["routes"]


def test_write_5_then_read_back_5_and_0_removes_the_policy(
    driver: EnvoyDriver, envoy: EnvoyProcess, route_dir: Path
) -> None:
    rendered = driver.read()
    assert (rendered.percent, rendered.version, rendered.mirror_drift) == (0, "0", "")

    five = driver.write(rendered, ramping(5), 5, dry_run=False)

    assert (five.percent, five.version) == (5, "1")
    reads, default = live_routes(envoy)
    assert reads["route"]["request_mirror_policies"] == [
        {
            "cluster": CANDIDATE,
            "runtime_fraction": {"default_value": {"numerator": 50_000, "denominator": "MILLION"}},
            "trace_sampled": False,
            "disable_shadow_host_suffix_append": True,
        }
    ]
    assert reads["metadata"]["filter_metadata"]["mirror_ramp"]["write_token"] == five.mirror_settings["write_token"]
    assert "request_mirror_policies" not in default["route"]
    back = driver.read()
    assert (back.percent, back.version, back.state, back.mirror_drift) == (5, "1", ramping(5), "")

    off = driver.write(back, ramping(0), 0, dry_run=False)

    assert off.percent == 0
    assert all("request_mirror_policies" not in route["route"] for route in live_routes(envoy))
    assert driver.read().percent == 0
    assert counter(envoy.admin_url, f"http.sandbox_http.rds.{NAME}.update_rejected") == 0


def test_a_rejected_file_is_renamed_back_and_the_write_fails(
    driver: EnvoyDriver, envoy: EnvoyProcess, route_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = driver.write(driver.read(), ramping(1), 1, dry_run=False)
    route_file = route_dir / ROUTE_FILE_NAME
    before = route_file.read_bytes()
    shaper = envoy_driver.mirror_policies

    def with_a_bad_field(clusters: list[str], percent: float) -> list[dict[str, Any]]:
        return [policy | {"no_such_field": True} for policy in shaper(clusters, percent)]

    monkeypatch.setattr(envoy_driver, "mirror_policies", with_a_bad_field)
    started = time.monotonic()
    with pytest.raises(DriverError) as raised:
        driver.write(one, ramping(20), 20, dry_run=False)
    failed_in = time.monotonic() - started
    monkeypatch.undo()

    message = str(raised.value)
    assert f"rds.{NAME}.update_rejected 0 -> 1" in message and str(route_file) in message
    assert "the mirror stays at 1%" in message
    assert route_file.read_bytes() == before, "the previous file is back, byte for byte"
    assert counter(envoy.admin_url, f"http.sandbox_http.rds.{NAME}.update_rejected") == 1
    after = driver.read()
    assert (after.percent, after.version, after.state) == (1, "1", ramping(1)), "Envoy and the state kept the 1 %"
    print(f"\nrejected route file detected and renamed back in {failed_in * 1000:.1f} ms")
    # The next write goes through: the watch survived the failure and the restore.
    assert driver.write(after, ramping(20), 20, dry_run=False).percent == 20
    assert driver.read().percent == 20


def test_a_stale_version_raises_conflict_and_one_of_two_racing_writers_wins(
    driver: EnvoyDriver, envoy: EnvoyProcess, route_dir: Path, tmp_path: Path
) -> None:
    stale = driver.read()
    driver.write(stale, ramping(1), 1, dry_run=False)
    with pytest.raises(ConflictError, match="is at version 1, this run read version 0"):
        driver.write(stale, ramping(5), 5, dry_run=False)
    assert driver.read().percent == 1

    # Two runs read the same version and write at once: the flock lets one through.
    other = make_driver(envoy, route_dir, tmp_path)
    current = driver.read()
    outcomes: dict[float, BaseException | None] = {}

    def run(writer: EnvoyDriver, percent: float) -> None:
        try:
            writer.write(current, ramping(percent), percent, dry_run=False)
            outcomes[percent] = None
        except DriverError as e:
            outcomes[percent] = e

    threads = [threading.Thread(target=run, args=(d, p)) for d, p in ((driver, 2), (other, 3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert sorted(type(e).__name__ for e in outcomes.values()) == ["ConflictError", "NoneType"]
    (winner,) = [percent for percent, error in outcomes.items() if error is None]
    final = driver.read()
    assert (final.percent, final.version, final.state) == (winner, "2", ramping(winner))


def test_a_hand_edited_mirror_is_drift_and_the_next_write_replaces_it(
    driver: EnvoyDriver, envoy: EnvoyProcess, route_dir: Path
) -> None:
    five = driver.write(driver.read(), ramping(5), 5, dry_run=False)
    edited = hand_written_routes()
    reads, default = edited["virtual_hosts"][0]["routes"]
    hand_policy = {
        "cluster": CANDIDATE,
        "runtime_fraction": {"default_value": {"numerator": 10, "denominator": "HUNDRED"}},
    }
    reads["route"]["request_mirror_policies"] = [hand_policy | {"trace_sampled": False}]
    default["route"]["request_mirror_policies"] = [hand_policy]
    write_route_file(route_dir, edited, "by-hand")
    deadline = time.monotonic() + 2
    while "request_mirror_policies" not in live_routes(envoy)[1]["route"] and time.monotonic() < deadline:
        time.sleep(0.01)

    drifted = driver.read()

    assert drifted.percent == 10 and drifted.version == five.version
    assert f'/reads mirrors {CANDIDATE} 10% {{"disable_shadow_host_suffix_append": "unset"}}, the ramp writes' in (
        drifted.mirror_drift
    )
    assert "/default (not marked with mirror_ramp) mirrors" in drifted.mirror_drift
    fixed = driver.write(drifted, ramping(5), 5, dry_run=False)
    assert fixed.percent == 5 and driver.read().mirror_drift == ""
    assert "request_mirror_policies" not in live_routes(envoy)[1]["route"]


def test_dry_run_changes_nothing_on_envoy(driver: EnvoyDriver, envoy: EnvoyProcess, route_dir: Path) -> None:
    current = driver.read()
    before = (route_dir / ROUTE_FILE_NAME).read_bytes()
    wanted = driver.write(current, ramping(10), 10, dry_run=True)
    assert wanted.percent == 10 and wanted.mirror_settings["mirror_clusters"]
    assert (route_dir / ROUTE_FILE_NAME).read_bytes() == before
    assert all("request_mirror_policies" not in route["route"] for route in live_routes(envoy))
    assert driver.read().version == "0"


def test_the_runner_ramps_and_rolls_back_through_the_driver(driver: EnvoyDriver, envoy: EnvoyProcess) -> None:
    """The runner's two-write raise (intent, proxy, confirm) and its rollback on a real Envoy."""
    clock = Clock()
    started = make_runner(driver, ScriptedPrometheus(), clock).run()
    assert started.changed and driver.read().percent == 1
    assert driver.read().state.unconfirmed is None, "the raise was confirmed after Envoy ran it"

    clock.sleep(3600)  # the first step's hold is over
    advanced = make_runner(driver, ScriptedPrometheus(), clock).run()
    assert advanced.changed and (driver.read().percent, driver.read().state.step_index) == (5, 1)

    rolled_back = make_runner(driver, ScriptedPrometheus(error_ratio=0.3), clock).run()
    assert rolled_back.changed
    final = driver.read()
    assert (final.state.status, final.percent, final.mirror_drift) == ("rolled_back", 0, "")
    assert all("request_mirror_policies" not in route["route"] for route in live_routes(envoy))


def test_measured_set_and_confirm_time(driver: EnvoyDriver) -> None:
    """Each write: shape, rename, poll config_dump until the token is live, store the state."""
    current = driver.read()
    durations = []
    for index in range(TIMED_WRITES):
        percent = (1, 2)[index % 2]
        started = time.monotonic()
        current = driver.write(current, ramping(percent), percent, dry_run=False)
        durations.append(time.monotonic() - started)
        assert driver.read().percent == percent
    print(
        f"\nenvoy driver set + confirm ({TIMED_WRITES} writes): median {statistics.median(durations) * 1000:.1f} ms, "
        f"max {max(durations) * 1000:.1f} ms"
    )
