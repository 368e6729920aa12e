"""Render an inventory's HTTPRoutes and version Services with role mirror_gateway_api alone.

Regenerate the golden files (tests/manifests/golden/gateway-api-<env>) after a deliberate change
of the role: `.venv/bin/python -m tests.support.gateway_api_render` from the checkout, then read
the diff.

playbooks/render.yml without the tasks that import another role (preflight, mirror_istio,
mirror_proxy, mirror_monitoring are tested on their own and take most of the run time), run with
`mirror_mesh_api=gateway-api`: what stays is this role between the start of `mirror_rendered_files`
and the prune, so a file the role forgets to record is deleted.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.support.ansible_run import REPO_ROOT, run_playbook

RENDER = REPO_ROOT / "playbooks" / "render.yml"
ROLE = "mirror_gateway_api"
ENVIRONMENTS = ("local", "dev", "staging", "prod")
GOLDEN = REPO_ROOT / "tests" / "manifests" / "golden"
GOLDEN_ENVIRONMENTS = ("dev", "staging")
# dev's mirror_match is Istio's form (headers as a map), which preflight refuses for a gateway-api
# service (docs/configuration.md): its HTTPRouteMatch form, the same match.
HTTP_ROUTE_MATCHES = {
    ("dev", "user-service"): [{"headers": [{"name": "x-user-type", "type": "Exact", "value": "beta-tester"}]}],
}


def gateway_api_only_render_playbook(directory: Path) -> Path:
    """playbooks/render.yml without the tasks that import a role other than mirror_gateway_api."""
    plays = yaml.safe_load(RENDER.read_text())
    for play in plays:
        play["tasks"] = [
            task for task in play["tasks"] if task.get("ansible.builtin.import_role", {"name": ROLE})["name"] == ROLE
        ]
    path = directory / "render-gateway-api-only.yml"
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return path


def inventory_services(environment: str, **keys: Any) -> list[dict[str, Any]]:
    """The environment's mirror_services as a gateway-api render takes them (HTTP_ROUTE_MATCHES),
    each with `keys` set (mirror_percent=0.5, ...)."""
    path = REPO_ROOT / "inventories" / environment / "group_vars" / "all" / "services.yml"
    out = []
    for service in yaml.safe_load(path.read_text())["mirror_services"]:
        match = HTTP_ROUTE_MATCHES.get((environment, service["name"]))
        out.append({**service, **({"mirror_match": match} if match else {}), **keys})
    return out


def golden_extra_vars(environment: str) -> dict[str, Any]:
    """The variables of the golden render: the inventory as it is, or with HTTP_ROUTE_MATCHES."""
    if any(env == environment for env, _ in HTTP_ROUTE_MATCHES):
        return {"mirror_services": inventory_services(environment)}
    return {}


def render_gateway_api(playbook: Path, environment: str, build_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    """Render `environment` with mirror_mesh_api=gateway-api into build_dir; its k8s directory."""
    variables = {"mirror_build_dir": str(build_dir), "mirror_mesh_api": "gateway-api", **(extra or {})}
    run = run_playbook(str(playbook), f"inventories/{environment}", variables)
    assert run.returncode == 0, run.output[-4000:]
    return build_dir / "k8s"


def gateway_api_files(k8s: Path) -> dict[str, bytes]:
    """The HTTPRoutes and version Services of a render: file name -> content."""
    paths = [*k8s.glob("httproute-*.yml"), *k8s.glob("service-*.yml")]
    return {path.name: path.read_bytes() for path in sorted(paths)}


def golden_files(environment: str) -> dict[str, bytes]:
    """tests/manifests/golden/gateway-api-<environment>: file name (without .golden) -> content."""
    directory = GOLDEN / f"gateway-api-{environment}"
    return {path.name.removesuffix(".golden"): path.read_bytes() for path in sorted(directory.glob("*.golden"))}


def main() -> int:
    """Write the golden files of GOLDEN_ENVIRONMENTS from a render of the current role."""
    with tempfile.TemporaryDirectory() as scratch:
        playbook = gateway_api_only_render_playbook(Path(scratch))
        for environment in GOLDEN_ENVIRONMENTS:
            k8s = render_gateway_api(playbook, environment, Path(scratch) / environment, golden_extra_vars(environment))
            directory = GOLDEN / f"gateway-api-{environment}"
            directory.mkdir(parents=True, exist_ok=True)
            for stale in directory.glob("*.golden"):
                stale.unlink()
            for name, content in gateway_api_files(k8s).items():
                (directory / f"{name}.golden").write_bytes(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
