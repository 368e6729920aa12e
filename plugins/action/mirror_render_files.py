"""mirror_render_files: render many templates into files in one task, on the controller.

The render roles write one file per Kubernetes resource. ansible.builtin.template in a loop
runs the copy module once per file, about a second each on a 2-core machine, so a render grew
by seconds with every service (docs/benchmarks.md). This renders each template with Jinja as
the template action does (the task's variables, the entry as `item`, the same search path and
settings), and writes only the files whose bytes differ, each atomically. Check mode writes
nothing; --diff shows each changed file. Documentation: plugins/modules/mirror_render_files.py.

Each template is rendered for all of its entries in one Jinja call (a loop over the entries,
the template's text as the loop's body), not once per file: Ansible compiles a template's text
on every call and templates the role variables it reads afresh for every set of variables, so
per file the render cost about 0.1 s, nearly all of it compiling the same text again
(docs/benchmarks.md, section 3). The pieces are the same bytes as one call per file gives.
"""

from __future__ import annotations

import os
import pwd
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template
from ansible.utils.display import Display

from mirrorramp.files import write_atomically

display = Display()

# The arguments: `files` (required), a list of entries, each a mapping with `template` and `path`
# (and whatever the template reads); `root` (optional), the path the printed names are relative
# to. Checked by hand, not with validate_argument_spec: that deep-copies the arguments first, and
# the entries hold the services' settings (0.3 s of the Istio render of 100 services).
ARGUMENTS = ("files", "root")
# What ansible.builtin.template passes to Jinja by default.
_OVERRIDES = {"trim_blocks": True, "lstrip_blocks": False, "newline_sequence": "\n"}
# The variable holding one template's entries while they are rendered in one call; no role
# variable has this name (the roles prefix theirs with mirror_ or __mirror_).
_ENTRIES_VAR = "__mirror_render_files_entries"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        entries, root = _arguments(self._task.args)
        check_mode, want_diff = bool(self._task.check_mode), bool(self._task.diff)
        for index, entry in enumerate(entries):
            template, path = entry.get("template"), entry.get("path")
            if not isinstance(template, str) or not template or not isinstance(path, str) or not os.path.isabs(path):
                raise AnsibleActionFail(
                    f"mirror_render_files: files[{index}] needs template (a file under templates/) and path "
                    f"(an absolute path); got template={template!r}, path={path!r}"
                )
        texts = self._render_all(entries, task_vars)
        rows, diffs = [], []
        for entry, text in zip(entries, texts, strict=True):
            path = entry["path"]
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

    def _render_all(self, entries: list[dict], task_vars: dict) -> list[str]:
        """The text of every entry, in order: one Jinja call per template for all its entries."""
        by_template: dict[str, list[int]] = {}
        for index, entry in enumerate(entries):
            by_template.setdefault(entry["template"], []).append(index)
        texts: list[str] = [""] * len(entries)
        for template, indexes in by_template.items():
            group = [entries[index] for index in indexes]
            try:
                pieces = self._render_group(template, group, task_vars)
            except AnsibleError:
                # Render one file at a time: the error then names the entry that fails.
                pieces = [self._render(template, entry["path"], entry, task_vars) for entry in group]
            for index, piece in zip(indexes, pieces, strict=True):
                texts[index] = piece
        return texts

    def _source(self, template: str, task_vars: dict, extra: dict[str, Any]) -> tuple[str, Any]:
        """The template's path, and a templar with ansible.builtin.template's search path and the
        task's variables with `extra` added."""
        try:
            source = self._find_needle("templates", template)
        except AnsibleError as e:
            raise AnsibleActionFail(f"mirror_render_files: {e}") from e
        # The search path of ansible.builtin.template: includes resolve as they do there.
        searchpath = [*task_vars.get("ansible_search_path", []), self._loader._basedir, os.path.dirname(source)]
        searchpath = [candidate for base in searchpath for candidate in (os.path.join(base, "templates"), base)]
        variables = {**task_vars, **extra}
        if "ansible_managed" not in variables:
            variables["ansible_managed"] = _ansible_managed(source, template)
        return source, self._templar.copy_with_new_env(searchpath=searchpath, available_variables=variables)

    def _render_group(self, template: str, group: list[dict], task_vars: dict) -> list[str]:
        """The template rendered for every entry of `group` in one call: its text is the body of a
        loop over the entries (loop variable `item`, as a task loop names it), each piece ended by
        a separator that no template writes. The pieces equal one call per entry: Jinja drops one
        trailing newline of a template's text and Ansible adds back what the result then lacks
        (Templar.template's preserve_trailing_newlines), so the body is the text without it and
        each piece gets the same newlines back; `+%}` keeps the body's first newline, which
        trim_blocks would take after the loop's tag."""
        source, templar = self._source(template, task_vars, {_ENTRIES_VAR: group})
        text = self._loader.get_text_file_contents(source)
        body = text[:-1] if text.endswith("\n") else text
        separator = f"\x00mirror_render_files {uuid.uuid4().hex}\x00"
        loop = f"{{% for item in {_ENTRIES_VAR} +%}}{body}{separator}{{% endfor %}}"
        try:
            rendered = templar.template(trust_as_template(loop), escape_backslashes=False, overrides=_OVERRIDES)
        except AnsibleError as e:
            raise AnsibleActionFail(f"mirror_render_files: {template}: {e}") from e
        *pieces, rest = str(rendered).split(separator)
        if len(pieces) != len(group) or rest:
            raise AnsibleActionFail(f"mirror_render_files: {template}: {len(pieces)} pieces for {len(group)} files")
        wanted = _trailing_newlines(text)
        return [piece + "\n" * max(wanted - _trailing_newlines(piece), 0) for piece in pieces]

    def _render(self, template: str, path: str, entry: dict, task_vars: dict) -> str:
        """One entry alone, as ansible.builtin.template renders it."""
        source, templar = self._source(template, task_vars, {"item": entry})
        data = trust_as_template(self._loader.get_text_file_contents(source))
        try:
            rendered = templar.template(data, escape_backslashes=False, overrides=_OVERRIDES)
        except AnsibleError as e:
            raise AnsibleActionFail(f"mirror_render_files: {template} -> {path}: {e}") from e
        return "" if rendered is None else str(rendered)


def _arguments(args: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], str | None]:
    """`files` and `root` of the task's arguments, or a failure naming the one that is wrong."""
    unknown = sorted(set(args) - set(ARGUMENTS))
    if unknown:
        raise AnsibleActionFail(f"mirror_render_files: unknown argument(s) {unknown}: allowed are {list(ARGUMENTS)}")
    entries, root = args.get("files"), args.get("root")
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise AnsibleActionFail(f"mirror_render_files: files = {entries!r}: must be a list of entries")
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise AnsibleActionFail(
                f"mirror_render_files: files[{index}] = {entry!r}: must be a mapping with template and path"
            )
    if root is not None and not isinstance(root, str):
        raise AnsibleActionFail(f"mirror_render_files: root = {root!r}: must be a path")
    return list(entries), (os.path.expanduser(os.path.expandvars(root)) if root else None)


def _trailing_newlines(text: str) -> int:
    return len(text) - len(text.rstrip("\n"))


def _ansible_managed(source: str, template: str) -> str:
    """The `ansible_managed` string as ansible.builtin.template makes it (DEFAULT_MANAGED_STR)."""
    stat = os.stat(source)
    try:
        uid = pwd.getpwuid(stat.st_uid).pw_name
    except KeyError:
        uid = str(stat.st_uid)
    managed = C.config.get_config_value("DEFAULT_MANAGED_STR").format(host=os.uname()[1], uid=uid, file=template)
    return time.strftime(managed, time.localtime(stat.st_mtime))
