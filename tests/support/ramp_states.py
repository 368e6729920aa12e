"""Ramp states as a run would have left them, for seeding a route in the API double."""

from __future__ import annotations

import time
from collections.abc import Sequence

from mirrorramp.state import RampState


def ramping_state(percents: Sequence[float], step_index: int, held_for: float) -> RampState:
    """Ramping at `step_index` of `percents` for `held_for` seconds, each earlier step a minute long."""
    started = time.time() - held_for
    history = [{"at": started - 60 * (step_index + 1), "event": "start", "step": 0, "percent": percents[0]}]
    history += [
        {"at": started - 60 * (step_index - i), "event": "advance", "step": i, "percent": percents[i]}
        for i in range(1, step_index + 1)
    ]
    return RampState(
        status="ramping",
        step_index=step_index,
        percent=percents[step_index],
        step_started_at=started,
        updated_at=started,
        history=[{**event, "detail": ""} for event in history],
    )
