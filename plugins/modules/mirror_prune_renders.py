#!/usr/bin/python
# The documentation of the mirror_prune_renders action plugin (plugins/action/mirror_prune_renders.py);
# the action plugin runs on the controller, this module file is never executed.

DOCUMENTATION = r"""
module: mirror_prune_renders
short_description: Remove the rendered files of resources that are no longer rendered
version_added: "0.1.0"
description:
  - Removes, in sorted path order, every regular C(*.yml) file directly in one of O(directories) whose
    path is not in O(keep). Hidden files, other names, symbolic links and subdirectories are never
    touched (the local sandbox keeps its own files beside the render's), and a directory that does not
    exist holds nothing.
  - Runs on the controller, in one step - C(playbooks/render.yml) ends with it, O(keep) being the fact
    C(mirror_rendered_files) that the render roles fill. M(ansible.builtin.find) and
    M(ansible.builtin.file) in a loop were a module run each.
  - Prints C(removed - <path>) for each file removed.
  - Check mode removes nothing and reports what would be removed; C(--diff) shows each file removed.
options:
  directories:
    description: The directories whose C(*.yml) files are pruned (absolute paths).
    type: list
    elements: path
    required: true
  keep:
    description: The files to keep (absolute paths) - those the render wrote or found unchanged.
    type: list
    elements: path
    required: true
attributes:
  check_mode: {support: full}
  diff_mode: {support: full}
author: mirror-ramp
"""

EXAMPLES = r"""
- name: Remove the files of resources that are no longer rendered
  mirror_prune_renders:
    directories:
      - /srv/build/prod/k8s
      - /srv/build/prod/prometheus
    keep: "{{ mirror_rendered_files }}"
"""

RETURN = r"""
removed:
  description: The files removed (in check mode, that would be removed), sorted.
  type: list
  elements: str
  returned: always
"""
