"""Disk images for VM brands (kvm; xen may use it too): plan, prepare, release.

The semantics (SPEC 4.4, decided in docs/HELPERS.md), per entry of dom.config["disks"]:

    path, no size, no preserve key -> "user":      the user's file, used in place, never deleted
    path + preserve: false         -> "fresh":     a qcow2 overlay on the user's file, made anew
                                                   at every start, removed at stop
    path + preserve: true          -> "preserved": one private full copy made at the first start,
                                                   kept across stop/start, removed by delete
    size, no path                  -> "blank":     a blank image under dom.data_dir, kept,
                                                   removed by delete
    size + path                    -> "blank-at":  a blank image created at `path` if missing;
                                                   eveadm owns it (delete removes it) only when
                                                   eveadm created it

`plan()` is pure (render uses it); `prepare()` makes the files; `release()`
removes what eveadm owns. Ownership of files outside data_dir is remembered in
the backend dict (`disks_owned`) so it survives between commands.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..base import Domain
from ..host import BackendContext
from ...errors import BackendError

QEMU_IMG_HINT = "apt-get install qemu-utils"

USER, FRESH, PRESERVED, BLANK, BLANK_AT = "user", "fresh", "preserved", "blank", "blank-at"


@dataclasses.dataclass
class DiskUse:
    """How one configured disk reaches the VMM."""

    index: int
    kind: str
    path: Path  # the file the VMM opens
    format: str  # the VMM's image format: raw or qcow2 (an iso is raw)
    source: Path | None  # the user's file, if any
    disk: dict  # the configured entry

    @property
    def media(self) -> str:
        return self.disk.get("media", "disk")

    @property
    def readonly(self) -> bool:
        return bool(self.disk.get("readonly", False)) or self.media == "cdrom"


def disk_dir(dom: Domain) -> Path:
    return Path(dom.data_dir) / "disks"


def image_format(disk: dict) -> str:
    fmt = disk.get("format", "raw")
    return "raw" if fmt == "iso" else fmt


def _copy_name(source: str, fmt: str) -> str:
    """Private copies are named after their source, not their position in the list: removing or
    reordering disks must never hand one disk's kept data to another."""
    import hashlib

    digest = hashlib.sha256(f"{os.path.abspath(source)}\0{fmt}".encode()).hexdigest()[:16]
    return f"{Path(source).name[:40]}.{digest}"


def plan(dom: Domain) -> list[DiskUse]:
    """The file each disk will use, without touching anything."""
    uses = []
    for i, disk in enumerate(dom.config.get("disks") or []):
        fmt = image_format(disk)
        path = disk.get("path")
        size = disk.get("size")
        if path and size is None:
            if "preserve" not in disk:
                uses.append(DiskUse(i, USER, Path(path), fmt, Path(path), disk))
            elif disk["preserve"]:
                ext = "qcow2" if fmt == "qcow2" else "img"
                name = f"{_copy_name(path, fmt)}.preserved.{ext}"
                uses.append(DiskUse(i, PRESERVED, disk_dir(dom) / name, fmt, Path(path), disk))
            else:
                name = f"{_copy_name(path, fmt)}.fresh.qcow2"
                uses.append(DiskUse(i, FRESH, disk_dir(dom) / name, "qcow2", Path(path), disk))
        elif size is not None and not path:
            ext = "qcow2" if fmt == "qcow2" else "img"
            uses.append(DiskUse(i, BLANK, disk_dir(dom) / f"disk{i}.{ext}", fmt, None, disk))
        elif size is not None and path:
            uses.append(DiskUse(i, BLANK_AT, Path(path), fmt, None, disk))
        else:
            raise BackendError(f"disks.{i}: needs a path or a size")
    return uses


def check(config: dict) -> list[tuple[str, str]]:
    """Payload checks that need the file system: [(property path, message)]."""
    problems = []
    for i, disk in enumerate(config.get("disks") or []):
        path = disk.get("path")
        if path and disk.get("size") is None and not os.path.isfile(path) and not _is_block(path):
            problems.append((f"disks.{i}.path", f"{path} does not exist"))
        if path is None and disk.get("size") is None:
            problems.append((f"disks.{i}", "needs a path or a size"))
    return problems


def _is_block(path: str) -> bool:
    import stat

    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def prepare(ctx: BackendContext, dom: Domain) -> list[DiskUse]:
    """Make every disk file the plan needs; idempotent, run before each create."""
    uses = plan(dom)
    owned = set(dom.backend.get("disks_owned", []))
    for use in uses:
        if use.kind in (FRESH, PRESERVED, BLANK):
            use.path.parent.mkdir(parents=True, exist_ok=True)
        if use.kind == USER:
            if not use.path.exists():
                raise BackendError(f"disks.{use.index}: {use.path} does not exist")
        elif use.kind == FRESH:
            _need_source(use)
            use.path.unlink(missing_ok=True)
            _qemu_img(ctx, ["create", "-q", "-f", "qcow2", "-b", str(use.source.resolve()),
                            "-F", image_format(use.disk), str(use.path)])
        elif use.kind == PRESERVED:
            if not use.path.exists():  # under data_dir: eveadm's own directory
                _need_source(use)
                tmp = use.path.with_name(use.path.name + ".part")
                tmp.unlink(missing_ok=True)
                _qemu_img(ctx, ["convert", "-q", "-f", image_format(use.disk), "-O", use.format,
                                str(use.source), str(tmp)], timeout=3600)
                os.replace(tmp, use.path)
        elif use.kind in (BLANK, BLANK_AT):
            if not use.path.exists():
                if use.kind == BLANK_AT and not use.path.parent.is_dir():
                    raise BackendError(f"disks.{use.index}: directory {use.path.parent} does not exist")
                if _create_blank(ctx, use) and use.kind == BLANK_AT:
                    owned.add(str(use.path))
    dom.backend["disks_owned"] = sorted(owned)
    dom.backend["disks"] = [
        {"index": u.index, "kind": u.kind, "path": str(u.path), "format": u.format,
         **({"source": str(u.source)} if u.source else {})}
        for u in uses
    ]
    return uses


def _create_blank(ctx: BackendContext, use: DiskUse) -> bool:
    """Create a blank image at use.path without ever replacing a file that is there (it may be a
    user's, appearing meanwhile). Returns whether eveadm created it."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{use.path.name}.", suffix=".part", dir=use.path.parent)
    os.close(fd)
    try:
        _qemu_img(ctx, ["create", "-q", "-f", use.format, tmp, f"{int(use.disk['size'])}M"])
        try:
            os.link(tmp, use.path)  # fails if the path exists: then it is not ours
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise BackendError(f"disks.{use.index}: cannot create {use.path}: {exc.strerror}") from None
    finally:
        os.unlink(tmp)


def _need_source(use: DiskUse) -> None:
    if not use.source or not use.source.exists():
        raise BackendError(f"disks.{use.index}: {use.source} does not exist")


def _qemu_img(ctx: BackendContext, args: list[str], timeout: float = 120) -> None:
    ctx.run(["qemu-img", *args], timeout=timeout, install_hint=QEMU_IMG_HINT)


def release(dom: Domain, *, delete: bool = False) -> list[str]:
    """Remove fresh copies (always) and, with delete, preserved copies and blank disks eveadm made.

    Never removes a user's file: only paths under data_dir/disks and the
    `blank-at` files recorded as created by eveadm.
    """
    removed = []
    ddir = disk_dir(dom)
    if ddir.is_dir():
        for f in sorted(ddir.iterdir()):
            if ".fresh." in f.name or f.name.endswith(".part") or delete:
                _unlink(f, removed)
        if delete:
            try:
                ddir.rmdir()
            except OSError:
                pass
    if delete:
        for p in dom.backend.get("disks_owned", []):
            _unlink(Path(p), removed)
        dom.backend["disks_owned"] = []
    return removed


def _unlink(path: Path, removed: list[str]) -> None:
    try:
        path.unlink()
        removed.append(str(path))
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        pass
    except OSError as exc:
        raise BackendError(f"cannot remove {path}: {exc.strerror}") from None
