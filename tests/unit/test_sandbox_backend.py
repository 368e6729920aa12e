"""The sandbox backend's request log: counts are exact past the details it keeps."""

from __future__ import annotations

import pytest

from mirrorramp.sandbox_backend import RECENT_LIMIT, Backend, directories


def _backend() -> Backend:
    return Backend("v2", "demo-service-v2", "sandbox", "demo-service", "v2")


def _serve(backend: Backend, path: str) -> None:
    backend.record(200, 1.0, {"path": path, "method": "GET", "code": 200})


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", ["/"]),
        ("/load/7", ["/", "/load/"]),
        ("/a/b/c", ["/", "/a/", "/a/b/"]),
        ("/load/", ["/", "/load/"]),
    ],
)
def test_directories(path: str, expected: list[str]) -> None:
    assert directories(path) == expected


def test_count_is_exact_beyond_the_recent_details() -> None:
    backend = _backend()
    for n in range(RECENT_LIMIT + 500):
        _serve(backend, f"/cell/{n}")
    _serve(backend, "/other/1")
    served = backend.served("/cell/", limit=3)
    assert served["count"] == RECENT_LIMIT + 500
    assert [e["path"] for e in served["recent"]] == [
        f"/cell/{n}" for n in range(RECENT_LIMIT + 497, RECENT_LIMIT + 500)
    ]
    assert backend.served("/", limit=0) == {"count": RECENT_LIMIT + 501, "recent": []}


def test_prefix_is_a_directory() -> None:
    backend = _backend()
    for path in ("/load/1", "/load/2?q=1", "/loadx/1", "/load", "/deep/load/1"):
        _serve(backend, path)
    # "/load" and "/load/" both mean under /load/: not /loadx/, not the bare /load, not /deep/load/.
    for prefix in ("/load", "/load/"):
        served = backend.served(prefix, limit=10)
        assert served["count"] == 2
        assert [e["path"] for e in served["recent"]] == ["/load/1", "/load/2?q=1"]
    assert backend.served("/deep/", limit=0)["count"] == 1
    assert backend.served("/nothing/", limit=5) == {"count": 0, "recent": []}
