"""Where the reference material the tests read lives: `tests/fixtures/` in this
repository (recorded facts from real Weave Net 2.8 and Weave Scope 1.13; see
tests/fixtures/README.md for where each file came from). Nothing outside the checkout
is read, so a plain clone tests itself.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def reference_dir() -> Path:
    """Weave Net 2.8's captures (`captures/`) and status samples (`samples/`)."""
    return FIXTURES / "weave-2.8"


def scope_dir() -> Path:
    """Weave Scope 1.13's probe reports and app answers."""
    return FIXTURES / "scope-1.13"


@lru_cache(maxsize=None)
def capture(name: str) -> dict:
    """Load `captures/<name>.messages.json` (e.g. 'mesh-ipam', 'sleeve')."""
    with open(reference_dir() / "captures" / f"{name}.messages.json") as f:
        return json.load(f)


CAPTURES = ("mesh-ipam", "sleeve", "encrypted-handshake")
