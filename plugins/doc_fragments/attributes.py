# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)


class ModuleDocFragment:
    # What the attributes of every brick.storage module mean (brick.storage.attributes). Each module says how it
    # supports them (support, details) in its own attributes, which win over the fragment's.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and predict whether it would change something, without changing anything.
  diff_mode:
    description: Shows what it changes (in check mode, what it would change) as a before/after diff in diff mode.
  platform:
    description: The target operating systems the module runs on.
    support: full
    platforms: linux
"""

    # Modules that return host facts (brick.storage.attributes.facts), with the standard fragment.
    FACTS = r"""
options: {}
attributes:
  facts:
    description: Returns its results as host facts (C(ansible_facts)) rather than only as a registered result.
    support: full
"""
