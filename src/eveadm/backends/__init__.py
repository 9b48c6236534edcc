"""Backend registry: brand -> class, imported lazily so the CLI starts fast."""

from __future__ import annotations

import importlib

from .base import Backend, BackendContext

BRANDS = {
    "kvm": "eveadm.backends.kvm:KvmBackend",
    "xen": "eveadm.backends.xen:XenBackend",
    "container": "eveadm.backends.container:ContainerBackend",
    "rkt": "eveadm.backends.rkt:RktBackend",
    "null": "eveadm.backends.null:NullBackend",
}


def backend_class(brand: str) -> type[Backend]:
    module, _, name = BRANDS[brand].partition(":")
    return getattr(importlib.import_module(module), name)


def load(brand: str, ctx: BackendContext) -> Backend:
    return backend_class(brand)(ctx)
