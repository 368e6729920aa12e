"""mirror_keep_copy: keep a copy of a directory, named after the time and a digest of its content.

Role mirror_apply keeps each applied set of manifests so that playbooks/rollback.yml can put the
previous known-good set back. As tasks (create the directory, find the copies, name the copy,
remove the oldest, create and copy), that was five module runs, about a second each on a 2-core
machine; the copies are files on the controller, so this action does it there in one step, as
mirror_render_files writes the render. Documentation: plugins/modules/mirror_keep_copy.py.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

ARGUMENT_SPEC = {
    "src": {"type": "path", "required": True},
    "history_dir": {"type": "path", "required": True},
    "digest": {"type": "str", "required": True},
    "keep": {"type": "int", "default": 10},
}
PARTIAL_SUFFIX = ".partial"


def copy_name(digest: str, now: float) -> str:
    """<UTC time>-<digest>: sorted by name, the copies are in the order they were made."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{digest}"


def plan_copies(copies: list[str], digest: str, keep: int) -> tuple[bool, list[str]]:
    """Whether a new copy is needed (the newest copy has another digest) and which of `copies`
    (names, oldest first) to remove, so that `keep` remain with the new one."""
    needed = not (copies and copies[-1].endswith(f"-{digest}"))
    room = keep - (1 if needed else 0)
    return needed, copies[: max(len(copies) - room, 0)]


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        src, history = Path(args["src"]), Path(args["history_dir"])
        digest, keep = args["digest"], args["keep"]
        if keep < 1:
            raise AnsibleActionFail(f"mirror_keep_copy: keep = {keep}: must be at least 1 (the copy just applied)")
        if not src.is_dir():
            raise AnsibleActionFail(f"mirror_keep_copy: src = {src}: not a directory")
        # Hidden names are never copies (below: a partial copy), as rollback.yml's find skips them.
        listed = history.iterdir() if history.is_dir() else ()
        copies = sorted(path.name for path in listed if path.is_dir() and not path.name.startswith("."))
        needed, removed = plan_copies(copies, digest, keep)
        copy = history / copy_name(digest, time.time()) if needed else None
        if not self._task.check_mode:
            for name in removed:
                shutil.rmtree(history / name)
            # What a run killed mid-copy left (below).
            for partial in history.glob(f".*{PARTIAL_SUFFIX}"):
                shutil.rmtree(partial)
            if copy is not None:
                # Copied beside it, then renamed: a run killed mid-copy leaves no partial copy
                # that a later rollback would re-apply.
                partial = history / f".{copy.name}{PARTIAL_SUFFIX}"
                shutil.copytree(src, partial / src.name)
                partial.rename(copy)
        result.update(
            changed=bool(needed or removed),
            copy=str(copy) if copy is not None else None,
            removed=[str(history / name) for name in removed],
        )
        return result
