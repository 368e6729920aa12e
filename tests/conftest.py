"""Shared pytest set-up. Fixtures live beside what they serve (tests/support, tests/fakes)
and are imported by the test modules that use them."""

from __future__ import annotations

import pytest

# The longest modules (setup and calls, measured on 2 cores with `make pytest --durations`),
# longest first. `make pytest` runs whole modules on 2 xdist workers in collection order
# (--no-loadscope-reorder), so these start first and the short ones fill the gaps around them;
# started last, one of them alone would set the end of the run.
LONGEST_FIRST = (
    "tests/integration/test_rollout_istio.py",
    "tests/integration/test_rollout_sandbox.py",
    "tests/manifests/test_input_checks.py",
    "tests/fakes/test_kube_api_ansible.py",
    "tests/integration/test_sandbox.py",
    "tests/manifests/test_istio_render.py",
    "tests/integration/test_faults.py",
    "tests/integration/test_nginx_driver.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {module: index for index, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest as collected
