"""Libraries imported without the parts this project never runs (issue 15).

Every module the supervisor preloads (weavectl/forkserver.py) is memory in every
host's stack and CPU in every launch. Some libraries import, at their top, modules we
never use: the helpers here leave those out, each change measured on the supervisor's
preload (tracemalloc, `python -m bench.footprint`):
- `bare_package`: register a package without running its `__init__`, so that only the
  submodules we import are loaded (prometheus_client: shared/prom.py; pyroute2 was the
  first, until shared/netlink.py replaced it);
- `no_pydantic_plugins`: pydantic looks for plugins (an entry-point scan of every
  installed distribution, importing importlib.metadata, email, zipfile and csv: 1.7 MB)
  when it builds its first model; we run none, so the lookup answers "none".
Where the library was already imported whole (tests, a user's REPL), these change
nothing: the full modules are used.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types


def bare_package(name: str, *, init_on_use: bool = False, path: str | None = None) -> None:
    """Register package `name` as its path only (its `__init__` not run), unless it is
    imported already. `init_on_use`: its `__init__` runs the first time a name it
    defines is read (so the package stays whole for whoever uses more than the
    submodules we import). `path`: the package's `__init__.py`, for a subpackage whose
    parent must not be imported first (find_spec would import it)."""
    if name in sys.modules:
        return
    if path is None:
        spec = importlib.util.find_spec(name)
    else:
        spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=[os.path.dirname(path)])
    if spec is None:
        raise ImportError(f"{name} is not installed")
    module = importlib.util.module_from_spec(spec)
    if init_on_use:
        def init_then_get(attr: str):
            if attr.startswith("__") or importlib.machinery.PathFinder.find_spec(f"{name}.{attr}", module.__path__):
                raise AttributeError(attr)  # a submodule: `from package import submodule` imports it
            del module.__getattr__
            spec.loader.exec_module(module)
            return getattr(module, attr)

        module.__getattr__ = init_then_get  # type: ignore[attr-defined]  # PEP 562
    sys.modules[name] = module


PYDANTIC_PLUGIN_LOADER = "pydantic.plugin._loader"


def no_pydantic_plugins() -> None:
    """pydantic asks `pydantic.plugin._loader.get_plugins()` for every validator it
    builds; answer "no plugins" without importing the loader (and importlib.metadata)."""
    if PYDANTIC_PLUGIN_LOADER in sys.modules:
        return
    loader = types.ModuleType(PYDANTIC_PLUGIN_LOADER, "weave-py runs no pydantic plugins (shared/imports.py)")
    loader.get_plugins = lambda: ()  # type: ignore[attr-defined]
    sys.modules[PYDANTIC_PLUGIN_LOADER] = loader
