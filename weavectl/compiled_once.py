"""The methods `@dataclass` generates, compiled once per install instead of per launch.

For each dataclass, the standard library writes the source of `__init__`, `__repr__`,
`__eq__`, `__hash__` (and `__setattr__`/`__delattr__` when frozen) and `exec`s it: the
fork server creates ~240 dataclasses (ours, nats-py's, pydantic's) and compiling those
~940 small sources was 0.1 s of its 0.49 s of start-up CPU (issue 15). While installed,
`dataclasses` finds our `exec` in its module globals before the builtin one: a source
seen before is run from its code object, kept in a cache file beside the interpreter
(`<venv>/weave-dataclass-code`, marshal, keyed by the exact source text), as .pyc files
keep a module's. Nothing else changes: the same text compiles to the same code object
and runs with the same globals and namespace; a source not in the cache is compiled as
before. The file is written by `make venv` (`python -m weavectl.preload`), and by
a launch that compiled something new unless bytecode writing is off
(PYTHONDONTWRITEBYTECODE, as for .pyc); a missing, unreadable or foreign file (another
interpreter's bytecode) is ignored.
"""
from __future__ import annotations

import builtins
import dataclasses
import importlib.util
import marshal
import os
import sys
from pathlib import Path

CACHE_FILE = Path(sys.prefix) / "weave-dataclass-code"
_MAGIC = importlib.util.MAGIC_NUMBER


class DataclassCode:
    def __init__(self, path: Path = CACHE_FILE) -> None:
        self.path = path
        self.cached: dict[str, object] = {}
        self.used: dict[str, object] = {}
        self.compiled = 0
        """Sources compiled while installed (not found in the cache)."""
        self.installed = False
        self.sources = 0
        """Sources run while installed (counted when finished)."""

    def install(self) -> "DataclassCode":
        try:
            blob = self.path.read_bytes()
            if blob[:len(_MAGIC)] == _MAGIC:
                table = marshal.loads(blob[len(_MAGIC):])
                if isinstance(table, dict):
                    self.cached = table
        except (OSError, ValueError, EOFError, TypeError):
            self.cached = {}
        dataclasses.exec = self._exec  # found before builtins.exec by dataclasses' own code
        self.installed = True
        return self

    def finish(self, write: bool | None = None) -> None:
        """Uninstall; write the sources used this time if any was compiled (`write`
        None: unless bytecode writing is off). The cache is dropped from memory."""
        if not self.installed:
            return
        self.installed = False
        if getattr(dataclasses, "exec", None) == self._exec:
            del dataclasses.exec
        if write is None:
            write = not sys.dont_write_bytecode
        self.sources = len(self.used)
        if write and self.compiled:
            self._write()
        self.cached, self.used = {}, {}

    def _exec(self, source, globals=None, locals=None, /):
        if source.__class__ is str:
            code = self.cached.get(source)
            if code is None:
                code = self.cached[source] = compile(source, "<string>", "exec")
                self.compiled += 1
            self.used[source] = code
            source = code
        return builtins.exec(source, globals, locals)

    def _write(self) -> None:
        """What this run used, with what the file had (a launch of fewer services keeps
        the others'); `make venv` writes only what it used, so stale sources go then."""
        table = self.used if write_always else {**self.cached, **self.used}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(_MAGIC + marshal.dumps(table))
            os.replace(tmp, self.path)
        except (OSError, ValueError):
            tmp.unlink(missing_ok=True)


_active: DataclassCode | None = None


def install(path: Path = CACHE_FILE) -> DataclassCode:
    """Start using the cache in this process (the fork server, before its imports)."""
    global _active
    if _active is None:
        _active = DataclassCode(path).install()
    return _active


def finish(write: bool | None = None) -> int:
    """Stop using it (the preload's end); returns how many sources were compiled."""
    global _active
    if _active is None:
        return 0
    active, _active = _active, None
    active.finish(write_always or write)
    return active.compiled


write_always = False
"""Set by `python -m weavectl.preload` (make venv): write even where bytecode writing is off."""
