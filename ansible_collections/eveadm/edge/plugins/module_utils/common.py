# Copyright: eveadm contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

"""What the eveadm.edge modules share: importing eveadm on the node, opening its Node, and
turning eveadm's errors into one failed task."""

from __future__ import annotations

import os
import traceback
from contextlib import contextmanager

from ansible.module_utils.basic import missing_required_lib

try:
    import eveadm
    from eveadm import interrupts
except ImportError:
    eveadm = interrupts = None  # open_node fails the task before anything uses them
    EVEADM_IMPORT_ERROR = traceback.format_exc()
else:
    EVEADM_IMPORT_ERROR = None


def open_node(module):
    """The node's eveadm.Node, on the `root` option, else EVEADM_ROOT, else eveadm's default."""
    if EVEADM_IMPORT_ERROR:
        module.fail_json(msg="eveadm is not installed on this node: " + missing_required_lib("eveadm"),
                         exception=EVEADM_IMPORT_ERROR)
    # as the eveadm command: a signal ends an operation at a safe point, and what it writes is private
    interrupts.install()
    os.umask(0o077)
    with reported(module):
        return eveadm.Node(root=module.params["root"])


@contextmanager
def reported(module, node=None, result=None):
    """An eveadm error fails the task with its one-line message and what `result` holds by then
    (what was already done); the node's warnings become the task's."""
    try:
        yield
    except eveadm.EveadmError as exc:
        warn_all(module, node)
        module.fail_json(msg=str(exc), **(result or {}))
    warn_all(module, node)


def warn_all(module, node) -> None:
    if node is not None:
        for warning in node.warnings:
            module.warn(warning)
        del node.warnings[:]
