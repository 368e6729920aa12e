"""mirror_apply_manifests (one run of kubernetes.core.k8s for many manifests) against the API double.

One playbook, run with different manifests: what is applied, what each run prints, check mode,
and a manifest the API server refuses in the middle of the list.
"""

from __future__ import annotations

import pytest

from tests.fakes.kube_api import KubeApiServer
from tests.fakes.kube_fixtures import kube_api_server  # noqa: F401
from tests.support.ansible_run import PlaybookRun, recap_counts, run_playbook

pytestmark = pytest.mark.slow

NS = "apply-test"
PLAYBOOK = """\
- name: Apply manifests
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Apply the manifests
      mirror_apply_manifests:
        definitions: "{{ manifests }}"
        kube: "{{ kube }}"
"""


def config_map(name: str, value: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}, "data": {"k": value}}


def virtual_service(name: str, spec: dict) -> dict:
    meta = {"name": name, "namespace": NS}
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": meta, "spec": spec}


VALID_SPEC = {"hosts": ["reviews"], "http": [{"name": "primary", "route": [{"destination": {"host": "reviews"}}]}]}


@pytest.fixture(scope="module")
def apply(kube_api_server: KubeApiServer, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    kube_api_server.reset()
    kube_api_server.ensure_namespace(NS)
    playbook = tmp_path_factory.mktemp("apply") / "apply.yml"
    playbook.write_text(PLAYBOOK)
    kube = {"host": kube_api_server.url, "api_key": kube_api_server.token, "validate_certs": False}

    def run(manifests: list[dict], **options) -> PlaybookRun:
        kube_api_server.clear_requests()
        return run_playbook(
            str(playbook),
            "inventories/local",
            {"manifests": manifests, "kube": kube},
            env={"TMPDIR": str(kube_api_server.tmpdir)},
            **options,
        )

    return kube_api_server, run


def task_output(run: PlaybookRun) -> list[str]:
    section = run.output.split("TASK [Apply the manifests]", 1)[1].split("PLAY RECAP", 1)[0]
    return [line for line in section.splitlines() if line.startswith(("changed", "ok", "fatal"))]


def test_many_manifests_in_one_run_then_nothing_to_change_then_check_mode(apply) -> None:
    kube, run = apply
    manifests = [config_map("first", "1"), virtual_service("reviews", VALID_SPEC), config_map("second", "2")]
    first = run(manifests)
    assert first.returncode == 0, first.output[-3000:]
    assert task_output(first) == [
        "changed: ConfigMap apply-test/first",
        "changed: VirtualService apply-test/reviews",
        "changed: ConfigMap apply-test/second",
        "changed: [localhost]",
    ]
    assert [r.method for r in kube.requests if r.method != "GET"] == ["POST", "POST", "POST"]
    assert kube.get_object("", "v1", "ConfigMap", NS, "second")["data"] == {"k": "2"}
    assert kube.token not in first.output

    again = run(manifests)
    assert again.returncode == 0 and recap_counts(again.output)["changed"] == 0, again.output[-3000:]
    assert task_output(again) == ["ok: [localhost]"]

    changed = [config_map("first", "1"), virtual_service("reviews", VALID_SPEC), config_map("second", "3")]
    check = run(changed, check=True, diff=True)
    assert check.returncode == 0, check.output[-3000:]
    assert task_output(check) == ["changed: ConfigMap apply-test/second", "changed: [localhost]"]
    assert "--- before: ConfigMap apply-test/second" in check.output
    assert kube.get_object("", "v1", "ConfigMap", NS, "second")["data"] == {"k": "2"}, "check mode wrote"
    writes = [r for r in kube.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]
    assert writes and all(r.query.get("dryRun") == "All" for r in writes)


def test_a_refused_manifest_fails_the_task_with_the_server_message(apply) -> None:
    kube, run = apply
    refused = virtual_service("broken", {"hosts": ["reviews"], "http": [{"name": "x", "route": "not-a-list"}]})
    result = run([config_map("before-it", "1"), refused, config_map("after-it", "1")])
    assert result.returncode != 0
    fatal = [line for line in task_output(result) if line.startswith("fatal")]
    assert fatal and "kubernetes.core.k8s:" in result.output, result.output[-3000:]
    assert "broken" in result.output
    # Applied in order up to the refused one; nothing after it.
    assert kube.get_object("", "v1", "ConfigMap", NS, "before-it") is not None
    assert kube.get_object("", "v1", "ConfigMap", NS, "after-it") is None
    assert kube.get_object("networking.istio.io", "v1", "VirtualService", NS, "broken") is None
    assert kube.token not in result.output
