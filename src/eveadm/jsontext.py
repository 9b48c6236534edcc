"""JSON text as eveadm writes it for people and scripts: strict, keys sorted, indented.

Every command's -j output, and the copy of each domain's `get` document the
store keeps, come from `dumps`. `json` is imported on first use: its import
(with `re` and `enum`) costs more than a short read's own work.
"""

from __future__ import annotations


def dumps(obj, indent: int | None = 2) -> str:
    """Strict JSON: NaN/Infinity are refused, every non-ASCII character escaped (lone surrogates too)."""
    import json

    return json.dumps(obj, indent=indent, sort_keys=True, allow_nan=False)
