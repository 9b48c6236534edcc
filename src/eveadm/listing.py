"""`list` and `lookup` as vmadm does them: fields, nested keys, filters, sorting, padded columns."""

from __future__ import annotations

from .errors import UsageError
from .schema import LazyPattern

# field -> (header, minimum width, what it shows: `eveadm help list`, docs/payload.md and the man page)
LIST_FIELDS = {
    "uuid": ("UUID", 36, "the domain's UUID"),
    "type": ("TYPE", 4, "the brand's type code: KVM, XEN, CONT, RKT, NULL"),
    "ram": ("RAM", 7, "memory in MiB"),
    "state": ("STATE", 16, "the lifecycle state"),
    "alias": ("ALIAS", 10, "the domain's alias"),
    "brand": ("BRAND", 9, "the brand"),
    "vcpus": ("VCPUS", 5, "virtual CPUs"),
    "max_ram": ("MAX_RAM", 8, "the most memory in MiB a VM may grow to"),
    "cpus": ("CPUS", 8, "the host CPUs it is pinned to"),
    "virt_mode": ("MODE", 4, "the virtualization mode"),
    "autoboot": ("AUTOBOOT", 8, "whether it starts with the agent"),
    "pid": ("PID", 6, "the pid of its VMM or program, while it runs"),
    "domain_id": ("DOMID", 6, "xen's domid; the QEMU or container pid"),
    "image": ("IMAGE", 20, "the container's image"),
    "stop_timeout": ("STOP_TIMEOUT", 12, "the graceful stop's budget in seconds"),
    "on_crash": ("ON_CRASH", 8, "halt or restart when it dies unexpectedly"),
    "exit_status": ("EXIT", 4, "the exit status of its last run"),
    "exit_timestamp": ("EXIT_TIMESTAMP", 24, "when its last run ended"),
    "create_timestamp": ("CREATE_TIMESTAMP", 24, "when it was created"),
    "boot_timestamp": ("BOOT_TIMESTAMP", 24, "when it last started running"),
    "last_modified": ("LAST_MODIFIED", 24, "when its record last changed"),
    "tried_count": ("TRIES", 5, "the create attempts of its last start"),
    "boot_failed": ("BOOT_FAILED", 11, "true when its last start failed after all attempts"),
    "vnc_port": ("VNC", 5, "its VNC port (-1: off)"),
}
DEFAULT_COLUMNS = ["uuid", "type", "ram", "state", "alias"]
DEFAULT_SORT = ["ram", "uuid"]

_NESTED_RE = LazyPattern(
    r"^(?:(disks)\.(\*|\d+)\.(path|format|media|model|readonly|boot|size|preserve|id|image)"
    r"|(nics)\.(\*|\d+)\.(mac|bridge|model|vif|mtu|network|ip|gateway)"
    r"|(pci_devices)\.(\*|\d+)\.(address)"
    r"|(tags|customer_metadata|env)\.[^.]+"
    r"|(error)\.(message|time))$"
)

def type_code(brand: str | None) -> str:
    from .backends import brands

    facts = brands().get(brand)
    return facts.type_code if facts else "?"


def type_codes() -> dict[str, str]:
    """brand -> type code, for listings that label many rows."""
    from .backends import brands

    return {name: facts.type_code for name, facts in brands().items()}


def add_fake_fields(obj: dict) -> dict:
    obj["type"] = type_code(obj.get("brand"))
    return obj


def check_key(key: str, what: str) -> None:
    if key in LIST_FIELDS or _NESTED_RE.match(key):
        return
    from .schema import PROPERTIES

    if key in PROPERTIES and key not in ("disks", "nics", "pci_devices", "tags", "customer_metadata", "env",
                                         "cloud_init", "cmd"):
        return  # any scalar payload property (kernel, accel, workdir...)
    raise UsageError(f'invalid {what} key: "{key}"')


def check_column(key: str, what: str) -> None:
    if key in LIST_FIELDS:
        return
    if ".*." in key:
        raise UsageError(f'invalid {what} key: "{key}" (a column names one element, not *)')
    check_key(key, what)


MISSING = _MISSING = object()


def values_at(obj, key: str) -> list:
    """All values at a dotted path; `*` fans out over a list."""
    current = [obj]
    for part in key.split("."):
        nxt = []
        for item in current:
            if part == "*" and isinstance(item, list):
                nxt.extend(item)
            elif isinstance(item, list) and part.isdigit():
                if int(part) < len(item):
                    nxt.append(item[int(part)])
            elif isinstance(item, dict) and part in item:
                nxt.append(item[part])
        current = nxt
    return current


def value_at(obj, key: str):
    if "." not in key:
        return obj.get(key, _MISSING)
    vals = values_at(obj, key)
    return vals[0] if vals else _MISSING


def _as_text(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    return str(v)


def parse_filters(args: list[str], what: str = "filter") -> list:
    """`field=value` (exact) and `field=~regex` (case-insensitive, unanchored) -> matchers."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise UsageError(f'invalid {what} "{arg}": use field=value or field=~regex')
        check_key(key, what)
        if value.startswith("~"):
            import re  # only a regex filter pays for it

            try:
                rx = re.compile(value[1:], re.IGNORECASE)
            except re.error as exc:
                raise UsageError(f'invalid regular expression in "{arg}": {exc}') from None
            out.append((key, lambda v, rx=rx: rx.search(_as_text(v)) is not None))
        else:
            if key.endswith(".mac") or key == "mac":
                value = ":".join(p.zfill(2) for p in value.lower().split(":"))
            out.append((key, lambda v, value=value: _as_text(v) == value))
    return out


def matches(obj: dict, filters) -> bool:
    for key, test in filters:
        if not any(test(v) for v in values_at(obj, key)):
            return False
    return True


def _sort_key(value):
    # vmadm order (ascending): truthy values, then falsy ones (0, "", false), then absent
    if value.__class__ is str:  # the common case first: a listing runs this per row and sort field
        return (0 if value else 1, 1, value)
    if value is _MISSING or value is None:
        return (2, 0, "")
    rank = 0 if value else 1
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (rank, 0, value)
    return (rank, 1, _as_text(value))


def sort_objects(objs: list[dict], fields: list[str]) -> list[dict]:
    """Sorted by each field in turn (-field: descending). Fields are checked by the caller, before
    anything is read. A run of fields in one direction is one sort on a tuple of keys."""
    out = list(objs)
    i = len(fields)
    while i > 0:  # from the last field back, as stable sorts compose
        desc = fields[i - 1].startswith("-")
        j = i - 1
        while j > 0 and fields[j - 1].startswith("-") == desc:
            j -= 1
        getters = [_getter(f.lstrip("+-")) for f in fields[j:i]]
        out.sort(key=lambda o: [_sort_key(get(o)) for get in getters], reverse=desc)
        i = j
    return out


def cell(value, parsable: bool) -> str:
    if value.__class__ is str and value:  # the common case, first: a listing runs this per cell
        return value
    if value is _MISSING or value is None or value is False or value == "" or value == [] or value == {}:
        return "" if parsable else "-"
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, separators=(",", ":"))
    return _as_text(value)


def header_of(field: str) -> tuple[str, int]:
    return LIST_FIELDS[field][:2] if field in LIST_FIELDS else (field.upper(), 20)


def _getter(field: str):
    """A function reading `field` of an object, chosen once: listings call it per row."""
    return (lambda o: o.get(field, _MISSING)) if "." not in field else (lambda o: value_at(o, field))


def format_table(objs: list[dict], columns: list[str], parsable: bool = False, header: bool = True) -> str:
    getters = [_getter(c) for c in columns]
    lines = []
    if parsable:
        for o in objs:
            lines.append(":".join([cell(get(o), True) for get in getters]))
        return "\n".join(lines) + ("\n" if lines else "")
    widths = [header_of(c)[1] for c in columns]
    if header:
        lines.append("  ".join(h.ljust(w) for h, w in zip((header_of(c)[0] for c in columns), widths)).rstrip())
    pairs = list(zip(getters, widths))
    for o in objs:
        lines.append("  ".join([cell(get(o), False).ljust(w) for get, w in pairs]).rstrip())
    return "\n".join(lines) + ("\n" if lines else "")
