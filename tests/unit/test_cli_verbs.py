"""The CLI builds only what a verb needs (issue 15: `weave status` and friends answer in
well under 200 ms): each command module's verbs are listed in `commands.VERBS`, and
a verb of the CLI's own imports neither pydantic nor the bus client."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from weavectl import cli, commands


def _verbs_of(module: str) -> set[str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(f"weavectl.commands.{module}").add_parsers(sub)
    return set(sub.choices)


@pytest.mark.parametrize("module", commands.modules())
def test_the_verb_table_says_what_each_module_adds(module):
    assert set(commands.VERBS.get(module, ())) == _verbs_of(module)


def test_every_verb_is_reachable_and_the_full_parser_has_them_all():
    full = set(cli.build_parser()._subparsers._group_actions[0].choices)
    listed = {v for verbs in commands.VERBS.values() for v in verbs}
    assert listed | set(cli.OWN_VERBS) | {"testbed", "demo"} == full
    for verb in full:
        assert verb in cli.build_parser(verb)._subparsers._group_actions[0].choices


@pytest.mark.parametrize("argv, verb", [
    (["status"], "status"), (["--state-dir", "/x", "dns-add", "1.2.3.4"], "dns-add"),
    (["--state-dir=/x", "ps"], "ps"), ([], None), (["--help"], None),
])
def test_the_verb_of_a_command_line(argv, verb):
    assert cli.verb_of(argv) == verb


@pytest.mark.parametrize("verb", ["status", "version", "connect", "report"])
def test_light_verbs_import_neither_pydantic_nor_the_bus(verb):
    code = (f"import sys, weavectl.cli as c; c.build_parser({verb!r}); import weavectl.api; "
            "print(sorted(m for m in ('pydantic', 'nats', 'opentelemetry.sdk') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
