"""Benchmarks import no test module and tests import no benchmark (issue 18): each side runs
the other's code, if at all, as a separate process (the scale benchmark runs the API double by
its command line)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_SCRIPTS = sorted((REPO_ROOT / "scripts" / "bench").glob("*.py"))
TEST_FILES = sorted((REPO_ROOT / "tests").rglob("*.py"))


def imported_modules(source: str) -> list[str]:
    """Every module an `import` or `from ... import` of `source` names, wherever it stands
    (inside a function too). A relative import is named by its dots and module."""
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules.append("." * node.level + (node.module or ""))
    return modules


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os, tests.fakes.kube_api as k", ["os", "tests.fakes.kube_api"]),
        ("from tests.support import x", ["tests.support"]),
        ("def f():\n    from scripts.bench.results import log", ["scripts.bench.results"]),
        ("from . import results\nfrom ..bench import scale", [".", "..bench"]),
        ("import testsuite\nx = 'tests.fakes'", ["testsuite"]),
    ],
    ids=["import", "from", "in a function", "relative", "a string is no import"],
)
def test_imported_modules(source: str, expected: list[str]) -> None:
    assert imported_modules(source) == expected


@pytest.mark.parametrize(
    ("module", "package", "inside"),
    [
        ("tests", "tests", True),
        ("tests.fakes.kube_api", "tests", True),
        ("testsuite", "tests", False),
        ("scripts.bench.scale", "scripts.bench", True),
        ("scripts.benchmarks", "scripts.bench", False),
    ],
)
def test_under(module: str, package: str, inside: bool) -> None:
    assert under(module, package) is inside


def test_there_is_something_to_check() -> None:
    assert {"scale.py", "reaction.py", "results.py"} <= {path.name for path in BENCH_SCRIPTS}
    assert REPO_ROOT / "tests" / "unit" / "test_bench_imports.py" in TEST_FILES


def imports_under(paths: list[Path], package: str) -> list[tuple[str, str]]:
    return [
        (str(path.relative_to(REPO_ROOT)), module)
        for path in paths
        for module in imported_modules(path.read_text())
        if under(module, package)
    ]


def test_benchmarks_import_no_test_module() -> None:
    assert imports_under(BENCH_SCRIPTS, "tests") == []


def test_tests_import_no_benchmark() -> None:
    # A relative import inside tests/ never reaches scripts/ (tests is the top package).
    assert imports_under(TEST_FILES, "scripts.bench") == []
