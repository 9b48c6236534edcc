"""The reference that ships with eveadm agrees with the code: `eveadm help properties`, docs/payload.md and
the man page come from schema.py and the parser, the committed copies are current, and docs/contract.md
lists the commands, states, transitions, exit codes and events the code has."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eveadm import agent, cli, errors, lifecycle, listing, node, reference, schema
from eveadm.backends import brands

TOP = Path(__file__).resolve().parents[2]
SRC = TOP / "src" / "eveadm"
REGENERATE = "run `.venv/bin/python -m eveadm.reference .` and commit the result"


@pytest.mark.parametrize("rel", sorted(reference.GENERATED))
def test_the_committed_generated_files_are_current(rel):
    committed = (TOP / rel).read_text(encoding="utf-8")
    assert committed == reference.GENERATED[rel](), f"{rel} is out of date: {REGENERATE}"


def test_every_property_field_verb_column_and_read_only_key_has_a_description():
    assert set(reference.PROPERTY_DOCS) == set(schema.PROPERTIES)
    for kind, fields in reference.FIELDS.items():
        assert set(reference.FIELD_DOCS[kind]) == set(fields), kind
    assert set(reference.VERB_DOCS) == set(schema.UPDATE_VERBS)
    assert set(node.RUNTIME_FIELDS) <= set(reference.READ_ONLY_DOCS)
    for docs in (reference.PROPERTY_DOCS, reference.VERB_DOCS, reference.READ_ONLY_DOCS,
                 *reference.FIELD_DOCS.values()):
        assert all(text.strip() for text in docs.values())
    assert all(doc.strip() for _header, _width, doc in listing.LIST_FIELDS.values())


def accepts(check, value) -> bool:
    errs: list = []
    check(value, "x", errs)
    return not errs


def assert_type_agrees(check, text: str, where: str) -> None:
    """A range or a set of choices the reference prints is what the check really accepts."""
    if m := re.fullmatch(r"integer (-?\d+)\.\.(-?\d+)", text):
        lo, hi = int(m[1]), int(m[2])
        assert accepts(check, lo) and accepts(check, hi), where
        assert not accepts(check, lo - 1) and not accepts(check, hi + 1), where
    elif text.startswith("one of "):
        choices = text.removeprefix("one of ").split(", ")
        assert all(accepts(check, c) for c in choices), where
        assert not accepts(check, "not-" + choices[0]), where
    else:
        assert text and text != "any", f"{where}: no words for its type"


@pytest.mark.parametrize("brand", sorted(reference.shipped_brands()))
def test_the_properties_of_each_brand_agree_with_the_schema(brand):
    facts = brands()[brand]
    entries = {e.name: e for e in reference.property_entries(brand)}
    assert set(entries) == {k for k in schema.PROPERTIES if facts.accepts(k)}
    defaults = schema.normalize({"brand": brand})
    for key, e in entries.items():
        assert_type_agrees(schema.PROPERTIES[key].check, e.type, key)
        if key in facts.required or key == "brand":
            assert e.default == "required", key
        elif key == "uuid":
            assert e.default == "generated"
        elif key in defaults:
            shown = defaults[key] if isinstance(defaults[key], str) else json.dumps(defaults[key])
            assert e.default == shown, key
        else:
            assert e.default == "", key
        mode = schema.update_mode(key)
        assert reference.UPDATE_TEXT[mode] in e.update, key
    for kind in reference.FIELDS:
        for e in reference.field_entries(kind):
            assert_type_agrees(reference.FIELDS[kind][e.name], e.type, f"{kind}.{e.name}")


def test_help_properties_kvm_shows_what_kvm_takes_and_nothing_else(cli):
    text = cli.ok("help", "properties", "kvm").stdout
    top, rest = text.split("\nDisks (each element of disks):\n")
    shown = set(re.findall(r"^  ([a-z_]+): ", top, re.M))
    kvm = brands()["kvm"]
    assert {k for k in schema.PROPERTIES if kvm.accepts(k)} <= shown
    assert not {k for k in schema.PROPERTIES if not kvm.accepts(k)} & shown  # image, cmd, terminal...
    assert "virt_mode: one of pv, pvh, hvm, fml; default hvm;" in text
    assert "stop_timeout: integer 0..86400; default 60; update: live" in text
    assert set(schema.DISK_FIELDS) | set(schema.UPDATE_VERBS) <= set(re.findall(r"^  ([a-z_]+): ", rest, re.M))


def test_help_create_names_every_property_and_help_list_every_column(cli):
    create = cli.ok("help", "create").stdout
    for key in {e.name for e in reference.property_entries()}:
        assert re.search(rf"\b{key}\b", create.split("payload properties", 1)[1]), key
    listing_help = cli.ok("help", "list").stdout
    for field, (header, _width, _doc) in listing.LIST_FIELDS.items():
        assert re.search(rf"^  {field} +{header} ", listing_help, re.M), field
    for key in reference.nested_keys():  # every nested key the help offers is one list takes
        listing.check_key(key.replace(".N.", ".0.").replace("KEY", "k"), "column")


@pytest.mark.parametrize("args", [("help", "nosuch"), ("help", "properties", "nosuch"), ("help", "list", "kvm")])
def test_help_refuses_an_unknown_topic_or_brand_in_one_line(cli, args):
    proc = cli(*args)
    assert proc.returncode == 2 and proc.stderr.startswith("eveadm: ") and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("command", [["list"], ["get", "nosuch"], ["lookup", "state=running"]])
def test_commands_other_than_help_never_import_the_reference(tmp_path, command):
    code = ("import sys\nfrom eveadm import cli\n"
            f"code = cli.main(['--root', {str(tmp_path / 'root')!r}, *{command!r}])\n"
            "print(code, 'eveadm.reference' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(TOP / "src")})
    returncode, imported = proc.stdout.splitlines()[-1].split()
    assert imported == "False" and returncode in ("0", "4"), proc.stderr


@pytest.mark.skipif(not shutil.which("man"), reason="man-db is not installed (scripts/setup.sh --tests installs it)")
def test_the_man_page_renders_without_a_warning_and_covers_every_command_and_property():
    proc = subprocess.run(["man", "--warnings", "-l", str(TOP / "man" / "eveadm.8")], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "MANWIDTH": "100", "MANPAGER": "cat"})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    page = proc.stdout
    for name in cli.COMMANDS:
        assert re.search(rf"^   {name}\b", page, re.M), name
    for key in {e.name for e in reference.property_entries()}:
        assert re.search(rf"^       {key}\b", page, re.M), key
    for section in ("SYNOPSIS", "PAYLOAD", "LIST COLUMNS", "EXIT STATUS", "ENVIRONMENT"):
        assert re.search(rf"^{section}$", page, re.M), section


@pytest.mark.skipif(not shutil.which("man"), reason="man-db is not installed (scripts/setup.sh --tests installs it)")
def test_man_eveadm_finds_the_page_of_this_tree():
    proc = subprocess.run(["man", "-w", "eveadm"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"`man eveadm` has no entry (scripts/setup.sh installs it): {proc.stderr}"
    assert Path(proc.stdout.strip()).read_text(encoding="utf-8") == reference.man_page()


def test_the_build_writes_the_man_page_and_installs_it_in_share_man8(tmp_path):
    """setup.py generates man/eveadm.8 from the tree it builds, and the package's data files put it
    in <prefix>/share/man/man8 (install_data: what a wheel's .data directory holds)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(TOP / name, tree / name)
    shutil.copytree(TOP / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(TOP / "bin", tree / "bin")
    proc = subprocess.run([sys.executable, "setup.py", "-q", "install_data", "--install-dir", str(tmp_path / "prefix")],
                          cwd=tree, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    installed = tmp_path / "prefix" / "share" / "man" / "man8" / "eveadm.8"
    assert installed.read_text(encoding="utf-8") == (tree / "man" / "eveadm.8").read_text(encoding="utf-8") \
        == reference.man_page()


# -- docs/contract.md -----------------------------------------------------------------------------------

CONTRACT = (TOP / "docs" / "contract.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return CONTRACT.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def tables(text: str) -> dict[str, list[list[str]]]:
    """The Markdown tables in a text, by their first header cell: each a list of rows of cells."""
    out: dict[str, list[list[str]]] = {}
    current = None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if current is None:
            current = out.setdefault(cells[0], [])
        elif not line.startswith("|---"):
            current.append(cells)
    return out


def test_the_contract_names_every_command_and_alias():
    block = section("Commands")
    for name, (aliases, *_rest) in cli.COMMANDS.items():
        assert re.search(rf"^eveadm {name}\b", block, re.M), name
        for alias in aliases:
            assert f"alias: {alias}" in block, alias


def test_the_contract_has_the_states_and_transitions_of_the_engine():
    found = tables(section("States"))
    assert [r[0].strip("`") for r in found["state"]] == list(lifecycle.STATES)
    transitions = {r[0].strip("`"): set(re.findall(r"`([a-z]+)`", r[1])) for r in found["from"]}
    assert transitions == {k: set(v) for k, v in lifecycle.TRANSITIONS.items()}


def test_the_contract_has_every_exit_code_eveadm_uses():
    rows = tables(section("Exit codes"))["code"]
    codes = {code for r in rows for code in r[0].split(", ")}
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.EveadmError)]
    assert {str(c.exit_code) for c in classes if isinstance(c.__dict__.get("exit_code"), int)} <= codes
    assert {"0", "130", "143"} <= codes
    for r in rows:  # a class the table names carries that code
        for name in re.findall(r"`(\w+)`", r[2]):
            if name != "Interrupted":
                assert str(getattr(errors, name).exit_code) == r[0], name


def event_types_in_code() -> set[str]:
    """The event types the engine and the agent write, read from their source."""
    engine = "".join((SRC / name).read_text() for name in ("lifecycle.py", "network_ops.py", "image_ops.py"))
    found = set(re.findall(r'_event\(rec, "([a-z_.]+)"', engine))
    found |= set(re.findall(r'\(\s*"([a-z_]+(?:\.[a-z_]+)?)", \{', engine))  # (type, data) handed to the store
    found |= set(re.findall(r'append_event\([^\n]*"([a-z]+\.[a-z_]+)"', engine))
    found |= {rung.event for rung in lifecycle.STOP_LADDER} | {"state"}
    found |= {f"agent.{why}" for why in re.findall(r'_start\(dom, "([a-z_]+)"\)', (SRC / "agent.py").read_text())}
    return found


def test_the_contract_lists_every_event_type():
    listed = {r[0].strip("`") for r in tables(section("Events"))["type"]}
    in_code = event_types_in_code()
    assert {"create", "delete", "stop.gone", "agent.restart", "network.up"} <= in_code  # the scan works
    assert in_code == listed, f"in the code, not the contract: {in_code - listed}; the reverse: {listed - in_code}"
    assert agent.__doc__ and all(t in agent.__doc__ for t in listed if t.startswith("agent."))


def test_nothing_in_the_repository_points_outside_it():
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=TOP,
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()
    bad = re.compile(r"\.\./shared|/work/shared|SPEC\.md|\bSPEC\b|HELPERS\.md")
    offenders = []
    for rel in tracked:
        path = TOP / rel
        if path.is_file() and path.suffix in (".md", ".py", ".sh", ".toml", ".8", ".service", ".txt", ""):
            if bad.search(path.read_text(encoding="utf-8", errors="replace")) and rel != "tests/unit/test_reference.py":
                offenders.append(rel)
    assert offenders == []
