"""The layers stay as docs/design.md draws them: CLI and agent -> Node -> engine -> backends, store beneath."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "eveadm"


def imported_modules(path: Path) -> set[str]:
    """eveadm modules a file imports (anywhere in it, lazily or not), as dotted names under eveadm."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(SRC.parent).parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "eveadm" or m.startswith("eveadm.")}


def test_cli_and_agent_go_through_node_only():
    for name in ("cli.py", "agent.py"):
        mods = imported_modules(SRC / name)
        assert not {m for m in mods if m.startswith(("eveadm.lifecycle", "eveadm.store"))}, (name, mods)
    assert "eveadm.node" in imported_modules(SRC / "cli.py")


def test_backends_never_import_the_layers_above_them():
    above = ("eveadm.lifecycle", "eveadm.node", "eveadm.cli", "eveadm.agent", "eveadm.store", "eveadm.listing",
             "eveadm.schema")
    for path in (SRC / "backends").rglob("*.py"):
        bad = {m for m in imported_modules(path) if m.startswith(above)}
        assert not bad, (str(path), bad)


def test_the_engine_does_not_know_brand_names():
    text = (SRC / "lifecycle.py").read_text()
    for brand in ("kvm", "xen", "container", "rkt"):
        assert f'"{brand}"' not in text, brand
