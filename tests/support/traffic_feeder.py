"""Istio-shaped request metrics for a fixed set of workloads, fed from a bounded background thread."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from mirrorsandbox.istio_metrics_source import IstioMetricsSource


class TrafficFeeder:
    """Serves 20 requests on each workload every half second; `failing` ones answer 5xx half the time."""

    def __init__(self, source: IstioMetricsSource, workloads: Sequence[str], max_seconds: float = 1200.0) -> None:
        self.source = source
        self.workloads = tuple(workloads)
        self.failing: set[str] = set()
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic-feeder", daemon=True)

    def start(self) -> TrafficFeeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        for _ in range(int(self._max_seconds / 0.5)):  # bounded: max_seconds at most
            for workload in self.workloads:
                if workload in self.failing:
                    self.source.add(workload, n=10, code=200, latency_ms=20)
                    self.source.add(workload, n=10, code=503, latency_ms=20)
                else:
                    self.source.add(workload, n=20, code=200, latency_ms=20)
            if self._stop.wait(0.5):
                return
