"""The brand registry: every fact about a brand in one place, importable without importing its backend.

A brand is one line here: its name, the `list` type code, its family (vm or
container), where its backend class lives (imported only when a domain of
that brand is touched, so the CLI starts fast), the payload properties it
accepts beyond the common ones, its own defaults, and the optional
capabilities it has. `schema`, `listing`, the CLI and the engine read these
facts; nothing else names a brand.

Adding a brand: write `backends/<name>.py` (a `Backend` subclass) and add one
`register(...)` line below. A brand kept outside the package (a test brand,
a plug-in) calls `register` from its own module, named in the environment
variable EVEADM_BRAND_MODULES (comma-separated module names), which the
registry imports on first use.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs CLI start-up; annotations here are never evaluated
if TYPE_CHECKING:
    from .base import Backend
    from .host import BackendContext

VM, CONTAINER = "vm", "container"

# Optional capabilities (a backend without one raises NotSupported for it).
CONSOLE = "console"  # `eveadm console`: an interactive console to attach to
KILL = "kill"  # `eveadm kill`: signals to the domain's process
PCI = "pci"  # pci_devices and `eveadm pci`: device assignment
NICS = "nics"  # nics are wired on the host (taps, vifs, veths onto bridges)

# Properties every brand accepts (the schema holds their checks and defaults).
COMMON_PROPERTIES = frozenset((
    "uuid", "alias", "brand", "vcpus", "ram", "max_ram", "cpus", "disks", "nics", "cloud_init",
    "autoboot", "stop_timeout", "on_crash", "customer_metadata", "tags",
))
VM_PROPERTIES = frozenset(("virt_mode", "kernel", "initrd", "cmdline", "firmware", "vnc_port", "vnc_password",
                           "pci_devices", "max_vcpus"))
CONTAINER_PROPERTIES = frozenset(("image", "cmd", "env", "workdir", "terminal", "readonly_root", "restart_policy"))


class BrandFacts:
    """What eveadm knows about a brand before importing its backend."""

    __slots__ = ("name", "type_code", "family", "target", "properties", "required", "defaults", "capabilities",
                 "live")

    def __init__(self, name: str, type_code: str, family: str, target: str, *, properties=(), required=(),
                 defaults=None, capabilities=(), live=()):
        self.name = name
        self.type_code = type_code  # the TYPE column of `eveadm list`
        self.family = family  # VM or CONTAINER
        self.target = target  # "module:Class" of the backend
        self.properties = COMMON_PROPERTIES | frozenset(properties)  # payload properties it accepts
        self.required = tuple(required)  # properties a create payload must have
        self.defaults = dict(defaults or {})  # brand defaults, over the schema's
        self.capabilities = frozenset(capabilities)
        self.live = frozenset(live)  # properties a running domain takes at once (Backend.change_live)

    def accepts(self, prop: str) -> bool:
        return prop in self.properties

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def backend_class(self) -> "type[Backend]":
        import sys

        module, _, name = self.target.partition(":")
        __import__(module)  # not importlib.import_module: importing importlib (and warnings) costs every command
        return getattr(sys.modules[module], name)

    def __repr__(self) -> str:
        return f"BrandFacts({self.name!r}, {self.type_code!r}, {self.family!r})"


_REGISTRY: dict[str, BrandFacts] = {}
_plugins_loaded = False


def register(facts: BrandFacts) -> BrandFacts:
    _REGISTRY[facts.name] = facts
    return facts


register(BrandFacts("kvm", "KVM", VM, "eveadm.backends.kvm:KvmBackend",
                    properties=VM_PROPERTIES | {"accel", "machine", "clock"},
                    defaults={"virt_mode": "hvm", "stop_timeout": 60}, capabilities=(CONSOLE, KILL, PCI, NICS),
                    live=("ram", "vcpus", "disks", "nics")))
register(BrandFacts("xen", "XEN", VM, "eveadm.backends.xen:XenBackend",
                    properties=VM_PROPERTIES, defaults={"virt_mode": "pvh", "stop_timeout": 60},
                    capabilities=(CONSOLE, PCI, NICS), live=("ram", "vcpus", "disks", "nics")))
register(BrandFacts("container", "CONT", CONTAINER, "eveadm.backends.container:ContainerBackend",
                    properties=CONTAINER_PROPERTIES, required=("image",), defaults={"stop_timeout": 10},
                    capabilities=(CONSOLE, KILL, NICS), live=("ram", "vcpus", "cpus")))
register(BrandFacts("rkt", "RKT", CONTAINER, "eveadm.backends.rkt:RktBackend",
                    properties=("image", "env", "pci_devices", "restart_policy"), required=("image",),
                    defaults={"stop_timeout": 10},
                    capabilities=(CONSOLE, PCI)))
register(BrandFacts("null", "NULL", VM, "eveadm.backends.null:NullBackend",
                    properties={"image", "cmd", "env", "workdir", "pci_devices", "vnc_port", "vnc_password",
                                "restart_policy"},
                    defaults={"stop_timeout": 60}, capabilities=(KILL,)))


def _load_plugins() -> None:
    global _plugins_loaded
    _plugins_loaded = True
    import os

    names = os.environ.get("EVEADM_BRAND_MODULES", "")
    if names:
        import importlib

        for name in filter(None, (n.strip() for n in names.split(","))):
            importlib.import_module(name)


def brands() -> dict[str, BrandFacts]:
    """Every registered brand, by name."""
    if not _plugins_loaded:
        _load_plugins()
    return _REGISTRY


def facts(brand: str) -> BrandFacts:
    return brands()[brand]


def with_capability(capability: str) -> list[str]:
    return [name for name, f in brands().items() if f.has(capability)]


def load(brand: str, ctx: "BackendContext") -> "Backend":
    f = facts(brand)
    return f.backend_class()(ctx, f)
