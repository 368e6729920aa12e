"""The ramp report: a JSONL history per (environment, service), drawn as a PNG chart and an HTML page.

Each run appends one record; the report is redrawn from the whole history so it can be pasted
into a change review: how far the mirror went, what each gate saw against its threshold, and
which gate rolled it back. Drawn with matplotlib's object API on the Agg canvas: no pyplot
global state and no display, so it behaves the same inside ansible-playbook and in CI.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mirrorramp.files import write_atomically

# A gate's second look over a whole step (machine.looks) is the same gate over a longer window:
# it shares that gate's panel (drawn with squares).
from mirrorramp.machine import WHOLE_STEP
from mirrorramp.state import json_safe
from mirrorramp.wording import describe_gate

if TYPE_CHECKING:
    from mirrorramp.runner import RampConfig, RunOutcome

HISTORY_MAX_LINES = 5000
# The keys of GateResult.as_dict() worth keeping; the query is left out (long, and in the config).
GATE_KEYS = ("name", "kind", "verdict", "value", "threshold", "operator", "severity", "reason")
DPI = 100
WIDTH_IN, TOP_IN, GATE_IN = 11.0, 3.4, 2.0
EVENT_ROWS = 300  # newest first; a scheduled ramp holds many times between two changes
# verdict: (colour, filled); inconclusive is hollow, so missing evidence never looks like a pass
VERDICT_STYLE = {"pass": ("tab:green", True), "fail": ("tab:red", True), "inconclusive": ("tab:orange", False)}
STYLE = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}img{max-width:100%}.note{color:#a60}"


@dataclass(frozen=True)
class HistoryRecord:
    """One run: where the ramp was after it (`step` 0-based) and what the gates saw."""

    at: float
    environment: str
    service: str
    status: str
    step: int | None
    percent: float
    action: str
    reason: str
    gates: list[dict] = field(default_factory=list)
    plan: list[float] = field(default_factory=list)  # the step percents, drawn as dotted lines

    def __post_init__(self) -> None:
        # JSON-safe copies (NaN/Inf spelt as strings, like the ramp state): the line is valid
        # JSON for any reader, and a record equals itself after a round trip.
        gates = [_kept(gate) for gate in self.gates]
        object.__setattr__(self, "gates", gates)
        object.__setattr__(self, "plan", [float(p) for p in self.plan])

    @classmethod
    def from_dict(cls, data: object) -> HistoryRecord:
        """A record from one parsed line; ValueError/KeyError/TypeError when it is not one."""
        if not isinstance(data, Mapping):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        step, gates = data["step"], data.get("gates", [])
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise ValueError(f"step {step!r}")
        if not isinstance(gates, list) or not all(
            isinstance(g, Mapping) and isinstance(g.get("name"), str) for g in gates
        ):
            raise ValueError("gates is not a list of named gates")
        at, percent = _number(data["at"]), _number(data["percent"])
        if at is None or percent is None:
            raise ValueError("at and percent must be finite numbers")
        strings = {key: data[key] for key in ("environment", "service", "status", "action", "reason")}
        if not all(isinstance(value, str) for value in strings.values()):
            raise ValueError("environment, service, status, action and reason must be strings")
        return cls(at=at, step=step, percent=percent, gates=gates, plan=data.get("plan", []), **strings)

    @classmethod
    def from_run(cls, config: RampConfig, outcome: RunOutcome, at: float) -> HistoryRecord:
        """The record of a finished run: the state it left and the gates it showed."""
        state, last = outcome.after.state, outcome.last
        action, reason = (str(last.action), last.reason) if last else ("none", "nothing decided")
        gates, plan = [g.as_dict() for g in outcome.gates], [step.percent for step in config.plan]
        return cls(
            at=at,
            environment=config.environment,
            service=config.service,
            status=state.status,
            step=state.step_index,
            percent=outcome.after.percent,  # read back from the target, as the task result shows it
            action=action,
            reason=reason,
            gates=gates,
            plan=plan,
        )


def _kept(gate: Mapping) -> dict:
    """What the history keeps of a gate: GATE_KEYS, and a judge's interval [lower, upper] (from
    the result's extra, or as stored)."""
    kept = {key: gate.get(key) for key in GATE_KEYS}
    extra = gate.get("extra") if isinstance(gate.get("extra"), Mapping) else {}
    interval = gate.get("interval")
    if interval is None and gate.get("kind") == "judge" and "lower" in extra:
        interval = [extra.get("lower"), extra.get("upper")]
    if isinstance(interval, list | tuple) and len(interval) == 2:
        kept["interval"] = list(interval)
    return json_safe(kept)


def judge_intervals(records: Sequence[HistoryRecord], name: str) -> list[tuple[float, float, float, str]]:
    """(time, lower, upper, verdict) of judge gate `name` in each record, the ends clipped to a
    quarter and four times its limit (an interval is infinite before the evidence bounds it)."""
    drawn = []
    for record in records:
        for gate in record.gates:
            if gate["name"] != name or gate.get("kind") != "judge" or "interval" not in gate:
                continue
            limit = _number(gate.get("threshold"))
            if limit is None or limit <= 0:
                continue
            low, high = (_number(v) for v in gate["interval"])
            if low is None and high is None and gate["interval"] == [None, None]:
                continue  # no data: no interval at all
            floor, ceiling = limit / 4, limit * 4
            low = floor if low is None or low < floor else min(low, ceiling)
            high = ceiling if high is None or high > ceiling else max(high, floor)
            drawn.append((record.at, low, high, str(gate.get("verdict"))))
    return drawn


class History(list[HistoryRecord]):
    """The records of a history file, oldest first; `skipped` counts lines that were not records."""

    skipped: int = 0


def append_history(path: Path, record: HistoryRecord) -> None:
    """Append `record` as one JSON line, then keep only the last HISTORY_MAX_LINES lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(asdict(record), sort_keys=True, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    with path.open("a+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(size - 1, 0))
        # A run killed mid-write leaves a torn last line: start on a fresh one so only it is lost.
        torn = size > 0 and handle.read(1) != b"\n"
        handle.write(b"\n" + line if torn else line)  # one write: concurrent runs interleave whole lines
        handle.flush()
        os.fsync(handle.fileno())
    lines = path.read_bytes().splitlines(keepends=True)
    if len(lines) > HISTORY_MAX_LINES:
        write_atomically(path, b"".join(lines[-HISTORY_MAX_LINES:]))


def load_history(path: Path) -> History:
    """The records in `path` sorted by time; a missing file is an empty history."""
    history = History()
    if not path.exists():
        return history
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            history.append(HistoryRecord.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            history.skipped += 1  # a hand edit or a torn write must not hide the rest
    history.sort(key=lambda record: record.at)
    return history


def gate_panels(history: Sequence[HistoryRecord]) -> list[str]:
    """The gates drawn in their own panel, in first-seen order: those with a numeric threshold."""
    names: dict[str, None] = {}
    for record in history:
        for gate in record.gates:
            if _number(gate.get("threshold")) is not None:
                names.setdefault(gate["name"].removesuffix(WHOLE_STEP), None)
    return list(names)


def figure_size(panels: int) -> tuple[float, float]:
    """The PNG size in inches (times DPI for pixels): the percent panel plus one per gate panel."""
    return WIDTH_IN, TOP_IN + GATE_IN * panels


def write_report(
    history: Sequence[HistoryRecord], html_path: Path, png_path: Path, *, title: str, skipped_lines: int = 0
) -> None:
    """Draw `history` to `png_path` and an HTML page (the PNG embedded) to `html_path`."""
    records = sorted(history, key=lambda record: record.at)
    png, undrawn = _render_png(records, gate_panels(records))
    write_atomically(png_path, png)
    write_atomically(html_path, _render_html(records, png, title, skipped_lines, undrawn).encode())


def publish(report_dir: Path, record: HistoryRecord, *more: HistoryRecord, redraw: bool = True) -> Path:
    """Append the records (of one service) to <report_dir>/<env>/<service>.jsonl; redraw the .html and .png.

    Watch mode hands over one record per pass, so the chart shows every step of the run. With
    `redraw` False the drawing (about 2 s) is skipped unless there is none yet: a scheduled run
    that only held adds its record, and the next change draws it.
    """
    for name in (record.environment, record.service):
        if not name or "/" in name or name.startswith("."):  # the adapter checks DNS labels; be safe here too
            raise ValueError(f"report: {name!r} cannot be part of a file name")
    if any((r.environment, r.service) != (record.environment, record.service) for r in more):
        raise ValueError("report: records of several services cannot go into one report")
    base = report_dir / record.environment / record.service
    history_path = base.with_name(f"{record.service}.jsonl")
    for each in (record, *more):
        append_history(history_path, each)
    html_path = base.with_name(f"{record.service}.html")
    if not redraw and html_path.exists():
        return html_path
    history = load_history(history_path)
    title = f"Mirror ramp: {record.service} in {record.environment}"
    write_report(
        history, html_path, base.with_name(f"{record.service}.png"), title=title, skipped_lines=history.skipped
    )
    return html_path


# -- drawing ------------------------------------------------------------------------------------


def _render_png(records: Sequence[HistoryRecord], panels: list[str]) -> tuple[bytes, dict[str, int]]:
    """The chart as PNG bytes, and per gate how many values were not drawn (NaN, Inf, none)."""
    # Imported here: the engine, and every run that writes no report, does not pay for matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=figure_size(len(panels)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ratios = [TOP_IN] + [GATE_IN] * len(panels)
    axes = fig.subplots(len(ratios), 1, sharex=True, squeeze=False, height_ratios=ratios)[:, 0]
    top = axes[0]
    if not records:
        top.text(0.5, 0.5, "no runs recorded", ha="center", va="center", transform=top.transAxes, fontsize=14)
        top.set_axis_off()
    else:
        times = [datetime.fromtimestamp(r.at, UTC) for r in records]
        top.plot(times, [r.percent for r in records], ".-", drawstyle="steps-post", label="mirror %")
        for index, percent in enumerate(records[-1].plan):
            top.axhline(percent, linestyle=":", linewidth=0.9, color="grey", label=None if index else "plan steps")
        _mark_rollbacks(top, records, times)
        # Ramps are geometric (1 → 5 → 10 → 20 %): on a linear axis the early steps, where most
        # rollbacks happen, would be squashed together at the bottom.
        top.set_yscale("symlog", linthresh=1, linscale=0.6)
        ticks = sorted({0.0, *records[-1].plan, *(r.percent for r in records)})
        top.set_yticks(ticks, [f"{t:g}%" for t in ticks])
        top.set_ylim(-0.1, max(ticks) * 1.6 or 1)
        top.set_ylabel("mirror percent")
        top.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
        top.set_title(_text(f"{records[-1].environment}/{records[-1].service}"), loc="left")
        # Ticks labelled by the span (seconds for a sandbox run of minutes, days for a prod ramp),
        # the date once in the corner: a fixed format printed the same minute under every tick.
        locator = AutoDateLocator(tz=UTC)
        axes[-1].xaxis.set_major_locator(locator)
        axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))
        axes[-1].set_xlabel("time (UTC)")
    undrawn = {
        name: _draw_gate(ax, name, records, key=ax is axes[1]) for ax, name in zip(axes[1:], panels, strict=True)
    }
    buffer = io.BytesIO()
    # No Software/date metadata: the same history gives the same bytes.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue(), undrawn


def _mark_rollbacks(ax: Any, records: Sequence[HistoryRecord], times: list[datetime]) -> None:
    # Marked at the percent it rolled back from: the step line itself already drops to 0.
    marks = [(i, records[i - 1].percent if i else r.percent) for i, r in enumerate(records) if r.action == "rollback"]
    if marks:
        xs, ys = [times[i] for i, _ in marks], [was for _, was in marks]
        ax.plot(xs, ys, "x", color="tab:red", markersize=10, mew=2, label="rollback")
    for index, was in marks:
        failed = [g["name"] for g in records[index].gates if g.get("verdict") == "fail"]
        label = _text(f"rollback: {failed[0] if failed else 'no evidence'}"[:60])
        ax.annotate(label, (times[index], was), xytext=(6, 6), textcoords="offset points", color="tab:red", fontsize=8)


def _draw_gate(ax: Any, name: str, records: Sequence[HistoryRecord], *, key: bool) -> int:
    """One gate's values against its threshold; returns how many values were not finite numbers."""
    line: tuple[list, list] = ([], [])
    limit: tuple[list, list] = ([], [])
    points: dict[tuple[str, bool], tuple[list, list]] = {}
    undrawn, kind, operator = 0, "", ""
    for record in records:
        when, value = datetime.fromtimestamp(record.at, UTC), math.nan  # NaN breaks the line: no value
        for gate in (g for g in record.gates if g["name"].removesuffix(WHOLE_STEP) == name):
            whole, number = gate["name"] != name, _number(gate.get("value"))
            undrawn += number is None
            if number is not None:
                xs, ys = points.setdefault((str(gate.get("verdict")), whole), ([], []))
                xs.append(when)
                ys.append(number)
            if not whole:
                kind, operator = gate.get("kind") or kind, gate.get("operator") or operator
                value = math.nan if number is None else number
                if (threshold := _number(gate.get("threshold"))) is not None:
                    limit[0].append(when)
                    limit[1].append(threshold)
        line[0].append(when)
        line[1].append(value)
    ax.plot(*line, color="tab:blue", linewidth=0.8, label="estimate" if kind == "judge" else "value")
    if kind == "judge" and limit[1]:
        _draw_intervals(ax, name, records, limit[1][-1])
    if limit[1]:  # held up to the last run, so a single threshold still shows as a line
        label = _text(f"threshold {operator} {limit[1][-1]:g}")
        ax.plot([*limit[0], line[0][-1]], [*limit[1], limit[1][-1]], "r--", drawstyle="steps-post", lw=1, label=label)
    for (verdict, whole), (xs, ys) in sorted(points.items()):
        color, filled = VERDICT_STYLE.get(verdict, ("grey", False))
        ax.plot(xs, ys, "s" if whole else "o", color=color, markerfacecolor=color if filled else "none", markersize=5)
    if key:  # the marker key once, in the first gate panel
        for verdict, (color, filled) in VERDICT_STYLE.items():
            ax.plot([], [], "o", color=color, markerfacecolor=color if filled else "none", label=verdict)
        ax.plot([], [], "s", color="grey", label="whole step")
    ax.set_title(_text(f"{name} ({kind})"[:90]), loc="left", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return undrawn


def _draw_intervals(ax: Any, name: str, records: Sequence[HistoryRecord], limit: float) -> None:
    """A judge's interval at each look against its tolerance band: below 1 + tolerance shaded
    (an interval wholly inside passes, one wholly above fails), on a log scale (shifts and ratios)."""
    intervals = judge_intervals(records, name)
    ax.axhspan(limit / 4, limit, color="tab:green", alpha=0.08, label=_text(f"within tolerance (< {limit:g})"))
    for verdict in VERDICT_STYLE:
        chosen = [(datetime.fromtimestamp(at, UTC), low, high) for at, low, high, v in intervals if v == verdict]
        if chosen:
            xs, lows, highs = zip(*chosen, strict=True)
            ax.vlines(xs, lows, highs, color=VERDICT_STYLE[verdict][0], linewidth=2, alpha=0.6)
    if intervals:
        ax.plot([], [], "|", color="grey", markersize=10, label="interval")
    ax.set_yscale("log")
    ax.set_ylim(limit / 4, limit * 4)
    ticks = [round(limit * factor, 3) for factor in (0.25, 0.5, 1, 2, 4)]
    ax.set_yticks(ticks, [f"{t:g}x" for t in ticks])
    ax.minorticks_off()


def _text(value: str) -> str:
    # matplotlib reads $...$ as math: a gate name is data and must be drawn as written.
    return value.replace("$", r"\$")


# -- HTML ---------------------------------------------------------------------------------------


def _render_html(
    records: Sequence[HistoryRecord], png: bytes, title: str, skipped: int, undrawn: dict[str, int]
) -> str:
    notes = [
        f"{n} value(s) of gate {name} were NaN, infinite or missing: not drawn" for name, n in undrawn.items() if n
    ]
    if skipped:
        notes.append(f"{skipped} line(s) of the history file were not records and were skipped")
    notes_html = "".join(f'<p class="note">{html.escape(note)}</p>' for note in notes)
    body = f"<p><strong>No runs recorded.</strong></p>{notes_html}"
    if records:
        last, changes = records[-1], [b for a, b in pairwise(records) if _position(a) != _position(b)]
        summary = {
            "service": last.service,
            "environment": last.environment,
            "status": last.status,
            "step": f"{last.step + 1} of {len(last.plan)}" if last.step is not None else "-",
            "percent": f"{last.percent:g}%",
            "started (UTC)": _utc(records[0].at),
            "last change (UTC)": _utc((changes[-1] if changes else records[0]).at),
            "rollbacks": str(sum(r.action == "rollback" for r in records)),
        }
        shown = records[-EVENT_ROWS:]
        header = ("time (UTC)", "action", "step", "percent", "reason", "gates failing")
        body = (
            _table(summary.keys(), [summary.values()])
            + notes_html
            + f'<img alt="ramp chart" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            + f"<h2>Runs ({len(shown)} of {len(records)}, newest first)</h2>"
            + _table(header, [_event(r) for r in reversed(shown)])
        )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _event(record: HistoryRecord) -> list[str]:
    step = "-" if record.step is None else str(record.step + 1)
    # The reason is the record's own column: each failing gate without it.
    failing = "; ".join(describe_gate({**g, "reason": ""}) for g in record.gates if g.get("verdict") == "fail")
    return [_utc(record.at), record.action, step, f"{record.percent:g}%", record.reason, failing]


def _position(record: HistoryRecord) -> tuple:
    return record.status, record.step, record.percent


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _number(value: object) -> float | None:
    """`value` as a finite float, or None ("NaN"/"+Inf" strings, None, booleans, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
