"""A metrics endpoint on 127.0.0.1 that exposes Istio's standard request metrics, driven by its caller.

The names and labels are Istio's own (`istio_requests_total`,
`istio_request_duration_milliseconds` histogram, `reporter="destination"`, ...), so the gate
queries that run against a mesh run against this too. The caller (the tests, the scale
benchmark) says what was served, with no backend serving it:

    source = IstioMetricsSource(namespace="shop").start()
    source.add("user-service-v2", n=50, code=503, latency_ms=40)
    ... scrape http://127.0.0.1:{source.port}/metrics ...
    source.stop()
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, start_http_server

# Istio's names, labels and buckets: the sandbox backend's, which exports them as a mesh would.
from mirrorsandbox.backend import istio_request_metrics


class IstioMetricsSource:
    """An HTTP /metrics server its caller feeds with requests 'served' by workloads."""

    def __init__(self, namespace: str = "shop", service: str = "user-service") -> None:
        self.namespace = namespace
        self.service = service
        self.registry = CollectorRegistry()
        self._requests, self._duration = istio_request_metrics(self.registry)
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self.port: int | None = None

    @property
    def target(self) -> str:
        """host:port for a Prometheus static_config."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> IstioMetricsSource:
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = self._server.server_port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def labels(self, workload: str, code: int, version: str | None = None) -> dict[str, str]:
        """The destination-side labels of one request served by `workload`."""
        version = version or workload.rsplit("-", 1)[-1]
        fqdn = f"{self.service}.{self.namespace}.svc.cluster.local"
        return {
            "reporter": "destination",
            "source_workload": "istio-ingressgateway",
            "source_workload_namespace": "istio-system",
            "destination_workload": workload,
            "destination_workload_namespace": self.namespace,
            "destination_app": self.service,
            "destination_version": version,
            "destination_service": fqdn,
            "destination_service_name": self.service,
            "destination_service_namespace": self.namespace,
            "destination_canonical_service": self.service,
            "destination_canonical_revision": version,
            "request_protocol": "http",
            "response_code": str(code),
            "response_flags": "-",
            "grpc_response_status": "",
            "connection_security_policy": "mutual_tls",
        }

    def add(
        self, workload: str, n: int = 1, code: int = 200, latency_ms: float = 10.0, version: str | None = None
    ) -> None:
        """Record `n` requests that `workload` answered with `code` in `latency_ms`."""
        labels = self.labels(workload, code, version)
        with self._lock:
            self._requests.labels(**labels).inc(n)
            histogram = self._duration.labels(**labels)
            for _ in range(n):
                histogram.observe(latency_ms)

    def touch(self, workload: str, code: int = 200, version: str | None = None) -> None:
        """Create the series of `workload` at zero: it exists but served nothing."""
        labels = self.labels(workload, code, version)
        with self._lock:
            self._requests.labels(**labels)
            self._duration.labels(**labels)
