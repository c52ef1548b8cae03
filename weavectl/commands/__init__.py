"""`weave` subcommands contributed by each service, one module per service.

Every module here defines `add_parsers(sub)`, which adds its subcommands to the
`weave` parser and sets `handler=<function(args) -> int>` on each. `weavectl.cli`
imports them all, so a service adds commands without touching the CLI's core.
Handlers raise `weavectl.launcher.LaunchError(reason, hint)` for a one-line failure.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil


def add_all(sub: argparse._SubParsersAction) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}").add_parsers(sub)
