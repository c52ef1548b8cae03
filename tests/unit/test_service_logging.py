"""shared/service.py setup_logging: basicConfig's handler and format, the level set only
when it changes (setting it clears every logger's cache: in a service forked from the
supervisor, a copied page per logger; issue 15)."""
from __future__ import annotations

import subprocess
import sys

PROBE = """
import logging, os, sys
from shared.service import setup_logging
cleared = []
original = logging.Manager._clear_cache
logging.Manager._clear_cache = lambda self: (cleared.append(1), original(self))
root = logging.getLogger()
root.setLevel(sys.argv[1])
cleared.clear()
setup_logging("probe")
logging.getLogger("weave.x").warning("hello")
setup_logging("again")  # configured already: nothing more
print(len(cleared), logging.getLevelName(root.level), len(root.handlers), file=sys.stdout)
"""


def _run(level_before: str, env_level: str | None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", **({"WEAVE_LOG_LEVEL": env_level} if env_level else {})}
    return subprocess.run([sys.executable, "-c", PROBE, level_before], capture_output=True, text=True,
                          timeout=60, env=env)


def test_the_level_already_set_is_not_set_again():
    out = _run("INFO", None)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "INFO", "1"]
    assert " probe[" in out.stderr and "WARNING weave.x: hello" in out.stderr


def test_another_level_is_set():
    out = _run("INFO", "debug")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "DEBUG", "1"]


def test_an_unknown_level_is_refused_as_basic_config_refuses_it():
    out = _run("INFO", "loud")
    assert out.returncode != 0 and "Unknown level: 'LOUD'" in out.stderr
