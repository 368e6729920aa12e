"""mirror_render_files: render many templates into files in one task, on the controller.

The render roles write one file per Kubernetes resource. ansible.builtin.template in a loop
runs the copy module once per file, about a second each on a 2-core machine, so a render grew
by seconds with every service (docs/benchmarks.md). This renders each template with Jinja as
the template action does (the task's variables, the entry as `item`, the same search path and
settings), and writes only the files whose bytes differ, each atomically. Check mode writes
nothing; --diff shows each changed file. Documentation: plugins/modules/mirror_render_files.py.
"""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

from ansible import constants as C
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template
from ansible.utils.display import Display

from mirrorramp.files import write_atomically

display = Display()

ARGUMENT_SPEC = {
    "files": {"type": "list", "elements": "dict", "required": True},
    "root": {"type": "path"},
}
# What ansible.builtin.template passes to Jinja by default.
_OVERRIDES = {"trim_blocks": True, "lstrip_blocks": False, "newline_sequence": "\n"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        check_mode, want_diff = bool(self._task.check_mode), bool(self._task.diff)
        root = args.get("root")
        rows, diffs = [], []
        for index, entry in enumerate(args["files"]):
            template, path = entry.get("template"), entry.get("path")
            if not isinstance(template, str) or not template or not isinstance(path, str) or not os.path.isabs(path):
                raise AnsibleActionFail(
                    f"mirror_render_files: files[{index}] needs template (a file under templates/) and path "
                    f"(an absolute path); got template={template!r}, path={path!r}"
                )
            text = self._render(template, path, entry, task_vars)
            target = Path(path)
            before = target.read_bytes() if target.is_file() else None
            changed = before != text.encode("utf-8")
            label = os.path.relpath(path, root) if root else target.name
            if changed:
                if not check_mode:
                    write_atomically(target, text)
                display.display(f"changed: {label}", color=C.COLOR_CHANGED)
                if want_diff:
                    diffs.append(
                        {
                            "before_header": path if before is not None else f"{path} (absent)",
                            "after_header": path,
                            "before": before.decode("utf-8", "replace") if before is not None else "",
                            "after": text,
                        }
                    )
            else:
                display.v(f"ok: {label}")
            rows.append({"path": path, "changed": changed})
        result.update(changed=any(row["changed"] for row in rows), files=rows)
        if diffs:
            result["diff"] = diffs
        return result

    def _render(self, template: str, path: str, entry: dict, task_vars: dict) -> str:
        try:
            source = self._find_needle("templates", template)
        except AnsibleError as e:
            raise AnsibleActionFail(f"mirror_render_files: {e}") from e
        # The search path of ansible.builtin.template: includes resolve as they do there.
        searchpath = [*task_vars.get("ansible_search_path", []), self._loader._basedir, os.path.dirname(source)]
        searchpath = [candidate for base in searchpath for candidate in (os.path.join(base, "templates"), base)]
        variables = {**task_vars, "item": entry}
        if "ansible_managed" not in variables:
            variables["ansible_managed"] = _ansible_managed(source, template)
        templar = self._templar.copy_with_new_env(searchpath=searchpath, available_variables=variables)
        data = trust_as_template(self._loader.get_text_file_contents(source))
        try:
            rendered = templar.template(data, escape_backslashes=False, overrides=_OVERRIDES)
        except AnsibleError as e:
            raise AnsibleActionFail(f"mirror_render_files: {template} -> {path}: {e}") from e
        return "" if rendered is None else str(rendered)


def _ansible_managed(source: str, template: str) -> str:
    """The `ansible_managed` string as ansible.builtin.template makes it (DEFAULT_MANAGED_STR)."""
    stat = os.stat(source)
    try:
        uid = pwd.getpwuid(stat.st_uid).pw_name
    except KeyError:
        uid = str(stat.st_uid)
    managed = C.config.get_config_value("DEFAULT_MANAGED_STR").format(host=os.uname()[1], uid=uid, file=template)
    return time.strftime(managed, time.localtime(stat.st_mtime))
