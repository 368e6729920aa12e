"""The API double's command line (`python -m tests.fakes.kube_api`), as a program that may not
import a test module runs it (scripts/bench/scale.py), and its request log."""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from mirrorsandbox.harness import stop_pid
from tests.fakes.kube_api import request_kind
from tests.support.ansible_run import REPO_ROOT

START_TIMEOUT_S = 180.0  # the double loads its CRD models before it prints its URL
ISTIO_VS = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("GET", "/api/v1/namespaces", "LIST"),
        ("GET", "/api/v1/namespaces/default", "GET"),
        ("GET", ISTIO_VS, "LIST"),
        ("GET", "/apis/networking.istio.io/v1/virtualservices", "LIST"),
        ("GET", f"{ISTIO_VS}/reviews", "GET"),
        ("GET", "/apis", "GET"),
        ("GET", "/apis/networking.istio.io/v1", "GET"),
        ("GET", "/version", "GET"),
        ("GET", "/not/served", "GET"),
        ("POST", ISTIO_VS, "POST"),
        ("PATCH", f"{ISTIO_VS}/reviews", "PATCH"),
        ("PUT", f"{ISTIO_VS}/reviews", "PUT"),
        ("DELETE", f"{ISTIO_VS}/reviews", "DELETE"),
    ],
    ids=lambda value: str(value),
)
def test_request_kind(method: str, path: str, kind: str) -> None:
    assert request_kind(method, path) == kind


@dataclass
class RunningDouble:
    process: subprocess.Popen[str]
    url: str
    token: str
    request_log: Path


@pytest.fixture
def double(tmp_path: Path) -> Iterator[RunningDouble]:
    """The double started by its command line, its PID known, stopped by it."""
    work_dir, log = tmp_path / "kube", tmp_path / "requests.jsonl"
    with (tmp_path / "stderr.log").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.kube_api", "--work-dir", str(work_dir), "--request-log", str(log)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        url = process.stdout.readline().strip() if readable else ""
        assert url.startswith("http://127.0.0.1:"), (tmp_path / "stderr.log").read_text()
        kubeconfig = yaml.safe_load((work_dir / "kubeconfig").read_text())
        assert kubeconfig["clusters"][0]["cluster"]["server"] == url
        yield RunningDouble(process, url, kubeconfig["users"][0]["user"]["token"], log)
    finally:
        stop_pid(process)
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.slow
def test_the_request_log_has_a_line_per_request_with_its_kind(double: RunningDouble) -> None:
    headers = {"Authorization": f"Bearer {double.token}"}
    reviews = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
    }
    sent = [
        ("GET", "/apis", None, "GET", 200),
        ("POST", ISTIO_VS, reviews, "POST", 201),
        ("GET", f"{ISTIO_VS}?labelSelector=app%3Dreviews", None, "LIST", 200),
        ("GET", f"{ISTIO_VS}/reviews", None, "GET", 200),
        ("PATCH", f"{ISTIO_VS}/reviews", {"metadata": {"labels": {"app": "reviews"}}}, "PATCH", 200),
        ("GET", f"{ISTIO_VS}/missing", None, "GET", 404),
    ]
    before = time.time()
    for method, path, body, _, status in sent:
        content = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        answer = requests.request(
            method, double.url + path, headers=headers | content, data=json.dumps(body) if body else None, timeout=10
        )
        assert answer.status_code == status, answer.text
    after = time.time()

    logged = [json.loads(line) for line in double.request_log.read_text().splitlines()]
    assert [(e["method"], e["path"], e["kind"], e["status"]) for e in logged] == [
        (method, path.split("?")[0], kind, status) for method, path, _, kind, status in sent
    ]
    assert all(before <= e["at"] <= after and 0 <= e["seconds"] <= after - before for e in logged)
    assert [e["at"] for e in logged] == sorted(e["at"] for e in logged)
    assert double.token not in double.request_log.read_text()


@pytest.mark.slow
def test_sigterm_stops_it_cleanly(double: RunningDouble) -> None:
    port = int(double.url.rsplit(":", 1)[1])
    double.process.send_signal(signal.SIGTERM)
    assert double.process.wait(timeout=10) == 0
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
