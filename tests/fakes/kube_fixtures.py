"""pytest fixtures of the Kubernetes API test double (tests/fakes/kube_api.py).

Import the ones a test module uses:

    from tests.fakes.kube_fixtures import kube_api, kube_api_server, kube_env  # noqa: F401

- ``kube_api_server`` (session): one server on 127.0.0.1 for the whole session, with its own
  TMPDIR for subprocesses, so kubernetes.core's discovery cache ($TMPDIR/k8srcp-*.json) is never
  shared with another session or another server.
- ``kube_api`` (function): the same server, reset (store, faults, request log) before the test
  and its faults cleared after it.
- ``kube_env``: the environment of run_playbook(..., env=kube_env): K8S_AUTH_HOST,
  K8S_AUTH_API_KEY, K8S_AUTH_VERIFY_SSL=false, K8S_AUTH_KUBECONFIG and TMPDIR.
- ``kube_client``: a kubernetes.client.ApiClient configured from the server's kubeconfig.

A module that runs one playbook for many tests can take ``kube_api_server`` in a module-scoped
fixture and call ``reset()`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.kube_api import KubeApiServer


@pytest.fixture(scope="session")
def kube_api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    server = KubeApiServer(tmp_path_factory.mktemp("kube-api"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kube_api(kube_api_server: KubeApiServer) -> Iterator[KubeApiServer]:
    kube_api_server.reset()
    yield kube_api_server
    kube_api_server.reset_faults()


@pytest.fixture
def kube_env(kube_api: KubeApiServer) -> dict[str, str]:
    return kube_api.ansible_env()


@pytest.fixture
def kube_client(kube_api: KubeApiServer) -> Iterator[Any]:
    client = kube_api.api_client()
    try:
        yield client
    finally:
        client.close()
