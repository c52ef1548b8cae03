"""What the supervisor (weavectl/forkserver.py) imports before it forks: the modules of
the services this stack runs, then `gc.freeze()`, so the objects made by these imports
are left out of later collections (a collection touches every object it scans, which
would copy the shared pages into each child). (Importing with the collector off saved
20 ms of CPU and cost 5 MB PSS per host: the garbage of the imports, freed at once at
the end instead of as it came, left free slots across the shared pages that each
child's allocations then filled, copying those pages.)"""
from __future__ import annotations

import gc
import importlib
import logging

from weavectl import compiled_once

log = logging.getLogger("weave.preload")


COMMON = ("shared.service", "shared.nats_bus")
"""What every service imports when it starts rather than at import time (the bus client
alone is a third of a second), loaded before the services' own modules."""


def load(modules: list[str], *, rewrite_code_cache: bool = False) -> None:
    for module in (*COMMON, *modules):
        try:
            importlib.import_module(module)
        except ImportError as exc:  # the supervisor reports it when the service fails to start
            log.warning("cannot preload %s: %s", module, exc)
        _freeze()
    # (installed by `python -m weavectl.supervisor`, if it was)
    compiled_once.finish(write=rewrite_code_cache or None, prune=rewrite_code_cache)
    _freeze()


def _freeze() -> None:
    """Collect the young generations (where an import's garbage is) and freeze what is
    left, after each module: the imports' later collections, and the supervisor's last
    one, then skip what earlier imports made. A full collection of everything at the end
    found nothing more to free, and it and the automatic full collection during the
    imports cost 0.04-0.06 s of the preload's 0.45-0.5 s."""
    gc.collect(1)
    gc.freeze()


def main() -> None:
    """`make venv`: import what the supervisor preloads for every service a launch can
    run, and write compiled_once's cache of dataclass methods."""
    from weavectl.services import SERVICE_MODULES

    active = compiled_once.install()
    importlib.import_module("weavectl.supervisor")  # what the supervisor imports before its preload
    load(list(SERVICE_MODULES.values()), rewrite_code_cache=True)
    print(f"{active.path}: {active.sources} sources, {active.compiled} compiled now")


if __name__ == "__main__":  # run as weavectl.preload, the module whose load() finishes the cache
    importlib.import_module("weavectl.preload").main()
