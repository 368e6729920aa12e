"""The nginx driver against the real sandbox nginx: set, remove, refuse and detect, under concurrency."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirrorramp.drivers.nginx import NginxDriver, check_percent, render_include
from mirrorramp.errors import ConfigError, ConflictError, DriverError
from mirrorramp.state import RampState
from tests.integration.test_sandbox import Sandbox, http_json, send, start_sandbox, stop_sandbox

pytestmark = pytest.mark.slow

SERVICE = "demo-service"
OPEN_COPIES = 16  # this module's sandbox: mirror_sandbox_mirror_max_open (default 1024)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Iterator[Sandbox]:
    sb = start_sandbox(tmp_path_factory.mktemp("build"), mirror_sandbox_mirror_max_open=OPEN_COPIES)
    try:
        yield sb
    finally:
        stop_sandbox(sb)


@pytest.fixture
def driver(sandbox: Sandbox) -> NginxDriver:
    return sandbox.driver(reload_timeout=2)


@pytest.fixture
def drop_in(sandbox: Sandbox) -> Iterator[Path]:
    """A file in the sandbox nginx's conf.d (loaded at the http level); removed afterwards."""
    path = Path(sandbox.info["nginx"]["prefix"]) / "conf.d" / "test-drop-in.conf"
    yield path
    path.unlink(missing_ok=True)


def live_percent(sandbox: Sandbox) -> float:
    return http_json(sandbox.info["mirror_config_url"])["percent"]


def ramping(percent: float) -> RampState:
    return RampState.initial().evolve(status="ramping", step_index=0, percent=percent, step_started_at=1.0)


def test_set_10_then_0_turns_the_mirror_on_and_off(sandbox: Sandbox, driver: NginxDriver) -> None:
    before = driver.read()
    assert (before.percent, before.version, before.state) == (0, "0", RampState.initial())
    after = driver.write(before, ramping(10), 10, dry_run=False)
    assert after.percent == 10 and after.version == "1"
    assert live_percent(sandbox) == 10
    assert driver.read().state == ramping(10), "the state written is the state read back"
    send(sandbox.info["proxy_url"], [f"/on/{i}" for i in range(300)])
    assert sandbox.settled_count("candidate", "/on/") > 0

    off = driver.write(driver.read(), ramping(0), 0, dry_run=False)
    assert off.percent == 0 and live_percent(sandbox) == 0
    send(sandbox.info["proxy_url"], [f"/off/{i}" for i in range(300)])
    assert sandbox.settled_count("candidate", "/off/") == 0
    assert sandbox.served("primary", "/off/")["count"] == 300


def test_open_mirrored_copies_are_bounded_and_the_primary_keeps_answering(
    sandbox: Sandbox, driver: NginxDriver
) -> None:
    """A slow candidate holds its copies open; past the bound the relay drops copies (as Envoy's
    circuit breaker on the mirror's cluster does), never the primary's requests."""
    driver.write(driver.read(), ramping(100), 100, dry_run=False)
    sandbox.control("candidate", latency_ms=2000)
    try:
        started = time.monotonic()
        statuses = send(sandbox.info["proxy_url"], [f"/bound/{i}" for i in range(100)], threads=8)
        elapsed = time.monotonic() - started
        held = sandbox.settled_count("candidate", "/bound/", timeout=20, quiet=2.6)
        # The bound is on copies open at once: once those ended, new copies go through again.
        send(sandbox.info["proxy_url"], [f"/after/{i}" for i in range(5)], threads=1)
        after = sandbox.settled_count("candidate", "/after/", timeout=20, quiet=2.6)
    finally:
        sandbox.control("candidate")
        driver.write(driver.read(), RampState.initial(), 0, dry_run=False)
    assert statuses == [200] * 100, "the primary answered every request"
    # Every copy sent within the candidate's 2 s is held: exactly the bound gets through; a slower
    # send lets a new round in every 2 s.
    assert OPEN_COPIES <= held <= OPEN_COPIES * (1 + int(elapsed // 2)), f"{held} copies in {elapsed:.1f} s"
    assert after == 5


def test_config_that_fails_nginx_t_is_reported_and_the_old_percent_stays(
    sandbox: Sandbox, driver: NginxDriver, drop_in: Path
) -> None:
    current = driver.write(driver.read(), ramping(10), 10, dry_run=False)
    include = Path(sandbox.info["nginx"]["include_path"]).read_text()
    drop_in.write_text("this_is_not_a_directive on;\n")
    with pytest.raises(DriverError, match=r"nginx -t rejected.*unknown directive"):
        driver.write(current, ramping(20), 20, dry_run=False)
    assert live_percent(sandbox) == 10
    assert Path(sandbox.info["nginx"]["include_path"]).read_text() == include
    assert driver.read().version == current.version, "a failed write leaves the state alone"
    with pytest.raises(DriverError, match=r"dry run"):
        driver.write(current, ramping(20), 20, dry_run=True)


def test_reload_that_fails_at_bind_time_is_detected(sandbox: Sandbox, driver: NginxDriver, drop_in: Path) -> None:
    current = driver.write(driver.read(), ramping(10), 10, dry_run=False)
    include = Path(sandbox.info["nginx"]["include_path"]).read_text()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        drop_in.write_text(f"server {{ listen 127.0.0.1:{held.getsockname()[1]}; return 204; }}\n")
        with pytest.raises(DriverError, match=r"reload did not take effect.*bind\(\)"):
            driver.write(current, ramping(20), 20, dry_run=False)
    assert live_percent(sandbox) == 10
    assert Path(sandbox.info["nginx"]["include_path"]).read_text() == include
    assert driver.read().version == current.version


def test_second_writer_loses_with_a_conflict(sandbox: Sandbox) -> None:
    first, second = sandbox.driver(), sandbox.driver()
    seen_first, seen_second = first.read(), second.read()
    assert seen_first.version == seen_second.version
    first.write(seen_first, ramping(5), 5, dry_run=False)
    with pytest.raises(ConflictError, match="another run changed it first"):
        second.write(seen_second, ramping(20), 20, dry_run=False)
    with pytest.raises(ConflictError):
        second.write(seen_second, ramping(20), 20, dry_run=True)
    assert live_percent(sandbox) == 5
    assert second.read().state == ramping(5)


def test_dry_run_tests_the_config_and_writes_nothing(sandbox: Sandbox, driver: NginxDriver) -> None:
    current = driver.read()
    state_file = Path(sandbox.info["nginx"]["state_dir"]) / f"{SERVICE}.json"
    include = Path(sandbox.info["nginx"]["include_path"])
    before = (state_file.read_bytes(), include.read_bytes())
    planned = driver.write(current, ramping(30), 30, dry_run=True)
    assert planned.percent == 30 and planned.version == current.version
    assert (state_file.read_bytes(), include.read_bytes()) == before
    assert live_percent(sandbox) == current.percent
    assert json.loads(state_file.read_text())["version"] == int(current.version)


@pytest.mark.parametrize(
    ("percent", "ok"),
    [
        (0, True),
        (0.25, True),
        (12.5, True),
        (100, True),
        (0.001, False),
        (-1, False),
        (100.5, False),
        (float("nan"), False),
    ],
    ids=["zero", "quarter", "twelve-and-a-half", "hundred", "too-fine", "negative", "above-100", "nan"],
)
def test_percent_must_be_what_split_clients_can_say(percent: float, ok: bool) -> None:
    if ok:
        assert check_percent(percent) == percent
        assert ("* 0;" in render_include(percent)) and (percent == 0) == ("% 1;" not in render_include(percent))
    else:
        with pytest.raises(ConfigError):
            check_percent(percent)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="include_path"):
        NginxDriver.from_options(
            SERVICE, {"state_dir": "/x", "config_url": "http://127.0.0.1:1/", "prefix": "/p", "conf": "/c"}
        )
    with pytest.raises(ConfigError, match="config_url"):
        NginxDriver.from_options(
            SERVICE, {"include_path": "/i", "state_dir": "/x", "config_url": "ftp://x/", "prefix": "/p", "conf": "/c"}
        )
