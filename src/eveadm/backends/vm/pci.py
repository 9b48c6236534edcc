"""The record of PCI devices eveadm made assignable for a domain, shared by kvm (vfio-pci) and xen (pciback).

A device the operator had already made assignable stays so; one that eveadm
bound for a domain is given back to its host driver when the domain is
released. Which is which lives in `dom.backend["pci_added"]`.
"""

from __future__ import annotations

from ...errors import BackendError
from ..base import Backend, Domain

KEY = "pci_added"


def reserve(backend: Backend, dom: Domain) -> None:
    """Make every device in the domain's pci_devices assignable; remember the ones eveadm bound."""
    wanted = [dev["address"] for dev in dom.config.get("pci_devices") or []]
    if not wanted:
        return
    assignable = set(backend.pci_list())
    added = dom.backend.setdefault(KEY, [])
    for addr in wanted:
        if addr in assignable or addr in added:
            continue
        backend.pci_assignable_add(addr)
        added.append(addr)


def give_back(backend: Backend, dom: Domain) -> list[str]:
    """Return the devices eveadm bound to their host drivers; the errors, one line each (the
    devices that failed stay recorded, so a later release tries again)."""
    errors = []
    for addr in list(dom.backend.get(KEY, [])):
        try:
            backend.pci_assignable_remove(addr)
        except BackendError as exc:
            errors.append(str(exc))
            continue
        dom.backend[KEY].remove(addr)
    return errors
