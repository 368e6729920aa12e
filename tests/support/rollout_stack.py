"""What the rollout.yml end-to-end tests share (test_rollout_istio, test_rollout_gateway_api): the
stack a run talks to (the Kubernetes API double, a real Prometheus scraping an Istio metrics source
fed with traffic, the rule loader standing in for prometheus-operator), and readers of a run's
output and of what it left in the double and in the build directory."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mirrorramp import promql
from mirrorramp.promql import QueryContext
from mirrorsandbox.istio_metrics_source import IstioMetricsSource
from tests.fakes.kube_api import RESOURCE_TYPES, KubeApiServer
from tests.support.prometheus_server import PrometheusServer
from tests.support.rule_loader import PrometheusRuleLoader
from tests.support.traffic_feeder import TrafficFeeder


@dataclass(frozen=True)
class RolloutStack:
    kube: KubeApiServer
    prometheus: PrometheusServer
    feeder: TrafficFeeder
    loader: PrometheusRuleLoader


@contextmanager
def rollout_stack(
    kube: KubeApiServer, prometheus_dir: Path, *, namespace: str, service: str, workloads: Sequence[str]
) -> Iterator[RolloutStack]:
    """The double emptied but for `namespace`, Prometheus scraping `service`'s metrics while the
    feeder serves `workloads`, and the rules rollout.yml applies loaded into Prometheus as
    prometheus-operator would (the alert gate needs them); all stopped and the double emptied after."""
    kube.reset()
    kube.ensure_namespace(namespace)
    source = IstioMetricsSource(namespace=namespace, service=service).start()
    prometheus = PrometheusServer(prometheus_dir, targets=[source.target])
    feeder = TrafficFeeder(source, workloads)
    loader = PrometheusRuleLoader(kube, prometheus)
    try:
        prometheus.start()
        feeder.start()
        loader.start()
        yield RolloutStack(kube, prometheus, feeder, loader)
    finally:
        loader.stop()
        feeder.stop()
        prometheus.stop()
        source.stop()
        kube.reset()


def stored_objects(server: KubeApiServer) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every object of every served kind but namespaces: (kind, namespace, name) -> object."""
    out = {}
    for rt in RESOURCE_TYPES:
        if rt.kind == "Namespace":
            continue
        for obj in server.list_objects(rt.group, rt.versions[0], rt.kind):
            out[(rt.kind, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj
    return out


def rendered_manifests(build_dir: Path) -> list[dict[str, Any]]:
    """Every Kubernetes manifest the render wrote into `build_dir`."""
    return [yaml.safe_load(path.read_text()) for path in sorted((build_dir / "k8s").glob("*.yml"))]


def error_ratio_query(service: str, namespace: str, environment: str, workload: str, window: str) -> str:
    """The default error-ratio query of `workload` (a version of `service`), as the gates send it."""
    context = QueryContext(service, namespace, environment, f"{service}-v1", (workload,), window)
    return promql.render(promql.ERROR_RATIO, context)


def task_lines(output: str, task: str) -> list[str]:
    """The result lines (ok/changed/failed ...) of one task."""
    section = output.split(f"TASK [{task}]", 1)[1].split("\nTASK [", 1)[0].split("\nPLAY RECAP", 1)[0]
    return [line for line in section.splitlines() if re.match(r"^(ok|changed|failed|fatal|skipping): ", line)]


def service_lines(output: str, task: str) -> list[str]:
    """What the one ramp task printed for each service: "changed user-service", "ok order-service"."""
    pattern = r"^(ok|changed|failed): \[[a-z]+\] (?:\(check mode, nothing written\) )?([a-z0-9-]+): "
    return [" ".join(m.groups()) for line in task_lines(output, task) if (m := re.match(pattern, line))]
