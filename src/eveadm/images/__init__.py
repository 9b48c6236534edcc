"""Images: one content-addressed store under the state root, shared by every domain (issue 11).

    <root>/images/images.json          the catalogue: every image by digest, its kind, names, size
                                       (written last, atomically: an image is listed only once all
                                       of it is stored)
    <root>/images/oci/                 one OCI image layout: oci-layout, index.json (one entry per
                                       image, ref name `sha256-HEX`), blobs/sha256/HEX (each layer once)
    <root>/images/disks/sha256/HEX     imported VM disk images, read-only (0400)
    <root>/images/unpacked/sha256-HEX  an OCI image unpacked by umoci (rootfs/), shared by its containers
    <root>/images/partial/             pulls, imports and unpacks under way (never trusted, never listed)

An OCI image's digest is its manifest's; a disk image's is the sha256 of its file. This module is
what backends and reports read and changes nothing: `lookup(root, ref)` resolves a payload's `image`.
The host side (skopeo, umoci, qemu-img) is `eveadm.images.store`; names and sources `eveadm.images.spec`.
"""

from __future__ import annotations

import json
import os

from ..backends.host import root_of

OCI, DISK = "oci", "disk"
CATALOG = "images.json"
LOCK_NAME = "images"  # the engine's lock (<root>/locks/images.lock) held while the store changes
EVENT_PREFIX = "image:"  # journal entries of an image carry "image:sha256:HEX" where a domain has its uuid


def images_dir(root) -> str:
    return os.path.join(root_of(root), "images")


def layout_dir(root) -> str:
    return os.path.join(images_dir(root), "oci")


def blob_path(root, digest: str) -> str:
    return os.path.join(layout_dir(root), "blobs", "sha256", _hex(digest))


def disk_path(root, digest: str) -> str:
    return os.path.join(images_dir(root), "disks", "sha256", _hex(digest))


def unpacked_dir(root, digest: str) -> str:
    return os.path.join(images_dir(root), "unpacked", layout_ref(digest))


def partial_dir(root) -> str:
    return os.path.join(images_dir(root), "partial")


def layout_ref(digest: str) -> str:
    """The image's ref name in the store's index.json (umoci and skopeo address it by that)."""
    return "sha256-" + _hex(digest)


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise ValueError(f"{digest!r} is not a sha256 digest")
    return hexpart


def read_catalog(root) -> dict[str, dict]:
    """{digest: entry} of every stored image ({} when the store is empty or not made yet)."""
    path = os.path.join(images_dir(root), CATALOG)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    with os.fdopen(fd, encoding="utf-8") as fh:
        data = json.load(fh)
    return data.get("images") or {}


def resolve(catalog: dict[str, dict], ref: str, prefix: bool = False) -> tuple[str, dict] | None:
    """(digest, entry) of the image `ref` names: sha256:DIGEST, or a stored name (`:latest` when it has
    no tag). With prefix (the CLI), a unique digest prefix of at least 12 hex digits also names one."""
    from . import spec

    if spec.is_digest(ref):
        return (ref, catalog[ref]) if ref in catalog else None
    if prefix:
        m = spec.DIGEST_PREFIX_RE.match(ref)
        if m:
            found = [d for d in catalog if d.startswith("sha256:" + m.group(1))]
            if len(found) == 1:
                return found[0], catalog[found[0]]
            if found:
                return None
    try:
        name = spec.normalize_name(ref)
    except spec.SpecError:
        return None
    for digest, entry in catalog.items():
        if name in entry.get("names", ()):
            return digest, entry
    return None


def describe(root, digest: str, entry: dict) -> dict:
    """What a backend needs of a stored image: kind, digest, names; for oci its layout and ref name
    there, for a disk its read-only file and format."""
    out = {"digest": digest, "kind": entry["kind"], "names": list(entry.get("names") or []),
           "size": entry.get("size")}
    if entry["kind"] == OCI:
        out.update(layout=layout_dir(root), ref=layout_ref(digest), unpacked=unpacked_dir(root, digest))
    else:
        out.update(path=disk_path(root, digest), format=entry.get("format", "raw"))
    return out


def lookup(root, ref: str) -> dict | None:
    """The stored image `ref` names (a name, or sha256:DIGEST), as `describe` gives it, or None.
    A read of the catalogue only: it takes no lock and changes nothing."""
    try:
        found = resolve(read_catalog(root), ref)
    except (OSError, ValueError):
        return None
    return describe(root, *found) if found else None


def pull_hint(ref: str, kind: str = OCI) -> str:
    """How to get an image that is not stored, for a validate error."""
    if kind == DISK:
        how = "eveadm image import FILE --sha256 HEX" + ("" if ref.startswith("sha256:") else f" --name {ref}")
        return f"{ref} is not a stored disk image: import it with `{how}`"
    if ref.startswith("sha256:"):
        return f"{ref} is not stored: pull or import it first (eveadm image list shows what is)"
    return f"{ref} is not stored: pull it with `eveadm image pull docker://{ref}`, or create with --pull"
