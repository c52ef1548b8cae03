"""`make demo` in CI-sized form: the showcase on 2 hosts, without the swap."""
from __future__ import annotations

import subprocess

from weavectl.testbed import weave_bin


def test_demo_quick(tmp_path):
    out = subprocess.run([weave_bin(), "demo", "--quick", "--hosts", "2", "--root", str(tmp_path / "demo"),
                          "--prefix", "wtdm"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    summary = [line for line in out.stdout.splitlines() if "summary:" in line]
    assert summary and summary[0].split("summary: ")[1].split(" checks")[0].split(" of ")[0] == \
        summary[0].split(" of ")[1].split(" ")[0]
    assert "one trace spans" in out.stdout and "names resolve across hosts" in out.stdout
    assert "[ok] h1's Scope app shows every host and container" in out.stdout
    last = out.stdout.rstrip().splitlines()[-1]  # the demo ends with the page's URL
    assert last.startswith("Weave Scope was at http://127.0.0.1:") and "/login?token=" in last
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "wtdm-" not in left
