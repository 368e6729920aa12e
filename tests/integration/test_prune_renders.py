"""mirror_prune_renders (the end of playbooks/render.yml): which files it removes, by its own rule
against a hand-written table, and by a playbook run (removed, kept, untouched, check mode, diff,
refused)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.support.ansible_run import recap_counts, run_playbook
from tests.support.plugin_files import plugin_module

prune = plugin_module("plugins/action/mirror_prune_renders.py")


@pytest.mark.parametrize(
    ("files", "keep", "removed"),
    [
        ([], [], []),
        (["/b/k8s/a.yml"], ["/b/k8s/a.yml"], []),
        (["/b/k8s/a.yml", "/b/k8s/b.yml"], ["/b/k8s/a.yml"], ["/b/k8s/b.yml"]),
        (
            ["/b/k8s/z.yml", "/b/prometheus/a.yml", "/b/k8s/a.yml"],
            [],
            ["/b/k8s/a.yml", "/b/k8s/z.yml", "/b/prometheus/a.yml"],
        ),
        (["/b/k8s/a.yaml", "/b/k8s/a.yml.j2", "/b/k8s/A.YML", "/b/k8s/notes.txt"], [], []),
        (["/b/k8s/.hidden.yml"], [], []),
        (["/b/k8s/a.yml"], ["/b/k8s/./a.yml"], []),
        (["/b/k8s//a.yml"], ["/b/k8s/a.yml"], []),
        (["/b/k8s/a.yml"], ["/b/prometheus/a.yml"], ["/b/k8s/a.yml"]),
    ],
    ids=[
        "nothing",
        "kept",
        "stale-one",
        "sorted-by-path",
        "other-names-untouched",
        "hidden-untouched",
        "kept-spelled-otherwise",
        "found-spelled-otherwise",
        "same-name-other-directory",
    ],
)
def test_which_files_are_stale(files: list[str], keep: list[str], removed: list[str]) -> None:
    assert prune.stale_renders(files, keep) == removed


PLAYBOOK = """\
- name: Prune renders
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Remove the files of resources that are no longer rendered
      mirror_prune_renders:
        directories: "{{ directories }}"
        keep: "{{ keep }}"
      register: pruned

    - name: Show what was removed
      ansible.builtin.debug:
        # base64: the YAML callback may wrap a long line at its spaces.
        msg: "REMOVED={{ pruned.removed | to_json | b64encode }}"
"""


def _removed(output: str) -> list[str]:
    (line,) = (line for line in output.splitlines() if "REMOVED=" in line)
    return json.loads(base64.b64decode(line.split("REMOVED=", 1)[1].strip().strip('"')))


def _tree(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): path.read_text() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_stale_files_removed_others_untouched_check_mode_and_refusals(tmp_path: Path) -> None:
    playbook, build = tmp_path / "prune.yml", tmp_path / "build"
    playbook.write_text(PLAYBOOK)
    k8s, prometheus, missing = build / "k8s", build / "prometheus", build / "never-rendered"
    (k8s / "sandbox").mkdir(parents=True)
    prometheus.mkdir()
    files = {
        k8s / "virtualservice-shop-a.yml": "kind: VirtualService\n",
        k8s / "virtualservice-shop-gone.yml": "kind: VirtualService\nmetadata: {name: gone}\n",
        k8s / "envoyfilter-shop-gone.yml": "kind: EnvoyFilter\n",
        k8s / "sandbox" / "envoy.yml": "static_resources: {}\n",  # a subdirectory: never touched
        k8s / "README.txt": "not a render\n",
        k8s / ".hidden.yml": "hidden\n",
        prometheus / "mirror-rules.yml": "groups: []\n",
        prometheus / "old-rules.yml": "groups: []\n",
    }
    for path, text in files.items():
        path.write_text(text)
    # Neither a symbolic link nor a directory is a render's file, whatever its name.
    (k8s / "alias.yml").symlink_to(k8s / "virtualservice-shop-gone.yml")
    (k8s / "conf.yml").mkdir()
    (k8s / "conf.yml" / "a.yml").write_text("kind: Sandbox\n")
    keep = [str(k8s / "virtualservice-shop-a.yml"), str(prometheus / "mirror-rules.yml")]
    stale = sorted(str(path) for path in (k8s / "envoyfilter-shop-gone.yml", k8s / "virtualservice-shop-gone.yml"))
    stale.append(str(prometheus / "old-rules.yml"))
    before = _tree(build)

    def run(directories: object, keep_files: object, **options):
        variables = {"directories": directories, "keep": keep_files}
        return run_playbook(str(playbook), "inventories/local", variables, **options)

    directories = [str(k8s), str(prometheus), str(missing)]

    for directories_value, keep_value, refusal in [
        (["build/k8s"], keep, "directories[0] = 'build/k8s': must be an absolute path"),
        (directories, ",".join(keep), "keep = '"),
        (directories, [*keep, "k8s/virtualservice-shop-a.yml"], "keep[2] = 'k8s/virtualservice-shop-a.yml'"),
    ]:
        refused = run(directories_value, keep_value)
        assert refused.returncode != 0 and refusal in refused.output, refused.output[-2000:]
        assert _tree(build) == before, "a refused run removed files"

    check = run(directories, keep, check=True, diff=True)
    assert check.returncode == 0 and recap_counts(check.output)["changed"] == 1, check.output[-2000:]
    assert _tree(build) == before, "check mode removed files"
    assert _removed(check.output) == stale
    assert all(f"removed: {path}" in check.output for path in stale)
    # The diff shows the text of the file that would go.
    assert "-metadata: {name: gone}" in check.output and f"+++ after: {stale[1]} (absent)" in check.output

    pruned = run(directories, keep)
    assert pruned.returncode == 0 and recap_counts(pruned.output)["changed"] == 1, pruned.output[-2000:]
    assert _removed(pruned.output) == stale
    remaining = {str(path.relative_to(build)) for path in files if str(path) not in stale} | {"k8s/conf.yml/a.yml"}
    assert (k8s / "alias.yml").is_symlink()
    assert set(_tree(build)) == remaining
    assert _tree(build) == {name: text for name, text in before.items() if name in remaining}

    again = run(directories, keep)
    assert again.returncode == 0 and recap_counts(again.output)["changed"] == 0, again.output[-2000:]
    assert _removed(again.output) == [] and set(_tree(build)) == remaining
