"""The weave-net CNI plugin's contract without a running stack: VERSION, and CNI error
JSON (spec codes) for every way a runtime can call it wrongly. Stack-level behaviour
(ADD/DEL/CHECK with real namespaces) is in tests/e2e/test_cni.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PLUGIN = str(Path(sys.executable).parent / "weave-net")


def run(command: str | None, stdin: str, **env: str) -> tuple[int, dict]:
    full = {"PATH": "/usr/bin:/bin", **({"CNI_COMMAND": command} if command else {}), **env}
    out = subprocess.run([PLUGIN], input=stdin, capture_output=True, text=True, env=full)
    return out.returncode, json.loads(out.stdout)


def test_version():
    rc, out = run("VERSION", "")
    assert rc == 0 and out["cniVersion"] == "1.0.0"
    assert set(out["supportedVersions"]) == {"0.3.0", "0.3.1", "0.4.0", "1.0.0"}


def test_bad_json_is_decoding_failure():
    rc, out = run("ADD", "{not json")
    assert rc == 1 and out["code"] == 6


def test_unsupported_version():
    rc, out = run("ADD", json.dumps({"cniVersion": "0.2.0", "name": "weave"}))
    assert rc == 1 and out["code"] == 1 and "0.2.0" in out["msg"]


def test_unsupported_fields_and_delegated_ipam():
    conf = {"cniVersion": "1.0.0", "name": "weave", "type": "weave-net"}
    for extra in ({"ipMasq": True}, {"isGateway": True}, {"ipam": {"type": "host-local"}}):
        rc, out = run("ADD", json.dumps({**conf, **extra}))
        assert rc == 1 and out["code"] == 2, extra


def test_missing_environment():
    rc, out = run("ADD", json.dumps({"cniVersion": "1.0.0", "name": "weave"}))
    assert rc == 1 and out["code"] == 4 and "CNI_CONTAINERID" in out["msg"]
    rc, out = run(None, json.dumps({"cniVersion": "1.0.0", "name": "weave"}))
    assert rc == 1 and out["code"] == 4


def test_error_answers_in_the_callers_version():
    rc, out = run("FROB", json.dumps({"cniVersion": "0.4.0", "name": "weave"}))
    assert rc == 1 and out["cniVersion"] == "0.4.0" and out["code"] == 4


def test_setup_cni_writes_links_and_conflist(tmp_path):
    weave = str(Path(sys.executable).parent / "weave")
    out = subprocess.run([weave, "setup-cni", "--cni-bin-dir", str(tmp_path / "bin"),
                          "--cni-conf-dir", str(tmp_path / "net.d")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "bin" / "weave-net").resolve() == Path(PLUGIN).resolve()
    conf = json.loads((tmp_path / "net.d" / "10-weave.conflist").read_text())
    assert conf["plugins"][0]["type"] == "weave-net" and conf["cniVersion"] == "1.0.0"
