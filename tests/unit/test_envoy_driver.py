"""The envoy driver without Envoy: the route file's shape, percent resolution, drift, dry run, conflicts.

Envoy's admin is a fake that loads the route file the way filesystem RDS does (on a change of
content, refusing what `reject` names, counting it in update_rejected); the real Envoy has its
own integration test (tests/integration/test_envoy_driver.py).
"""

from __future__ import annotations

import copy
import fcntl
import json
import math
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirrorramp.drivers import envoy as envoy_driver
from mirrorramp.drivers.envoy import (
    MILLION,
    EnvoyDriver,
    check_percent,
    live_mirror,
    mirror_policies,
    policy_millionths,
    route_configuration,
    shape_route_config,
    shape_route_file,
)
from mirrorramp.drivers.state_file import StateFile
from mirrorramp.errors import ConfigError, ConflictError, DriverError
from mirrorramp.state import RampState

NAME = "user-service"
PRIMARY = "outbound|8080|v1|user-service.shop.svc.cluster.local"
CANDIDATE = "outbound|8080|v2|user-service.shop.svc.cluster.local"
BASELINE = "outbound|8080|v1b|user-service.shop.svc.cluster.local"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


def marker(*clusters: str) -> dict[str, Any]:
    return {"filter_metadata": {"mirror_ramp": {"mirror_clusters": list(clusters)}}}


def policy(cluster: str, numerator: int, denominator: str = "MILLION", **fields: Any) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "runtime_fraction": {"default_value": {"numerator": numerator, "denominator": denominator}},
        "trace_sampled": False,
        "disable_shadow_host_suffix_append": True,
    } | fields


def route_config(*, mirrored: tuple[str, ...] = (CANDIDATE,)) -> dict[str, Any]:
    """A RouteConfiguration like the translation's: a marked read route, an unmarked catch-all."""
    return {
        "name": NAME,
        "virtual_hosts": [
            {
                "name": "user-service.shop.svc.cluster.local:8080",
                "domains": ["*"],
                "routes": [
                    {
                        "name": "reads",
                        "match": {"prefix": "/", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
                        "route": {"cluster": PRIMARY, "timeout": "3s"},
                        "metadata": marker(*mirrored),
                    },
                    {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": PRIMARY}},
                ],
            }
        ],
    }


def route_file(config: dict[str, Any], version: str = "rendered") -> dict[str, Any]:
    return {"version_info": version, "resources": [{"@type": ROUTE_TYPE, **config}]}


def routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    return config["virtual_hosts"][0]["routes"]


# -- percent resolution ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("percent", "expected", "numerator"),
    [
        (0, 0.0, None),
        (0.0001, 0.0001, 1),
        (0.57, 0.57, 5700),
        (5, 5.0, 50_000),
        (12.3456, 12.3456, 123_456),
        (100, 100.0, MILLION),
    ],
    ids=["zero", "one-millionth", "0.57-rounded-not-truncated", "five", "four-decimals", "all"],
)
def test_percent_resolution_is_a_millionth(percent: float, expected: float, numerator: int | None) -> None:
    assert check_percent(percent) == expected
    policies = mirror_policies([CANDIDATE], percent)
    assert policies == ([] if numerator is None else [policy(CANDIDATE, numerator)])


@pytest.mark.parametrize(
    ("percent", "words"),
    [
        (0.00005, "at most four decimals"),
        (12.34567, "at most four decimals"),
        (-1, "from 0 to 100"),
        (100.0001, "from 0 to 100"),
        (math.nan, "from 0 to 100"),
        (True, "from 0 to 100"),
        ("5", "from 0 to 100"),
    ],
    ids=["half-millionth", "five-decimals", "negative", "above-100", "nan", "bool", "string"],
)
def test_a_percent_envoy_cannot_say_is_refused_by_name(percent: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as raised:
        check_percent(percent)
    assert "envoy mirror percent" in str(raised.value)


@pytest.mark.parametrize(
    ("fraction", "millionths"),
    [
        (None, MILLION),
        ({"default_value": {}}, 0),
        ({"default_value": {"numerator": 5}}, 50_000),
        ({"default_value": {"numerator": 1, "denominator": "TEN_THOUSAND"}}, 100),
        ({"default_value": {"numerator": 57, "denominator": "MILLION"}}, 57),
        ({"default_value": {"numerator": 7, "denominator": 2}}, 7),
        ({"default_value": {"numerator": 150, "denominator": "HUNDRED"}}, MILLION),
    ],
    ids=[
        "no-fraction-is-all",
        "empty-is-zero",
        "hundred-by-default",
        "ten-thousand",
        "million",
        "enum-number",
        "capped",
    ],
)
def test_policy_share_in_millionths_as_envoy_reads_it(fraction: dict | None, millionths: int) -> None:
    live = {"cluster": CANDIDATE} | ({} if fraction is None else {"runtime_fraction": fraction})
    assert policy_millionths(live) == millionths


# -- shaping the route file ----------------------------------------------------------------
def test_shaping_sets_the_marked_routes_and_only_them() -> None:
    original = route_config(mirrored=(CANDIDATE, BASELINE))
    routes(original)[1]["route"]["request_mirror_policies"] = [policy("stray", 10)]
    before = copy.deepcopy(original)

    shaped = shape_route_config(original, 5, "token-1")

    assert original == before, "the input is not changed"
    reads, default = routes(shaped)
    assert reads["route"]["request_mirror_policies"] == [policy(CANDIDATE, 50_000), policy(BASELINE, 50_000)]
    assert reads["metadata"]["filter_metadata"]["mirror_ramp"] == {
        "mirror_clusters": [CANDIDATE, BASELINE],
        "write_token": "token-1",
        "percent": 5.0,
    }
    assert "request_mirror_policies" not in default["route"], "an unmarked route mirrors nothing"
    assert "&id" not in yaml.safe_dump(shaped), "no YAML anchors: each policy has its own fraction"
    # Everything else is as it was.
    reads["route"].pop("request_mirror_policies")
    reads["metadata"] = marker(CANDIDATE, BASELINE)
    routes(before)[1]["route"].pop("request_mirror_policies")
    assert shaped == before


def test_zero_percent_removes_the_policies_and_keeps_the_marker() -> None:
    on = shape_route_config(route_config(), 20, "on")
    off = shape_route_config(on, 0, "off")
    reads = routes(off)[0]
    assert "request_mirror_policies" not in reads["route"]
    assert reads["metadata"]["filter_metadata"]["mirror_ramp"] == {
        "mirror_clusters": [CANDIDATE],
        "write_token": "off",
        "percent": 0.0,
    }


def test_the_route_file_gets_the_token_as_version_and_keeps_other_resources() -> None:
    other = {"@type": ROUTE_TYPE, "name": "other", "virtual_hosts": []}
    document = route_file(route_config()) | {"resources": [other, *route_file(route_config())["resources"]]}
    shaped = shape_route_file(document, NAME, 1, "tok")
    assert shaped["version_info"] == "tok"
    assert shaped["resources"][0] == other
    assert routes(route_configuration(shaped, NAME))[0]["route"]["request_mirror_policies"] == [
        policy(CANDIDATE, 10_000)
    ]


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda c: routes(c)[0].pop("metadata"), "has no route marked"),
        (lambda c: routes(c)[0]["metadata"]["filter_metadata"]["mirror_ramp"].update(mirror_clusters=[]), "reads"),
        (
            lambda c: routes(c)[0]["metadata"]["filter_metadata"]["mirror_ramp"].update(mirror_clusters=CANDIDATE),
            "reads",
        ),
        (lambda c: routes(c)[0].update(route=None, direct_response={"status": 200}), "no `route` action"),
    ],
    ids=["no-marker", "empty-clusters", "clusters-not-a-list", "marked-direct-response"],
)
def test_a_route_config_the_driver_cannot_shape_is_refused(mutate: Callable[[dict], Any], words: str) -> None:
    config = route_config()
    mutate(config)
    with pytest.raises(DriverError, match=words):
        shape_route_config(config, 5, "t")


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"version_info": "1"}, "not a DiscoveryResponse"),
        (route_file(route_config() | {"name": "other"}), "no RouteConfiguration 'user-service'"),
        (
            {"resources": [{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": NAME}]},
            "not a Route",
        ),
    ],
    ids=["no-resources", "other-name", "not-a-route-configuration"],
)
def test_a_route_file_without_the_route_configuration_is_refused(document: dict, words: str) -> None:
    with pytest.raises(DriverError, match=words):
        route_configuration(document, NAME)


# -- reading the live mirror, drift ------------------------------------------------------------
def test_the_drivers_own_shape_reads_back_without_drift() -> None:
    live = live_mirror(shape_route_config(route_config(mirrored=(CANDIDATE, BASELINE)), 0.57, "tok"))
    assert (live.percent, live.token, live.drift) == (0.57, "tok", "")
    assert live.clusters == {"user-service.shop.svc.cluster.local:8080/reads": [CANDIDATE, BASELINE]}


def test_no_policy_reads_as_zero_without_drift() -> None:
    live = live_mirror(shape_route_config(route_config(), 0, "tok"))
    assert (live.percent, live.clusters, live.drift) == (0.0, {}, "")


def with_policies(reads: list[dict] | None = None, default: list[dict] | None = None) -> dict[str, Any]:
    config = route_config(mirrored=(CANDIDATE, BASELINE))
    for route, policies in zip(routes(config), (reads, default), strict=True):
        if policies is not None:
            route["route"]["request_mirror_policies"] = policies
    return config


@pytest.mark.parametrize(
    ("config", "percent", "words"),
    [
        (with_policies([policy("outbound|8080|v3|x", 50_000), policy(BASELINE, 50_000)]), 5, "outbound|8080|v3|x 5%"),
        (with_policies([policy(CANDIDATE, 50_000), policy(BASELINE, 20_000)]), 5, f"{BASELINE} 2%"),
        (with_policies([policy(CANDIDATE, 10_000)]), 1, f"mirrors {CANDIDATE} 1%, the ramp writes"),
        (with_policies(None, [policy(CANDIDATE, 10_000)]), 1, "default (not marked with mirror_ramp)"),
        (
            with_policies([policy(CANDIDATE, 10_000), policy(BASELINE, 10_000, trace_sampled=True)]),
            1,
            '{"trace_sampled": true}',
        ),
        (
            with_policies(
                [policy(CANDIDATE, 10_000), policy(BASELINE, 10_000, disable_shadow_host_suffix_append=None)]
            ),
            1,
            '{"disable_shadow_host_suffix_append": null}',
        ),
        (with_policies([{"cluster": CANDIDATE}, {"cluster": BASELINE}]), 100, "trace_sampled"),
        (
            with_policies(
                [
                    policy(CANDIDATE, 1, "HUNDRED"),
                    policy(BASELINE, 1, "HUNDRED"),
                    {"cluster": "x", "runtime_fraction": {"default_value": {"numerator": 0}, "runtime_key": "k"}},
                ]
            ),
            1,
            '"runtime_key": "k"',
        ),
    ],
    ids=[
        "other-cluster",
        "unequal-fractions",
        "one-of-two-mirrors-missing",
        "policy-on-unmarked-route",
        "trace-sampled",
        "shadow-suffix",
        "no-fraction-is-100",
        "runtime-key",
    ],
)
def test_drift_names_the_route_and_how_it_differs(config: dict, percent: float, words: str) -> None:
    live = live_mirror(config)
    assert live.percent == percent, "the live percent is the largest share any route mirrors"
    assert words in live.drift
    assert live.drift.startswith("route user-service.shop.svc.cluster.local:8080/")


def test_a_mirror_only_on_the_catch_all_reads_its_percent_and_both_routes_drift() -> None:
    live = live_mirror(with_policies(None, [policy(CANDIDATE, 200_000)]))
    assert live.percent == 20
    assert f"/reads mirrors no mirror, the ramp writes {CANDIDATE} 20%, {BASELINE} 20%; " in live.drift
    assert f"/default (not marked with mirror_ramp) mirrors {CANDIDATE} 20%, the ramp writes no mirror" in live.drift


def test_a_missing_policy_field_shows_as_unset() -> None:
    live = live_mirror(with_policies([{"cluster": CANDIDATE}, {"cluster": BASELINE}]))
    assert '{"disable_shadow_host_suffix_append": "unset", "trace_sampled": "unset"}' in live.drift


# -- the contract with the sandbox's translation ---------------------------------------------
GOLDEN = Path(__file__).resolve().parents[1] / "manifests" / "golden" / "istio-dev"


@pytest.mark.parametrize("service", ["user-service", "order-service"])
def test_the_translation_of_the_rendered_goldens_is_the_drivers_own_shape(service: str) -> None:
    """What the sandbox's translation renders is what the driver writes: no drift at the rendered
    percent, and a write at another percent changes only the mirror and the marker."""
    from mirrorsandbox.envoy_config import sidecar_config  # tests may use the sandbox; the engine never does

    vs = yaml.safe_load((GOLDEN / f"virtualservice-shop-dev-{service}.yml.golden").read_text())
    dr = yaml.safe_load((GOLDEN / f"destinationrule-shop-dev-{service}.yml.golden").read_text())
    subsets = [subset["name"] for subset in dr["spec"]["subsets"]]
    rendered = sidecar_config(vs, dr, {name: f"127.0.0.1:{18000 + i}" for i, name in enumerate(subsets)})
    config = rendered.route_configuration

    live = live_mirror(config)
    assert live.percent > 0 and live.drift == "" and live.clusters

    shaped = shape_route_config(config, 0.5, "tok")
    again = live_mirror(shaped)
    assert (again.percent, again.token, again.drift, again.clusters) == (0.5, "tok", "", live.clusters)
    shaped_routes = {
        f"{host['name']}/{route['name']}": route for host in shaped["virtual_hosts"] for route in host["routes"]
    }
    for label, route in shaped_routes.items():
        wanted = [policy(cluster, 5_000) for cluster in live.clusters.get(label, [])]
        assert route["route"].get("request_mirror_policies", []) == wanted, label


# -- the driver, against a fake admin ----------------------------------------------------------
class FakeEnvoy:
    """Envoy's admin as far as the driver reads it: loads the route file when its content changes."""

    def __init__(self, route_path: Path, reject: Callable[[dict], bool] = lambda document: False) -> None:
        self.route_path = route_path
        self.reject = reject
        self.seen = ""
        self.running: dict[str, Any] | None = None
        self.loads = 0
        self.dumps = 0  # config_dump reads: the driver's polls
        self.frozen = False  # a stuck Envoy: never loads anything new
        self.counters = {"update_rejected": 0, "update_failure": 0}
        self.other_counters = {"update_rejected": 0}
        # The driver reads config_dump and the counters at once: one load per change of content.
        self.lock = threading.Lock()

    def _sync(self) -> None:
        text = self.route_path.read_text()
        if self.frozen or text == self.seen:
            return
        self.seen = text
        document = yaml.safe_load(text)
        if self.reject(document):
            self.counters["update_rejected"] += 1
            return
        config = route_configuration(document, NAME)
        if config != self.running:
            self.running, self.loads = config, self.loads + 1

    def admin_json(self, path: str) -> Any:
        with self.lock:
            return self._answer(path)

    def _answer(self, path: str) -> Any:
        self._sync()
        if path == "/config_dump?resource=dynamic_route_configs":
            self.dumps += 1
            return {"configs": [{"version_info": "x", "route_config": self.running}] if self.running else []}
        assert path.startswith("/stats?format=json&filter="), path
        stats = [{"name": f"http.sandbox_http.rds.{NAME}.{k}", "value": v} for k, v in self.counters.items()]
        stats += [{"name": f"http.sandbox_http.rds.{NAME}-2.{k}", "value": v} for k, v in self.other_counters.items()]
        if "&usedonly" in path:  # as Envoy: a counter never incremented is left out
            stats = [stat for stat in stats if stat["value"]]
        return {"stats": stats}


@pytest.fixture
def route_path(tmp_path: Path) -> Path:
    path = tmp_path / "routes" / "route.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(route_file(route_config())))
    return path


@pytest.fixture
def envoy(route_path: Path) -> FakeEnvoy:
    return FakeEnvoy(route_path)


@pytest.fixture
def driver(tmp_path: Path, route_path: Path, envoy: FakeEnvoy, monkeypatch: pytest.MonkeyPatch) -> EnvoyDriver:
    driver = EnvoyDriver(
        "user-service", route_path, NAME, "http://127.0.0.1:1", tmp_path / "state", confirm_timeout=0.2
    )
    monkeypatch.setattr(driver, "_admin_json", envoy.admin_json)
    return driver


def ramping(percent: float) -> RampState:
    return RampState.initial().evolve(status="ramping", step_index=0, percent=percent, step_started_at=1.0)


def test_write_then_read_back(driver: EnvoyDriver, route_path: Path, envoy: FakeEnvoy) -> None:
    before = driver.read()
    assert (before.percent, before.version, before.state, before.mirror_drift) == (0, "0", RampState.initial(), "")

    after = driver.write(before, ramping(5), 5, dry_run=False)

    assert (after.percent, after.version) == (5, "1")
    on_disk = json.loads(route_path.read_text())  # written as JSON: Envoy's YAML parser reads bare y/n as booleans
    assert on_disk["version_info"] == after.mirror_settings["write_token"]
    assert routes(on_disk["resources"][0])[0]["route"]["request_mirror_policies"] == [policy(CANDIDATE, 50_000)]
    again = driver.read()
    assert (again.percent, again.version, again.state, again.mirror_drift) == (5, "1", ramping(5), "")
    assert again.mirror_settings == after.mirror_settings
    assert json.loads((route_path.parent.parent / "state" / "user-service.json").read_text())["version"] == 1

    off = driver.write(again, ramping(0), 0, dry_run=False)
    assert off.percent == 0 and driver.read().mirror_settings["mirror_clusters"] == {}
    assert "request_mirror_policies" not in json.dumps(envoy.running)


def test_the_same_percent_again_writes_only_the_state(driver: EnvoyDriver, route_path: Path, envoy: FakeEnvoy) -> None:
    first = driver.write(driver.read(), ramping(5), 5, dry_run=False)
    text, loads = route_path.read_text(), envoy.loads
    second = driver.write(first, ramping(5).evolve(step_index=1), 5, dry_run=False)
    assert (route_path.read_text(), envoy.loads) == (text, loads), "no reload for a state-only write"
    assert second.version == "2" and driver.read().state.step_index == 1


def test_a_change_of_percent_reads_no_config_dump_before_the_rename(
    driver: EnvoyDriver, route_path: Path, envoy: FakeEnvoy, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = driver.write(driver.read(), ramping(5), 5, dry_run=False)
    reads_before_rename: list[int] = []
    write = envoy_driver.write_atomically

    def counted_write(path: Path, data: str) -> None:
        reads_before_rename.append(envoy.dumps)
        write(path, data)

    monkeypatch.setattr(envoy_driver, "write_atomically", counted_write)
    dumps = envoy.dumps
    assert driver.write(current, ramping(0), 0, dry_run=False).percent == 0
    assert reads_before_rename == [dumps]
    assert "request_mirror_policies" not in json.dumps(envoy.running)


def test_a_file_shaped_for_the_percent_that_envoy_does_not_run_is_written_again(
    driver: EnvoyDriver, route_path: Path, envoy: FakeEnvoy
) -> None:
    first = driver.write(driver.read(), ramping(5), 5, dry_run=False)
    envoy.running = shape_route_config(route_config(), 1, "older")  # Envoy runs another write's route
    second = driver.write(first, ramping(5).evolve(step_index=1), 5, dry_run=False)
    assert second.mirror_settings["write_token"] not in ("older", first.mirror_settings["write_token"])
    assert live_mirror(envoy.running).percent == 5
    assert driver.read().mirror_settings == second.mirror_settings


def test_a_hand_edit_of_the_live_mirror_is_written_over(
    driver: EnvoyDriver, route_path: Path, envoy: FakeEnvoy
) -> None:
    first = driver.write(driver.read(), ramping(5), 5, dry_run=False)
    document = json.loads(route_path.read_text())
    routes(document["resources"][0])[1]["route"]["request_mirror_policies"] = [policy(CANDIDATE, 50_000)]
    route_path.write_text(json.dumps(document))
    drifted = driver.read()
    assert drifted.percent == 5 and "/default (not marked" in drifted.mirror_drift

    fixed = driver.write(drifted, ramping(5), 5, dry_run=False)
    assert fixed.mirror_settings["write_token"] != first.mirror_settings["write_token"]
    assert driver.read().mirror_drift == ""


def test_dry_run_writes_nothing_and_returns_what_would_be(
    driver: EnvoyDriver, route_path: Path, envoy: FakeEnvoy, tmp_path: Path
) -> None:
    current = driver.read()
    text = route_path.read_text()
    wanted = driver.write(current, ramping(20), 20, dry_run=True)
    assert (wanted.percent, wanted.version, wanted.state) == (20, "0", ramping(20))
    assert wanted.mirror_settings["mirror_clusters"] == {"user-service.shop.svc.cluster.local:8080/reads": [CANDIDATE]}
    assert route_path.read_text() == text
    assert not (tmp_path / "state" / "user-service.json").exists()
    assert driver.read().percent == 0


def test_a_stale_version_is_a_conflict_and_changes_nothing(driver: EnvoyDriver, route_path: Path) -> None:
    stale = driver.read()
    driver.write(stale, ramping(1), 1, dry_run=False)
    text = route_path.read_text()
    for dry_run in (True, False):
        with pytest.raises(ConflictError, match="is at version 1, this run read version 0"):
            driver.write(stale, ramping(5), 5, dry_run=dry_run)
    assert route_path.read_text() == text and driver.read().percent == 1


def test_a_refused_file_is_renamed_back_and_named(driver: EnvoyDriver, route_path: Path, envoy: FakeEnvoy) -> None:
    current = driver.write(driver.read(), ramping(1), 1, dry_run=False)
    text = route_path.read_text()
    envoy.reject = lambda document: (
        "request_mirror_policies" in json.dumps(document) and "500000" in json.dumps(document)
    )
    polls = envoy.dumps
    with pytest.raises(DriverError) as raised:
        driver.write(current, ramping(50), 50, dry_run=False)
    # One poll that finds the rejection (it fails at once, not at the timeout), one read of what
    # Envoy runs once the previous file is back; none before the rename.
    assert envoy.dumps - polls == 2
    message = str(raised.value)
    assert f"rds.{NAME}.update_rejected 0 -> 1" in message and str(route_path) in message
    assert "the mirror stays at 1%" in message
    assert route_path.read_text() == text, "the previous file, byte for byte"
    assert driver.read().state == ramping(1) and driver.read().version == "1"


def test_a_file_envoy_never_loads_times_out_and_is_renamed_back(
    driver: EnvoyDriver, route_path: Path, envoy: FakeEnvoy
) -> None:
    current = driver.read()
    text = route_path.read_text()
    envoy.frozen = True
    envoy.other_counters["update_rejected"] = 7  # another route configuration's rejections are not this write's
    with pytest.raises(DriverError, match=r"did not run the route file .* within 0.2s"):
        driver.write(current, ramping(5), 5, dry_run=False)
    assert route_path.read_text() == text


def test_a_route_config_envoy_does_not_run_is_a_clear_read_error(driver: EnvoyDriver, envoy: FakeEnvoy) -> None:
    envoy.frozen = True
    with pytest.raises(DriverError, match=r"runs no route configuration 'user-service' \(it runs \[\]\)"):
        driver.read()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"route_path": "/r/route.yaml", "state_dir": "/s"}, "lack route_config_name, admin_url"),
        ({"admin_url": "127.0.0.1:9901"}, "expected an http(s):// URL"),
        ({"admin_url": "http://admin:hunter2@127.0.0.1:9901"}, "carries credentials"),
    ],
    ids=["missing", "no-scheme", "credentials"],
)
def test_bad_options_are_refused(options: dict, words: str) -> None:
    full = {
        "route_path": "/r/route.yaml",
        "route_config_name": NAME,
        "admin_url": "http://127.0.0.1:9901",
        "state_dir": "/s",
    }
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")) as raised:
        EnvoyDriver.from_options("svc", options if "route_path" in options else full | options)
    assert "hunter2" not in str(raised.value)


def test_options_build_the_driver() -> None:
    driver = EnvoyDriver.from_options(
        "svc",
        {
            "route_path": "/r/route.yaml",
            "route_config_name": NAME,
            "admin_url": "http://127.0.0.1:9901/",
            "state_dir": "/s",
            "confirm_timeout": 3,
        },
    )
    assert (driver.admin_url, driver.confirm_timeout, driver.atomic) == ("http://127.0.0.1:9901", 3.0, False)
    assert driver.state_file.path == Path("/s/svc.json")


# -- the state file ---------------------------------------------------------------------------
def test_a_corrupt_state_file_is_an_error_naming_it(tmp_path: Path) -> None:
    state = StateFile(tmp_path, "svc", "envoy svc")
    state.path.write_text("{not json")
    with pytest.raises(DriverError, match=r"svc\.json is not JSON"):
        state.load()
    state.path.write_text('{"state": {}}')
    with pytest.raises(DriverError, match="lacks an integer version"):
        state.load()


def test_a_held_lock_is_a_conflict_after_its_timeout(tmp_path: Path) -> None:
    state = StateFile(tmp_path, "svc", "envoy svc", lock_timeout=0.1)
    with open(state.lock_path, "a") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_EX)
        with pytest.raises(ConflictError, match=r"stayed locked for 0.1s"), state.locked():
            pass
    with state.locked():
        state.store(1, ramping(1))
    assert state.load() == (1, ramping(1))


# -- the admin connection ---------------------------------------------------------------------
class AdminServer(ThreadingHTTPServer):
    """A keep-alive HTTP/1.1 admin on 127.0.0.1 that counts the connections it accepts and can
    drop a connection after its answer without saying so (as an idle timeout does)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), AdminHandler)
        self.connections = 0
        self.paths: list[str] = []
        self.drop_after_answer = False
        self.status = 200

    def get_request(self) -> tuple[socket.socket, Any]:
        accepted = super().get_request()
        self.connections += 1
        return accepted


class AdminHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AdminServer

    def do_GET(self) -> None:
        # Read before the answer goes out: the test may change it as soon as it has the answer.
        self.close_connection = self.server.drop_after_answer
        self.server.paths.append(self.path)
        body = json.dumps({"stats": [{"name": f"http.x.rds.{NAME}.update_rejected", "value": 3}]}).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def admin_server() -> Iterator[AdminServer]:
    server = AdminServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def admin_driver(tmp_path: Path, server: AdminServer, path: str = "") -> EnvoyDriver:
    host, port = server.server_address[:2]
    return EnvoyDriver("user-service", tmp_path / "route.yaml", NAME, f"http://{host}:{port}{path}", tmp_path / "s")


def test_admin_reads_share_one_kept_alive_connection(tmp_path: Path, admin_server: AdminServer) -> None:
    driver = admin_driver(tmp_path, admin_server, "/envoy-admin/")
    for _ in range(5):
        assert driver.rejection_counters() == {"update_rejected": 3, "update_failure": 0}
    assert admin_server.connections == 1
    assert len(admin_server.paths) == 5
    # The configured URL's path prefixes every admin path; the filter names this route's counters only.
    assert all(p.startswith("/envoy-admin/stats?format=json&filter=") for p in admin_server.paths)
    assert (
        "rds%5C.user%5C-service%5C.%28update_rejected%7Cupdate_failure%29%24&type=Counters&usedonly="
        in (admin_server.paths[0])
    )


def test_a_connection_the_admin_closed_is_reopened_once(tmp_path: Path, admin_server: AdminServer) -> None:
    driver = admin_driver(tmp_path, admin_server)
    admin_server.drop_after_answer = True
    for _ in range(3):
        assert driver.rejection_counters()["update_rejected"] == 3
    # Each read after the first finds its kept-alive connection closed and goes out on a new one.
    assert (admin_server.connections, len(admin_server.paths)) == (3, 3)
    admin_server.drop_after_answer = False
    driver.rejection_counters()
    driver.rejection_counters()
    assert admin_server.connections == 4


def test_an_admin_error_status_or_no_admin_is_a_driver_error(tmp_path: Path, admin_server: AdminServer) -> None:
    driver = admin_driver(tmp_path, admin_server)
    admin_server.status = 503
    with pytest.raises(DriverError, match=r"cannot read Envoy's admin http://127\.0\.0\.1:\d+/stats\?.*: HTTP 503"):
        driver.rejection_counters()
    with socket.socket() as unused:  # a port nothing listens on: refused at once, not retried
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    nothing = EnvoyDriver("user-service", tmp_path / "route.yaml", NAME, f"http://127.0.0.1:{port}", tmp_path / "s")
    with pytest.raises(DriverError, match=r"cannot read Envoy's admin .*(refused|Errno)"):
        nothing.live()
