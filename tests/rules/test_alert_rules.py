"""The mirror alert rules under the real promtool.

`promtool check rules` on the plain rules file of every environment, then `promtool test rules`
with unit tests written from each environment's own thresholds and timings (promtool_cases.py):
every alert fires just above each threshold, at its severity, and stays silent just below it and
while the mirror is idle; MirrorNoTraffic fires when the primary serves and the mirror gets
nothing. Two tests with a deliberately wrong expectation prove that a failing expectation fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rules.monitoring_render import ENVIRONMENTS, Render, rendered_environments
from tests.rules.promtool_cases import CASE_BUILDERS, PROMTOOL, promtool, write_test_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Render]:
    return rendered_environments(tmp_path_factory)


def test_promtool_is_the_real_one() -> None:
    assert Path(PROMTOOL).is_file(), f"{PROMTOOL}: promtool missing (make system-packages)"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_promtool_check_rules_accepts_the_rules_file(renders: dict[str, Render], environment: str) -> None:
    render = renders[environment]
    result = promtool("check", "rules", render.rules_file)

    assert result.returncode == 0, result.stdout + result.stderr
    # Five rules per mirror workload: two error ratio, two latency, one no-traffic.
    assert f"SUCCESS: {5 * len(render.targets())} rules found" in result.stdout


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("alertname", sorted(CASE_BUILDERS))
def test_promtool_unit_tests_pass(renders: dict[str, Render], environment: str, alertname: str, tmp_path: Path) -> None:
    cases = CASE_BUILDERS[alertname](renders[environment])
    test_file = write_test_file(renders[environment], cases, tmp_path / "test.yml")

    result = promtool("test", "rules", test_file)

    assert result.returncode == 0, f"{test_file}:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("alertname", "expected_outcomes"),
    [
        pytest.param(
            "MirrorErrorRatioHigh",
            {(), ("warning",), ("warning", "critical")},
            id="error-ratio",
        ),
        pytest.param(
            "MirrorLatencyP99High",
            {(), ("warning",), ("warning", "critical")},
            id="latency",
        ),
        pytest.param("MirrorNoTraffic", {(), ("warning",)}, id="no-traffic"),
    ],
)
@pytest.mark.parametrize("environment", ["local", "dev"])
def test_unit_tests_cover_every_outcome(
    renders: dict[str, Render], environment: str, alertname: str, expected_outcomes: set[tuple[str, ...]]
) -> None:
    """The generated cases cannot silently shrink: silent, warning only and warning + critical."""
    outcomes = {case.fires for case in CASE_BUILDERS[alertname](renders[environment])}

    assert outcomes == expected_outcomes


@pytest.mark.parametrize(
    ("alertname", "firing"),
    [
        pytest.param("MirrorErrorRatioHigh", True, id="expects-silence-where-critical-fires"),
        pytest.param("MirrorLatencyP99High", False, id="expects-an-alert-where-silent"),
    ],
)
def test_promtool_fails_a_wrong_expectation(
    renders: dict[str, Render], alertname: str, firing: bool, tmp_path: Path
) -> None:
    """The driver would notice a rule that does not behave: promtool exits 1 and names the alert."""
    render = renders["local"]
    cases = CASE_BUILDERS[alertname](render)
    if firing:
        case = next(case for case in cases if "critical" in case.fires)
        wrong = []
    else:
        case = next(case for case in cases if not case.fires)
        right = next(case for case in cases if "critical" in case.fires)
        wrong = right.group["alert_rule_test"][-1]["exp_alerts"]
    case.group["alert_rule_test"][-1]["exp_alerts"] = wrong
    test_file = write_test_file(render, [case], tmp_path / "wrong.yml")

    result = promtool("test", "rules", test_file)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout + result.stderr
    assert alertname in result.stdout + result.stderr
