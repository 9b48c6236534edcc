"""eveadm: run VMs and containers on one edge node through one vmadm-style interface.

    import eveadm
    node = eveadm.Node(root="/var/lib/eveadm")
    dom = node.create({"brand": "kvm", "alias": "web1", "kernel": "/boot/vmlinuz", ...})
    node.stop(dom["uuid"])

Names are imported lazily so `eveadm` (the CLI) starts fast.
"""

from .errors import (  # noqa: F401  (light: no imports of its own)
    BackendError,
    BackendUnavailable,
    Conflict,
    EveadmError,
    LockHeld,
    NotFound,
    NotSupported,
    Timeout,
    UsageError,
    ValidationError,
)

__all__ = ["Node", "EveadmError", "ValidationError", "NotFound", "Conflict", "LockHeld", "Timeout",
           "BackendError", "BackendUnavailable", "NotSupported", "UsageError"]


def __getattr__(name):
    if name == "Node":
        from .node import Node

        return Node
    raise AttributeError(name)
