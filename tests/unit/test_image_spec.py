"""Image names, digests and pull sources are checked before any tool runs (eveadm.images.spec)."""

import pytest

from eveadm.images import resolve
from eveadm.images.spec import SpecError, check_sha256, normalize_name, parse_source, reference_problem

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, stored", [
    ("127.0.0.1:5000/busybox:1", "127.0.0.1:5000/busybox:1"),
    ("busybox", "busybox:latest"),
    (f"reg.example/a/b@{DIGEST}", f"reg.example/a/b@{DIGEST}"),
    ("debian:12", "debian:12"),
])
def test_names_follow_the_registries_grammar_and_default_to_latest(text, stored):
    assert normalize_name(text) == stored


@pytest.mark.parametrize("text", ["Upper/case", "a b", "busybox:-x", "-rm", "/abs/path", "x\n", "a//b",
                                  "docker://x", "a" * 300, "busybox@sha256:12"])
def test_bad_names_are_refused_with_one_line(text):
    with pytest.raises(SpecError) as err:
        normalize_name(text)
    assert "\n" not in str(err.value)


def test_a_digest_reference_needs_all_64_hex_digits():
    assert reference_problem(DIGEST) is None
    assert "not a digest" in reference_problem("sha256:abc")


def test_sources_name_their_transport_and_stored_name(tmp_path):
    (tmp_path / "lay").mkdir()
    (tmp_path / "lay" / "oci-layout").write_text("{}")
    assert parse_source("127.0.0.1:5000/busybox:1").argument == "docker://127.0.0.1:5000/busybox:1"
    src = parse_source(f"oci:{tmp_path}/lay:v2")
    assert (src.transport, src.name, src.argument) == ("oci", "localhost/lay:v2", f"oci:{tmp_path}/lay:v2")
    assert parse_source("docker://busybox", name="mine:1").name == "mine:1"
    for bad in ("dir:/tmp", "containers-storage:x", f"oci:{tmp_path}/missing", "docker-archive:/nonexistent.tar"):
        with pytest.raises(SpecError):
            parse_source(bad)


def test_sha256_takes_hex_in_either_case_and_nothing_else():
    assert check_sha256("AB" * 32) == DIGEST and check_sha256(DIGEST) == DIGEST
    for bad in ("ab" * 31, "zz" * 32, "md5:" + "ab" * 16):
        with pytest.raises(SpecError):
            check_sha256(bad)


def test_resolve_takes_names_digests_and_cli_prefixes():
    catalog = {DIGEST: {"kind": "oci", "names": ["busybox:latest"]},
               "sha256:" + "ac" * 32: {"kind": "disk", "names": []}}
    assert resolve(catalog, "busybox")[0] == DIGEST
    assert resolve(catalog, DIGEST)[0] == DIGEST
    assert resolve(catalog, "sha256:abababababab") is None  # a prefix only where the CLI asks for one
    assert resolve(catalog, "sha256:abababababab", prefix=True)[0] == DIGEST
    assert resolve(catalog, "sha512-0123456789abcdef") is None  # rkt's ids are not the store's
