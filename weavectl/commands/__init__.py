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


VERBS: dict[str, tuple[str, ...]] = {
    "cni": ("setup-cni",), "datapath": ("attach", "detach", "ps", "expose", "hide"),
    "dns": ("dns-add", "dns-remove", "dns-lookup"), "ipam": ("rmpeer", "prime", "ipam"),
    "kube_peers": ("kube-peers",), "npc": ("policy",), "trace": ("trace",),
}
"""The verbs each module adds (tests/unit/test_cli_verbs.py holds it to what they do):
`weave <verb>` imports only the module that has the verb, so a command does not pay for
every other command's imports."""


def modules() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(__path__))


def add_all(sub: argparse._SubParsersAction, verb: str | None = None) -> None:
    """Add every module's verbs; with `verb`, only the module that has it (all when no
    module claims it, so that argparse can say what is wrong)."""
    owners = [m for m, verbs in VERBS.items() if verb in verbs] if verb else []
    for name in owners or modules():
        importlib.import_module(f"{__name__}.{name}").add_parsers(sub)
