"""The reference that ships with eveadm, generated from the code it describes.

What a property is comes from the code: its name, type and range from its
check in `schema.PROPERTIES`, its defaults from `schema.normalize`, when it
may change from `Prop.update` and the update verbs, which brands take it from
the registry. This module adds only the one-line descriptions, in the
dictionaries below (the one place for them). From that it writes:

  - `eveadm help properties [BRAND]`, the property summary of `help create`
    and `help update`, and the columns of `help list`;
  - docs/payload.md;
  - the man page eveadm(8): the parser (`cli.build_parser`), the payload, the
    list columns and the exit codes; setup.py writes it to man/eveadm.8 at
    every build, and the wheel installs it in <prefix>/share/man/man8/.

`python -m eveadm.reference DIR` rewrites DIR/docs/payload.md and
DIR/man/eveadm.8; tests/unit/test_reference.py checks the committed copies are
current. Only `eveadm help` and the build import this module: no other
command pays for it at start-up.
"""

from __future__ import annotations

import json
import os
import textwrap

from . import errors, listing, schema
from .backends import brands

# -- the descriptions (one line each; what a property is for, not its type or default) -----------

PROPERTY_DOCS = {
    "uuid": "The domain's identity.",
    "alias": "A name for the domain: every command takes it in place of the UUID, so it must not look like one.",
    "brand": "What runs the domain: kvm (QEMU), xen (xl), container (runc or crun), rkt, or null (simulated).",
    "vcpus": "Virtual CPUs. A container gets that many CPUs' worth of CPU time.",
    "ram": "Memory in MiB. A container's memory limit.",
    "max_ram": "The most memory in MiB a VM may grow to while it runs, at least ram (xen maxmem; kvm boots with "
               "it and balloons down to ram).",
    "max_vcpus": "The most vCPUs a VM may grow to while it runs, at least vcpus; absent, vcpus (xen maxvcpus, "
                 "QEMU maxcpus).",
    "cpus": "The host CPUs the domain runs on (pinning; a container's cpuset).",
    "virt_mode": "How a VM is virtualized: xen runs pv, pvh or hvm; kvm runs hvm; fml boots firmware only (UEFI).",
    "kernel": "A kernel to boot directly, instead of from a disk.",
    "initrd": "The initial ramdisk to boot with kernel.",
    "cmdline": "The command line of kernel.",
    "firmware": "A firmware image to boot the VM with (OVMF or another bootloader).",
    "disks": "The domain's disks, in order; see Disks. A container mounts directories.",
    "nics": "Network interfaces, each on a host bridge or an eveadm network; see Nics.",
    "pci_devices": "Host PCI devices passed through to the domain; see PCI devices.",
    "vnc_port": "VNC console: -1 off, 0 the first free display, 5900+N display N (listening on 127.0.0.1).",
    "vnc_password": "The VNC password. It never appears on a command line.",
    "image": "The container's root filesystem; rkt: the image to run.",
    "cmd": "The program and its arguments (default: the OCI image's Entrypoint and Cmd).",
    "env": "Environment variables of the program.",
    "workdir": "The program's working directory (default: the image's WorkingDir, else /).",
    "terminal": "Give the program a terminal, which `eveadm console` attaches to.",
    "readonly_root": "Mount the container's root filesystem read-only.",
    "accel": "kvm's accelerator: kvm, tcg (software emulation), or auto (KVM when it really works, else TCG).",
    "machine": "The QEMU machine type.",
    "clock": "The guest's real-time clock: utc, or localtime for a guest that keeps local time (Windows).",
    "cloud_init": "user_data and meta_data for cloud-init: a VM gets them on a NoCloud seed (a cdrom); a "
                  "container turns user_data lines into environment variables.",
    "autoboot": "Start the domain at create, and when the agent starts. `start` sets it true, `stop` false.",
    "stop_timeout": "Seconds the graceful stop may take before eveadm forces it (`stop -t` overrides).",
    "on_crash": "What the agent does when the domain dies unexpectedly: halt (leave it failed) or restart.",
    "restart_policy": "What the agent does when a container's program ends by itself: no, on-failure (when its "
                      "exit status is not 0) or always restart it.",
    "customer_metadata": "Key/value data for the guest (VMs read it from the cloud-init seed).",
    "tags": "Key/value labels for your own use (`eveadm list tags.KEY=VALUE`).",
}

# the fields of one element of disks, nics and pci_devices
FIELD_DOCS = {
    "disks": {
        "path": "The image file (a directory for a container). Without size, your own file: README.md's disk "
                "modes say what the guest writes to.",
        "format": "The image's format.",
        "media": "What the guest sees: a disk or a cdrom.",
        "model": "The bus the guest sees the disk on.",
        "readonly": "The guest cannot write to the disk.",
        "boot": "Boot from this disk.",
        "size": "MiB: a blank disk that eveadm creates (at path when given, else in the domain's directory).",
        "preserve": "With path: true, the guest writes to one private copy that lives until delete; false, "
                    "to a throwaway copy made at every start. Absent: to path itself.",
        "id": "A blank disk's stable name: its data follows it, not its position. Given to a blank disk "
              "without one.",
        "image": "A stored disk image (`eveadm image import`; vmadm's image_uuid): the disk is a qcow2 overlay "
                 "of it. Not with path or size.",
    },
    "nics": {
        "mac": "The MAC address (generated, locally administered, when absent); update_nics and remove_nics "
               "name a nic by it.",
        "bridge": "A host bridge to attach to.",
        "model": "The device the guest sees.",
        "vif": "The host-side interface's name.",
        "mtu": "The interface's MTU (default: its network's, else the bridge's).",
        "network": "An eveadm network (`eveadm network create`) to attach to, instead of a bridge.",
        "ip": "A static address on the nic's network (default: DHCP from a local network).",
        "gateway": "The default route of a static ip (default: the network's gateway).",
    },
    "pci_devices": {
        "address": "The host device. eveadm takes it from its host driver at start and gives it back at stop.",
    },
}

# update-only keys (vmadm's verbs)
VERB_DOCS = {
    "set_tags": "Adds or changes keys of tags.",
    "remove_tags": "Removes keys of tags.",
    "set_customer_metadata": "Adds or changes keys of customer_metadata.",
    "remove_customer_metadata": "Removes keys of customer_metadata.",
    "add_nics": "Adds nics, each as an element of nics.",
    "update_nics": "Changes nics, each named by its mac.",
    "remove_nics": "Removes the nics with these MACs.",
    "add_disks": "Adds disks, each as an element of disks (model: virtio when absent).",
    "update_disks": "Changes disks, each named by its path (size cannot change).",
    "remove_disks": "Removes the disks with these paths.",
}

# what `get` shows beside the payload (node.to_dict)
READ_ONLY_DOCS = {
    "state": "The lifecycle state (docs/contract.md): {states}.",
    "domain_id": "The backend's id of the running domain: xen's domid, the QEMU or container process's pid.",
    "pid": "The pid of the VMM or of the container's program, while it runs.",
    "boot_timestamp": "When the domain last started running.",
    "exit_status": "How the last run ended: the program's exit status (128+N: killed by signal N).",
    "exit_timestamp": "When the last run ended.",
    "ended_by": "Who ended the last run: itself, or eveadm.",
    "tried_count": "The create attempts of the last start.",
    "boot_failed": "true when the last start failed after all its attempts.",
    "pending_restart": "Changes made while the domain ran that take effect at its next start.",
    "error": "Why the domain is failed: {message, time}.",
    "create_timestamp": "When the domain was created.",
    "last_modified": "When its record last changed.",
    "backend": "The backend's own facts: ids, the files eveadm rendered, the disk copies it owns.",
}

# exit codes: the error class that carries each (errors.py), and what it means
EXIT_CODES = (
    (None, "success, including no-ops (start of a running domain, stop of a stopped one)"),
    (errors.EveadmError, "failure: the backend refused or failed, or another error"),
    (errors.UsageError, "usage: a bad option, argument or list key"),
    (errors.ValidationError, "invalid payload (validate prints the report)"),
    (errors.NotFound, "no such domain (or network)"),
    (errors.Conflict, "conflict: exists already, wrong state, or lock held (the message names the holder)"),
    (errors.Timeout, "timeout: the domain was still there after the last rung of the stop ladder"),
)
INTERRUPTED = "interrupted by SIGINT or SIGTERM (128 + the signal), stopped at a safe point"

UPDATE_TEXT = {schema.LIVE: "live", schema.RESTART: "at the next start", schema.STOPPED: "only while stopped",
               None: "no"}
TOPICS = ("properties",)  # help topics beside the commands
# the payload's lists of devices (each element has properties of its own), with their titles
DEVICE_LISTS = (("disks", "Disks"), ("nics", "Nics"), ("pci_devices", "PCI devices"))


# -- facts drawn from the code ------------------------------------------------------------------------


def shipped_brands() -> dict:
    """The brands in the package (not plug-ins from EVEADM_BRAND_MODULES): what the shipped
    reference documents."""
    return {n: f for n, f in brands().items() if f.target.startswith("eveadm.backends.")}


def _closure(check) -> dict:
    code = getattr(check, "__code__", None)
    if code is None or not check.__closure__:
        return {}
    return dict(zip(code.co_freevars, (c.cell_contents for c in check.__closure__)))


def _refusal(check, value) -> str | None:
    """What the check says of a value it refuses, as what it wants: "must be X" and "'value' is not X"
    give X; a message that only repeats the value gives None."""
    errs: list = []
    check(value, "x", errs)
    if not errs:
        return None
    message = errs[0][1]
    if message.startswith(f"{value!r} is not "):
        return message.removeprefix(f"{value!r} is not ")
    if repr(value) in message or str(value) in message:
        return None
    return message.removeprefix("must be ")


ITEM_NAMES = {"_disk": "disks", "_nic": "nics", "_pci": "PCI devices"}


def type_text(check) -> str:
    """What a check accepts, in words: read from its closure (ranges, choices, lengths) or from the
    message it gives a value it refuses."""
    factory = check.__qualname__.split(".")[0]
    cells = _closure(check)
    if factory == "_int":
        lo, hi = cells["lo"], cells["hi"]
        return "integer" + (f" {lo}..{hi}" if lo is not None and hi is not None else
                            f" >= {lo}" if lo is not None else f" <= {hi}" if hi is not None else "")
    if factory == "_list_of":
        item = cells["item_check"]
        name = item.__qualname__.split(".")[0]
        if name in ITEM_NAMES:
            return f"list of {ITEM_NAMES[name]}"
        return f"list of {type_text(item)}"
    if factory == "_flat_object":
        return "object of strings" if cells["values"] == "str" else "object of strings, numbers, booleans"
    if factory == "_object":
        keys = ", ".join(cells["fields"])
        required = ", ".join(cells["required"])
        return f"object: {keys}" + (f" ({required} required)" if required else "")
    if check is schema._brand:
        return "one of " + ", ".join(shipped_brands())
    text = _refusal(check, "?!") or _refusal(check, 0.5) or "any"
    if factory == "_str" and cells.get("max_len"):
        text += f", at most {cells['max_len']} characters"
    return text


def _shown(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def brand_defaults() -> dict[str, dict]:
    """brand -> {property: default as text}; "generated" where normalize makes a new value each time."""
    out = {}
    for name in shipped_brands():
        first, second = schema.normalize({"brand": name}), schema.normalize({"brand": name})
        out[name] = {k: ("generated" if first[k] != second[k] else _shown(v))
                     for k, v in first.items() if k != "brand"}
    return out


def _required() -> dict[str, set[str]]:
    """property -> the brands whose create payload must have it."""
    everywhere = schema.check_create({})["missing_properties"]
    out: dict[str, set[str]] = {k: set(brands()) for k in everywhere}
    for name, facts in brands().items():
        for key in facts.required:
            out.setdefault(key, set()).add(name)
    return out


def _grouped(per_brand: dict[str, str], all_brands) -> str:
    """'60' when every brand has it; else '60 (kvm, xen), 10 (container, rkt)'."""
    groups: dict[str, list[str]] = {}
    for brand in all_brands:
        if per_brand.get(brand):
            groups.setdefault(per_brand[brand], []).append(brand)
    if len(groups) == 1 and len(next(iter(groups.values()))) == len(all_brands):
        return next(iter(groups))
    return ", ".join(f"{value} ({', '.join(names)})" for value, names in groups.items())


def update_text(key: str, takers: list[str] | None = None) -> str:
    prop = schema.PROPERTIES[key]
    verbs = [v for v in schema.UPDATE_VERBS if v.split("_", 1)[1] == key]
    if prop.update is None and verbs:
        return f"{', '.join(verbs)} ({UPDATE_TEXT[schema.update_mode(key)]})"
    text = UPDATE_TEXT[prop.update]
    if prop.update == schema.RESTART:  # what a running domain takes at once, by brand (BrandFacts.live)
        live = [b for b in (takers or brands()) if key in brands()[b].live]
        if live:
            text = f"live ({', '.join(live)}), else {text}"
    return text + (f"; or {', '.join(verbs)}" if verbs else "")


class Entry:
    """One documented key: name, type, default, update, brands, description."""

    __slots__ = ("name", "type", "default", "update", "brands", "doc")

    def __init__(self, name, type, default="", update="", brands="", doc=""):
        self.name, self.type, self.default, self.update, self.brands, self.doc = \
            name, type, default, update, brands, doc

    def facts(self, with_brands: bool) -> list[str]:
        """Its default, when a change takes effect and (optionally) its brands, as help and man say them."""
        out = []
        if self.default:
            out.append(self.default if self.default.startswith("required") else f"default {self.default}")
        if self.update:
            out.append(f"update: {self.update}")
        if with_brands and self.brands:
            out.append(f"brands: {self.brands}")
        return out


def property_entries(brand: str | None = None) -> list[Entry]:
    """The top-level properties (of one brand: only those it takes, with its defaults)."""
    every = shipped_brands()
    if brand is not None:
        facts = brands().get(brand)
        if facts is None:
            raise errors.UsageError(f"no brand {brand!r} (brands: {', '.join(brands())})")
        names = [brand]
        defaults = {brand: _brand_defaults_of(brand)}
    else:
        names = list(every)
        defaults = brand_defaults()
    required = _required()
    out = []
    for key, prop in schema.PROPERTIES.items():
        takers = [b for b in names if brands()[b].accepts(key)]
        if not takers:
            continue
        per_brand = {}
        for b in takers:
            per_brand[b] = "required" if b in required.get(key, ()) else defaults[b].get(key, "")
        default = _grouped(per_brand, takers)
        out.append(Entry(key, type_text(prop.check), default, update_text(key, takers),
                         "all" if len(takers) == len(every) and brand is None else ", ".join(takers),
                         PROPERTY_DOCS.get(key, "")))
    return out


def _brand_defaults_of(brand: str) -> dict:
    if brand in shipped_brands():
        return brand_defaults()[brand]
    first = schema.normalize({"brand": brand})
    return {k: _shown(v) for k, v in first.items() if k not in ("brand", "uuid")} | {"uuid": "generated"}


FIELDS = {"disks": schema.DISK_FIELDS, "nics": schema.NIC_FIELDS, "pci_devices": schema.PCI_FIELDS}


def _element_defaults(kind: str) -> dict[str, str]:
    if kind == "disks":
        disk, cdrom = schema._normalize_disk({}), schema._normalize_disk({"media": "cdrom"})
        return {k: _shown(v) + (f" (cdrom: {_shown(cdrom[k])})" if cdrom[k] != v and k != "media" else "")
                for k, v in disk.items()}
    if kind == "nics":
        first, second = schema._normalize_nic({}), schema._normalize_nic({})
        return {k: "generated" if first[k] != second[k] else _shown(v) for k, v in first.items()}
    return {}


def field_entries(kind: str) -> list[Entry]:
    defaults = _element_defaults(kind)
    return [Entry(k, type_text(check), defaults.get(k, ""),
                  doc=FIELD_DOCS.get(kind, {}).get(k, "")) for k, check in FIELDS[kind].items()]


def verb_entries() -> list[Entry]:
    out = []
    for verb, check in schema.UPDATE_VERBS.items():
        target = verb.split("_", 1)[1]
        out.append(Entry(verb, type_text(check), update=UPDATE_TEXT[schema.update_mode(target)],
                         doc=VERB_DOCS.get(verb, "")))
    return out


def read_only_entries() -> list[Entry]:
    from .lifecycle import STATES

    return [Entry(k, "", doc=doc.replace("{states}", ", ".join(STATES))) for k, doc in READ_ONLY_DOCS.items()]


def column_entries() -> list[tuple[str, str, str]]:
    """(field, header, description) of each `list` column."""
    return [(field, header, doc) for field, (header, _width, doc) in listing.LIST_FIELDS.items()]


def nested_keys() -> list[str]:
    """The nested keys list -o, -s and filters take (N: an index; filters also take *)."""
    out = [f"{kind}.N.{field}" for kind, fields in FIELDS.items() for field in fields]
    out += ["tags.KEY", "customer_metadata.KEY", "env.KEY", "error.message", "error.time"]
    return out


def exit_codes() -> list[tuple[str, str]]:
    rows = [(str(cls.exit_code if cls else 0), text) for cls, text in EXIT_CODES]
    return rows + [("130, 143", INTERRUPTED)]


# -- `eveadm help` ------------------------------------------------------------------------------------

WIDTH = 100


def _wrap(text: str, indent: str, more: str | None = None) -> str:
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent if more is None else more,
                         break_on_hyphens=False, break_long_words=False)


def properties_text(brand: str | None = None) -> str:
    """`eveadm help properties [BRAND]`."""
    entries = property_entries(brand)
    title = f"The payload properties of brand {brand}" if brand else "The payload properties, and the brands that take each"
    lines = [f"{title}. Sizes in MiB, times in seconds; unknown properties are refused.", ""]

    def block(entries, with_brands):
        for e in entries:
            lines.append(_wrap(f"{e.name}: " + "; ".join([e.type] + e.facts(with_brands)), "  ", "      "))
            if e.doc:
                lines.append(_wrap(e.doc, "      "))

    block(entries, brand is None)
    shown = {e.name for e in entries}
    for kind, title in DEVICE_LISTS:
        if kind in shown:
            lines += ["", f"{title} (each element of {kind}):"]
            block(field_entries(kind), False)
    lines += ["", "Update only (`eveadm update`):"]
    block([v for v in verb_entries() if v.name.split("_", 1)[1] in shown], False)
    lines += ["", "The full reference: `man eveadm`; disk modes and their data safety: README.md."]
    return "\n".join(lines) + "\n"


def _grouped_names(entries: list[Entry]) -> list[str]:
    groups: dict[str, list[str]] = {}
    for e in entries:
        groups.setdefault(e.brands, []).append(e.name)
    return [_wrap(f"{'every brand' if b == 'all' else b}: " + " ".join(names), "  ", "    ")
            for b, names in groups.items()]


def command_extra(name: str) -> str:
    """What `eveadm help NAME` adds to the parser's own help."""
    if name == "create":
        every = set(shipped_brands())
        required = [key + ("" if takers >= every else f" ({', '.join(sorted(takers & every))})")
                    for key, takers in _required().items() if takers & every]
        return ("\npayload properties (`eveadm help properties [BRAND]`: each one's type, default and meaning):\n"
                + "\n".join(_grouped_names(property_entries())) + "\n"
                + _wrap("required: " + ", ".join(required), "  ", "    ") + "\n")
    if name == "update":
        by_mode: dict[str, list[str]] = {}
        for key in schema.PROPERTIES:
            by_mode.setdefault(UPDATE_TEXT[schema.update_mode(key)], []).append(key)
        lines = ["", "when a change takes effect (`eveadm help properties [BRAND]` says more):"]
        lines += [_wrap(f"{mode}: " + " ".join(keys), "  ", "    ") for mode, keys in by_mode.items()]
        lines += [_wrap("update only: " + " ".join(schema.UPDATE_VERBS), "  ", "    ")]
        return "\n".join(lines) + "\n"
    if name == "lookup":
        return "\nkeys: -o and the filters take what `eveadm help list` names.\n"
    if name == "list":
        lines = ["", "columns (-o, -s and filters take them; `list` shows the header):"]
        width = max(len(f) for f, _, _ in column_entries())
        for field, header, doc in column_entries():
            lines.append(f"  {field:<{width}}  {header:<16}  {doc}".rstrip())
        lines.append(_wrap("and any other property that has one value (" + ", ".join(
            k for k, p in schema.PROPERTIES.items() if k not in listing.LIST_FIELDS and listing_key_ok(k))
            + "), and the nested keys " + ", ".join(nested_keys()) + " (N: an index; filters also take *)",
            "  ", "    "))
        return "\n".join(lines) + "\n"
    return ""


def listing_key_ok(key: str) -> bool:
    try:
        listing.check_key(key, "column")
    except errors.UsageError:
        return False
    return True


def subparsers(parser) -> dict:
    """The parser of each command, by canonical name (aliases left out)."""
    import argparse

    from .cli import COMMANDS

    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: action.choices[name] for name in COMMANDS}


def help_text(parser, topic: str | None, brand: str | None) -> str:
    """What `eveadm help [TOPIC [BRAND]]` prints."""
    from .cli import ALIASES, COMMANDS

    if topic == "properties":
        return properties_text(brand)
    if brand is not None:
        raise errors.UsageError(f"help {topic} takes no second word (got {brand!r})")
    if topic is None:
        return parser.format_help()
    name = ALIASES.get(topic, topic)
    if name not in COMMANDS:
        raise errors.UsageError(f"no command or topic {topic!r} (topics: {', '.join(TOPICS)})")
    return subparsers(parser)[name].format_help() + command_extra(name)


# -- docs/payload.md ----------------------------------------------------------------------------------


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def payload_markdown() -> str:
    lines = [
        "# The payload",
        "",
        "<!-- Generated by `python -m eveadm.reference .` from src/eveadm/schema.py, the brand registry and the",
        "     descriptions in src/eveadm/reference.py. Do not edit: tests/unit/test_reference.py checks it. -->",
        "",
        "A payload is a JSON object: `create` takes one whole, `update` the properties to change (and the",
        "update-only keys below). Sizes are MiB, times seconds. Unknown properties, and properties that do not",
        "apply to the brand, are refused (exit 3). The same reference is in `eveadm help properties [BRAND]`",
        "and `man eveadm`; [contract.md](contract.md) has the rest of the contract, and README.md the disk",
        "modes with what each does to your data.",
        "",
        "Update says when a change takes effect: *live* at once; *live (BRANDS)* at once on a running domain",
        "of those brands when the guest takes it (`update -j` says, per change), else at the next start;",
        "*at the next start* stored, and shown in `pending_restart` while the domain runs (what `get` and",
        "`list` show is what runs); *only while stopped* refused while it runs; *no* fixed at create.",
        "",
        "## Properties",
        "",
    ]
    rows = [[f"`{e.name}`", e.type, e.default, e.update, e.brands, e.doc] for e in property_entries()]
    lines += _md_table(["property", "type", "default", "update", "brands", "description"], rows)
    for kind, title in DEVICE_LISTS:
        lines += ["", f"## {title}", "", f"Each element of `{kind}`:", ""]
        rows = [[f"`{e.name}`", e.type, e.default, e.doc] for e in field_entries(kind)]
        lines += _md_table(["field", "type", "default", "description"], rows)
    lines += ["", "## Update only", "", "Keys `update` takes beside the properties:", ""]
    rows = [[f"`{e.name}`", e.type, e.update, e.doc] for e in verb_entries()]
    lines += _md_table(["key", "type", "takes effect", "description"], rows)
    lines += ["", "## Read-only", "", "`get` shows these beside the payload (when set):", ""]
    lines += _md_table(["key", "description"], [[f"`{e.name}`", e.doc] for e in read_only_entries()])
    lines += ["", "## list columns", "",
              "`eveadm list -o` and `-s`, and the filters, take these columns, any other property that has one",
              "value, and the nested keys " + ", ".join(f"`{k}`" for k in nested_keys()) + " (N: an index;",
              "filters also take `*`).", ""]
    lines += _md_table(["column", "header", "description"],
                       [[f"`{f}`", h, doc] for f, h, doc in column_entries()])
    return "\n".join(lines) + "\n"


# -- the man page -------------------------------------------------------------------------------------


def _roff(text: str) -> str:
    """Text as roff: backslashes and minus signs escaped, no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _invocation(action) -> tuple[str, str]:
    """The option as help shows it (`-f FILE, --file FILE`) and its help text, expanded."""
    import argparse

    formatter = argparse.HelpFormatter("eveadm")
    return formatter._format_action_invocation(action), formatter._expand_help(action) if action.help else ""


def _usage(parser) -> str:
    import argparse

    formatter = argparse.HelpFormatter(parser.prog, width=10_000)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def _options(parser) -> list[str]:
    out = []
    for action in parser._actions:
        if "-h" in action.option_strings or action.dest == "command":
            continue
        invocation, text = _invocation(action)
        out += [".TP", ".B " + _roff(invocation)] + ([_roff(text)] if text else [])
    return out


def _man_entries(entries: list[Entry], with_brands: bool) -> list[str]:
    out = []
    for e in entries:
        facts = ([e.type] if e.type else []) + e.facts(with_brands)
        out += [".TP", ".B " + _roff(e.name)]
        if facts:
            out.append(_roff("; ".join(facts) + "."))
            out.append(".br")
        out.append(_roff(e.doc))
    return out


def man_page(parser=None) -> str:
    """eveadm(8) in roff, from the parser, the schema, the list columns and the exit codes."""
    from .cli import COMMANDS, build_parser

    parser = parser or build_parser()
    commands = subparsers(parser)
    out = [
        '.\\" Generated by eveadm.reference from the parser and the schema; do not edit.',
        '.TH EVEADM 8 "" "eveadm" "System Administration"',
        ".nh",  # no hyphenation: names and keys are copied from here
        ".ad l",
        ".SH NAME",
        "eveadm \\- run virtual machines and containers on one node through one vmadm\\-style interface",
        ".SH SYNOPSIS",
    ]
    out += [".B eveadm", "[\\fB\\-\\-root\\fR \\fIDIR\\fR] [\\fB\\-\\-debug\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]", ".br"]
    out += [".B eveadm help", "[\\fICOMMAND\\fR | \\fBproperties\\fR [\\fIBRAND\\fR]]"]
    out += [".SH DESCRIPTION", _roff(parser.description or ""), ".PP", _roff(
        "A domain is a VM or a container, named by a UUID or an alias. Payloads are JSON objects (see PAYLOAD); "
        "data goes to stdout, messages to stderr, and -j prints strict JSON. A domain is created paused, then "
        "activated; a stop is graceful, then forced, then a destroy. Brands: " + ", ".join(shipped_brands())
        + ".")]
    out += [".SH OPTIONS"] + _options(parser)
    out += [".SH COMMANDS"]
    for name, (aliases, text, _builder, examples) in COMMANDS.items():
        sub = commands[name]
        out += [".SS " + _roff(name + (f" (also {', '.join(aliases)})" if aliases else "")),
                ".B " + _roff(_usage(sub)), ".PP", _roff(text[:1].upper() + text[1:] + ".")]
        out += _options(sub)
        extra = "See LIST COLUMNS." if name in ("list", "lookup") else command_extra(name)
        if extra.strip():
            out += [".PP", ".nf", _roff(extra.strip("\n")), ".fi"]
        if examples:
            body = examples.split("\n", 1)[1] if examples.startswith("examples:") else examples
            out += [".PP", "Examples:", ".PP", ".nf", ".RS 4", _roff(textwrap.dedent(body)), ".RE", ".fi"]
    out += [".SH PAYLOAD", _roff(
        "Sizes are MiB, times seconds. Unknown properties, and properties the brand does not take, are "
        "refused. Update: live, at the next start (shown in pending_restart while the domain runs), only "
        "while stopped, or no (fixed at create).")]
    out += _man_entries(property_entries(), True)
    for kind, title in DEVICE_LISTS:
        out += [".SS " + title, _roff(f"Each element of {kind}:")] + _man_entries(field_entries(kind), False)
    out += [".SS Update only"] + _man_entries(verb_entries(), False)
    out += [".SS Read\\-only", _roff("get shows these beside the payload, when set:")]
    out += _man_entries(read_only_entries(), False)
    out += [".SH LIST COLUMNS", _roff("list -o and -s, and the filters, take these columns, any other property "
                                      "that has one value, and the nested keys " + ", ".join(nested_keys())
                                      + " (N: an index; filters also take *).")]
    for field, header, doc in column_entries():
        out += [".TP", ".B " + _roff(field), _roff(f"{header}: {doc}")]
    out += [".SH EXIT STATUS"]
    for code, text in exit_codes():
        out += [".TP", ".B " + _roff(code), _roff(text)]
    out += [".PP", _roff('An error is one line on stderr that starts with "eveadm:". A traceback appears only '
                         "with --debug.")]
    out += [".SH ENVIRONMENT"]
    for name, text in (
        ("EVEADM_ROOT", "The state root when --root is not given (default /var/lib/eveadm as root, else "
                        "~/.local/state/eveadm)."),
        ("EVEADM_RUN_ROOT", "Where runtime files (sockets, pid files) go (default <root>/run)."),
        ("EVEADM_<SETTING>", "Overrides a setting of <root>/config.json; dots become underscores "
                             "(EVEADM_KVM_ACCEL=tcg)."),
        ("EVEADM_BRAND_MODULES", "Python modules, separated by commas, that register more brands."),
    ):
        out += [".TP", ".B " + _roff(name), _roff(text)]
    out += [".SH FILES"]
    for name, text in (
        ("/var/lib/eveadm", "The state root as root: eveadm.db (the records and the event journal), "
                            "config.json (settings), domains/, locks/, and log/commands.jsonl (every "
                            "command eveadm ran)."),
        ("/usr/local/bin/eveadm", "Where scripts/setup.sh links the command."),
    ):
        out += [".TP", ".B " + _roff(name), _roff(text)]
    out += [".SH SEE ALSO", _roff("vmadm(8), xl(1), qemu(1), runc(8), crun(1). In the source tree: README.md, "
                                  "docs/contract.md, docs/payload.md, docs/design.md, docs/backends.md.")]
    return "\n".join(out) + "\n"


GENERATED = {"docs/payload.md": payload_markdown, "man/eveadm.8": man_page}


def write(top: str, only: tuple[str, ...] = tuple(GENERATED)) -> list[str]:
    """Rewrite the generated files (`only` those) under the source tree `top`; returns those that changed."""
    changed = []
    for rel in only:
        path = os.path.join(top, rel)
        text = GENERATED[rel]()
        try:
            with open(path, encoding="utf-8") as fh:
                if fh.read() == text:
                    continue
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        changed.append(rel)
    return changed


if __name__ == "__main__":
    import sys

    for rel in write(sys.argv[1] if len(sys.argv) > 1 else "."):
        print(f"wrote {rel}")
