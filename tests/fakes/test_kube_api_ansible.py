"""The Kubernetes API test double, driven by kubernetes.core modules under ansible-playbook.

Three playbook runs for the whole module (module start-up dominates the cost): the present
playbook twice (create, then nothing to change), then the operations playbook, whose own
asserts check the module results; the tests here check the server's side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.kube_api import KubeApiServer, RecordedRequest
from tests.fakes.kube_fixtures import kube_api_server  # noqa: F401
from tests.support.ansible_run import PlaybookRun, recap_counts, run_playbook

pytestmark = pytest.mark.slow

PLAYBOOKS = Path(__file__).parent / "playbooks"
NS = "mirror-test"
ISTIO = "networking.istio.io"


@dataclass
class Run:
    result: PlaybookRun
    requests: list[RecordedRequest]
    objects: dict[str, dict[str, Any] | None]

    def counts(self) -> dict[str, int]:
        return recap_counts(self.result.output)

    def calls(self, method: str, resource: str) -> list[tuple[str, int]]:
        return [(r.content_type or "", r.status) for r in self.requests if r.method == method and resource in r.path]


def snapshot(server: KubeApiServer) -> dict[str, dict[str, Any] | None]:
    return {
        "reviews": server.get_object(ISTIO, "v1", "VirtualService", NS, "reviews"),
        "ratings": server.get_object(ISTIO, "v1", "VirtualService", NS, "ratings"),
        "canary": server.get_object(ISTIO, "v1", "VirtualService", NS, "canary"),
        "destinationrule": server.get_object(ISTIO, "v1", "DestinationRule", NS, "reviews"),
        "configmap": server.get_object("", "v1", "ConfigMap", NS, "ramp-settings"),
        "deployment": server.get_object("apps", "v1", "Deployment", NS, "reviews-v2"),
    }


@pytest.fixture(scope="module")
def runs(kube_api_server: KubeApiServer) -> dict[str, Run]:  # noqa: F811
    kube_api_server.reset()
    env = kube_api_server.ansible_env()
    out: dict[str, Run] = {}
    for label, playbook in (
        ("first", "kube_api_present.yml"),
        ("second", "kube_api_present.yml"),
        ("operations", "kube_api_operations.yml"),
    ):
        kube_api_server.clear_requests()
        result = run_playbook(str(PLAYBOOKS / playbook), env=env)
        out[label] = Run(result, kube_api_server.requests, snapshot(kube_api_server))
        assert result.returncode == 0, f"{playbook} ({label}) failed:\n{result.output[-4000:]}"
    kube_api_server.reset()
    return out


def test_first_run_creates_everything(runs: dict[str, Run]) -> None:
    first = runs["first"]
    assert first.counts()["changed"] == 3
    for name, obj in first.objects.items():
        if name != "canary":
            assert obj is not None, name
            assert obj["metadata"]["generation"] == 1, name
    assert first.calls("POST", "/virtualservices") == [("application/json", 201)] * 2
    annotations = first.objects["ratings"]["metadata"].get("annotations", {})
    assert "kubectl.kubernetes.io/last-applied-configuration" in annotations, "apply: true"
    assert first.calls("PATCH", "/destinationrules/reviews") == [("application/apply-patch+yaml", 201)]


def test_second_run_changes_nothing(runs: dict[str, Run]) -> None:
    first, second = runs["first"], runs["second"]
    assert second.counts()["changed"] == 0
    assert second.objects == first.objects, "no-op writes keep every resourceVersion"
    assert not second.calls("POST", "")


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            "/virtualservices/reviews",
            [("application/strategic-merge-patch+json", 415), ("application/merge-patch+json", 200)],
            id="custom-resource-415-then-merge",
        ),
        pytest.param(
            "/deployments/reviews-v2",
            [("application/strategic-merge-patch+json", 200)],
            id="built-in-strategic-merge",
        ),
        pytest.param("/virtualservices/ratings", [("application/merge-patch+json", 200)], id="apply"),
        pytest.param("/destinationrules/reviews", [("application/apply-patch+yaml", 200)], id="server-side-apply"),
    ],
)
def test_update_paths_of_the_second_run(runs: dict[str, Run], resource: str, expected: list) -> None:
    assert runs["second"].calls("PATCH", resource) == expected


def test_operations(runs: dict[str, Run]) -> None:
    operations = runs["operations"]
    assert operations.counts()["failed"] == 0
    reviews = operations.objects["reviews"]
    assert reviews is not None, "a check-mode removal persists nothing"
    assert reviews["spec"]["http"][0]["mirrorPercentage"]["value"] == 10.0, "update then JSON patch"
    assert reviews["metadata"]["generation"] == 3
    assert operations.objects["canary"] is None, "a check-mode creation persists nothing"
    assert operations.objects["configmap"] is None
    json_patches = operations.calls("PATCH", "/virtualservices/reviews")[-2:]
    assert json_patches == [("application/json-patch+json", 200), ("application/json-patch+json", 422)]
    dry_runs = [(r.method, r.status) for r in operations.requests if r.query.get("dryRun") == "All"]
    assert dry_runs == [("POST", 201), ("DELETE", 200)]
    label_lists = [r.query["labelSelector"] for r in operations.requests if "labelSelector" in r.query]
    assert label_lists == ["app = reviews,mirror-ramp.io/mirrored,app.kubernetes.io/managed-by in (mirror-ramp, other)"]
