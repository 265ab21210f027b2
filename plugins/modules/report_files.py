#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
# The work is done by the action plugin of the same name (plugins/action/report_files.py), on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: report_files
short_description: Write report files on the controller, atomically and only when they change
description:
  - Writes each of O(files) into the directory O(dest) on the B(controller), in the controller's own process (no
    module runs, on the controller or on a managed host). The brick.storage.orphan_audit role writes its fleet
    report with it.
  - Each file is written to a temporary file in O(dest), synced and renamed over the old one, so a reader never sees
    half a report. A file whose content and mode are already right is left alone.
  - O(dest) is created (mode V(0755), with its parents) when it is missing.
version_added: 0.1.0
author:
  - brick.storage maintainers (@brick-storage)
options:
  dest:
    description: Directory on the controller for the files.
    type: path
    required: true
  files:
    description:
      - File name (a plain name, no C(/)) to content (text).
    type: dict
    required: true
  mode:
    description: Permissions of the files, as an octal string.
    type: str
    default: "0644"
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: In check mode nothing is written; RV(written) lists the files that would be.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
    details: Runs on the controller, whatever the target host.
notes:
  - Use it with C(run_once) when the files are about the whole play.
"""

EXAMPLES = r"""
- name: Write the fleet report (once, on the controller)
  brick.storage.report_files:
    dest: /srv/reports/brick
    files:
      orphan-report.json: "{{ brick_orphan_audit_report | to_nice_json(indent=2) }}\n"
      orphan-report.txt: "{{ lookup('ansible.builtin.template', 'orphan-report.txt.j2') }}"
  run_once: true
"""

RETURN = r"""
dest:
  description: The directory, as an absolute path.
  returned: always
  type: str
  sample: /srv/reports/brick
files:
  description: The paths of all files, written or already right.
  returned: always
  type: list
  elements: str
  sample: [/srv/reports/brick/orphan-report.json, /srv/reports/brick/orphan-report.txt]
written:
  description: The paths whose content or mode changed (in check mode, would change).
  returned: always
  type: list
  elements: str
  sample: [/srv/reports/brick/orphan-report.json]
"""
