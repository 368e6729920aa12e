"""The data-plane benchmark's tables from a run's JSON (scripts/bench/dataplane.py --from-json): the
within-band decision of each mirrored condition, checked against a hand-computed case, and the
--write-doc combinations it refuses. Tests import no benchmark (tests/unit/test_bench_imports.py):
the script runs as its own process, on a JSON written here, measuring nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COUNTERS = [
    "upstream_cx_total",
    "upstream_cx_connect_fail",
    "upstream_cx_none_healthy",
    "upstream_rq_retry",
    "upstream_rq_pending_overflow",
    "outlier_detection.ejections_enforced_total",
]
# The A/A control read 0.84-0.98x at p50 and 0.90-1.20x at p99: the band is 1 +- the farthest end
# from 1, so p50 0.84-1.16x and p99 0.80-1.20x; a condition is within when both its ratios are at
# or below the upper ends (at the end counts as within; faster than off is no cost).
BAND = {"p50": [0.84, 1.16], "p99": [0.8, 1.2]}
# candidate -> (p50/off, p99/off, within by hand)
MIRRORED = {
    "healthy": (1.16, 1.2, True),  # both exactly at the upper ends
    "slow": (1.1, 1.21, False),  # p99 0.01 above
    "failing": (0.7, 0.6, True),  # faster than off: below the band's lower end, still no cost
    "down": (1.17, 0.9, False),  # p50 0.01 above
}


def condition(candidate: str, percent: int, ratios: tuple[float, float] | None, verdict: str) -> dict[str, Any]:
    return {
        "candidate": candidate,
        "percent": percent,
        "cells": 2,
        "sent": 400,
        "errors": 0,
        "throughput_rps": 200.0,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "mirrored": 400 if percent and candidate != "down" else 0,
        "mirrored_share": 1.0 if percent and candidate != "down" else 0.0,
        "p50_vs_off": ratios[0] if ratios else None,
        "p50_interval": [ratios[0] - 0.1, ratios[0] + 0.1] if ratios else None,
        "p99_vs_off": ratios[1] if ratios else None,
        "p99_interval": [ratios[1] - 0.1, ratios[1] + 0.1] if ratios else None,
        "verdict": verdict,
    }


def cell(round_index: int, candidate: str, percent: int, p99_ms: float) -> dict[str, Any]:
    return {
        "round": round_index,
        "candidate": candidate,
        "percent": percent,
        "sent": 200,
        "errors": 0,
        "error_kinds": {},
        "throughput_rps": 200.0,
        "p50_ms": 1.0,
        "p99_ms": p99_ms,
        "mirrored": 0,
        "ejection_wait_s": 0.0,
        "candidate_counters": dict.fromkeys(COUNTERS, 0),
    }


def document() -> dict[str, Any]:
    """A run of 2 rounds as dataplane.py writes it, its ratios and band chosen by hand."""
    conditions = [condition("-", 0, None, "-"), condition("- (A/A)", 0, (0.91, 1.05), "-")]
    conditions += [
        condition(name, 100, (p50, p99), "within" if within else "ABOVE")
        for name, (p50, p99, within) in MIRRORED.items()
    ]
    cells = [cell(r, c["candidate"], c["percent"], 1.5 + r) for r in range(2) for c in conditions]
    return {
        "command": "python scripts/bench/dataplane.py --rounds 2",
        "when": "2026-12-05T09:00:00+00:00",
        "machine": {"load_average": [0.1, 0.2, 0.3]},
        "benchmark": "dataplane",
        "quick": False,
        "setup": {
            "capacity_rps": {"mirror_off": 1000.0, "mirror_100_healthy": 800.0},
            "load_fraction": 0.25,
            "rate_rps": 200,
            "rounds": 2,
            "only": None,
            "no_outlier_detection": False,
            "cell_seconds": 1.0,
            "concurrency": 16,
            "cores": None,
            "method": "GET",
            "candidates": {"healthy": {"error_ratio": 0.0, "latency_ms": 0.0}, "down": None},
            "candidate_subset": "candidate",
            "destination_rule_traffic_policy": {},
            "destination_rule_subset_traffic_policies": {
                "candidate": {"outlierDetection": {"consecutiveGatewayErrors": 3, "interval": "1s"}}
            },
            "bootstrap": {"resamples": 2000, "confidence": 0.95, "seed": 7},
            "share_rps": 100.0,
            "share_seconds": 10.0,
        },
        "conditions": conditions,
        "cells": cells,
        "shares": [
            {"percent": 100, "sent": 1000, "mirrored": 1000, "observed": 1.0, "interval": [0.996, 1.0], "inside": True},
            # 17 of 1000 at 1%: outside the 95% Wilson interval (1.06-2.71%), inside the 98.75% one
            # (0.94-3.06%): each of the four shares is judged at 1 - 0.05/4. The JSON's own interval
            # and inside are the old rule's: the tables judge the counts again.
            {
                "percent": 1,
                "sent": 1000,
                "mirrored": 17,
                "observed": 0.017,
                "interval": [0.0106, 0.0271],
                "inside": False,
            },
            {"percent": 5, "sent": 1000, "mirrored": 90, "observed": 0.09, "interval": [0.07, 0.11], "inside": False},
        ],
        "summary": {
            "target": "mirroring 100%: p50/off and p99/off within the A/A band (1 +- the A/A interval's reach)",
            "band": BAND,
            "within": 2,
            "judged": 4,
            "target_met": False,
            "errors": 0,
            "error_kinds": {},
            "shares_inside": False,
        },
        "seconds": 10.0,
    }


def run_script(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.bench.dataplane", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def printed_lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The tables the script prints for document(), each line's cells separated by single spaces."""
    path = tmp_path_factory.mktemp("dataplane") / "run.json"
    path.write_text(json.dumps(document()))
    proc = run_script("--from-json", "--out", str(path))
    assert proc.returncode == 0, proc.stderr
    return [" ".join(line.split()) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ("healthy", "healthy 100%: p50/off <= 1.16x and p99/off <= 1.20x 1.16x, 1.20x met"),
        ("slow", "slow 100%: p50/off <= 1.16x and p99/off <= 1.20x 1.10x, 1.21x NOT met"),
        ("failing", "failing 100%: p50/off <= 1.16x and p99/off <= 1.20x 0.70x, 0.60x met"),
        ("down", "down 100%: p50/off <= 1.16x and p99/off <= 1.20x 1.17x, 0.90x NOT met"),
    ],
    ids=["at both upper ends", "p99 just above", "faster than off", "p50 just above"],
)
def test_target_row_is_the_within_band_decision(printed_lines: list[str], candidate: str, expected: str) -> None:
    assert expected in printed_lines
    # The target row and the conditions table's verdict (pooled()'s decision) agree.
    within = MIRRORED[candidate][2]
    verdict_row = next(line for line in printed_lines if line.startswith(f"{candidate} 100% 200.0"))
    assert verdict_row.endswith("within" if within else "ABOVE")


def test_band_and_delivery_rows(printed_lines: list[str]) -> None:
    assert "A/A band (1 ± the A/A interval's farthest end from 1) p50 0.84-1.16x, p99 0.80-1.20x -" in printed_lines
    assert "every copy delivered at 100% 1000 of 1000 met" in printed_lines
    assert (
        "1, 5%: each observed share inside its Wilson interval at 98.75% (95% for the 4 together, Bonferroni) "
        "1 of 2 inside NOT met"
    ) in printed_lines


def test_each_share_is_judged_at_the_bonferroni_level_from_its_counts(printed_lines: list[str]) -> None:
    # Reference: Wilson score interval, z = the normal quantile at 1 - 0.0125/2 = 2.4977.
    z = 2.4977054744123737
    for mirrored, sent, share, inside in [(17, 1000, 0.01, "yes"), (90, 1000, 0.05, "NO")]:
        p = mirrored / sent
        centre = (p + z * z / (2 * sent)) / (1 + z * z / sent)
        half = z * ((p * (1 - p) / sent + z * z / (4 * sent * sent)) ** 0.5) / (1 + z * z / sent)
        assert (centre - half <= share <= centre + half) == (inside == "yes")
        row = f"{share:.0%} {sent} {mirrored} {p:.2%} {centre - half:.2%}-{centre + half:.2%} {inside}"
        assert row in printed_lines, (row, [line for line in printed_lines if line.startswith(f"{share:.0%} ")])


def test_setup_is_rows_not_a_sentence(printed_lines: list[str]) -> None:
    assert "cores every process on every core" in printed_lines
    assert "DestinationRule trafficPolicy (every subset) none" in printed_lines
    assert "subset candidate's own trafficPolicy outlierDetection.consecutiveGatewayErrors 3" in printed_lines
    assert "subset candidate's own trafficPolicy outlierDetection.interval 1s" in printed_lines
    assert "off cells' own p99 ms, lowest 1.50" in printed_lines
    assert "off cells' own p99 ms, highest 2.50" in printed_lines


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--write-doc", "--quick"], "not --quick"),
        (["--write-doc", "--only", "slow-100"], "needs every condition"),
        (["--write-doc", "--no-outlier-detection", "--only", "slow-100"], "needs the down candidate"),
    ],
    ids=["quick", "main block from a partial run", "no-outlier block without the down candidate"],
)
def test_write_doc_refuses_before_measuring(argv: list[str], message: str) -> None:
    proc = run_script(*argv)
    assert proc.returncode == 2
    assert message in proc.stderr
