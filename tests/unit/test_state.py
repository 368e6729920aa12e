"""The stored ramp state: exact JSON round trips, and loud refusal of anything corrupt."""

from __future__ import annotations

import json

import pytest

from mirrorramp.errors import MirrorRampError
from mirrorramp.model import GateResult, Verdict
from mirrorramp.state import HISTORY_LIMIT, SCHEMA_VERSION, RampState, StateError

T0 = 1_700_000_000.0


def ramping() -> RampState:
    gate = GateResult("error-ratio", "threshold", "sum(x)", Verdict.PASS, 0.01, 0.05, "<=")
    return RampState(
        status="ramping",
        step_index=1,
        percent=2.5,
        step_started_at=T0,
        updated_at=T0 + 60,
        inconclusive_streak=2,
        last_gates=[gate.as_dict()],
        history=[{"at": T0, "event": "advance", "step": 1, "percent": 2.5, "detail": "step 2"}],
    )


def rolled_back() -> RampState:
    return RampState(
        status="rolled_back",
        step_index=2,
        percent=0.0,
        step_started_at=T0,
        updated_at=T0,
        rollback={"reason": "gate failed", "gate": "error-ratio", "value": 0.2, "threshold": 0.05, "at": T0},
    )


def stopped() -> RampState:
    return RampState(status="stopped", percent=0.0, stop={"reason": "pager", "at": T0, "by": "alice"})


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(RampState.initial(), id="initial"),
        pytest.param(ramping(), id="ramping-fractional"),
        pytest.param(rolled_back(), id="rolled-back"),
        pytest.param(stopped(), id="stopped"),
        pytest.param(RampState(status="completed", step_index=3, percent=20.0, step_started_at=T0), id="completed"),
        pytest.param(RampState(status="paused", step_index=0, percent=1.0, step_started_at=T0), id="paused"),
    ],
)
def test_json_round_trip(state):
    text = state.to_json()
    assert RampState.from_json(text) == state
    assert RampState.from_dict(state.to_dict()) == state
    # Compact and sorted: the same state always gives the same bytes.
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert RampState.from_json(text).to_json() == text


def test_initial_is_pending_without_mirror():
    state = RampState.initial()
    assert (state.status, state.step_index, state.percent, state.inconclusive_streak) == ("pending", None, 0.0, 0)
    assert state.schema_version == SCHEMA_VERSION


def test_non_finite_gate_values_are_stored_as_prometheus_spells_them():
    gates = [
        GateResult("a", "threshold", "q", Verdict.INCONCLUSIVE, float("nan"), 1.0, "<=", reason="NaN").as_dict(),
        GateResult("b", "threshold", "q", Verdict.INCONCLUSIVE, float("inf"), 1.0, "<=", reason="+Inf").as_dict(),
        GateResult("c", "threshold", "q", Verdict.INCONCLUSIVE, float("-inf"), 1.0, "<=").as_dict(),
    ]
    text = RampState(status="pending", last_gates=gates).to_json()
    assert "NaN" in text and "Infinity" not in text
    values = [gate["value"] for gate in json.loads(text)["last_gates"]]
    assert values == ["NaN", "+Inf", "-Inf"]
    assert RampState.from_json(text).last_gates[0]["value"] == "NaN"


def test_history_is_bounded_to_the_last_events():
    state = RampState.initial()
    for index in range(HISTORY_LIMIT + 7):
        state = state.with_event(T0 + index, "advance", f"event {index}")
    assert len(state.history) == HISTORY_LIMIT
    assert state.history[0]["detail"] == "event 7"
    assert state.history[-1] == {"at": T0 + 56, "event": "advance", "step": None, "percent": 0.0, "detail": "event 56"}
    loaded = RampState.from_dict({**state.to_dict(), "history": state.to_dict()["history"] * 3})
    assert len(loaded.history) == HISTORY_LIMIT


def test_state_is_not_shared_with_its_inputs():
    gates = [{"name": "a", "verdict": "pass"}]
    state = RampState(last_gates=gates)
    gates[0]["verdict"] = "fail"
    assert state.last_gates[0]["verdict"] == "pass"


def test_with_event_records_the_new_position():
    state = RampState.initial().with_event(
        T0, "start", "step 1", status="ramping", step_index=0, percent=1.0, step_started_at=T0
    )
    assert state.status == "ramping"
    assert state.history == [{"at": T0, "event": "start", "step": 0, "percent": 1.0, "detail": "step 1"}]


def _corrupt(**changes) -> str:
    data = ramping().to_dict()
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


_DROP = object()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("", "not valid JSON", id="empty"),
        pytest.param('{"status": "ramp', "not valid JSON", id="truncated"),
        pytest.param("[]", "expected a JSON object", id="array"),
        pytest.param("null", "expected a JSON object", id="null"),
        pytest.param(_corrupt(schema_version=3), "schema_version 3 is not understood", id="newer-version"),
        pytest.param(_corrupt(schema_version=0), "schema_version 0 is not understood", id="older-version"),
        pytest.param(_corrupt(schema_version="1"), "schema_version is '1'", id="version-as-text"),
        pytest.param(_corrupt(schema_version=_DROP), "schema_version is None", id="version-missing"),
        pytest.param(_corrupt(surprise=1), "unknown field(s) surprise", id="unknown-field"),
        pytest.param(_corrupt(history=_DROP), "missing field(s) history", id="missing-field"),
        pytest.param(_corrupt(status="done"), "status is 'done'", id="unknown-status"),
        pytest.param(_corrupt(step_index=-1), "step_index is -1", id="negative-step"),
        pytest.param(_corrupt(step_index=1.5), "step_index is 1.5", id="fractional-step"),
        pytest.param(_corrupt(step_index=True), "step_index is True", id="bool-step"),
        pytest.param(_corrupt(percent=101), "percent is 101", id="percent-above-100"),
        pytest.param(_corrupt(percent=-1), "percent is -1", id="percent-negative"),
        pytest.param(_corrupt(percent="5"), "percent is '5'", id="percent-text"),
        pytest.param(_corrupt(percent=None), "percent is None", id="percent-null"),
        pytest.param(_corrupt(step_started_at="yesterday"), "step_started_at is 'yesterday'", id="bad-time"),
        pytest.param(_corrupt(updated_at=[1]), "updated_at is [1]", id="bad-updated-at"),
        pytest.param(_corrupt(inconclusive_streak=-1), "inconclusive_streak is -1", id="negative-streak"),
        pytest.param(_corrupt(inconclusive_streak=1.0), "inconclusive_streak is 1.0", id="float-streak"),
        pytest.param(_corrupt(last_gates={"a": 1}), "last_gates is", id="gates-not-list"),
        pytest.param(_corrupt(history=[1, 2]), "history is", id="history-not-objects"),
        pytest.param(_corrupt(rollback="yes"), "rollback is 'yes'", id="rollback-not-object"),
        pytest.param(
            _corrupt(rollback={"reason": "x"}), "rollback lacks gate, value, threshold, at", id="rollback-keys"
        ),
        pytest.param(_corrupt(stop={"reason": "x", "at": 1}), "stop lacks by", id="stop-keys"),
        pytest.param(_corrupt(step_index=None), "status ramping needs a step_index", id="ramping-without-step"),
        pytest.param(_corrupt(step_started_at=None), "status ramping needs step_started_at", id="ramping-no-clock"),
        pytest.param(_corrupt(status="rolled_back"), "rolled_back needs the rollback record", id="rollback-missing"),
        pytest.param(_corrupt(status="stopped"), "stopped needs the stop record", id="stop-missing"),
    ],
)
def test_corrupt_state_is_refused_naming_what_is_wrong(text, fragment):
    with pytest.raises(StateError) as caught:
        RampState.from_json(text)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, MirrorRampError)


def test_from_json_refuses_non_text():
    with pytest.raises(StateError, match="expected JSON text"):
        RampState.from_json(None)  # type: ignore[arg-type]


def test_from_json_accepts_bytes():
    assert RampState.from_json(ramping().to_json().encode()) == ramping()


# -- judge_spending: a field of the judge's first version (alpha spending), read and dropped -----


def test_a_state_with_the_retired_judge_spending_reads_without_it():
    data = ramping().to_dict()
    assert "judge_spending" not in data
    record = {"judge-latency": {"started_at": T0, "period": 0, "t": 0.25, "spent": 1.5e-6}}
    assert RampState.from_dict({**data, "judge_spending": record}) == ramping()
    assert data["schema_version"] == SCHEMA_VERSION == 2
