"""The methods `@dataclass` generates, compiled once per install instead of per launch.

For each dataclass, the standard library writes the source of `__init__`, `__repr__`,
`__eq__`, `__hash__` (and `__setattr__`/`__delattr__` when frozen) and `exec`s it: the
preloading supervisor created ~240 dataclasses (ours, nats-py's, pydantic's) and compiling those
~940 small sources was 0.1 s of its 0.49 s of start-up CPU (issue 15). While installed,
`dataclasses` finds our `exec` in its module globals before the builtin one: a source
seen before is run from its code object, kept in a cache file beside the interpreter
(`<venv>/weave-dataclass-code`, marshal, keyed by a digest of the source text), as .pyc files
keep a module's. Nothing else changes: the same text compiles to the same code object
and runs with the same globals and namespace; a source not in the cache is compiled as
before. The file is written by `make venv` (`python -OO -m weavectl.preload`), and by
a launch that compiled something new unless bytecode writing is off
(PYTHONDONTWRITEBYTECODE, as for .pyc); a missing, unreadable or foreign file (another
interpreter's bytecode) is ignored.
"""
from __future__ import annotations

import builtins
import dataclasses
import hashlib
import importlib.util
import marshal
import os
import struct
import sys
from pathlib import Path

CACHE_FILE = Path(sys.prefix) / "weave-dataclass-code"
_MAGIC = importlib.util.MAGIC_NUMBER + b"wdc3"  # the interpreter's bytecode, this file's layout
_ENTRY = struct.Struct("<16sII")  # digest of the source, offset and size of its marshalled code


def _digest(source: str) -> bytes:
    return hashlib.blake2b(source.encode(), digest_size=16).digest()


def _unmarshal(blob: bytes | None):
    """The code object in `blob`, or None (no blob, or a damaged one: compiled again)."""
    try:
        return marshal.loads(blob) if blob is not None else None
    except (ValueError, EOFError, TypeError):
        return None


class DataclassCode:
    """The file: _MAGIC, a count (u32), that many entries (_ENTRY), then the marshalled
    code objects. It is read as one bytes object and each code object unmarshalled
    when its class is made (see `_kept` for why it is laid out so)."""

    def __init__(self, path: Path = CACHE_FILE) -> None:
        self.path = path
        self._data = b""
        self._index: dict[bytes, int] = {}
        """digest -> offset << 32 | size, into _data"""
        self._new: dict[bytes, bytes] = {}
        """digest -> marshalled code, for what was compiled here"""
        self._used: list[bytes] = []
        self.compiled = 0
        """Sources compiled while installed (not found in the cache)."""
        self.installed = False
        self.sources = 0
        """Sources run while installed (counted when finished)."""

    def install(self) -> "DataclassCode":
        try:
            self._load(self.path.read_bytes())
        except (OSError, ValueError, struct.error):
            self._data, self._index = b"", {}
        dataclasses.exec = self._exec  # found before builtins.exec by dataclasses' own code
        self.installed = True
        return self

    def _load(self, data: bytes) -> None:
        if data[:len(_MAGIC)] != _MAGIC:
            return
        (count,) = struct.unpack_from("<I", data, len(_MAGIC))
        base = len(_MAGIC) + 4
        index = {}
        for i in range(count):
            digest, offset, size = _ENTRY.unpack_from(data, base + i * _ENTRY.size)
            if offset + size > len(data):
                raise ValueError("truncated")
            index[digest] = offset << 32 | size
        self._data, self._index = data, index

    def finish(self, write: bool | None = None, prune: bool = False) -> None:
        """Uninstall; write the sources used this time if any was compiled (`write`
        None: unless bytecode writing is off), with those the file had unless `prune`.
        The file's bytes are let go."""
        if not self.installed:
            return
        self.installed = False
        if getattr(dataclasses, "exec", None) == self._exec:
            del dataclasses.exec
        if write is None:
            write = not sys.dont_write_bytecode
        self.sources = len(self._used)
        if write and self.compiled:
            self._write(prune)
        self._data, self._new, self._used = b"", {}, []

    def _blob(self, digest: bytes) -> bytes | None:
        new = self._new.get(digest)
        if new is not None:
            return new
        at = self._index.get(digest)
        if at is None:
            return None
        offset = at >> 32
        return self._data[offset:offset + (at & 0xFFFFFFFF)]

    def _exec(self, source, globals=None, locals=None, /):
        if source.__class__ is str:
            digest = _digest(source)
            code = _unmarshal(self._blob(digest))  # made now, beside the class it serves (see _kept)
            if code is None:
                code = compile(source, "<string>", "exec")
                self._new[digest] = marshal.dumps(code)
                self.compiled += 1
            self._used.append(digest)
            source = code
        return builtins.exec(source, globals, locals)

    def _write(self, prune: bool) -> None:
        """What this run used, with what the file had (a launch of fewer services keeps
        the others') unless `prune` (`make venv`, which imports every service's modules:
        stale sources go then)."""
        digests = list(dict.fromkeys(self._used if prune else [*self._index, *self._used]))
        blobs = [self._blob(d) for d in digests]
        head = len(_MAGIC) + 4 + len(digests) * _ENTRY.size
        entries, offset = [], head
        for digest, blob in zip(digests, blobs):
            entries.append(_ENTRY.pack(digest, offset, len(blob)))
            offset += len(blob)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(b"".join([_MAGIC, struct.pack("<I", len(digests)), *entries, *blobs]))
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)


_active: DataclassCode | None = None


def install(path: Path = CACHE_FILE) -> DataclassCode:
    """Start using the cache in this process (the supervisor, before its preload)."""
    global _active
    if _active is None:
        _active = DataclassCode(path).install()
    return _active


def finish(write: bool | None = None, prune: bool = False) -> int:
    """Stop using it (the preload's end); returns how many sources were compiled."""
    global _active, _kept
    if _active is None:
        return 0
    active, _active = _active, None
    active.finish(write, prune)
    _kept = active
    return active.compiled


_kept: DataclassCode | None = None
"""The finished cache (its index). Where things lie in the preloaded memory decides
how many of its pages each child copies (a page is copied when anything on it is
written, a reference count included), and it shows in PSS per host. A first version
kept a dict of sources and code objects: its ~2.5 MB of objects, none of them touched
after the preload, were spread among the pools of the objects the children do touch,
so each child copied more pages (+6 to +8 MB PSS per host, freed or kept). Now the
file is one bytes object (its own mapping, given back after the preload), each code
object is unmarshalled when its class is made (a few us, not a compile's ~100), and
what stays is this index of digests, ~90 KB."""
