"""The ramp report: the JSONL history survives bad lines and stays bounded; the PNG and HTML show the ramp.

The PNG is checked by its header and size, not its pixels; what is drawn is checked through the
pure panel layout (gate_panels, figure_size) and the HTML, which carries the same facts as text.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
from pathlib import Path

import pytest
from matplotlib.image import imread

from mirrorramp import report
from mirrorramp.drivers.base import TargetSnapshot
from mirrorramp.gates import parse_gates
from mirrorramp.machine import Action, Decision, Policy
from mirrorramp.model import GateResult, Step, Verdict
from mirrorramp.report import (
    DPI,
    HistoryRecord,
    append_history,
    figure_size,
    gate_panels,
    load_history,
    publish,
    write_report,
)
from mirrorramp.runner import RampConfig, RunOutcome
from mirrorramp.state import RampState

FIXTURES = Path(__file__).parent / "fixtures" / "report"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_760_000_000.0
PLAN = [1.0, 5.0, 10.0]
XSS = "<script>alert(1)</script>"


def gate(name: str, value: float | None, threshold: float | None, verdict: Verdict, kind: str = "threshold") -> dict:
    return GateResult(name, kind, "sum(x)", verdict, value, threshold, "<", None, "why").as_dict()


def record(hours: float, action: str, step: int | None, percent: float, gates: list[dict]) -> HistoryRecord:
    status = "rolled_back" if action == "rollback" else "ramping"
    return HistoryRecord(T0 + 3600 * hours, "prod", "user-service", status, step, percent, action, "r", gates, PLAN)


def ramp_with_rollback() -> list[HistoryRecord]:
    return [
        record(0, "start", 0, 1.0, []),
        record(1, "hold", 0, 1.0, [gate("error-ratio", float("nan"), 0.05, Verdict.INCONCLUSIVE)]),
        record(2, "advance", 1, 5.0, [gate("error-ratio", 0.01, 0.05, Verdict.PASS)]),
        record(
            3, "rollback", 1, 0.0, [gate("error-ratio", 0.09, 0.05, Verdict.FAIL), gate(XSS, 0.5, 1.0, Verdict.PASS)]
        ),
    ]


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG format puts first, right after the magic."""
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# -- history -------------------------------------------------------------------------------------


def test_append_and_load_round_trip_keeps_non_finite_values_as_prometheus_spells_them(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "history.jsonl"  # parents are created
    inf_gate = gate("requests", float("inf"), 100.0, Verdict.PASS, kind="traffic")
    written = [*ramp_with_rollback(), record(4, "hold", 0, 1.0, [inf_gate])]
    for item in written:
        append_history(path, item)

    loaded = load_history(path)

    assert loaded == written
    assert loaded.skipped == 0
    assert loaded[1].gates[0]["value"] == "NaN"
    assert loaded[4].gates[0]["value"] == "+Inf"
    # Exactly the keys of GateResult.as_dict() that are kept; the query is not stored.
    assert set(loaded[1].gates[0]) == set(report.GATE_KEYS) and "query" not in loaded[1].gates[0]
    assert all(json.loads(line) for line in path.read_text().splitlines())  # strict JSON, no bare NaN


def test_load_skips_and_counts_malformed_lines_and_sorts_by_time(tmp_path: Path) -> None:
    # The fixture: four records (two out of order) among a non-JSON line, a JSON array, a record
    # with a text step, one with a NaN time, a blank line and a torn last line without newline.
    history = load_history(FIXTURES / "history.jsonl")

    assert history.skipped == 5
    assert [r.action for r in history] == ["start", "hold", "advance", "rollback"]
    assert [r.at for r in history] == sorted(r.at for r in history)
    assert history[1].gates[0]["value"] == "NaN" and history[1].gates[1]["value"] == "+Inf"


def test_append_after_a_torn_line_loses_only_the_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    shutil.copy(FIXTURES / "history.jsonl", path)

    append_history(path, record(10, "hold", 0, 1.0, []))

    history = load_history(path)
    assert history.skipped == 5
    assert history[-1].at == T0 + 36000


def test_missing_history_is_empty(tmp_path: Path) -> None:
    history = load_history(tmp_path / "nothing.jsonl")
    assert history == [] and history.skipped == 0


def test_history_file_is_bounded_to_the_newest_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "HISTORY_MAX_LINES", 5)
    path = tmp_path / "history.jsonl"
    for hour in range(8):
        append_history(path, record(hour, "hold", 0, 1.0, []))

    assert len(path.read_text().splitlines()) == 5
    assert [r.at for r in load_history(path)] == [T0 + 3600 * h for h in range(3, 8)]
    assert [p.name for p in tmp_path.iterdir()] == ["history.jsonl"]  # no temp file left behind


def test_the_default_bound_is_5000_lines() -> None:
    assert report.HISTORY_MAX_LINES == 5000


# -- layout --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gates", "panels"),
    [
        pytest.param([], [], id="no-gates"),
        pytest.param([gate("a", 1.0, 2.0, Verdict.PASS)], ["a"], id="one-threshold"),
        pytest.param([gate("firing", 0.0, 0.0, Verdict.PASS, kind="alert")], ["firing"], id="alert-threshold-zero"),
        pytest.param([gate("prometheus", None, None, Verdict.INCONCLUSIVE)], [], id="no-threshold"),
        pytest.param([gate("a", 1.0, float("nan"), Verdict.PASS)], [], id="nan-threshold"),
        pytest.param(
            [gate("a", 1.0, 2.0, Verdict.PASS), gate("a (whole step)", 1.0, 2.0, Verdict.PASS)],
            ["a"],
            id="whole-step-shares-the-panel",
        ),
        pytest.param(
            [gate("b", 1.0, 2.0, Verdict.PASS), gate("a", None, 2.0, Verdict.INCONCLUSIVE)],
            ["b", "a"],
            id="first-seen-order",
        ),
    ],
)
def test_gate_panels_are_the_gates_with_a_numeric_threshold(gates: list[dict], panels: list[str]) -> None:
    assert gate_panels([record(0, "hold", 0, 1.0, gates), record(1, "hold", 0, 1.0, gates)]) == panels


def test_figure_grows_by_one_panel_per_gate() -> None:
    width, top = figure_size(0)
    assert figure_size(3) == (width, top + 3 * report.GATE_IN)


# -- the report ----------------------------------------------------------------------------------


def test_png_is_a_png_of_the_figure_size(tmp_path: Path) -> None:
    history = ramp_with_rollback()
    write_report(history, tmp_path / "r.html", tmp_path / "r.png", title="t")

    data = (tmp_path / "r.png").read_bytes()
    width, height = figure_size(len(gate_panels(history)))
    assert len(gate_panels(history)) == 2
    assert png_size(data) == (round(width * DPI), round(height * DPI))
    assert imread(tmp_path / "r.png").shape[:2] == (round(height * DPI), round(width * DPI))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.png"]  # temp files renamed away


def test_same_history_gives_the_same_png(tmp_path: Path) -> None:
    write_report(ramp_with_rollback(), tmp_path / "a.html", tmp_path / "a.png", title="t")
    write_report(ramp_with_rollback(), tmp_path / "b.html", tmp_path / "b.png", title="t")
    data = (tmp_path / "a.png").read_bytes()
    assert data == (tmp_path / "b.png").read_bytes()
    assert b"Software" not in data  # no matplotlib version stamp: an upgrade alone changes nothing


def test_html_embeds_the_png_escapes_data_and_lists_the_rollback(tmp_path: Path) -> None:
    write_report(ramp_with_rollback(), tmp_path / "r.html", tmp_path / "r.png", title=f"ramp {XSS}")
    page = (tmp_path / "r.html").read_text()

    embedded = base64.b64encode((tmp_path / "r.png").read_bytes()).decode()
    assert f'src="data:image/png;base64,{embedded}"' in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # The rollback row names the failing gate with its value and threshold (operator escaped).
    assert "<td>rollback</td>" in page
    assert "error-ratio = 0.09 (must be &lt; 0.05)" in page
    assert (
        "<th>last change (UTC)</th><th>rollbacks</th>" in page
        and "<td>rolled_back</td><td>2 of 3</td><td>0%</td>" in page
    )
    assert "1 value(s) of gate error-ratio were NaN, infinite or missing" in page


def test_gate_names_are_drawn_as_text_not_mathtext(tmp_path: Path) -> None:
    # Unescaped, matplotlib would parse $...$ as math and fail on the unknown command.
    history = [record(0, "hold", 0, 1.0, [gate(r"cost $\nosuchcommand{x}$", 1.0, 2.0, Verdict.PASS)])]
    write_report(history, tmp_path / "r.html", tmp_path / "r.png", title="t")
    assert png_size((tmp_path / "r.png").read_bytes()) == tuple(round(v * DPI) for v in figure_size(1))


def test_empty_history_writes_a_report_saying_so(tmp_path: Path) -> None:
    write_report([], tmp_path / "r.html", tmp_path / "r.png", title="nothing yet")

    assert "No runs recorded" in (tmp_path / "r.html").read_text()
    assert png_size((tmp_path / "r.png").read_bytes()) == tuple(round(v * DPI) for v in figure_size(0))


# -- wiring --------------------------------------------------------------------------------------


def rollback_outcome() -> tuple[RampConfig, RunOutcome]:
    config = RampConfig(
        service="user-service",
        namespace="shop",
        environment="prod",
        plan=tuple(Step(p, 60) for p in PLAN),
        gates=parse_gates({"min_requests": 10}),
        query_context={},
        window_seconds=600,
        policy=Policy(),
    )
    breach = GateResult("error-ratio", "threshold", "sum(x)", Verdict.FAIL, 0.09, 0.05, "<")
    state = RampState(
        status="rolled_back",
        step_index=1,
        percent=0.0,
        rollback={"reason": "r", "gate": "error-ratio", "value": 0.09, "threshold": 0.05, "at": T0},
    )
    decision = Decision(Action.ROLLBACK, state, 0.0, True, "rolled back from step 2", breach=breach)
    before = TargetSnapshot(RampState(status="ramping", step_index=1, percent=5.0, step_started_at=T0), 5.0, "1")
    return config, RunOutcome(before, TargetSnapshot(state, 0.0, "2"), [decision], [breach], changed=True)


def test_record_of_a_run_takes_the_state_after_it_and_the_gates_shown() -> None:
    config, outcome = rollback_outcome()

    rec = HistoryRecord.from_run(config, outcome, T0)

    assert (rec.environment, rec.service, rec.status, rec.step, rec.percent) == (
        "prod",
        "user-service",
        "rolled_back",
        1,
        0.0,
    )
    assert (rec.action, rec.reason, rec.plan) == ("rollback", "rolled back from step 2", PLAN)
    assert rec.gates == [{k: v for k, v in outcome.gates[0].as_dict().items() if k in report.GATE_KEYS}]


def test_publish_appends_and_redraws_per_environment_and_service(tmp_path: Path) -> None:
    config, outcome = rollback_outcome()
    publish(tmp_path, HistoryRecord.from_run(config, outcome, T0))
    html_path = publish(tmp_path, HistoryRecord.from_run(config, outcome, T0 + 60))

    assert html_path == tmp_path / "prod" / "user-service.html"
    assert sorted(p.name for p in (tmp_path / "prod").iterdir()) == [
        "user-service.html",
        "user-service.jsonl",
        "user-service.png",
    ]
    assert len(load_history(tmp_path / "prod" / "user-service.jsonl")) == 2
    assert "error-ratio = 0.09" in html_path.read_text()


@pytest.mark.parametrize("name", ["..", "a/b", ""], ids=["dotdot", "slash", "empty"])
def test_publish_refuses_names_that_are_not_file_names(tmp_path: Path, name: str) -> None:
    bad = HistoryRecord(T0, name, "svc", "ramping", 0, 1.0, "hold", "r")
    with pytest.raises(ValueError, match="cannot be part of a file name"):
        publish(tmp_path, bad)


# -- judge gates: the interval against the tolerance band -----------------------------------------


def judge_gate(verdict: Verdict, estimate: float | None, lower: float | None, upper: float | None) -> dict:
    extra = {"lower": lower, "upper": upper, "summary": "latency shift ..."}
    return GateResult("judge-latency", "judge", "q", verdict, estimate, 1.1, "<=", None, "why", extra).as_dict()


def judged_ramp() -> list[HistoryRecord]:
    return [
        record(0, "start", 0, 1.0, [judge_gate(Verdict.INCONCLUSIVE, None, None, None)]),
        record(1, "hold", 0, 1.0, [judge_gate(Verdict.INCONCLUSIVE, 1.0, 0.6, float("inf"))]),
        record(2, "advance", 1, 5.0, [judge_gate(Verdict.PASS, 1.01, 0.95, 1.07)]),
        record(3, "rollback", 1, 0.0, [judge_gate(Verdict.FAIL, 1.5, 1.3, 1.7)]),
    ]


def test_a_judge_interval_is_kept_in_the_history_and_survives_a_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    for each in judged_ramp():
        report.append_history(path, each)
    loaded = report.load_history(path)
    assert loaded == judged_ramp()
    assert loaded[2].gates[0]["interval"] == [0.95, 1.07]
    assert loaded[1].gates[0]["interval"] == [0.6, "+Inf"]


def test_judge_intervals_are_drawn_clipped_to_the_panel_with_their_verdicts() -> None:
    drawn = report.judge_intervals(judged_ramp(), "judge-latency")
    # No interval yet at the first look; an infinite upper end is drawn to the panel's top (4 x 1.1).
    assert [(lo, hi, verdict) for _, lo, hi, verdict in drawn] == [
        (0.6, pytest.approx(4.4), "inconclusive"),
        (0.95, 1.07, "pass"),
        (1.3, 1.7, "fail"),
    ]


def test_a_report_with_judge_gates_draws_a_panel_for_each(tmp_path: Path) -> None:
    history = judged_ramp()
    write_report(history, tmp_path / "r.html", tmp_path / "r.png", title="t")
    assert gate_panels(history) == ["judge-latency"]
    width, height = figure_size(1)
    assert png_size((tmp_path / "r.png").read_bytes()) == (round(width * DPI), round(height * DPI))
