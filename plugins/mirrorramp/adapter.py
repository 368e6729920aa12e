"""Runs what a mirror_ramp task asked for: a ramp, a stop or a status look, of one service or many.

No Ansible import here: the action plugin hands over the RampRequests (arguments.py) and gets
back one JSON-safe dict (results.py). The driver and the clients come from wiring.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mirrorramp import report
from mirrorramp.arguments import RampRequest
from mirrorramp.batch import BatchedPrometheus
from mirrorramp.drivers.base import Driver
from mirrorramp.errors import MirrorRampError
from mirrorramp.prometheus import PrometheusClient
from mirrorramp.results import combined_result, result_of, status_row
from mirrorramp.runner import Runner, RunOutcome, run_all

# Imported by name, not as wiring.X: scripts/bench/scale.py meters these as this module's globals.
from mirrorramp.wiring import DRIVERS, build_api_client, build_driver, build_prometheus


def started_by_alive() -> Callable[[], bool]:
    """Whether the process that started this one is still its parent.

    Ansible runs the task in a worker process forked from ansible-playbook; killed, the parent
    leaves the worker running, re-parented. A watch that outlived its controller would go on
    ramping unseen, so it asks this before every pass and while it waits.
    """
    parent = os.getppid()
    return lambda: os.getppid() == parent


@dataclass
class _Job:
    """One service of a run: its request, its runner, and the passes the report records."""

    request: RampRequest
    runner: Runner
    records: list[report.HistoryRecord]


def _job(
    request: RampRequest,
    driver: Driver,
    prometheus,
    progress: Callable[[str], None],
    debug: Callable[[str], None],
    warn: Callable[[str], None] | None = None,
) -> _Job:
    debug(f"mirror_ramp: {request.config.service} on {driver.description}, mode {request.config.mode}")
    records: list[report.HistoryRecord] = []
    runner = Runner(
        request.config,
        driver,
        prometheus,
        request.notifier,
        progress=progress if request.config.mode == "watch" else debug,
        warn=warn,
        on_pass=lambda outcome: records.append(report.HistoryRecord.from_run(request.config, outcome, time.time())),
    )
    return _Job(request, runner, records)


def _operate(job: _Job) -> dict:
    """The on-call operations: an emergency stop, or a look at the status."""
    request = job.request
    if request.operation == "stop":
        return result_of(request, job.runner.stop(request.reason or "emergency stop", request.by or "unknown"))
    looked = job.runner.status()
    return result_of(request, looked) | {"status": status_row(request.config, looked)}


def _finished(job: _Job, outcome: RunOutcome) -> dict:
    """The result of a ramp, with its report published."""
    request = job.request
    result = result_of(request, outcome)
    # Check mode records nothing: the report shows what happened, not what would have.
    if request.report_dir and job.records and not request.config.dry_run:
        try:
            # Redrawn when the ramp moved: a hold on every scheduled run would cost ~2 s a service.
            redraw = outcome.changed
            result["report"] = str(report.publish(Path(request.report_dir), *job.records, redraw=redraw))
        except (OSError, ValueError) as e:  # a report that cannot be written never fails the ramp
            result["warnings"].append(f"ramp report not written: {e}")
    return result


def execute(
    request: RampRequest,
    *,
    progress: Callable[[str], None] = lambda _m: None,
    debug: Callable[[str], None] = lambda _m: None,
    warn: Callable[[str], None] | None = None,
    driver: Driver | None = None,
    prometheus: PrometheusClient | None = None,
) -> dict:
    """One service: run the ramp once (or watch it), or stop it, or look; its task result.

    Errors are raised (MirrorRampError); execute_all runs many services and reports them.
    """
    job = _job(request, driver or build_driver(request), prometheus or build_prometheus(request), progress, debug, warn)
    if request.operation != "ramp":
        return _operate(job)
    return _finished(job, job.runner.run(alive=started_by_alive()))


def execute_all(
    requests: list[RampRequest],
    *,
    progress: Callable[[str], None] = lambda _m: None,
    debug: Callable[[str], None] = lambda _m: None,
    warn: Callable[[str], None] | None = None,
) -> dict:
    """Every service of a task in one run, with the fixed costs paid once, not per service.

    One Prometheus client and one Kubernetes client for all; one query per gate for all services
    (batch.BatchedPrometheus); the driver's preload at the start of each pass (istio: one LIST
    of VirtualServices per namespace). A service that fails is reported in its row and fails the task, after the others ran.
    """
    first = requests[0]
    kinds = [DRIVERS[request.driver_name] for request in requests]
    client = build_prometheus(first)
    # One Kubernetes client for every service whose driver needs one (istio and gateway-api mix).
    api = next((build_api_client(r) for r, kind in zip(requests, kinds, strict=True) if kind.uses_kubernetes), None)
    drivers = [build_driver(request, api) for request in requests]
    # Each driver kind's preload, once per pass, with the drivers of that kind.
    preload_of = {id(driver): kind.preload for driver, kind in zip(drivers, kinds, strict=True)}
    prometheus: PrometheusClient | BatchedPrometheus = client
    if first.operation == "ramp":
        contexts = [request.config.query_context for request in requests]
        prometheus = BatchedPrometheus(client, first.config.gates, contexts, first.config.window_seconds)
    jobs = [
        _job(request, driver, prometheus, progress, debug, warn)
        for request, driver in zip(requests, drivers, strict=True)
    ]

    def before_pass(runners: list[Runner]) -> None:
        if isinstance(prometheus, BatchedPrometheus):
            prometheus.new_pass()
        by_preload: dict[Callable, list] = {}
        for runner in runners:
            if (preload := preload_of[id(runner.driver)]) is not None:
                by_preload.setdefault(preload, []).append(runner.driver)
        for preload, same_kind in by_preload.items():
            preload(same_kind)

    results: list[dict | MirrorRampError] = []
    try:
        if first.operation == "ramp":
            outcomes = run_all([job.runner for job in jobs], before_pass=before_pass, alive=started_by_alive())
            for job, outcome in zip(jobs, outcomes, strict=True):
                results.append(outcome if isinstance(outcome, MirrorRampError) else _finished(job, outcome))
        else:
            before_pass([job.runner for job in jobs])
            for job in jobs:
                try:
                    results.append(_operate(job))
                except MirrorRampError as e:
                    results.append(e)
    finally:
        client.close()
    return combined_result(requests, results)
