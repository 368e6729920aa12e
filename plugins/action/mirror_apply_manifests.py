"""mirror_apply_manifests: apply many manifests with one run of kubernetes.core.k8s.

kubernetes.core.k8s in a loop starts the module once per manifest (a new Python process, the
kubernetes client imported, the API discovered): seconds per manifest, the largest cost of a
rollout at scale (docs/benchmarks.md). Given the whole list as its `definition`, the module
applies the manifests in one process, one after the other, with the same requests to the API
server. This action runs it so and lifts what the module nests back up: a line per changed
manifest, and each manifest's diff at the task's level, where --diff shows it. Check mode is
the module's own (a server-side dry run). Documentation: plugins/modules/mirror_apply_manifests.py.

Given a `directory` (role mirror_apply: the render's build/<env>/k8s), the action reads the files
itself, lists the live routes and keeps their mirror (keep_live_mirror), and returns the digest
that names the copy of what it applied: done in tasks, 600 manifests held as a fact made every
later task of the play template them again (20 s of a 100-service apply).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from mirrorramp.drivers.kube import KubeConnection, api_client, list_live_routes
from mirrorramp.errors import ConfigError, DriverError, MirrorRampError
from mirrorramp.routes import keep_live_mirrors, route_collections

display = Display()

CONNECTION_OPTIONS = ("kubeconfig", "context", "host", "api_key", "validate_certs", "ca_cert")
ARGUMENT_SPEC = {
    "definitions": {"type": "list", "elements": "dict"},
    "directory": {"type": "path"},
    "keep_live_mirror": {"type": "bool", "default": False},
    "kube": {
        "type": "dict",
        "default": {},
        "options": {
            "kubeconfig": {"type": "raw"},
            "context": {"type": "str"},
            "host": {"type": "str"},
            "api_key": {"type": "str", "no_log": True},
            "validate_certs": {"type": "raw"},
            "ca_cert": {"type": "path"},
        },
    },
}
MUTUALLY_EXCLUSIVE = [("definitions", "directory")]
REQUIRED_ONE_OF = [("definitions", "directory")]
# The C loader where PyYAML has it: 600 files in a fraction of a second.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_manifests(directory: Path) -> tuple[list[dict], list[str]]:
    """The manifest of every *.yml file directly under `directory`, in the order of their paths,
    and the paths (what an error names)."""
    paths = sorted(directory.glob("*.yml"))
    if not paths:
        raise AnsibleActionFail(
            f"mirror_apply_manifests: no manifest (*.yml) under {directory}: render the environment first "
            "(ansible-playbook playbooks/render.yml -i <inventory>)"
        )
    manifests = []
    for path in paths:
        try:
            manifest = yaml.load(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)
        except (OSError, yaml.YAMLError) as e:
            raise AnsibleActionFail(f"mirror_apply_manifests: {path}: not one YAML document: {e}") from e
        if not isinstance(manifest, dict):
            raise AnsibleActionFail(f"mirror_apply_manifests: {path}: expected a manifest (a mapping)")
        manifests.append(manifest)
    return manifests, [str(path) for path in paths]


def digest(manifests: list[dict]) -> str:
    """12 hex digits of the SHA-256 of the manifests as JSON with sorted keys: the same as the
    role's earlier `to_json(sort_keys=true) | hash('sha256')`, so kept copies keep their names."""
    return hashlib.sha256(json.dumps(manifests, sort_keys=True).encode()).hexdigest()[:12]


def label(manifest: dict) -> str:
    meta = manifest.get("metadata") or {}
    namespace = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{manifest.get('kind', '?')} {namespace}{meta.get('name', '?')}"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _, args = self.validate_argument_spec(
            argument_spec=ARGUMENT_SPEC, mutually_exclusive=MUTUALLY_EXCLUSIVE, required_one_of=REQUIRED_ONE_OF
        )
        if args["directory"] is None:
            manifests = args["definitions"]
            sources = [f"definitions[{index}]" for index in range(len(manifests))]
        else:
            manifests, sources = read_manifests(Path(args["directory"]))
        for source, manifest in zip(sources, manifests, strict=True):
            if not manifest.get("kind") or not (manifest.get("metadata") or {}).get("name"):
                raise AnsibleActionFail(f"mirror_apply_manifests: {source} has no kind or metadata.name")
        result["digest"] = digest(manifests)
        if not manifests:
            result.update(changed=False, results=[])
            return result
        kube = args["kube"] or {}
        connection = {key: kube[key] for key in CONNECTION_OPTIONS if kube.get(key) not in (None, "")}
        definitions = manifests
        if args["keep_live_mirror"]:
            live = self._live_routes(manifests, kube)
            try:
                definitions = keep_live_mirrors(manifests, live)
            except MirrorRampError as e:
                raise AnsibleActionFail(f"mirror_apply_manifests: {e}") from e
        # A JSON merge patch, not a strategic one first: custom resources (every route, rule and
        # filter rendered here) refuse a strategic merge patch with 415, which cost a third request
        # per changed-or-not object; and a merge patch replaces a list whole, so an entry removed
        # from a manifest (a Service port) goes from the live object too.
        module_args = {"state": "present", "definition": definitions, "merge_type": ["merge"]} | connection
        applied = self._execute_module(module_name="kubernetes.core.k8s", module_args=module_args, task_vars=task_vars)
        if applied.get("failed"):
            # The module stops at the first manifest it cannot apply; the ones before it are applied.
            result.update(failed=True, msg=f"kubernetes.core.k8s: {applied.get('msg', 'failed')}")
            for key in ("reason", "status", "error"):
                if key in applied:
                    result[key] = applied[key]
            return result
        # One definition: the module returns its result flat; several: nested under result.results.
        outcomes = applied["result"]["results"] if len(manifests) > 1 else [applied]
        rows, diffs = [], []
        for manifest, outcome in zip(definitions, outcomes, strict=True):
            name = label(manifest)
            changed = bool(outcome.get("changed"))
            rows.append({"resource": name, "changed": changed, "method": outcome.get("method")})
            if changed:
                display.display(f"changed: {name}", color=C.COLOR_CHANGED)
                if outcome.get("diff"):
                    diffs.append({"before_header": name, "after_header": name, **outcome["diff"]})
            else:
                display.v(f"ok: {name}")
        result.update(changed=bool(applied.get("changed")), results=rows)
        for warning in applied.get("warnings") or []:
            display.warning(warning)
        if diffs:
            result["diff"] = diffs
        return result

    def _live_routes(self, manifests: list[dict], kube: dict) -> list[dict]:
        """The live routes of the manifests' route kinds, listed on the controller with the
        engine's client, the one the ramp reads these routes with (read-only, so also in check
        mode). A kubernetes.core.k8s_info run per LIST cost about 2 s: a module process that
        imports the kubernetes client and discovers the API (docs/benchmarks.md, 3)."""
        collections = route_collections(manifests)
        if not collections:
            return []
        kubeconfig = kube.get("kubeconfig")
        if kubeconfig is not None and not isinstance(kubeconfig, str):
            raise AnsibleActionFail(
                f"mirror_apply_manifests: kube.kubeconfig = {type(kubeconfig).__name__}: keep_live_mirror "
                "needs the path of a kubeconfig file (the ramp reads the same routes with it)"
            )
        validate_certs = kube.get("validate_certs")
        try:
            verify = None if validate_certs in (None, "") else boolean(validate_certs, strict=True)
        except TypeError as e:
            raise AnsibleActionFail(
                f"mirror_apply_manifests: kube.validate_certs = {validate_certs!r}: must be true or false"
            ) from e
        connection = KubeConnection(
            kubeconfig=kubeconfig or None,
            context=kube.get("context") or None,
            host=kube.get("host") or None,
            api_key=kube.get("api_key") or None,
            validate_certs=verify,
            ca_cert=kube.get("ca_cert") or None,
        )
        try:
            return list_live_routes(api_client(connection), collections)
        except (ConfigError, DriverError) as e:
            raise AnsibleActionFail(f"mirror_apply_manifests: {e}") from e
