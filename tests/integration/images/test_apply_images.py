"""`eveadm apply` with images: the image is pulled from a real registry before the container that
runs it is created, a second apply plans nothing, and a step that fails (an image the registry does
not have) stops the plan with every record truthful and a later run resumes."""

import json


def test_apply_pulls_the_image_then_runs_the_container_from_it(icli, registry, tmp_path):
    ref = f"{registry.host}/busybox:1"
    doc = tmp_path / "node.yaml"
    doc.write_text(f"""
images:
  - {{source: "docker://{ref}", tls_verify: false}}
domains:
  - alias: app
    brand: container
    image: "{ref}"
    cmd: ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait; done"]
    ram: 64
""")
    result = icli.json("apply", "-f", doc, "-j")
    assert [(s["action"], s["status"]) for s in result["steps"]] == [("image.pull", "done"), ("create", "done")]
    image = icli.json("image", "get", ref)
    assert image["digest"] == registry.digest
    app = icli.json("get", "app")
    assert app["state"] == "running"
    assert icli.json("apply", "-f", doc, "-j")["steps"] == []


def test_a_missing_image_stops_the_plan_and_a_fixed_file_resumes(icli, registry, tmp_path):
    doc = tmp_path / "node.yaml"
    text = f"""
images:
  - {{source: "docker://{registry.host}/nosuch:1", tls_verify: false}}
domains:
  - {{alias: later, brand: "null"}}
"""
    doc.write_text(text)
    proc = icli("apply", "-f", doc, "-j")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "image.pull image" in proc.stderr
    steps = json.loads(proc.stdout)["steps"]
    assert [s["status"] for s in steps] == ["failed", "not done"]
    assert icli.json("list", "-j") == [] and icli.json("image", "list", "-j") == []
    doc.write_text(text.replace("nosuch:1", "busybox:1"))
    result = icli.json("apply", "-f", doc, "-j")
    assert [(s["action"], s["status"]) for s in result["steps"]] == [("image.pull", "done"), ("create", "done")]
