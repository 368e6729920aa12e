"""A filter of filter_plugins/ as Ansible loads it: its file executed as a module of its own (the
directory is not a package), and the function its FilterModule maps the filter's name to."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from tests.support.ansible_run import REPO_ROOT

FILTER_DIR = REPO_ROOT / "filter_plugins"


def load_filter(module_file: str, name: str | None = None) -> Callable[..., Any]:
    """The filter `name` (by default the file's own name) of filter_plugins/<module_file>.py."""
    spec = importlib.util.spec_from_file_location(f"{module_file}_under_test", FILTER_DIR / f"{module_file}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()[name or module_file]
