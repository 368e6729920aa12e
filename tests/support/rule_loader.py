"""A stand-in for prometheus-operator's rule loading: the PrometheusRule objects of the Kubernetes API
double, loaded into a real Prometheus, as the operator loads them in a cluster.

    loader = PrometheusRuleLoader(kube_api_server, prometheus).start()
    ...  # rollout.yml applies the PrometheusRule; within a poll interval Prometheus has its rules
    loader.stop()

The ramp's alert gates are inconclusive while no loaded rule could fire them, so a test that
ramps through the dev inventory's gates needs the rules it applied loaded, not only stored.
"""

from __future__ import annotations

import json
import threading

import requests

from tests.fakes.kube_api import KubeApiServer
from tests.support.prometheus_server import PrometheusServer

RULES_FILE = "prometheus-operator"


class PrometheusRuleLoader:
    """Polls the double's PrometheusRules every `interval` seconds; on a change, writes their groups
    as one rule file and reloads Prometheus (POST /-/reload)."""

    def __init__(
        self, kube: KubeApiServer, prometheus: PrometheusServer, interval: float = 0.5, max_seconds: float = 1200.0
    ) -> None:
        self.kube = kube
        self.max_seconds = max_seconds
        self.prometheus = prometheus
        self.interval = interval
        self.loads = 0  # reloads Prometheus accepted
        self.error: str | None = None  # the last reload Prometheus refused
        self._loaded: str | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rule-loader", daemon=True)

    def start(self) -> PrometheusRuleLoader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def sync(self) -> None:
        """Load the PrometheusRules now if they changed since the last load."""
        rules = self.kube.list_objects("monitoring.coreos.com", "v1", "PrometheusRule")
        groups = [group for rule in rules for group in rule.get("spec", {}).get("groups", [])]
        text = json.dumps({"groups": groups}, indent=1, sort_keys=True)  # JSON is YAML
        if text == self._loaded:
            return
        self.prometheus.write_rules(RULES_FILE, text)
        if self.prometheus.reload():
            self.loads += 1
            self.error = None
        else:
            self.error = f"Prometheus refused the rules of {len(rules)} PrometheusRule objects"
        self._loaded = text

    def _run(self) -> None:
        for _ in range(int(self.max_seconds / self.interval)):  # bounded: 20 minutes at most
            if self._stopping.wait(self.interval):
                return
            try:
                self.sync()
            except (OSError, requests.RequestException) as e:  # Prometheus restarting: the next poll
                self.error = f"could not load the rules: {e}"
