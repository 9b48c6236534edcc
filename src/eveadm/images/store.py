"""The host side of the image store: skopeo pulls, disk imports, umoci unpacks, removal and leftovers.

Every change has two halves. The slow half (download, copy, hash, unpack) runs without a lock in a
directory of its own under images/partial/, holding a flock on it for its life: whatever a SIGKILL
leaves there is never read again (a later pull makes its own directory) and doctor removes it once
no process holds it. The commit half runs under the engine's images lock and only links verified
files into place, then writes index.json and last the catalogue, each by an atomic rename: an image
is listed only when everything it needs is stored, and a blob is in blobs/ only under the digest
its content has.

Pulls go through skopeo into a fresh OCI layout in partial/. The store's layers are hard-linked into
it first, so skopeo finds them there and fetches only what is missing (one blob store: a layer shared
by several images is downloaded and kept once). Manifests are never linked: skopeo rewrites a
manifest file in place, which would write through the link into the store. Every new blob is hashed
again here before it is linked into the store (skopeo has verified it while copying; the store does
not take that on trust).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time

from .. import faults, interrupts, privatedir
from ..backends.host import logrus_message
from ..errors import BackendError, EveadmError, NotFound, PermanentError
from . import DISK, OCI, blob_path, disk_path, images_dir, layout_dir, layout_ref, partial_dir, read_catalog
from . import unpacked_dir
from .progress import BAR, reporter
from .spec import DISK_FORMATS

SKOPEO_HINT = "apt-get install skopeo"
UMOCI_HINT = "apt-get install umoci"
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",)
HASH_CHUNK = 1 << 20
PULL_TIMEOUT = 3600.0  # s: setting image.pull_timeout
DIGEST_WORDS = ("digest did not match", "digest mismatch", "does not match", "expected digest", "invalid digest")


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _write_json(path: str, obj) -> None:
    """Write atomically (a temporary file renamed over the old one), owner-only, synced first."""
    privatedir.write_private(path, json.dumps(obj, indent=1, sort_keys=True) + "\n", sync=True)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# -- the staging directory -----------------------------------------------------------------------------


class Staging:
    """A directory under partial/ that this process holds (a flock on its `.lock`) until close()."""

    def __init__(self, root, kind: str):
        import tempfile

        parent = privatedir.ensure(partial_dir(root))
        self.path = tempfile.mkdtemp(prefix=f"{kind}-", dir=parent)
        self._fd = os.open(os.path.join(self.path, ".lock"), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stale_partials(root) -> list[str]:
    """Directories under partial/ that no process holds: what an interrupted pull, import or unpack left."""
    parent = partial_dir(root)
    try:
        names = sorted(os.listdir(parent))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        path = os.path.join(parent, name)
        try:
            fd = os.open(os.path.join(path, ".lock"), os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            out.append(path)  # killed before it took its lock
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            out.append(path)
        except BlockingIOError:
            pass  # under way
        finally:
            os.close(fd)
    return out


def remove_path(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
        if os.path.exists(path):
            raise BackendError(f"cannot remove {path}")
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def tree_size(path: str) -> int:
    """Bytes used by the files under `path` (each inode once)."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


# -- running a long tool with progress ------------------------------------------------------------------


def _tool_message(text: str) -> str:
    """skopeo's, umoci's or qemu-img's last meaningful line, cut to a length a message can carry."""
    return logrus_message(text)[:600]


# -- pull ------------------------------------------------------------------------------------------------


class Staged:
    """A pull or an import, complete and verified in its staging directory, ready to commit."""

    def __init__(self, staging: Staging, digest: str, entry: dict, files: dict[str, str]):
        self.staging = staging
        self.digest = digest
        self.entry = entry  # the catalogue entry (without names)
        self.files = files  # {digest: staged file} of blobs (oci) or the disk file


def _store_blobs(root) -> set[str]:
    d = os.path.join(layout_dir(root), "blobs", "sha256")
    try:
        return {"sha256:" + n for n in os.listdir(d) if len(n) == 64}
    except FileNotFoundError:
        return set()


def _staged_bytes(layout: str) -> int:
    """Bytes skopeo has written so far into the staging layout (new files only, not the linked ones)."""
    total = 0
    for dirpath, _, filenames in os.walk(layout):
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_nlink == 1:
                total += st.st_size
    return total


def pull(ctx, source, tls_verify: bool = True) -> Staged:
    """Copy `source` (spec.Source) into a staging layout with skopeo, and verify what it wrote.
    The caller commits it (commit) under the images lock, then closes its staging."""
    root = ctx.root_dir
    if ":" in root:
        raise BackendError(f"the state root {root} contains ':', which skopeo and umoci cannot address")
    catalog = read_catalog(root)
    manifests = {d for d, e in catalog.items() if e.get("kind") == OCI}
    staging = Staging(root, "pull")
    try:
        layout = os.path.join(staging.path, "layout")
        blobs = os.path.join(layout, "blobs", "sha256")
        os.makedirs(blobs)
        with open(os.path.join(layout, "oci-layout"), "w") as fh:
            fh.write('{"imageLayoutVersion": "1.0.0"}')
        for digest in _store_blobs(root) - manifests:
            try:
                os.link(blob_path(root, digest), os.path.join(blobs, digest[7:]))
            except FileNotFoundError:
                pass  # removed meanwhile by a prune: fetched again if needed
        argv = _skopeo(ctx, "copy")
        if not tls_verify:
            argv.append("--src-tls-verify=false")
        argv += [source.argument, f"oci:{layout}:pulled"]
        report = reporter("pull", source.name or source.location)
        total = _expected_size(ctx, source, tls_verify) if report.mode == BAR else None
        hasher = BlobHasher(layout)

        def watch(pid: int) -> None:
            report.update(_staged_bytes(layout), total)
            hasher.follow()

        try:
            rc, err = ctx.run_watched(argv, staging.path, watch,
                                  float(ctx.setting("image.pull_timeout", PULL_TIMEOUT)), SKOPEO_HINT)
            staged = _verify_layout(root, staging, layout, hasher) if rc == 0 else None
        finally:
            hasher.close()
        if rc != 0:
            report.finish(_staged_bytes(layout), ok=False)
            message = _tool_message(err)
            if any(w in message.lower() for w in DIGEST_WORDS):
                raise BackendError(f"pull of {source.argument} refused: a blob's content does not match its "
                                   f"digest, nothing was stored (skopeo: {message})")
            raise BackendError(f"skopeo copy {source.argument} failed (exit {rc}): {message}")
        staged.entry["source"] = source.argument
        report.finish(staged.entry["size"])
        return staged
    except BaseException:
        staging.close()
        raise


def _skopeo(ctx, *args: str) -> list[str]:
    """skopeo reads the host's /etc/containers (policy.json, registries.conf and .d, which say which
    registries are plain HTTP); the setting image.registries_conf names another registries file
    (skopeo 1.9 has no environment variable for it)."""
    conf = ctx.setting("image.registries_conf")
    return ["skopeo"] + (["--registries-conf", str(conf)] if conf else []) + list(args)


def _expected_size(ctx, source, tls_verify: bool) -> int | None:
    """The image's total size from its manifest (one `skopeo inspect --raw`), for the bar's 100 %."""
    argv = _skopeo(ctx, "inspect", "--raw") + ([] if tls_verify else ["--tls-verify=false"]) + [source.argument]
    try:
        proc = ctx.run(argv, check=False, timeout=60, install_hint=SKOPEO_HINT)
        manifest = json.loads(proc.stdout) if proc.returncode == 0 else {}
        return sum(int(d.get("size") or 0) for d in [manifest.get("config") or {}] + list(manifest.get("layers") or [])) \
            or None
    except (EveadmError, ValueError, TypeError, AttributeError):
        return None


class BlobHasher:
    """Hashes what skopeo writes while it writes it: each new file in the staging layout (skopeo's
    temporary `oci-put-blob*`, renamed into blobs/ once complete) is followed by its inode and
    hashed as it grows, so checking a blob again costs no time after the copy."""

    def __init__(self, layout: str):
        self.layout = layout
        self.files: dict[tuple[int, int], list] = {}  # (dev, ino) -> [fd, sha256, bytes hashed]

    def follow(self) -> None:
        for directory in (self.layout, os.path.join(self.layout, "blobs", "sha256")):
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not entry.is_file(follow_symlinks=False) or st.st_nlink != 1 or entry.name.endswith(".json"):
                    continue
                key = (st.st_dev, st.st_ino)
                if key not in self.files:
                    try:
                        self.files[key] = [os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW), hashlib.sha256(), 0]
                    except OSError:
                        continue
                self._read(self.files[key])

    @staticmethod
    def _read(state: list) -> None:
        while chunk := os.pread(state[0], HASH_CHUNK, state[2]):
            state[1].update(chunk)
            state[2] += len(chunk)

    def digest(self, path: str) -> str:
        """The sha256 of a complete blob: from what was followed when it is all of it, else read now."""
        st = os.lstat(path)
        state = self.files.get((st.st_dev, st.st_ino))
        if state is not None:
            self._read(state)
            if state[2] == st.st_size:
                return "sha256:" + state[1].hexdigest()
        return sha256_file(path)

    def close(self) -> None:
        for fd, _, _ in self.files.values():
            os.close(fd)
        self.files.clear()


def _verify_layout(root, staging: Staging, layout: str, hasher: BlobHasher) -> Staged:
    """The staged image's manifest, config and layers: present, and every new blob hashed again."""
    try:
        with open(os.path.join(layout, "index.json")) as fh:
            index = json.load(fh)
        (desc,) = [m for m in index.get("manifests") or []
                   if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == "pulled"]
        digest = desc["digest"]
        with open(os.path.join(layout, "blobs", "sha256", digest[7:]), "rb") as fh:
            manifest = json.loads(fh.read())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"skopeo left no readable image in its layout: {exc}") from None
    media = manifest.get("mediaType") or desc.get("mediaType")
    if media not in MANIFEST_TYPES:
        raise BackendError(f"the pulled manifest is a {media}, not an OCI image manifest")
    config = manifest.get("config") or {}
    layers = list(manifest.get("layers") or [])
    files, size = {}, int(desc.get("size") or 0)
    for d in [desc, config] + layers:
        dig = d.get("digest", "")
        path = os.path.join(layout, "blobs", "sha256", dig.removeprefix("sha256:"))
        if not dig.startswith("sha256:") or not os.path.isfile(path):
            raise BackendError(f"the pulled image lacks blob {dig}")
        st = os.lstat(path)
        if st.st_nlink == 1:  # new: not one of the store's own (linked in, already verified)
            actual = hasher.digest(path) if d is not desc else sha256_file(path)  # skopeo writes a manifest in place
            if actual != dig:
                raise BackendError(f"blob {dig} holds content whose digest is {actual}: refused, nothing stored")
        files[dig] = path
        if d is not desc:
            size += int(d.get("size") or st.st_size)
    entry = {"kind": OCI, "config": config.get("digest"), "layers": [d["digest"] for d in layers],
             "size": size, "media_type": media}
    return Staged(staging, digest, entry, files)


# -- import (disk images) ---------------------------------------------------------------------------------


def import_disk(ctx, kind: str, where: str, expected: str) -> Staged:
    """Copy a file or download a URL into staging while hashing it; refuse a digest other than
    `expected` or a file that is not a plain qcow2, raw or iso image. The caller commits it."""
    staging = Staging(ctx.root_dir, "import")
    try:
        target = os.path.join(staging.path, "disk")
        report = reporter("import", os.path.basename(where.rstrip("/")) or where)
        h = hashlib.sha256()
        done = 0
        faults.point("image.import.copy")
        src = _open_source(kind, where)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                total = getattr(src, "length", None) or _size_of(kind, where)
                while True:
                    interrupts.check()
                    chunk = src.read(HASH_CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    report.update(done, total)
                out.flush()
                os.fsync(out.fileno())
        finally:
            src.close()
        actual = "sha256:" + h.hexdigest()
        if actual != expected:
            report.finish(done, ok=False)
            raise BackendError(f"{where}: its sha256 is {actual[7:]}, not {expected[7:]} (--sha256): refused, "
                               "nothing stored")
        fmt, virtual = _disk_format(ctx, target)
        os.chmod(target, 0o400)
        report.finish(done)
        entry = {"kind": DISK, "format": fmt, "size": done, "virtual_size": virtual, "source": where}
        return Staged(staging, actual, entry, {actual: target})
    except BaseException:
        staging.close()
        raise


def _size_of(kind: str, where: str) -> int | None:
    return os.path.getsize(where) if kind == "file" else None


def _open_source(kind: str, where: str):
    if kind == "file":
        return open(where, "rb")
    import urllib.request

    try:
        return urllib.request.urlopen(where, timeout=60)  # noqa: S310 (http/https only: spec checked it)
    except OSError as exc:
        raise BackendError(f"cannot download {where}: {exc}") from None


def _disk_format(ctx, path: str) -> tuple[str, int]:
    """(qcow2 | raw | iso, virtual size). A qcow2 with a backing file is refused: it would read
    a file of the host that the store does not hold."""
    proc = ctx.run(["qemu-img", "info", "--output=json", path], check=False, install_hint="apt-get install qemu-utils")
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        raise BackendError(f"qemu-img cannot read the image: {_tool_message(proc.stderr.decode(errors='replace'))}") \
            from None
    fmt = info.get("format")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise BackendError("the image has a backing file: import a self-contained image (qemu-img convert)")
    if fmt == "raw":
        with open(path, "rb") as fh:
            fh.seek(0x8001)
            if fh.read(5) == b"CD001":
                fmt = "iso"
    if fmt not in DISK_FORMATS:
        raise BackendError(f"the image is {fmt}: eveadm stores qcow2, raw and iso disk images")
    return fmt, int(info.get("virtual-size") or 0)


# -- commit, delete, prune ----------------------------------------------------------------------------------


def _index(root, catalog: dict) -> dict:
    manifests = []
    for digest, entry in sorted(catalog.items()):
        if entry.get("kind") == OCI:
            manifests.append({"mediaType": entry.get("media_type", MANIFEST_TYPES[0]), "digest": digest,
                              "size": os.path.getsize(blob_path(root, digest)),
                              "annotations": {"org.opencontainers.image.ref.name": layout_ref(digest)}})
    return {"schemaVersion": 2, "manifests": manifests}


def save(root, catalog: dict) -> None:
    """index.json (what umoci and skopeo read), then the catalogue: the commit point."""
    layout = privatedir.ensure(layout_dir(root))
    privatedir.ensure(os.path.join(layout, "blobs", "sha256"))
    path = os.path.join(layout, "oci-layout")
    if not os.path.exists(path):
        _write_json(path, {"imageLayoutVersion": "1.0.0"})
    faults.point("image.index")
    _write_json(os.path.join(layout, "index.json"), _index(root, catalog))
    faults.point("image.catalog")
    _write_json(os.path.join(images_dir(root), "images.json"), {"version": 1, "images": catalog})
    faults.point("image.catalog:after")


def commit(root, staged: Staged, name: str | None) -> tuple[dict, bool]:
    """Link the staged files into the store and list the image (the caller holds the images lock).
    `name` moves to this image from any other. Returns (entry, whether the image is new)."""
    catalog = read_catalog(root)
    faults.point("image.commit")
    if staged.entry["kind"] == OCI:
        privatedir.ensure(os.path.join(layout_dir(root), "blobs", "sha256"))
        for digest, path in staged.files.items():
            target = blob_path(root, digest)
            if not os.path.exists(target):
                os.chmod(path, 0o400)
                try:
                    os.link(path, target)
                except FileExistsError:
                    pass
    else:
        privatedir.ensure(os.path.dirname(disk_path(root, staged.digest)))
        target = disk_path(root, staged.digest)
        if not os.path.exists(target):
            os.link(staged.files[staged.digest], target)
    faults.point("image.blobs:after")
    new = staged.digest not in catalog
    entry = catalog.get(staged.digest) or dict(staged.entry, names=[], created=_iso(time.time()))
    if name:
        for other in catalog.values():
            if name in other.get("names", ()):
                other["names"].remove(name)
        entry["names"] = sorted(set(entry.get("names", [])) | {name})
    catalog[staged.digest] = entry
    save(root, catalog)
    return entry, new


def referenced_blobs(catalog: dict) -> set[str]:
    out = set()
    for digest, entry in catalog.items():
        if entry.get("kind") == OCI:
            out.add(digest)
            out.update(d for d in [entry.get("config")] + list(entry.get("layers") or []) if d)
    return out


def remove(root, digest: str, name: str | None = None) -> list[str]:
    """Drop a name (when the image keeps another) or the whole image: the catalogue first, then its
    files (blobs no other image uses, its unpacked tree, its disk file). Caller holds the lock."""
    catalog = read_catalog(root)
    entry = catalog.get(digest)
    if entry is None:
        raise NotFound(f"image {digest} not found")
    if name and len(entry.get("names") or []) > 1:
        entry["names"].remove(name)
        save(root, catalog)
        return []
    del catalog[digest]
    save(root, catalog)
    return remove_unreferenced(root, catalog, {digest})


def remove_unreferenced(root, catalog: dict, gone: set[str] = frozenset()) -> list[str]:
    """Blobs, unpacked trees and disk files that no stored image has; what was removed."""
    removed = []
    keep = referenced_blobs(catalog)
    for digest in sorted(_store_blobs(root) - keep):
        remove_path(blob_path(root, digest))
        removed.append(blob_path(root, digest))
    for path in unpacked_leftovers(root, catalog):
        remove_path(path)
        removed.append(path)
    disks = os.path.join(images_dir(root), "disks", "sha256")
    for name in sorted(os.listdir(disks)) if os.path.isdir(disks) else []:
        if "sha256:" + name not in catalog:
            path = os.path.join(disks, name)
            remove_path(path)
            removed.append(path)
    return removed


def unpacked_leftovers(root, catalog: dict) -> list[str]:
    """Unpacked trees of images the store no longer has (and half-renamed ones)."""
    parent = os.path.join(images_dir(root), "unpacked")
    want = {layout_ref(d) for d, e in catalog.items() if e.get("kind") == OCI}
    try:
        return [os.path.join(parent, n) for n in sorted(os.listdir(parent)) if n not in want]
    except FileNotFoundError:
        return []


def unpacked_trees(root) -> list[str]:
    """Every unpacked image tree: the store's, and those of `oci:DIR` payloads in the container cache."""
    out = []
    for parent in (os.path.join(images_dir(root), "unpacked"), os.path.join(root, "cache", "container", "oci")):
        try:
            out += [os.path.join(parent, n) for n in sorted(os.listdir(parent)) if ".tmp-" not in n]
        except FileNotFoundError:
            pass
    return out


def unused_trees(root, used_lowers: set[str]) -> list[str]:
    """Unpacked trees no domain mounts (a domain's recorded `lower` is TREE/rootfs)."""
    used = {os.path.dirname(os.path.normpath(p)) for p in used_lowers if p}
    return [t for t in unpacked_trees(root) if t not in used]


# -- unpack ---------------------------------------------------------------------------------------------------


def unpack(ctx, digest: str, what: str | None = None) -> str:
    """The image's root filesystem, unpacked once into images/unpacked/ (shared by its containers)."""
    root = ctx.root_dir
    target = unpacked_dir(root, digest)
    if os.path.isdir(os.path.join(target, "rootfs")):
        return os.path.join(target, "rootfs")
    catalog = read_catalog(root)
    entry = catalog.get(digest)
    if entry is None or entry.get("kind") != OCI:
        raise NotFound(f"image {digest} is not stored")
    total = sum(os.path.getsize(blob_path(root, d)) for d in entry.get("layers") or [] if os.path.exists(blob_path(root, d)))
    with Staging(root, "unpack") as staging:
        bundle = os.path.join(staging.path, "bundle")
        report = reporter("unpack", what or digest[:19])
        rc, err = ctx.run_watched(["umoci", "unpack", "--image", f"{layout_dir(root)}:{layout_ref(digest)}", bundle],
                              staging.path, lambda pid: report.update(_read_bytes(pid), total),
                              float(ctx.setting("image.unpack_timeout", 1800)), UMOCI_HINT)
        if rc != 0:
            report.finish(0, ok=False)
            raise PermanentError(f"umoci unpack of image {what or digest} failed: {_tool_message(err)}")
        privatedir.ensure(os.path.dirname(target))
        faults.point("image.unpack.rename")
        try:
            os.rename(bundle, target)
        except OSError:  # another eveadm unpacked it meanwhile: use theirs
            pass
        report.finish(total)
    return os.path.join(target, "rootfs")


def _read_bytes(pid: int) -> int:
    """What a process has read so far (/proc/PID/io rchar): umoci reads each layer once."""
    try:
        with open(f"/proc/{pid}/io") as fh:
            for line in fh:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
