"""Disk images for VM brands (kvm; xen may use it too): plan, prepare, release.

The semantics (README.md's disk modes; docs/design.md, Disks), per entry of dom.config["disks"]:

    path, no size, no preserve key -> "user":      the user's file, used in place, never deleted
    path + preserve: false         -> "fresh":     a qcow2 overlay on the user's file, made anew
                                                   at every start, removed at stop
    path + preserve: true          -> "preserved": one private full copy made at the first start,
                                                   kept across stop/start, removed by delete
    size, no path                  -> "blank":     a blank image under dom.data_dir, kept,
                                                   removed by delete
    image (a stored disk image)    -> "preserved": a qcow2 overlay backed by the store's read-only
                                                   image, made at the first start, kept until delete;
    image + preserve: false        -> "fresh":     the same overlay made anew at every start (a cdrom
                                                   image is fresh unless told otherwise)
    size + path                    -> "blank-at":  a blank image created at `path` if missing;
                                                   eveadm owns it (delete removes it) only when
                                                   eveadm created it

`plan()` is pure (render uses it); `prepare()` makes the files; `release()`
removes what eveadm owns.

What a file is never depends on its name (a user's file name can be anything):
each kind has its own directory under data_dir/disks/ (`fresh/`, `preserved/`,
`blank/`, and `partial/` for copies being made), and release empties `fresh/`
and `partial/` at every stop, everything at delete.

A `blank-at` file outside data_dir is eveadm's only while both hold: eveadm
created it (remembered in dom.backend["disks_owned"]) and the current
configuration still has it as a `size` + `path` disk. Once the entry is removed
or becomes a path-only disk, the file is the user's and delete leaves it.

Blank disks without a path are named by their `id` (given to each such disk
when the payload or `add_disks` brings it in) so removing one never hands its
data to another; a disk without an id falls back to its index (`index-N`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from ..base import Domain
from ..host import BackendContext
from ...errors import BackendError, PermanentError

QEMU_IMG_HINT = "apt-get install qemu-utils"

USER, FRESH, PRESERVED, BLANK, BLANK_AT = "user", "fresh", "preserved", "blank", "blank-at"


@dataclasses.dataclass
class DiskUse:
    """How one configured disk reaches the VMM."""

    index: int
    kind: str
    path: Path  # the file the VMM opens
    format: str  # the VMM's image format: raw or qcow2 (an iso is raw)
    source: Path | None  # the user's file, if any (a stored image's file: set by prepare)
    disk: dict  # the configured entry
    image: str | None = None  # the stored image the disk is an overlay of (its name or digest)

    @property
    def media(self) -> str:
        return self.disk.get("media", "disk")

    @property
    def readonly(self) -> bool:
        return bool(self.disk.get("readonly", False)) or self.media == "cdrom"


def disk_dir(dom: Domain) -> Path:
    return Path(dom.data_dir) / "disks"


def kind_dir(dom: Domain, kind: str) -> Path:
    """Where eveadm keeps the files of one kind: fresh, preserved, blank, partial (copies being made)."""
    return disk_dir(dom) / kind


PARTIAL = "partial"
BLANK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def blank_key(disk: dict, index: int) -> str:
    """A blank disk's stable name: its `id`, else (older records) its index."""
    ident = disk.get("id")
    if ident is None:
        return f"index-{index}"
    if not isinstance(ident, str) or not BLANK_ID_RE.match(ident):
        raise BackendError(f"disks.{index}.id: {ident!r} is not a disk id (letters, digits, _ . -; at most 64)")
    return ident


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
        if disk.get("image"):
            keep = disk.get("preserve", disk.get("media") != "cdrom")
            kind = PRESERVED if keep else FRESH
            name = f"image-{_image_key(disk['image'])}.qcow2"
            uses.append(DiskUse(i, kind, kind_dir(dom, kind) / name, "qcow2", None, disk, disk["image"]))
        elif path and size is None:
            if "preserve" not in disk:
                uses.append(DiskUse(i, USER, Path(path), fmt, Path(path), disk))
            elif disk["preserve"]:
                ext = "qcow2" if fmt == "qcow2" else "img"
                name = f"{_copy_name(path, fmt)}.{ext}"
                uses.append(DiskUse(i, PRESERVED, kind_dir(dom, PRESERVED) / name, fmt, Path(path), disk))
            else:
                name = f"{_copy_name(path, fmt)}.qcow2"
                uses.append(DiskUse(i, FRESH, kind_dir(dom, FRESH) / name, "qcow2", Path(path), disk))
        elif size is not None and not path:
            ext = "qcow2" if fmt == "qcow2" else "img"
            uses.append(DiskUse(i, BLANK, kind_dir(dom, BLANK) / f"{blank_key(disk, i)}.{ext}", fmt, None, disk))
        elif size is not None and path:
            uses.append(DiskUse(i, BLANK_AT, Path(path), fmt, None, disk))
        else:
            raise BackendError(f"disks.{i}: needs a path or a size")
    return uses


def _image_key(ref: str) -> str:
    """An overlay is named after the image reference the disk gives (not its position in the list)."""
    import hashlib

    return hashlib.sha256(ref.encode()).hexdigest()[:16]


def check(config: dict) -> list[tuple[str, str]]:
    """Payload checks that need the file system: [(property path, message)]."""
    problems = []
    for i, disk in enumerate(config.get("disks") or []):
        path = disk.get("path")
        if path and disk.get("size") is None and not os.path.isfile(path) and not _is_block(path):
            problems.append((f"disks.{i}.path", f"{path} does not exist"))
        if path is None and disk.get("size") is None and not disk.get("image"):
            problems.append((f"disks.{i}", "needs a path or a size"))
        if path is None and disk.get("size") is not None:
            try:
                blank_key(disk, i)
            except BackendError as exc:
                problems.append((f"disks.{i}.id", str(exc).split(": ", 1)[1]))
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
    blank_at = {str(u.path) for u in uses if u.kind == BLANK_AT}
    owned = set(dom.backend.get("disks_owned", [])) & blank_at  # ownership follows the configuration
    partial = kind_dir(dom, PARTIAL)
    for use in uses:
        if use.kind in (FRESH, PRESERVED, BLANK):
            use.path.parent.mkdir(parents=True, exist_ok=True)
            partial.mkdir(parents=True, exist_ok=True)
        if use.image:
            _prepare_image_overlay(ctx, dom, use, partial)
        elif use.kind == USER:
            if not use.path.exists():
                raise PermanentError(f"disks.{use.index}: {use.path} does not exist")
        elif use.kind == FRESH:
            _need_source(use)
            use.path.unlink(missing_ok=True)
            _qemu_img(ctx, ["create", "-q", "-f", "qcow2", "-b", str(use.source.resolve()),
                            "-F", image_format(use.disk), str(use.path)])
        elif use.kind == PRESERVED:
            _adopt_legacy(use, disk_dir(dom) / f"{use.path.stem}.preserved{use.path.suffix}")
            if not use.path.exists():  # under data_dir: eveadm's own directory
                _need_source(use)
                tmp = partial / use.path.name
                tmp.unlink(missing_ok=True)
                _qemu_img(ctx, ["convert", "-q", "-f", image_format(use.disk), "-O", use.format,
                                str(use.source), str(tmp)], timeout=3600)
                os.replace(tmp, use.path)
        elif use.kind in (BLANK, BLANK_AT):
            if use.kind == BLANK and "id" not in use.disk:
                _adopt_legacy(use, disk_dir(dom) / f"disk{use.index}{use.path.suffix}")
            if not use.path.exists():
                if use.kind == BLANK_AT and not use.path.parent.is_dir():
                    raise PermanentError(f"disks.{use.index}: directory {use.path.parent} does not exist")
                tmp_dir = partial if use.kind == BLANK else use.path.parent
                if _create_blank(ctx, use, tmp_dir) and use.kind == BLANK_AT:
                    owned.add(str(use.path))
    dom.backend["disks_owned"] = sorted(owned)
    dom.backend["disks"] = [
        {"index": u.index, "kind": u.kind, "path": str(u.path), "format": u.format,
         **({"source": str(u.source)} if u.source else {}),
         **({"image": u.image, "image_digest": u.disk.get("_digest")} if u.image else {})}
        for u in uses
    ]
    return uses


def _prepare_image_overlay(ctx: BackendContext, dom: Domain, use: DiskUse, partial: Path) -> None:
    """A qcow2 overlay backed by the store's read-only file of the image: no copy of the image is
    ever made, and nothing writes to it. A kept overlay stays on the image it was made from (the one
    dom.backend recorded) even if the name now names another."""
    from ...images import DISK, lookup, pull_hint

    recorded = {d.get("index"): d for d in dom.backend.get("disks") or [] if isinstance(d, dict)}
    before = recorded.get(use.index) or {}
    info = None
    if use.kind == PRESERVED and use.path.exists() and before.get("image") == use.image:
        info = lookup(ctx.root_dir, before.get("image_digest") or "")
    info = info or lookup(ctx.root_dir, use.image)
    if info is None or info["kind"] != DISK:
        raise PermanentError(f"disks.{use.index}.image: " + (pull_hint(use.image, DISK) if info is None else
                                                             f"{use.image} is a container image"))
    use.source = Path(info["path"])
    use.disk = dict(use.disk, _digest=info["digest"])
    backing_format = "raw" if info["format"] == "iso" else info["format"]
    if use.kind == PRESERVED and use.path.exists():
        return
    tmp = partial / use.path.name
    tmp.unlink(missing_ok=True)
    _qemu_img(ctx, ["create", "-q", "-f", "qcow2", "-b", info["path"], "-F", backing_format, str(tmp)])
    os.replace(tmp, use.path)


def _adopt_legacy(use: DiskUse, legacy: Path) -> None:
    """A kept disk made before the per-kind directories (data_dir/disks/NAME) moves to its new place
    instead of being made anew: its data is the guest's."""
    if not use.path.exists() and legacy.is_file() and not legacy.is_symlink():
        os.replace(legacy, use.path)


def _create_blank(ctx: BackendContext, use: DiskUse, tmp_dir: Path) -> bool:
    """Create a blank image at use.path without ever replacing a file that is there (it may be a
    user's, appearing meanwhile): made under a temporary name in `tmp_dir` (on the same file system),
    then linked into place. Returns whether eveadm created it."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{use.path.name[:40]}.", suffix=".part", dir=tmp_dir)
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
        raise PermanentError(f"disks.{use.index}: {use.source} does not exist")


def _qemu_img(ctx: BackendContext, args: list[str], timeout: float = 120) -> None:
    ctx.run(["qemu-img", *args], timeout=timeout, install_hint=QEMU_IMG_HINT)


def release(dom: Domain, *, delete: bool = False) -> list[str]:
    """Remove fresh copies and partial files (always) and, with delete, everything under
    data_dir/disks plus the `blank-at` files eveadm owns (created by it, still configured so).

    What is removed is told by directory, never by file name; a user's file is never removed.
    """
    removed: list[str] = []
    ddir = disk_dir(dom)
    for kind in (FRESH, PARTIAL) if not delete else (FRESH, PARTIAL, PRESERVED, BLANK):
        _empty(kind_dir(dom, kind), removed, rmdir=delete)
    if delete:
        _empty(ddir, removed, rmdir=True)  # files of the layout before per-kind directories
        try:
            current = {str(u.path) for u in plan(dom) if u.kind == BLANK_AT}
        except BackendError:
            current = set()  # a configuration we cannot read owns nothing outside data_dir
        for p in dom.backend.get("disks_owned", []):
            if p in current:
                _unlink(Path(p), removed)
        dom.backend["disks_owned"] = []
    return removed


def _empty(directory: Path, removed: list[str], rmdir: bool) -> None:
    """Unlink the files directly in `directory` (a link is removed, never followed); then the
    directory itself when asked and empty."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
            _unlink(Path(entry.path), removed)
    if rmdir:
        try:
            directory.rmdir()
        except OSError:
            pass


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
