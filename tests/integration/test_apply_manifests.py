"""mirror_apply_manifests (one run of kubernetes.core.k8s for many manifests) against the API double.

One playbook, run with different manifests: what is applied, what each run prints, check mode,
and a manifest the API server refuses in the middle of the list. Another, as role mirror_apply
runs it: the manifests of a directory, the live mirror of a route the ramp owns kept, the digest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from mirrorramp.drivers.kube import KubeConnection, api_client, list_live_routes
from mirrorramp.errors import DriverError
from mirrorramp.routes import route_collections
from mirrorramp.virtualservice import read_mirror_percent, with_mirror_percent
from tests.fakes.kube_api import KubeApiServer
from tests.fakes.kube_fixtures import kube_api_server  # noqa: F401
from tests.support.ansible_run import PlaybookRun, recap_counts, run_playbook
from tests.unit.test_virtualservice import ONE
from tests.unit.test_virtualservice import virtual_service as owned_route

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

DIRECTORY_PLAYBOOK = """\
- name: Apply a directory of manifests
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Apply the manifests
      mirror_apply_manifests:
        directory: "{{ directory }}"
        keep_live_mirror: true
        kube: "{{ kube }}"
      register: applied

    - name: Say the digest
      ansible.builtin.debug:
        msg: "digest={{ applied.digest }}"
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

    directory_playbook = playbook.with_name("apply-directory.yml")
    directory_playbook.write_text(DIRECTORY_PLAYBOOK)

    def run(manifests: list[dict] | Path, kube_options: dict | None = None, **options) -> PlaybookRun:
        """Apply `manifests`: a list (definitions) or a directory of files (directory, keep_live_mirror)."""
        kube_api_server.clear_requests()
        if isinstance(manifests, Path):
            path, extra_vars = directory_playbook, {"directory": str(manifests), "kube": kube | (kube_options or {})}
        else:
            path, extra_vars = playbook, {"manifests": manifests, "kube": kube}
        return run_playbook(
            str(path), "inventories/local", extra_vars, env={"TMPDIR": str(kube_api_server.tmpdir)}, **options
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


def route(name: str, percent: float, *, owned: bool) -> dict:
    """A VirtualService mirroring `percent` %; `owned`: it carries the ramp's state annotation."""
    vs = with_mirror_percent(owned_route(ONE, state="{}" if owned else None), percent)
    vs["metadata"].update(name=name, namespace=NS)
    return vs


def test_a_directory_is_applied_in_path_order_keeping_the_mirror_the_ramp_set(apply, tmp_path: Path) -> None:
    kube, run = apply
    kube.put_object(route("ramped", 20, owned=True), field_manager="mirror-ramp")
    kube.put_object(route("stopped", 0, owned=True), field_manager="mirror-ramp")  # rolled back by the ramp
    rendered = {
        "20-ramped.yml": route("ramped", 1, owned=False),
        "10-settings.yml": config_map("settings", "1"),
        "30-stopped.yml": route("stopped", 1, owned=False),
    }
    for name, manifest in rendered.items():
        (tmp_path / name).write_text(yaml.safe_dump(manifest))
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "00-old.yml").write_text(yaml.safe_dump(config_map("old", "1")))

    result = run(tmp_path)
    assert result.returncode == 0, result.output[-3000:]
    assert task_output(result)[0] == "changed: ConfigMap apply-test/settings", "not in the order of the paths"

    def live_percent(name: str) -> float:
        return read_mirror_percent(kube.get_object("networking.istio.io", "v1", "VirtualService", NS, name))

    assert (live_percent("ramped"), live_percent("stopped")) == (20.0, 0.0), "the re-apply undid the ramp"
    assert kube.get_object("", "v1", "ConfigMap", NS, "settings") is not None
    assert kube.get_object("", "v1", "ConfigMap", NS, "old") is None, "a subdirectory's file was applied"
    # One LIST of the namespace's VirtualServices, not a read per route.
    assert len(kube.requests_matching("GET", rf"^/apis/networking\.istio\.io/v1/namespaces/{NS}/virtualservices$")) == 1
    in_order = [rendered[name] for name in sorted(rendered)]
    expected = hashlib.sha256(json.dumps(in_order, sort_keys=True).encode()).hexdigest()[:12]
    assert f"digest={expected}" in result.output

    check = run(tmp_path, check=True)
    assert check.returncode == 0 and recap_counts(check.output)["changed"] == 0, check.output[-3000:]


def test_a_directory_without_manifests_fails_naming_it_and_writes_nothing(apply, tmp_path: Path) -> None:
    kube, run = apply
    result = run(tmp_path)
    assert result.returncode != 0
    assert f"no manifest (*.yml) under {tmp_path}" in result.output, result.output[-3000:]
    assert not [r for r in kube.requests if r.method != "GET"]


def test_the_live_routes_are_listed_once_per_kind_and_namespace_and_a_refusal_names_the_list(apply) -> None:
    kube, _ = apply
    kube.put_object(route("listed", 5, owned=True), field_manager="mirror-ramp")
    manifests = [route("listed", 1, owned=False), route("other", 1, owned=False), config_map("settings", "1")]
    kube.clear_requests()
    client = api_client(KubeConnection(host=kube.url, api_key=kube.token, validate_certs=False))
    live = list_live_routes(client, route_collections(manifests))
    assert "listed" in [item["metadata"]["name"] for item in live]
    assert [(r.method, r.path) for r in kube.requests] == [
        ("GET", f"/apis/networking.istio.io/v1/namespaces/{NS}/virtualservices")
    ], "one LIST for the two routes, none for the ConfigMap"
    # A route without a namespace: the LIST of every namespace, as kubernetes.core.k8s_info did.
    unplaced = route("listed", 1, owned=False)
    del unplaced["metadata"]["namespace"]
    assert "listed" in [item["metadata"]["name"] for item in list_live_routes(client, route_collections([unplaced]))]
    assert kube.requests[-1].path == "/apis/networking.istio.io/v1/virtualservices"
    assert list_live_routes(client, route_collections([config_map("settings", "1")])) == []

    refused = api_client(KubeConnection(host=kube.url, api_key="not-the-token", validate_certs=False))
    with pytest.raises(DriverError, match=rf"^listing VirtualService in {NS} failed: HTTP 401 Unauthorized$"):
        list_live_routes(refused, route_collections(manifests))


def test_a_bad_connection_option_is_refused_before_anything_is_applied(apply, tmp_path: Path) -> None:
    kube, run = apply
    (tmp_path / "route.yml").write_text(yaml.safe_dump(route("refused", 1, owned=False)))
    result = run(tmp_path, kube_options={"validate_certs": "maybe"})
    assert result.returncode != 0
    assert "kube.validate_certs = 'maybe': must be true or false" in result.output, result.output[-3000:]
    assert kube.requests == [], "nothing may be read or written"
    assert kube.get_object("networking.istio.io", "v1", "VirtualService", NS, "refused") is None
