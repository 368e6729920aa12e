"""mirror_keep_copy (role mirror_apply's copy of each applied set of manifests): which copies it
makes and removes, by its own rule against a hand-written table, and by a playbook run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ansible_run import recap_counts, run_playbook
from tests.support.plugin_files import plugin_module

keep_copy = plugin_module("plugins/action/mirror_keep_copy.py")


@pytest.mark.parametrize(
    ("copies", "digest", "keep", "needed", "removed"),
    [
        ([], "aaa", 10, True, []),
        (["1-aaa"], "aaa", 10, False, []),  # the newest copy has this content
        (["1-aaa", "2-bbb"], "aaa", 10, True, []),  # an older one does not count
        (["1-aaa", "2-bbb", "3-ccc"], "ddd", 3, True, ["1-aaa"]),  # room for the new one
        (["1-aaa", "2-bbb", "3-ccc"], "ccc", 2, False, ["1-aaa"]),  # keep lowered, no new copy
        (["1-aaa", "2-bbb", "3-ccc"], "ddd", 1, True, ["1-aaa", "2-bbb", "3-ccc"]),
    ],
)
def test_which_copies_are_made_and_removed(copies, digest, keep, needed, removed) -> None:
    assert keep_copy.plan_copies(copies, digest, keep) == (needed, removed)


def test_a_copy_is_named_by_its_utc_time_then_its_digest() -> None:
    one_year_one_hour_one_minute_one_second = 365 * 86400 + 3661.5
    assert (
        keep_copy.copy_name("0123456789ab", one_year_one_hour_one_minute_one_second) == "19710101T010101Z-0123456789ab"
    )


PLAYBOOK = """\
- name: Keep copies
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Keep a copy
      mirror_keep_copy:
        src: "{{ src }}"
        history_dir: "{{ history }}"
        digest: "{{ digest }}"
        keep: "{{ keep }}"
"""


@pytest.mark.slow
def test_copies_made_skipped_pruned_and_nothing_written_in_check_mode(tmp_path: Path) -> None:
    playbook, src, history = tmp_path / "keep.yml", tmp_path / "build" / "k8s", tmp_path / "applied"
    playbook.write_text(PLAYBOOK)
    src.mkdir(parents=True)
    (src / "a.yml").write_text("kind: A\n")
    for name in ("20260101T000000Z-aaa", "20260102T000000Z-bbb"):
        (history / name / "k8s").mkdir(parents=True)
    (history / ".20260103T000000Z-ccc.partial").mkdir()  # left by a killed run: not a copy

    def run(digest: str, keep: int, **options):
        variables = {"src": str(src), "history": str(history), "digest": digest, "keep": keep}
        return run_playbook(str(playbook), "inventories/local", variables, **options)

    def copies() -> list[str]:
        return sorted(path.name for path in history.iterdir() if not path.name.startswith("."))

    check = run("ccc", 2, check=True)
    assert check.returncode == 0 and recap_counts(check.output)["changed"] == 1, check.output[-2000:]
    assert copies() == ["20260101T000000Z-aaa", "20260102T000000Z-bbb"], "check mode wrote"

    made = run("ccc", 2)
    assert made.returncode == 0 and recap_counts(made.output)["changed"] == 1, made.output[-2000:]
    assert copies()[0] == "20260102T000000Z-bbb" and copies()[1].endswith("-ccc") and len(copies()) == 2
    assert (history / copies()[1] / "k8s" / "a.yml").read_text() == "kind: A\n"
    assert not (history / ".20260103T000000Z-ccc.partial").exists(), "a partial copy was left"

    again = run("ccc", 2)
    assert again.returncode == 0 and recap_counts(again.output)["changed"] == 0, again.output[-2000:]

    refused = run("ddd", 0)
    assert refused.returncode != 0 and "keep = 0: must be at least 1" in refused.output
    assert len(copies()) == 2
