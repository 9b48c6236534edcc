"""Container images: a root filesystem directory, `oci:DIR[:TAG]` (an OCI image layout), or a
stored image (eveadm image pull): its name as pulled (`127.0.0.1:5000/busybox:1`) or `sha256:DIGEST`.

A layout is unpacked once with umoci into `<cache>/container/oci/<manifest digest>/rootfs`
(by the backend) and shared by every domain using it; a stored image into the image store's
`images/unpacked/sha256-HEX/rootfs` (eveadm.images.store.unpack). The image config (Entrypoint,
Cmd, Env, WorkingDir, User) is read straight from the layout's blobs here, so `render` never
needs the unpacked tree.
"""

from __future__ import annotations

import os


class ImageError(Exception):
    """A bad `image` value; the message is for the operator."""


def parse_image(image: str) -> tuple[str, str, str | None]:
    """("dir", path, None), ("oci", layout_dir, tag_or_None) or ("store", name_or_digest, None)."""
    if not image.startswith(("/", "oci:")):
        return "store", image, None
    if image.startswith("oci:"):
        rest = image[4:]
        path, tag = rest, None
        head, sep, tail = rest.rpartition(":")
        if sep and "/" not in tail:
            path, tag = head, tail or None
        return "oci", path, tag
    return "dir", image, None


def _read_json(path: str) -> dict:
    import json

    with open(path) as fh:
        return json.load(fh)


def _blob(layout: str, digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return os.path.join(layout, "blobs", algo, hexpart)


def resolve_manifest(layout: str, tag: str | None) -> tuple[str, str]:
    """(tag, manifest digest) of `tag` in an OCI image layout. Raises ImageError."""
    if not os.path.isdir(layout):
        raise ImageError(f"no such OCI image layout directory: {layout}")
    if not os.path.isfile(os.path.join(layout, "oci-layout")):
        raise ImageError(f"{layout} is not an OCI image layout (no oci-layout file)")
    try:
        index = _read_json(os.path.join(layout, "index.json"))
    except (OSError, ValueError) as exc:
        raise ImageError(f"{layout}: cannot read index.json: {exc}") from None
    manifests = [m for m in index.get("manifests") or [] if isinstance(m, dict) and m.get("digest")]
    tags = {(m.get("annotations") or {}).get("org.opencontainers.image.ref.name"): m for m in manifests}
    if tag is None:
        if "latest" in tags:
            tag = "latest"
        elif len(manifests) == 1:
            tag = (manifests[0].get("annotations") or {}).get("org.opencontainers.image.ref.name")
    known = sorted(t for t in tags if t)
    if tag is None or tag not in tags:
        want = f"tag {tag!r}" if tag else "a tag (several images, none named latest)"
        raise ImageError(f"{layout} has no {want}; tags: {', '.join(known) or 'none'}")
    digest = tags[tag]["digest"]
    if not os.path.isfile(_blob(layout, digest)):
        raise ImageError(f"{layout}: manifest blob {digest} is missing")
    return tag, digest


def image_config(layout: str, digest: str) -> dict:
    """The image's runtime defaults (`config` of the OCI image config): Entrypoint, Cmd, Env, WorkingDir, User."""
    try:
        manifest = _read_json(_blob(layout, digest))
        config = _read_json(_blob(layout, manifest["config"]["digest"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"{layout}: cannot read the image config of {digest}: {exc}") from None
    return config.get("config") or {}


def stored(root, ref: str) -> dict:
    """The stored OCI image `ref` names (eveadm.images.describe). Raises ImageError saying how to get it."""
    from ...images import OCI, lookup, pull_hint
    from ...images.spec import reference_problem

    problem = reference_problem(ref)
    if problem:
        raise ImageError(problem)
    info = lookup(root, ref)
    if info is None:
        raise ImageError(pull_hint(ref))
    if info["kind"] != OCI:
        raise ImageError(f"image {ref} is a VM disk image, not a container image")
    return info


def locate(image: str, root=None) -> tuple[str, str] | None:
    """Check `image` and find it: (OCI layout, manifest digest) of an image, None for a root
    filesystem directory (`root`: the image store's). Raises ImageError, in one line."""
    kind, path, tag = parse_image(image)
    if kind == "store":
        info = stored(root, path)
        return info["layout"], info["digest"]
    if not os.path.isabs(path):
        raise ImageError(f"image path must be absolute: {path}")
    if kind == "dir":
        if not os.path.isdir(path):
            raise ImageError(f"no such root filesystem directory: {path}")
        if any(c in path for c in ",:"):
            raise ImageError(f"root filesystem path must not contain ',' or ':' (overlayfs options): {path}")
        return None
    return path, resolve_manifest(path, tag)[1]
