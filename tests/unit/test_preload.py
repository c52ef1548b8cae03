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


COMPLETE_PROBE = """
from pydantic import BaseModel
from weavectl import preload
from weavectl.services import SERVICE_MODULES
preload.load(list(SERVICE_MODULES.values()))
def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)
models = set(subclasses(BaseModel))
print(len(models), sorted(f"{m.__module__}.{m.__qualname__}" for m in models
                          if not m.__dict__.get("__pydantic_complete__")))
"""


def test_every_preloaded_model_is_built_before_the_forks():
    """A model whose annotations name a class not yet defined is built on its first use,
    in each forked service for itself: ServiceConfig's schema generation copied ~1.6 MB
    of the supervisor's pages into every service (issue 15). Every model the preload
    imports must be complete."""
    out = subprocess.run([sys.executable, "-c", COMPLETE_PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    count, incomplete = out.stdout.split(" ", 1)
    assert int(count) > 80 and incomplete.strip() == "[]", incomplete
