"""Where a host keeps its state: the one fact about configuration that the CLI needs for
every command, without loading the configuration model (pydantic)."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/weave")


def state_dir_from_env() -> Path:
    """WEAVE_STATE_DIR, else /var/lib/weave."""
    return Path(os.environ.get("WEAVE_STATE_DIR", str(DEFAULT_STATE_DIR)))
