"""mirror_apply_manifests: apply many manifests with one run of kubernetes.core.k8s.

kubernetes.core.k8s in a loop starts the module once per manifest (a new Python process, the
kubernetes client imported, the API discovered): seconds per manifest, the largest cost of a
rollout at scale (docs/benchmarks.md). Given the whole list as its `definition`, the module
applies the manifests in one process, one after the other, with the same requests to the API
server. This action runs it so and lifts what the module nests back up: a line per changed
manifest, and each manifest's diff at the task's level, where --diff shows it. Check mode is
the module's own (a server-side dry run). Documentation: plugins/modules/mirror_apply_manifests.py.
"""

from __future__ import annotations

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

CONNECTION_OPTIONS = ("kubeconfig", "context", "host", "api_key", "validate_certs", "ca_cert")
ARGUMENT_SPEC = {
    "definitions": {"type": "list", "elements": "dict", "required": True},
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
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        manifests = args["definitions"]
        for index, manifest in enumerate(manifests):
            if not manifest.get("kind") or not (manifest.get("metadata") or {}).get("name"):
                raise AnsibleActionFail(f"mirror_apply_manifests: definitions[{index}] has no kind or metadata.name")
        if not manifests:
            result.update(changed=False, results=[])
            return result
        kube = args["kube"] or {}
        module_args = {"state": "present", "definition": manifests}
        module_args |= {key: kube[key] for key in CONNECTION_OPTIONS if kube.get(key) not in (None, "")}
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
        for manifest, outcome in zip(manifests, outcomes, strict=True):
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
