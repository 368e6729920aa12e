"""The Envoy the envoy driver is tested against: a hand-written route file, no upstreams.

test_envoy_driver and test_crash_safety write mirrors into this route file and read them back from
Envoy's admin; nothing listens on the clusters' port, as only the configuration is under test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mirrorsandbox.envoy_process import RoutedEnvoy, start_routed_envoy, static_cluster
from mirrorsandbox.harness import LOOPBACK, free_ports

NAME = "demo-service"
PRIMARY = "outbound|8080|v1|demo-service.demo.svc.cluster.local"
CANDIDATE = "outbound|8080|v2|demo-service.demo.svc.cluster.local"


def hand_written_routes() -> dict[str, Any]:
    """One marked route (GETs, mirrored to the candidate), an unmarked catch-all; no mirror yet."""
    return {
        "name": NAME,
        "validate_clusters": True,
        "virtual_hosts": [
            {
                "name": "demo-service.demo.svc.cluster.local:8080",
                "domains": ["*"],
                "routes": [
                    {
                        "name": "reads",
                        "match": {"prefix": "/", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
                        "route": {"cluster": PRIMARY, "timeout": "3s"},
                        "metadata": {"filter_metadata": {"mirror_ramp": {"mirror_clusters": [CANDIDATE]}}},
                    },
                    {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": PRIMARY}},
                ],
            }
        ],
    }


def envoy_without_upstreams(workdir: Path) -> RoutedEnvoy:
    """An Envoy running hand_written_routes from workdir/routes; the caller stops it by its PID."""
    (unused,) = free_ports(1)
    address = f"{LOOPBACK}:{unused}"
    return start_routed_envoy(
        workdir,
        hand_written_routes(),
        [static_cluster(PRIMARY, address), static_cluster(CANDIDATE, address)],
        version_info="hand-written",
    )
