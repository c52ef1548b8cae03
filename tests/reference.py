"""Where the reference material (weave-spec, wire captures, samples) lives.

It sits beside the project checkout as `../shared/reference` (both for developers and
in CI); WEAVE_REFERENCE_DIR overrides. Tests that need it fail loudly if it is gone,
rather than skipping: the captures are the proof of wire compatibility.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    env = os.environ.get("WEAVE_REFERENCE_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "reference"
    if not path.is_dir():
        raise FileNotFoundError(f"reference material not found at {path}; set WEAVE_REFERENCE_DIR")
    return path


@lru_cache(maxsize=None)
def capture(name: str) -> dict:
    """Load `captures/<name>.messages.json` (e.g. 'mesh-ipam', 'sleeve')."""
    with open(reference_dir() / "captures" / f"{name}.messages.json") as f:
        return json.load(f)


CAPTURES = ("mesh-ipam", "sleeve", "encrypted-handshake")
