#!/usr/bin/python
# The documentation of the mirror_keep_copy action plugin (plugins/action/mirror_keep_copy.py);
# the action plugin runs on the controller, this module file is never executed.

DOCUMENTATION = r"""
module: mirror_keep_copy
short_description: Keep a copy of a directory, named after the time and a digest of its content
version_added: "0.1.0"
description:
  - Copies O(src) to C(<history_dir>/<UTC time>-<digest>/<basename of src>) unless the newest copy
    under O(history_dir) already ends in C(-<digest>), then removes the oldest copies so that O(keep)
    remain. A copy is made beside its final name and renamed into place, so an interrupted run leaves
    no partial copy.
  - Runs on the controller, in one step - role mirror_apply keeps each applied set of manifests with
    it, for C(playbooks/rollback.yml).
  - Check mode writes nothing and reports whether a copy would be made or removed.
options:
  src:
    description: The directory to copy.
    type: path
    required: true
  history_dir:
    description: Where the copies are, one directory per copy (created when missing).
    type: path
    required: true
  digest:
    description: A digest of the content of O(src); the copy's name ends with it.
    type: str
    required: true
  keep:
    description: How many copies remain, the new one included (at least 1).
    type: int
    default: 10
attributes:
  check_mode: {support: full}
  diff_mode: {support: none}
author: mirror-ramp
"""

EXAMPLES = r"""
- name: Keep a copy of the manifests applied
  mirror_keep_copy:
    src: build/prod/k8s
    history_dir: build/prod/applied
    digest: "{{ applied.digest }}"
    keep: 10
"""

RETURN = r"""
copy:
  description: The new copy's directory; null when the newest copy has the same digest.
  type: str
  returned: always
removed:
  description: The copies removed (the oldest beyond O(keep)).
  type: list
  elements: str
  returned: always
"""
