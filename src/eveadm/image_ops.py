"""The engine's image operations: pulls and imports into the store, which domains use which
image, delete and prune, the check of a payload's images, and doctor's search for leftovers. Part
of the engine (lifecycle.Engine mixes it in): it holds the images lock and writes the journal; the
store itself is eveadm.images.
"""

from __future__ import annotations

import os

from . import interrupts, schema
from .backends import brands
from .errors import Conflict, EveadmError, NotFound, ValidationError
from .lazy import contextmanager
from .store import Record


class ImageOps:
    """Mixed into lifecycle.Engine (uses its store, ctx, lock timeout and helpers)."""

    def _images_lock(self):
        from .images import LOCK_NAME

        return self.store.lock(LOCK_NAME, self.lock_timeout, "eveadm image ...")

    @contextmanager
    def _images_held(self, cfg: dict, what: str):
        """Hold the images lock, and check the stored images cfg names are still stored, while the
        record naming them is written: an `image delete` (which holds the same lock) then sees the
        new user, or wins and the create is refused."""
        from .images import lookup

        backend = self.backend(cfg["brand"])
        refs = [(p, r) for p, r in self._image_refs(cfg) if p != "image" or backend.stored_image_ref(r)]
        if not refs:
            yield
            return
        with self._images_lock():
            gone = [(p, r) for p, r in refs if lookup(self.ctx.root_dir, r) is None]
            if gone:
                report = schema.empty_report()
                report["bad_values"] += [{"property": p, "message": f"image {r} was just deleted"} for p, r in gone]
                self._raise_report(report, what)
            yield

    @staticmethod
    def _image_refs(cfg: dict) -> list[tuple[str, str]]:
        """(property path, reference) of every image a config names: `image` and disks.N.image."""
        out = [("image", cfg["image"])] if isinstance(cfg.get("image"), str) else []
        for i, disk in enumerate(cfg.get("disks") or []):
            if isinstance(disk, dict) and isinstance(disk.get("image"), str):
                out.append((f"disks.{i}.image", disk["image"]))
        return out

    def _image_digests(self, rec: Record, catalog: dict) -> set[str]:
        """The stored images a domain uses: those its config names, and those its backend pinned at boot."""
        from .images import resolve

        found = [resolve(catalog, ref) for _, ref in self._image_refs(rec.config)]
        out = {f[0] for f in found if f}
        pinned = [rec.backend.get("image_digest")] + [d.get("image_digest") for d in rec.backend.get("disks") or []
                                                       if isinstance(d, dict)]
        return out | {d for d in pinned if d in catalog}

    def image_users(self) -> dict[str, list[str]]:
        """{digest: [uuid, ...]} of the stored images domains use."""
        from .images import read_catalog

        catalog = read_catalog(self.ctx.root_dir)
        out: dict[str, list[str]] = {}
        for rec in self.store.all():
            for digest in self._image_digests(rec, catalog):
                out.setdefault(digest, []).append(rec.uuid)
        return out

    def _image_problems(self, cfg: dict) -> list[tuple[str, str]]:
        """Disks naming a disk image that is not stored (a container's `image` is its backend's to check)."""
        from .images import DISK, lookup, pull_hint

        out = []
        for path, ref in self._image_refs(cfg):
            if path != "image":
                info = lookup(self.ctx.root_dir, ref)
                if info is None:
                    out.append((path, pull_hint(ref, DISK)))
                elif info["kind"] != DISK:
                    out.append((path, f"image {ref} is a container image, not a VM disk image"))
        return out

    def image_pull_missing(self, payload) -> list[dict]:
        """`create --pull`: pull the payload's `image` when it names a stored image that is missing
        (only for brands whose backend runs stored images). Returns what was pulled."""
        from .images import lookup
        from .images.spec import is_digest, reference_problem

        if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
            return []
        if payload.get("brand") not in brands():
            return []
        ref = self.backend(payload["brand"]).stored_image_ref(payload["image"])
        if ref is None or is_digest(ref) or reference_problem(ref):
            return []  # not a stored image's name, or one validation says what is wrong with
        if lookup(self.ctx.root_dir, ref) is not None:
            return []
        return [self.image_pull("docker://" + ref)]

    def image_pull(self, source: str, name: str | None = None, tls_verify: bool = True) -> dict:
        from .images import spec
        from .images import store as image_store

        try:
            src = spec.parse_source(source, name)
        except spec.SpecError as exc:
            raise ValidationError(str(exc)) from None
        return self._store_staged(image_store.pull(self.ctx, src, tls_verify), src.name, "image.pull", src.argument)

    def image_import(self, source: str, sha256: str, name: str | None = None) -> dict:
        from .images import spec
        from .images import store as image_store

        try:
            expected = spec.check_sha256(sha256)
            kind, where = spec.check_import_source(source)
            name = spec.normalize_name(name) if name is not None else None
        except spec.SpecError as exc:
            raise ValidationError(str(exc)) from None
        staged = image_store.import_disk(self.ctx, kind, where, expected)
        return self._store_staged(staged, name, "image.import", where, facts=("format",))

    def _store_staged(self, staged, name: str | None, etype: str, source: str, facts: tuple = ()) -> dict:
        """The half of a pull or import that runs under the images lock: link what was staged into
        the store, record the event (with the entry's `facts`); the staging goes either way."""
        from .images import store as image_store

        try:
            interrupts.check()
            with self._images_lock():
                entry, new = image_store.commit(self.ctx.root_dir, staged, name)
                self._image_event(staged.digest, name, etype, source=source, new=new, size=entry.get("size"),
                                  **{k: entry.get(k) for k in facts})
        finally:
            staged.staging.close()
        return self.image_get(staged.digest)

    def _image_event(self, digest: str, name: str | None, etype: str, **data) -> None:
        from .images import EVENT_PREFIX

        self.store.append_event(EVENT_PREFIX + digest, name, etype, dict(data, digest=digest))

    def _image_resolve(self, ref: str) -> tuple[str, dict]:
        from .images import read_catalog, resolve

        catalog = read_catalog(self.ctx.root_dir)
        found = resolve(catalog, ref, prefix=True)
        if found is None:
            raise NotFound(f"image {ref} not found (eveadm image list shows the stored images)")
        return found

    def _image_view(self, digest: str, entry: dict, users: list[str]) -> dict:
        out = {k: v for k, v in entry.items() if k != "layers"}
        out.update(digest=digest, names=list(entry.get("names") or []), domains=sorted(users))
        if entry.get("kind") == "oci":
            out["layers"] = len(entry.get("layers") or [])
        return out

    def image_get(self, ref: str) -> dict:
        from .images import describe

        digest, entry = self._image_resolve(ref)
        out = self._image_view(digest, entry, self.image_users().get(digest, []))
        where = describe(self.ctx.root_dir, digest, entry)
        out["path"] = where.get("path") or where["layout"]
        return out

    def image_list(self) -> list[dict]:
        from .images import read_catalog

        users = self.image_users()
        catalog = read_catalog(self.ctx.root_dir)
        return sorted((self._image_view(d, e, users.get(d, [])) for d, e in catalog.items()),
                      key=lambda i: (i["names"][:1] or ["~"], i["digest"]))

    def image_delete(self, ref: str) -> list[str]:
        """Remove a name (when the image has others), else the image and the files only it used.
        Refused (Conflict, exit 5) while a domain uses the image or names it."""
        from .images import resolve, spec
        from .images import store as image_store

        with self._images_lock():
            digest, entry = self._image_resolve(ref)
            # named by its digest (or a prefix of it, as resolve reads one first), else by one of its names
            by_digest = ref.startswith("sha256:") or digest.startswith("sha256:" + ref)
            name = None if by_digest else spec.normalize_name(ref)
            users = self.image_users().get(digest, [])
            if name and len(entry.get("names") or []) > 1:
                from .images import read_catalog

                catalog = read_catalog(self.ctx.root_dir)
                users = [r.uuid for r in self.store.all()
                         if any(resolve(catalog, x) and spec.reference_problem(x) is None and
                                spec.normalize_name(x) == name for _, x in self._image_refs(r.config)
                                if not x.startswith("sha256:"))]
            if users:
                raise Conflict(f"image {ref} is used by {len(users)} domain(s): {', '.join(sorted(users))}")
            removed = image_store.remove(self.ctx.root_dir, digest, name)
            self._image_event(digest, name, "image.delete", removed=removed, untagged=bool(name and not removed))
        return removed

    def image_prune(self, dry_run: bool = False) -> dict:
        """Remove every image no domain uses, unpacked trees no domain mounts, blobs no image has and
        what interrupted pulls left; {"images": [digests], "removed": [paths], "freed_bytes": N}."""
        from .images import read_catalog
        from .images import store as image_store

        with self._images_lock():
            recs = self.store.all()
            catalog = read_catalog(self.ctx.root_dir)
            used = set()
            for rec in recs:
                used |= self._image_digests(rec, catalog)
            gone = sorted(d for d in catalog if d not in used)
            kept = {d: e for d, e in catalog.items() if d in used}
            paths = self._image_garbage(recs, kept)
            freed = sum(image_store.tree_size(p) for p in paths)
            if dry_run:
                return {"images": gone, "removed": paths, "freed_bytes": freed, "dry_run": True}
            if gone:
                image_store.save(self.ctx.root_dir, kept)
            for path in paths:
                image_store.remove_path(path)
            if gone or paths:
                self._image_event("sha256:" + "0" * 64, None, "image.prune", images=gone, removed=paths,
                                  freed_bytes=freed)
        return {"images": gone, "removed": paths, "freed_bytes": freed}

    def _image_garbage(self, recs: list[Record], catalog: dict) -> list[str]:
        """What the store holds that `catalog` (the images kept) does not need: blobs and disk files of
        no image, unpacked trees no domain mounts, and partial files no process holds. Unpacked trees
        are kept while any domain's lock is held (a create under way may be about to mount one)."""
        from .images import blob_path, images_dir, layout_dir, unpacked_dir
        from .images import store as image_store

        root = self.ctx.root_dir
        keep = image_store.referenced_blobs(catalog)
        out = [blob_path(root, d) for d in sorted(image_store._store_blobs(root) - keep)]
        disks = os.path.join(images_dir(root), "disks", "sha256")
        if os.path.isdir(disks):
            out += [os.path.join(disks, n) for n in sorted(os.listdir(disks))
                    if "sha256:" + n not in catalog or catalog["sha256:" + n].get("kind") != "disk"]
        out += image_store.stale_partials(root)
        for name in sorted(os.listdir(layout_dir(root))) if os.path.isdir(layout_dir(root)) else []:
            if ".tmp-" in name:  # an index.json whose write was cut short
                out.append(os.path.join(layout_dir(root), name))
        if not any(self.store.is_locked(r.uuid) for r in recs):
            used = set().union(*(self._image_digests(r, catalog) for r in recs))
            lowers = {r.backend.get("lower") for r in recs}
            lowers |= {os.path.join(unpacked_dir(root, d), "rootfs") for d in catalog
                       if catalog[d].get("kind") == "oci" and d in used}
            out += image_store.unused_trees(root, lowers)
        return out

    def _image_leftovers(self, fix: bool) -> list[str]:
        """doctor: unpacked trees no domain mounts, blobs no image has, partial downloads."""
        from .images import read_catalog
        from .images.store import remove_path

        try:
            with self._images_lock():
                catalog = read_catalog(self.ctx.root_dir)
                found = []
                for path in self._image_garbage(self.store.all(), catalog):
                    found.append(f"image store: {path}: used by no image or domain")
                    if fix:
                        err = self._try(remove_path, path)
                        if err:
                            found.append(f"image store: could not remove {path}: {err}")
                return found
        except (EveadmError, OSError, ValueError) as exc:
            return [f"image store: cannot look for leftovers: {exc}"]
