"""What a user may name: image references, stored names, digests and pull sources. Pure functions:
every check here runs before any tool does, so a bad name never reaches skopeo, umoci or qemu-img.

The reference grammar is the registries' own (distribution/reference): `[DOMAIN[:PORT]/]PATH[:TAG]
[@sha256:HEX]`, lowercase path components, a tag of at most 128 word characters, dots and dashes.
A stored name is such a reference without a transport; one with neither tag nor digest means
`:latest`, as for docker and podman.
"""

from __future__ import annotations

import os
import re

DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
DIGEST_PREFIX_RE = re.compile(r"^(?:sha256:)?([0-9a-f]{12,64})$")  # CLI: a unique prefix, as `list` shows
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]{1,5})?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
REFERENCE_RE = re.compile(
    rf"^(?P<name>(?:(?P<domain>{_DOMAIN})/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?$")
OCI_TAG_RE = re.compile(r"^[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*(?:/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*$")
MAX_NAME = 255
TRANSPORTS = ("docker://", "oci:", "oci-archive:", "docker-archive:")
OTHER_TRANSPORTS = ("dir", "containers-storage", "docker-daemon", "ostree", "sif", "tarball", "atomic")
DISK_FORMATS = ("qcow2", "raw", "iso")


class SpecError(ValueError):
    """A name or source that is refused; the message is one line for the operator."""


def _printable(text, what: str) -> str:
    if not isinstance(text, str) or not text:
        raise SpecError(f"{what} must be a non-empty string")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise SpecError(f"{what} must not contain control characters")
    return text


def is_digest(text: str) -> bool:
    return bool(DIGEST_RE.match(text))


def normalize_name(text: str) -> str:
    """A stored name as kept and looked up: validated, `:latest` added when it has no tag or digest.
    A domain part keeps its case; the path must be lowercase (the registries' rule)."""
    _printable(text, "an image name")
    if len(text) > MAX_NAME:
        raise SpecError(f"image name {text[:40]}... is longer than {MAX_NAME} characters")
    if text.startswith(("/", "-")) or "://" in text:
        raise SpecError(f"{text!r} is not an image name (NAME[:TAG] or REGISTRY/NAME[:TAG][@sha256:DIGEST])")
    m = REFERENCE_RE.match(text)
    domain = m.group("domain") if m else None
    if domain and not ("." in domain or ":" in domain or domain == "localhost") and \
            not re.fullmatch(_COMPONENT, domain):
        m = None  # without a dot, a port or `localhost` the first part is a path component: lowercase
    if not m:
        raise SpecError(f"{text!r} is not an image name: lowercase letters, digits and . _ - separators, "
                        "an optional REGISTRY[:PORT]/ in front, :TAG and @sha256:DIGEST after")
    if not m.group("tag") and not m.group("digest"):
        return text + ":latest"
    return text


def reference_problem(text) -> str | None:
    """Why `text` cannot name a stored image (a name or sha256:DIGEST), or None."""
    try:
        if isinstance(text, str) and text.startswith("sha256:"):
            if not is_digest(text):
                return f"{text!r} is not a digest: sha256: and 64 lowercase hex digits"
            return None
        normalize_name(text)
    except SpecError as exc:
        return str(exc)
    return None


class Source:
    """A parsed pull source: the transport, where, the name it is stored under, skopeo's argument."""

    __slots__ = ("transport", "location", "name", "argument")

    def __init__(self, transport: str, location: str, name: str | None, argument: str):
        self.transport = transport  # docker | oci | oci-archive | docker-archive
        self.location = location  # the reference (docker) or the path (the others)
        self.name = name  # the stored name, None when it has none
        self.argument = argument  # what skopeo copy is given as its source

    def __repr__(self) -> str:
        return f"Source({self.argument!r}, name={self.name!r})"


def parse_source(text: str, name: str | None = None, cwd: str | None = None) -> Source:
    """`docker://REF`, a bare `REF` (docker), `oci:DIR[:TAG]`, `oci-archive:FILE`, `docker-archive:FILE`.

    The stored name: `name` when given, else for docker the reference as written (with `:latest`
    when it has no tag or digest), else `localhost/<file or directory name>:<tag or latest>` (podman's
    name for a local image) when that is a valid name. Raises SpecError."""
    _printable(text, "an image source")
    if name is not None:
        name = normalize_name(name)
    if text.startswith("docker://") or not any(text.startswith(t) for t in TRANSPORTS):
        ref = text.removeprefix("docker://")
        if ref.partition(":")[0] in OTHER_TRANSPORTS:
            raise SpecError(f"eveadm does not pull from {ref.partition(':')[0]}: transports: "
                            f"{', '.join(TRANSPORTS)} (a bare REGISTRY/NAME[:TAG] means docker://)")
        stored = normalize_name(ref)
        return Source("docker", ref, name or stored, "docker://" + ref)
    transport, _, rest = text.partition(":")
    if transport == "oci":
        path, tag = rest, None
        head, sep, tail = rest.rpartition(":")
        if sep and "/" not in tail:
            path, tag = head, tail
        if tag is not None and not OCI_TAG_RE.match(tag):
            raise SpecError(f"{tag!r} is not an OCI image layout tag")
        path = _local_path(path, cwd, want_dir=True)
        return Source("oci", path, name or _local_name(path, tag), f"oci:{path}" + (f":{tag}" if tag else ""))
    path = _local_path(rest, cwd, want_dir=False)
    return Source(transport, path, name or _local_name(path, None), f"{transport}:{path}")


def _local_path(path: str, cwd: str | None, want_dir: bool) -> str:
    if not path:
        raise SpecError("the image source needs a path after the transport")
    path = os.path.normpath(os.path.join(cwd or os.getcwd(), path))
    if ":" in path:
        raise SpecError(f"{path}: skopeo cannot read a path that contains ':'")
    if want_dir and not os.path.isfile(os.path.join(path, "oci-layout")):
        raise SpecError(f"{path} is not an OCI image layout (no oci-layout file)")
    if not want_dir and not os.path.isfile(path):
        raise SpecError(f"{path} is not a file")
    return path


def _local_name(path: str, tag: str | None) -> str | None:
    base = os.path.basename(path.rstrip("/")).lower()
    for suffix in (".tar.gz", ".tgz", ".tar"):
        base = base.removesuffix(suffix)
    base = re.sub(r"[^a-z0-9._-]+", "-", base).strip("._-")
    tag = tag if tag and re.match(rf"^{_TAG}$", tag) else "latest"
    try:
        return normalize_name(f"localhost/{base}:{tag}")
    except SpecError:
        return None


def check_sha256(text) -> str:
    """`--sha256`: 64 hex digits (or sha256:HEX); returns sha256:HEX in lowercase."""
    _printable(text, "--sha256")
    hexpart = text.lower().removeprefix("sha256:")
    if not re.match(r"^[0-9a-f]{64}$", hexpart):
        raise SpecError(f"--sha256 needs 64 hex digits, got {text!r}")
    return "sha256:" + hexpart


def check_import_source(text: str, cwd: str | None = None) -> tuple[str, str]:
    """("file", absolute path) or ("url", http(s) URL). Raises SpecError."""
    _printable(text, "an import source")
    if text.startswith(("http://", "https://")):
        if any(c.isspace() for c in text):
            raise SpecError(f"{text!r} is not a URL")
        return "url", text
    if "://" in text:
        raise SpecError(f"{text!r}: import reads a file or an http(s) URL")
    path = os.path.normpath(os.path.join(cwd or os.getcwd(), text))
    if not os.path.isfile(path):
        raise SpecError(f"{path} is not a file")
    return "file", path
