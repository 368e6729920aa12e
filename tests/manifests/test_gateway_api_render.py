"""The HTTPRoutes and version Services rendered by role mirror_gateway_api, byte for byte.

The golden files (tests/manifests/golden/gateway-api-<env>) are the render of staging with
`mirror_mesh_api=gateway-api` as the inventory stands (one service, a baseline shadow: two mirror
targets, gRPC) and of dev with its match in HTTPRouteMatch form (two services, a header-matched
mirror at 0.5 %). tests/examples/test_gitops_examples.py takes its HTTPRoute from the dev golden.
Regenerate them with `.venv/bin/python -m tests.support.gateway_api_render`.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.gateway_api_render import (
    GOLDEN_ENVIRONMENTS,
    gateway_api_files,
    gateway_api_only_render_playbook,
    golden_extra_vars,
    golden_files,
    render_gateway_api,
)

pytestmark = pytest.mark.slow

EXPECTED_FILES = {
    "staging": [
        "httproute-shop-staging-user-service.yml",
        "service-shop-staging-user-service-baseline.yml",
        "service-shop-staging-user-service-candidate.yml",
        "service-shop-staging-user-service-stable.yml",
    ],
    "dev": [
        "httproute-shop-dev-order-service.yml",
        "httproute-shop-dev-user-service.yml",
        "service-shop-dev-order-service-candidate.yml",
        "service-shop-dev-order-service-perf.yml",
        "service-shop-dev-order-service-stable.yml",
        "service-shop-dev-user-service-candidate.yml",
        "service-shop-dev-user-service-stable.yml",
    ],
}


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("gateway-api-golden")
    playbook = gateway_api_only_render_playbook(base)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            env: pool.submit(render_gateway_api, playbook, env, base / env, golden_extra_vars(env))
            for env in GOLDEN_ENVIRONMENTS
        }
        yield {env: future.result() for env, future in futures.items()}


@pytest.mark.parametrize("environment", GOLDEN_ENVIRONMENTS)
def test_the_render_is_the_golden_byte_for_byte(renders: dict[str, Path], environment: str) -> None:
    golden = golden_files(environment)
    assert list(golden) == EXPECTED_FILES[environment]
    rendered = gateway_api_files(renders[environment])
    assert list(rendered) == list(golden)
    for name, content in golden.items():
        assert rendered[name] == content, name
