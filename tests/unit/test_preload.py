"""The fork server's preload (weavectl/preload.py): it imports the services' modules
(and not what only an occasional request needs) and freezes what it imported out of
later collections."""
from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, sys
from weavectl import preload
preload.load(["services.dns.service", "services.npc.service"])
print(gc.get_freeze_count() > 10000, "services.npc.service" in sys.modules, "yaml" in sys.modules)
"""


def test_preload_imports_the_services_and_freezes_what_it_imported():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "False"]  # PyYAML: only for a manifest
