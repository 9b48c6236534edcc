"""cloud_init {user_data, meta_data} -> a NoCloud seed ISO (volume id `cidata`).

cloud-init's NoCloud datasource looks for an ISO 9660 (or vfat) filesystem
labelled `cidata` holding the files `user-data` and `meta-data`. VM brands
attach it as a read-only cdrom. Built with genisoimage from an argument list.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..base import Domain
from ..host import BackendContext

GENISOIMAGE_HINT = "apt-get install genisoimage"


def iso_path(dom: Domain) -> Path:
    return Path(dom.data_dir) / "cidata.iso"


def wanted(config: dict) -> bool:
    ci = config.get("cloud_init")
    return bool(ci) and (ci.get("user_data") is not None or ci.get("meta_data") is not None)


def default_meta_data(config: dict) -> str:
    host = config.get("alias") or config["uuid"]
    return f"instance-id: {config['uuid']}\nlocal-hostname: {host}\n"


def build(ctx: BackendContext, dom: Domain) -> Path:
    """Write dom.data_dir/cidata.iso from the payload (rebuilt at every prepare: it may have been updated)."""
    ci = dom.config.get("cloud_init") or {}
    out = iso_path(dom)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cidata-", dir=out.parent) as tmp:
        src = Path(tmp) / "seed"
        src.mkdir()
        (src / "user-data").write_text(ci.get("user_data") or "")
        meta = ci.get("meta_data")
        (src / "meta-data").write_text(meta if meta is not None else default_meta_data(dom.config))
        part = Path(tmp) / "cidata.iso"
        ctx.run(
            ["genisoimage", "-quiet", "-output", str(part), "-volid", "cidata", "-joliet", "-rock",
             str(src / "user-data"), str(src / "meta-data")],
            install_hint=GENISOIMAGE_HINT,
        )
        os.replace(part, out)
    return out
