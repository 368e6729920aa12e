#!/usr/bin/python
# The documentation of the mirror_render_files action plugin (plugins/action/mirror_render_files.py);
# the action plugin runs on the controller, this module file is never executed.

DOCUMENTATION = r"""
module: mirror_render_files
short_description: Render many templates into files in one task, on the controller
version_added: "0.1.0"
description:
  - Renders each entry of O(files) with Jinja exactly as M(ansible.builtin.template) does (the task's
    variables, the entry itself as C(item), the role's templates directory on the search path,
    C(trim_blocks)), and writes the files whose content differs, each atomically (a temporary file
    renamed over it), mode C(0644), creating missing directories.
  - One task for all files - M(ansible.builtin.template) in a loop runs a module per file, about a
    second each, which made a render grow by seconds per service. The render roles of this project
    (mirror_istio, mirror_proxy, mirror_monitoring) use it for their one file per resource.
  - Each template is rendered once for all of its entries (one Jinja call, the entries as a loop),
    so the template and the role variables it reads are compiled and templated once per task, not
    once per file. The entries may name any number of templates, in any order - a role adds a kind
    of resource by adding its template's rows to the list. When that call fails, the entries are
    rendered one by one, so that the error names the file.
  - Prints C(changed - <file>) for each file that changed (C(ok - <file>) too with -v).
  - Check mode writes nothing and reports what would change; C(--diff) shows each changed file.
options:
  files:
    description:
      - One entry per file, with at least C(template) (a file under the role's C(templates/)) and
        C(path) (the absolute path to write). Every key of the entry is available to the template as
        C(item.<key>), as in a loop.
    type: list
    elements: dict
    required: true
  root:
    description: Files are named relative to this directory in the output (default - their base name).
    type: path
attributes:
  check_mode: {support: full}
  diff_mode: {support: full}
author: mirror-ramp
"""

EXAMPLES = r"""
- name: Render the VirtualServices and DestinationRules
  mirror_render_files:
    files:
      - {template: virtualservice.yml.j2, path: /srv/build/prod/k8s/virtualservice-shop-user-service.yml, service: user-service}
      - {template: destinationrule.yml.j2, path: /srv/build/prod/k8s/destinationrule-shop-user-service.yml, service: user-service}
    root: /srv/build/prod
"""

RETURN = r"""
files:
  description: One row per entry - path, and changed (the content differed, so it was written or would be).
  type: list
  elements: dict
  returned: always
"""
