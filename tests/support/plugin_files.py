"""A file of the project's Ansible plugins as Ansible loads it: executed as a module of its own
(plugins/action, plugins/modules and filter_plugins are not packages)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tests.support.ansible_run import REPO_ROOT


def plugin_module(relative_path: str) -> ModuleType:
    """The module of the file at `relative_path` under the checkout (plugins/action/x.py, ...)."""
    path = REPO_ROOT / relative_path
    spec = importlib.util.spec_from_file_location(f"{path.stem}_under_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_filter(module_file: str, name: str | None = None) -> Callable[..., Any]:
    """The filter `name` (by default the file's own name) of filter_plugins/<module_file>.py."""
    return plugin_module(f"filter_plugins/{module_file}.py").FilterModule().filters()[name or module_file]
