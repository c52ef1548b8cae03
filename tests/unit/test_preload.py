"""The fork server's preload (weavectl/preload.py): it imports with the collector off
and leaves it on, with what it imported frozen out of later collections."""
from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, sys
from weavectl import preload
gc.disable()
preload.load(["services.dns.service"])
print(gc.isenabled(), gc.get_freeze_count() > 10000, "services.dns.service" in sys.modules,
      "yaml" in sys.modules)
"""


def test_preload_turns_the_collector_back_on_and_freezes_what_it_imported():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True", "False"]


def test_the_fork_server_imports_with_the_collector_off():
    """`python -m weavectl.supervisor` turns it off before its own imports (here it stops
    at --help, before any preload); imported as a module, it leaves the collector alone."""
    as_main = ("import gc, runpy, sys\nsys.argv = ['weavectl.supervisor', '--help']\ntry:\n"
               "    runpy.run_module('weavectl.supervisor', run_name='__main__')\nexcept SystemExit:\n"
               "    pass\nprint('collector', gc.isenabled())")
    out = subprocess.run([sys.executable, "-c", as_main], capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines()[-1] == "collector False", out
    imported = "import gc, weavectl.supervisor; print('collector', gc.isenabled())"
    out = subprocess.run([sys.executable, "-c", imported], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "collector True", out.stderr
