"""mirror_prune_renders: remove the rendered files of resources that are no longer rendered.

playbooks/render.yml ends by removing the `*.yml` files of its directories that this render did
not write (a service removed from the inventory, a feature turned off). As tasks, that was
ansible.builtin.find (a module run, about a second on a 2-core machine) and
ansible.builtin.file in a loop (a module run per stale file); the files are on the controller,
so this action lists and removes them there in one step, as mirror_render_files writes them.
Documentation: plugins/modules/mirror_prune_renders.py.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

# Both required, each a list of absolute paths: checked by hand (_arguments), as the argument
# spec's list type would split a string at its commas.
ARGUMENTS = {"directories": "the render's directories", "keep": "the rendered files"}
RENDER_PATTERN = "*.yml"


def is_render_file_name(name: str) -> bool:
    """A name the render writes: `*.yml`, not hidden (ansible.builtin.find skipped hidden names)."""
    return fnmatch.fnmatchcase(name, RENDER_PATTERN) and not name.startswith(".")


def stale_renders(files: Iterable[str], keep: Iterable[str]) -> list[str]:
    """Of `files` (paths of the regular files directly in the render's directories), the render
    files whose path is not in `keep`, sorted. Paths are compared normalised, so that a kept file
    is never removed for being spelled another way (`a/./b`, `a//b`)."""
    kept = {os.path.normpath(path) for path in keep}
    candidates = {os.path.normpath(path) for path in files if is_render_file_name(os.path.basename(path))}
    return sorted(candidates - kept)


def regular_files(directory: str) -> list[str]:
    """The paths of the regular files directly in `directory` (symbolic links and subdirectories
    are not); none when it does not exist."""
    if not os.path.isdir(directory):
        return []
    with os.scandir(directory) as entries:
        return [os.path.join(directory, entry.name) for entry in entries if entry.is_file(follow_symlinks=False)]


def _arguments(raw: dict[str, Any]) -> dict[str, list[str]]:
    """`directories` and `keep`, or a failure naming the one that is wrong: a relative path never
    equals a rendered (absolute) one, so every file would look stale."""
    unknown = sorted(set(raw) - set(ARGUMENTS))
    if unknown:
        raise AnsibleActionFail(f"mirror_prune_renders: unknown argument(s) {unknown}: allowed are {list(ARGUMENTS)}")
    for name, meaning in ARGUMENTS.items():
        value = raw.get(name)
        if not isinstance(value, list):
            raise AnsibleActionFail(
                f"mirror_prune_renders: {name} = {value!r}: must be a list of absolute paths ({meaning})"
            )
        for index, path in enumerate(value):
            if not isinstance(path, str) or not os.path.isabs(path):
                raise AnsibleActionFail(
                    f"mirror_prune_renders: {name}[{index}] = {path!r}: must be an absolute path ({meaning})"
                )
    return {name: raw[name] for name in ARGUMENTS}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = _arguments(self._task.args)
        check_mode, want_diff = bool(self._task.check_mode), bool(self._task.diff)
        found = [path for directory in args["directories"] for path in regular_files(directory)]
        removed: list[str] = []
        diffs: list[dict[str, str]] = []
        for path in stale_renders(found, args["keep"]):
            before = _text(path) if want_diff else ""
            if not check_mode:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue  # gone meanwhile: absent, as wanted
                except OSError as e:
                    raise AnsibleActionFail(
                        f"mirror_prune_renders: cannot remove {path}: {e}",
                        result={"changed": bool(removed), "removed": removed},
                    ) from e
            removed.append(path)
            display.display(f"removed: {path}", color=C.COLOR_CHANGED)
            if want_diff:
                diffs.append({"before_header": path, "after_header": f"{path} (absent)", "before": before, "after": ""})
        result.update(changed=bool(removed), removed=removed)
        if diffs:
            result["diff"] = diffs
        return result


def _text(path: str) -> str:
    with open(path, "rb") as file:
        return file.read().decode("utf-8", "replace")
