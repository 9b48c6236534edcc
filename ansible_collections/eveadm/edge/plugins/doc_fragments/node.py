# Copyright: eveadm contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations


class ModuleDocFragment:
    # What every eveadm.edge module shares: where the node keeps its state, and what it needs.
    DOCUMENTATION = r"""
options:
  root:
    description:
      - The node's eveadm state root (eveadm's C(--root)).
      - Without it, C(EVEADM_ROOT) from the task's environment (the C(environment) keyword), else
        eveadm's default, C(/var/lib/eveadm) when the module runs as root.
    type: path
requirements:
  - eveadm installed on the node, importable by the Python the module runs with (Python 3.11 or
    later); point C(ansible_python_interpreter) at that Python, for example the virtualenv eveadm
    was installed into.
notes:
  - The module drives eveadm's Python API (C(eveadm.Node)) on the node, so every operation goes
    through the same validation, locks and journal as the C(eveadm) command.
"""
