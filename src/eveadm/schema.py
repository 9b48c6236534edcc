"""The payload: every property, its type, range, create/update rules and defaults (docs/payload.md is
generated from them by eveadm.reference).

`check_create(payload)` / `check_update(payload, brand)` return a validate
report {bad_properties, bad_values, missing_properties}; an empty report
means valid. `normalize(payload)` applies defaults and generated values to a
valid create payload. `apply_update(config, payload)` returns the new config
and which top-level properties changed. Nothing here touches the disk except
existence checks of paths the user points at.
"""

from __future__ import annotations

import os

from . import backends



class LazyPattern:
    """A regular expression compiled on first use: compiling them all cost every command's start-up."""

    __slots__ = ("pattern", "_compiled")

    def __init__(self, pattern: str):
        self.pattern = pattern
        self._compiled = None

    def match(self, text: str):
        if self._compiled is None:
            import re

            self._compiled = re.compile(self.pattern)
        return self._compiled.match(text)


UUID_RE = LazyPattern(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ALIAS_RE = LazyPattern(r"^[A-Za-z0-9._-]{1,64}$")
CPUS_RE = LazyPattern(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
MAC_RE = LazyPattern(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
PCI_RE = LazyPattern(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
IFNAME_RE = LazyPattern(r"^[A-Za-z0-9_.-]{1,15}$")
DISK_ID_RE = LazyPattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_KEY_RE = LazyPattern(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Update modes: "live" applies at once; "restart" is stored and takes effect at the next start;
# "stopped" may change only while the domain is stopped; None: cannot be changed after create.
LIVE, RESTART, STOPPED = "live", "restart", "stopped"


class Prop:
    """A payload property: its check, when it may change, and its default. Which brands accept it,
    and their own defaults, are brand facts (eveadm.backends)."""

    def __init__(self, check, update=RESTART, default=None):
        self.check = check  # fn(value, path, errors) -> None
        self.update = update
        self.default = default  # value or fn(config) -> value; None = absent


# -- value checkers: each appends (path, message) to errors -----------------


def _int(lo=None, hi=None):
    def check(v, path, errs):
        if isinstance(v, bool) or not isinstance(v, int):
            errs.append((path, "must be an integer"))
        elif lo is not None and v < lo:
            errs.append((path, f"must be at least {lo}"))
        elif hi is not None and v > hi:
            errs.append((path, f"must be at most {hi}"))

    return check


def _bool(v, path, errs):
    if not isinstance(v, bool):
        errs.append((path, "must be true or false"))


def _str(regex=None, max_len=None, what="", allow_empty=False, multiline=False):
    def check(v, path, errs):
        if not isinstance(v, str):
            errs.append((path, "must be a string"))
        elif not v and not allow_empty:
            errs.append((path, "must not be empty"))
        elif "\0" in v or (not multiline and any(ord(c) < 32 for c in v)):
            errs.append((path, "must be a single line without control characters"))
        elif max_len is not None and len(v) > max_len:
            errs.append((path, f"must be at most {max_len} characters"))
        elif regex is not None and not regex.match(v):
            errs.append((path, f"must be {what}"))

    return check


def _enum(*choices):
    def check(v, path, errs):
        if v not in choices:
            errs.append((path, "must be one of " + ", ".join(map(str, choices))))

    return check


def _abspath(v, path, errs):
    if not isinstance(v, str) or not v:
        errs.append((path, "must be an absolute path"))
    elif not v.startswith("/") or any(ord(c) < 32 for c in v):
        errs.append((path, "must be an absolute path"))
    elif ".." in v.split("/"):
        errs.append((path, "must not contain .. (give the path itself)"))


def _not_root(check):
    """A path check that also refuses the host's / (a container image or a directory disk)."""
    def checked(v, path, errs):
        n = len(errs)
        check(v, path, errs)
        if len(errs) == n and isinstance(v, str) and os.path.normpath(v) == "/":
            errs.append((path, "must not be the host's / (give a directory of its own)"))
    return checked


def _existing_file(v, path, errs):
    n = len(errs)
    _abspath(v, path, errs)
    if len(errs) == n and not os.path.exists(v):
        errs.append((path, f"{v} does not exist"))


def _flat_object(values="scalar"):
    def check(v, path, errs):
        if not isinstance(v, dict):
            errs.append((path, "must be an object"))
            return
        for k, item in v.items():
            if values == "str":
                if not ENV_KEY_RE.match(k):
                    errs.append((f"{path}.{k}", "is not a valid variable name"))
                elif not isinstance(item, str):
                    errs.append((f"{path}.{k}", "must be a string"))
                elif "\0" in item:  # the runtime refuses it, after create; refuse it here
                    errs.append((f"{path}.{k}", "must not contain a NUL character"))
            elif not isinstance(item, (str, int, float, bool)) or item is None:
                errs.append((f"{path}.{k}", "must be a string, number or boolean"))

    return check


def _str_list(v, path, errs):
    if not isinstance(v, list) or not v:
        errs.append((path, "must be a non-empty list of strings"))
        return
    for i, item in enumerate(v):
        if not isinstance(item, str) or "\0" in item:
            errs.append((f"{path}.{i}", "must be a string"))


# the message of a property no check knows: reported under bad_properties (vmadm), not bad_values
UNKNOWN = "is not a known property"
# an update of one that exists but never changes after create (uuid, brand, image...): bad_properties too
NOT_UPDATABLE = "cannot be changed after create"


def _object(fields: dict, required=()):
    def check(v, path, errs):
        if not isinstance(v, dict):
            errs.append((path, "must be an object"))
            return
        for k, item in v.items():
            if k not in fields:
                errs.append((f"{path}.{k}", UNKNOWN))
            else:
                fields[k](item, f"{path}.{k}", errs)
        for k in required:
            if k not in v:
                errs.append((f"{path}.{k}", "is required"))

    return check


def _list_of(item_check):
    def check(v, path, errs):
        if not isinstance(v, list):
            errs.append((path, "must be a list"))
            return
        for i, item in enumerate(v):
            item_check(item, f"{path}.{i}", errs)

    return check


DISK_FIELDS = {
    "path": _not_root(_abspath),
    "format": _enum("raw", "qcow2", "iso"),
    "media": _enum("disk", "cdrom"),
    "model": _enum("virtio", "ide", "scsi"),
    "readonly": _bool,
    "boot": _bool,
    "size": _int(1, 16 * 1024 * 1024),
    "preserve": _bool,
    # a blank disk's stable name (given at create / add_disks): its data follows it, not its position
    "id": _str(DISK_ID_RE, what="1-64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)"),
    # a stored disk image (eveadm image import), vmadm's image_uuid: the disk is a qcow2 overlay of it
    "image": lambda v, path, errs: _stored_image(v, path, errs),
}
NIC_FIELDS = {
    "mac": _str(MAC_RE, what="a lowercase MAC address like 02:00:00:aa:bb:cc"),
    "bridge": _str(IFNAME_RE, what="an interface name (1-15 of A-Z a-z 0-9 _ . -)"),
    "model": _enum("virtio", "e1000", "rtl8139"),
    "vif": _str(IFNAME_RE, what="an interface name (1-15 of A-Z a-z 0-9 _ . -)"),
    "mtu": _int(576, 9000),  # vmadm's range
    # a stored network by name (eveadm network create), instead of a raw bridge
    "network": lambda v, path, errs: _network_field("network", v, path, errs),
    "ip": lambda v, path, errs: _network_field("ip", v, path, errs),  # static address (in the network's subnet)
    "gateway": lambda v, path, errs: _network_field("gateway", v, path, errs),
}
PCI_FIELDS = {"address": _str(PCI_RE, what="a PCI address DDDD:BB:DD.F (lowercase hex)")}


def _network_field(key, v, path, errs):
    from .network.spec import nic_field_problem  # only payloads with these fields pay for the import

    problem = nic_field_problem(key, v)
    if problem:
        errs.append((path, problem))


def _cpus(v, path, errs):
    n = len(errs)
    _str(CPUS_RE, what="a CPU list like 0-1,3")(v, path, errs)
    if len(errs) == n:
        for part in v.split(","):
            lo, _, hi = part.partition("-")
            if hi and int(hi) < int(lo):
                errs.append((path, f"range {part} goes backwards"))
                break


def _disk(v, path, errs):
    n = len(errs)
    _object(DISK_FIELDS)(v, path, errs)
    if len(errs) > n:
        return
    if "image" in v:
        for key in ("path", "size"):
            if key in v:
                errs.append((f"{path}.{key}", "does not go with image (the disk is an overlay of the stored image)"))
        return
    if "path" not in v and "size" not in v:
        errs.append((path, "needs a path, a size, or both (or a stored image)"))
    elif "path" in v and "size" not in v and not os.path.exists(v["path"]):
        errs.append((f"{path}.path", f"{v['path']} does not exist"))
    if "size" in v and v.get("preserve") is not None:
        errs.append((f"{path}.preserve", "does not apply to a blank disk created from size"))


def _nic(v, path, errs):
    _object(NIC_FIELDS)(v, path, errs)


def _pci(v, path, errs):
    _object(PCI_FIELDS, required=("address",))(v, path, errs)


def _alias(v, path, errs):
    n = len(errs)
    _str(ALIAS_RE, 64, "1-64 of A-Z a-z 0-9 . _ -")(v, path, errs)
    if len(errs) > n:
        return
    if v in (".", ".."):
        errs.append((path, "must not be . or .."))
    elif UUID_RE.match(v):  # commands take an alias in place of a UUID: it must never name another domain
        errs.append((path, "must not look like a UUID"))


def _image(v, path, errs):
    if not isinstance(v, str) or not v or any(ord(c) < 32 for c in v):
        errs.append((path, "must be a rootfs directory, oci:DIR[:TAG], a stored image's name or sha256:DIGEST, "
                           "or (rkt) an image hash"))
        return
    where = v[4:].rsplit(":", 1)[0] if v.startswith("oci:") else v
    if where.startswith("/"):
        _not_root(_abspath)(where, path, errs)
    elif v.startswith("sha256:"):
        _stored_image(v, path, errs)


def _stored_image(v, path, errs):
    from .images.spec import reference_problem  # only payloads naming stored images pay for the import

    problem = reference_problem(v)
    if problem:
        errs.append((path, problem))


def _brand(v, path, errs):
    known = backends.brands()
    if not isinstance(v, str) or v not in known:
        errs.append((path, "must be one of " + ", ".join(known)))


PROPERTIES: dict[str, Prop] = {
    "uuid": Prop(_str(UUID_RE, what="a lowercase UUID"), update=None),
    "alias": Prop(_alias, update=LIVE),
    "brand": Prop(_brand, update=None),
    "vcpus": Prop(_int(1, 256), default=1),
    # vCPUs a VM may grow to while it runs; absent means vcpus (kvm maxcpus, xen maxvcpus)
    "max_vcpus": Prop(_int(1, 256)),
    "ram": Prop(_int(16, 16 * 1024 * 1024), default=256),
    "max_ram": Prop(_int(16, 16 * 1024 * 1024)),
    "cpus": Prop(_cpus),
    "virt_mode": Prop(_enum("pv", "pvh", "hvm", "fml")),
    "kernel": Prop(_existing_file),
    "initrd": Prop(_existing_file),
    "cmdline": Prop(_str(max_len=4096, allow_empty=True)),
    "firmware": Prop(_existing_file),
    "disks": Prop(_list_of(_disk), default=lambda cfg: []),
    "nics": Prop(_list_of(_nic), default=lambda cfg: []),
    "pci_devices": Prop(_list_of(_pci), update=STOPPED, default=lambda cfg: []),
    "vnc_port": Prop(_int(-1, 65535), default=-1),
    "vnc_password": Prop(_str(max_len=8)),
    "image": Prop(_image, update=None),
    "cmd": Prop(_str_list),
    "env": Prop(_flat_object("str"), default=lambda cfg: {}),
    "workdir": Prop(_abspath),
    "terminal": Prop(_bool, default=False),
    "readonly_root": Prop(_bool, default=False),
    "accel": Prop(_enum("auto", "kvm", "tcg"), default="auto"),
    "machine": Prop(_enum("q35", "pc"), default="q35"),
    # the guest's real-time clock: utc, or localtime for a guest that keeps local time (Windows)
    "clock": Prop(_enum("utc", "localtime"), default="utc"),
    "cloud_init": Prop(_object({"user_data": _str(allow_empty=True, multiline=True),
                                "meta_data": _str(allow_empty=True, multiline=True)})),
    "autoboot": Prop(_bool, update=LIVE, default=True),
    "stop_timeout": Prop(_int(0, 86400), update=LIVE, default=60),
    "on_crash": Prop(_enum("halt", "restart"), update=LIVE, default="halt"),
    # containers: restart a program that ended by itself (podman's names); the agent applies it
    "restart_policy": Prop(_enum("no", "on-failure", "always"), update=LIVE, default="no"),
    "customer_metadata": Prop(_flat_object(), update=None, default=lambda cfg: {}),
    "tags": Prop(_flat_object(), update=None, default=lambda cfg: {}),
}

# update-only verbs (vmadm): key -> checker of its value
UPDATE_VERBS = {
    "set_tags": _flat_object(),
    "remove_tags": _str_list,
    "set_customer_metadata": _flat_object(),
    "remove_customer_metadata": _str_list,
    "add_nics": _list_of(_nic),
    "update_nics": _list_of(_object(NIC_FIELDS, required=("mac",))),
    "remove_nics": _str_list,
    "add_disks": _list_of(_disk),
    "update_disks": _list_of(_object({k: v for k, v in DISK_FIELDS.items() if k != "size"}, required=("path",))),
    "remove_disks": _str_list,
}


def empty_report() -> dict:
    return {"bad_properties": [], "bad_values": [], "missing_properties": []}


def is_empty(report: dict) -> bool:
    return not (report["bad_properties"] or report["bad_values"] or report["missing_properties"])


def add_problems(report, errs):
    """Put [(property path, message)] into a validate report (an unknown property as such)."""
    for path, msg in errs:
        if msg == UNKNOWN:
            report["bad_properties"].append(path)
        else:
            report["bad_values"].append({"property": path, "message": msg})


def fixed_message(name: str) -> str | None:
    """For an update's bad property that exists but is fixed at create (uuid, brand...), why in
    words; None for one that is unknown."""
    prop = PROPERTIES.get(name)
    if prop is None or prop.update is not None:
        return None
    hint = f" (use set_{name}/remove_{name})" if name in ("tags", "customer_metadata") else ""
    return f"{name} {NOT_UPDATABLE}{hint}"


# properties whose `null` means "none": at create as if absent, in an update it removes the value (vmadm)
NULL_REMOVES = frozenset(("alias",))


MAX_DEPTH = 16  # payloads are shallow; deeper nesting is an attack on the parser, not a domain
MAX_INT = 2 ** 63 - 1  # what SQLite and every JSON reader take as an integer


def json_problems(value, path: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """What keeps a value from being plain JSON that eveadm can store and print back: Python-only
    types (tuples, sets, bytes, non-string keys), NaN and infinities, integers beyond 64 bits, text
    that is not Unicode (lone surrogates), nesting deeper than MAX_DEPTH."""
    here = path or "payload"
    if depth > MAX_DEPTH:
        return [(path, f"is nested deeper than {MAX_DEPTH} levels")]
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [] if -MAX_INT - 1 <= value <= MAX_INT else [(path, "is an integer beyond 64 bits")]
    if isinstance(value, float):
        return [] if value == value and value not in (float("inf"), float("-inf")) else \
            [(path, "must be a finite number")]
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [(path, "is not valid Unicode text (a lone surrogate)")]
        return []
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            out += json_problems(item, f"{path}.{i}" if path else str(i), depth + 1)
        return out
    if isinstance(value, dict):
        out = []
        for k, item in value.items():
            if not isinstance(k, str):
                out.append((here, f"has a key that is not a string: {k!r}"[:200]))
                continue
            out += json_problems(k, f"{path}.{k}" if path else k, depth + 1)
            out += json_problems(item, f"{path}.{k}" if path else k, depth + 1)
        return out
    return [(here, f"is a {type(value).__name__}, not a JSON value")]


def _checked_json(payload, report) -> bool:
    """Fill the report with what is not plain JSON; True when the payload is an object of plain JSON."""
    if not isinstance(payload, dict):
        report["bad_values"].append({"property": "", "message": "must be a JSON object"})
        return False
    problems = json_problems(payload)
    add_problems(report, problems)
    return not problems


def check_create(payload) -> dict:
    report = empty_report()
    if not _checked_json(payload, report):
        return report
    brand = payload.get("brand")
    if "brand" not in payload:
        report["missing_properties"].append("brand")
    facts = backends.brands().get(brand) if isinstance(brand, str) else None
    errs: list = []
    for key, value in payload.items():
        prop = PROPERTIES.get(key)
        if prop is None:
            report["bad_properties"].append(key)
            continue
        if value is None and key in NULL_REMOVES:
            continue
        prop.check(value, key, errs)
        if facts and not facts.accepts(key):
            errs.append((key, f"does not apply to brand {brand}"))
    if facts:
        report["missing_properties"] += [key for key in facts.required if key not in payload]
    ram, max_ram = payload.get("ram", 256), payload.get("max_ram")
    if isinstance(max_ram, int) and isinstance(ram, int) and max_ram < ram:
        errs.append(("max_ram", f"must be at least ram ({ram})"))
    vcpus, max_vcpus = payload.get("vcpus", 1), payload.get("max_vcpus")
    if isinstance(max_vcpus, int) and isinstance(vcpus, int) and max_vcpus < vcpus:
        errs.append(("max_vcpus", f"must be at least vcpus ({vcpus})"))
    _check_all_unique(payload, errs)
    add_problems(report, errs)
    return report


def _check_unique(items, key: str, prop: str, errs) -> None:
    """Disks are matched by path, NICs by mac, PCI devices by address: each must appear once."""
    if not isinstance(items, list):
        return
    seen = set()
    for i, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get(key), str):
            if item[key] in seen:
                errs.append((f"{prop}.{i}.{key}", f"{item[key]} is used twice"))
            seen.add(item[key])


def _check_all_unique(cfg: dict, errs) -> None:
    _check_unique(cfg.get("disks"), "path", "disks", errs)
    _check_unique(cfg.get("disks"), "id", "disks", errs)
    _check_unique(cfg.get("nics"), "mac", "nics", errs)
    _check_unique(cfg.get("pci_devices"), "address", "pci_devices", errs)


def check_update(payload, brand: str | None = None) -> dict:
    report = empty_report()
    if not _checked_json(payload, report):
        return report
    errs: list = []
    for key, value in payload.items():
        if key in UPDATE_VERBS:
            UPDATE_VERBS[key](value, key, errs)
            continue
        prop = PROPERTIES.get(key)
        if prop is None:
            report["bad_properties"].append(key)
        elif prop.update is None:
            report["bad_properties"].append(key)
        elif value is None and key in NULL_REMOVES:
            continue
        else:
            prop.check(value, key, errs)
            facts = backends.brands().get(brand) if brand else None
            if facts and not facts.accepts(key):
                errs.append((key, f"does not apply to brand {brand}"))
    if not payload:
        report["bad_values"].append({"property": "", "message": "nothing to update"})
    add_problems(report, errs)
    return report


def random_uuid() -> str:
    """A random (version 4) UUID, as str(uuid.uuid4()) makes it; the uuid module imports platform,
    which cost every create a few ms of start-up."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def generate_mac() -> str:
    """Locally administered unicast MAC (02:xx:...)."""
    return "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))


def _with_id(d: dict) -> dict:
    """A new blank disk (size, no path) gets an id. Not on a full `disks` replacement: a blank disk
    kept from before may have its data under its position's name, which the backend still finds."""
    if "size" in d and "path" not in d and "id" not in d:
        d = {**d, "id": "blank-" + os.urandom(4).hex()}
    return d


def _normalize_disk(d: dict) -> dict:
    d = dict(d)
    d.setdefault("media", "disk")
    d.setdefault("format", "iso" if d["media"] == "cdrom" else "raw")
    # a cdrom is IDE/SATA unless told: installer ISOs and guests without virtio drivers must see it (EVE)
    d.setdefault("model", "ide" if d["media"] == "cdrom" else "virtio")
    d.setdefault("readonly", d["media"] == "cdrom")
    d.setdefault("boot", False)
    return d


def _normalize_nic(n: dict) -> dict:
    n = dict(n)
    n.setdefault("mac", generate_mac())
    n.setdefault("model", "virtio")
    return n


def normalize(payload: dict) -> dict:
    """Defaults and generated values for a valid create payload."""
    cfg = {k: v for k, v in payload.items() if not (v is None and k in NULL_REMOVES)}
    if "uuid" not in cfg:
        cfg["uuid"] = random_uuid()
    facts = backends.facts(cfg["brand"])
    for key, prop in PROPERTIES.items():
        if key in cfg or not facts.accepts(key):
            continue
        if key in facts.defaults:
            cfg[key] = facts.defaults[key]
        elif prop.default is not None:
            cfg[key] = prop.default(cfg) if callable(prop.default) else prop.default
    cfg["disks"] = [_with_id(_normalize_disk(d)) for d in cfg["disks"]]
    cfg["nics"] = [_normalize_nic(n) for n in cfg["nics"]]
    return cfg


def apply_update(config: dict, payload: dict) -> tuple[dict, list[str]]:
    """Return (new config, sorted list of top-level properties that changed)."""
    new = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    for key, value in payload.items():
        if key in PROPERTIES and value is None and key in NULL_REMOVES:
            new.pop(key, None)
        elif key in PROPERTIES:
            if key == "disks":
                value = [_normalize_disk(d) for d in value]
            elif key == "nics":
                value = [_normalize_nic(n) for n in value]
            new[key] = value
        elif key.startswith("set_"):
            target = key[4:]
            new[target] = {**new.get(target, {}), **value}
        elif key.startswith("remove_") and key[7:] in ("tags", "customer_metadata"):
            target = key[7:]
            new[target] = {k: v for k, v in new.get(target, {}).items() if k not in value}
        elif key == "add_nics":
            new["nics"] = new.get("nics", []) + [_normalize_nic(n) for n in value]
        elif key == "update_nics":
            new["nics"] = _update_by(new.get("nics", []), value, "mac", "nic")
        elif key == "remove_nics":
            new["nics"] = _remove_by(new.get("nics", []), value, "mac", "nic")
        elif key == "add_disks":
            new["disks"] = new.get("disks", []) + [_with_id(_normalize_disk(_model_of_first(d, new)))
                                                   for d in value]
        elif key == "update_disks":
            new["disks"] = _update_by(new.get("disks", []), value, "path", "disk")
        elif key == "remove_disks":
            new["disks"] = _remove_by(new.get("disks", []), value, "path", "disk")
    changed = sorted(k for k in set(new) | set(config) if new.get(k) != config.get(k))
    errs: list = []
    _check_all_unique(new, errs)
    if errs:
        from .errors import ValidationError

        report = empty_report()
        add_problems(report, errs)
        raise ValidationError(f"invalid update: {errs[0][0]} {errs[0][1]}", report)
    return new, changed


def _model_of_first(disk: dict, config: dict) -> dict:
    """An added disk without a model takes the first disk's model (vmadm OS-2363): a guest that boots
    from an IDE disk may have no virtio driver. A cdrom keeps its own default (IDE)."""
    first = (config.get("disks") or [{}])[0]
    if "model" in disk or disk.get("media") == "cdrom" or not first.get("model"):
        return disk
    return {**disk, "model": first["model"]}


def _update_by(items, updates, key, what):
    from .errors import ValidationError

    items = [dict(i) for i in items]
    for upd in updates:
        match = [i for i in items if i.get(key) == upd[key]]
        if not match:
            report = empty_report()
            report["bad_values"].append({"property": f"update_{what}s", "message": f"no {what} with {key} {upd[key]}"})
            raise ValidationError(f"no {what} with {key} {upd[key]}", report)
        match[0].update(upd)
    return items


def _remove_by(items, keys, key, what):
    from .errors import ValidationError

    missing = [k for k in keys if not any(i.get(key) == k for i in items)]
    if missing:
        report = empty_report()
        report["bad_values"].append({"property": f"remove_{what}s", "message": f"no {what} with {key} {missing[0]}"})
        raise ValidationError(f"no {what} with {key} {missing[0]}", report)
    return [i for i in items if i.get(key) not in keys]


def update_mode(key: str) -> str:
    """live / restart / stopped for a top-level property changed by update."""
    prop = PROPERTIES.get(key)
    if key in ("tags", "customer_metadata"):
        return LIVE
    return prop.update if prop else RESTART


INT_PROPS = {"vcpus", "max_vcpus", "ram", "max_ram", "vnc_port", "stop_timeout"}
BOOL_PROPS = {"autoboot", "terminal", "readonly_root"}


def coerce_cli_value(key: str, text: str):
    """`eveadm update UUID key=value`: turn the string into the property's JSON type.
    A value that does not convert stays a string, so validation names the property."""
    import json
    import re

    if key in INT_PROPS and re.fullmatch(r"-?\d+", text):
        return int(text)
    if key in BOOL_PROPS and text in ("true", "false"):
        return text == "true"
    if text[:1] in "[{" and (key in UPDATE_VERBS or key in ("disks", "nics", "pci_devices", "cmd", "env", "cloud_init")):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text
