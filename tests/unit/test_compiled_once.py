"""weavectl/compiled_once.py: dataclasses' generated methods run from a code cache that
changes nothing but the compiling."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from weavectl.compiled_once import DataclassCode
from weavectl.stack_files import STACK_PYTHON_FLAGS


def _make():
    @dataclasses.dataclass(frozen=True)
    class Point:
        x: int
        y: int = 2
        tags: tuple = dataclasses.field(default_factory=tuple)

    return Point


def _behaviour(cls) -> tuple:
    p = cls(1)
    try:
        p.x = 5
        frozen = False
    except dataclasses.FrozenInstanceError:
        frozen = True
    return (repr(p), p == cls(1, 2), p == cls(1, 3), hash(p) == hash(cls(1)), frozen,
            [f.name for f in dataclasses.fields(cls)], cls.__init__.__qualname__)


def test_a_cached_class_behaves_as_a_compiled_one_and_the_second_run_compiles_nothing(tmp_path):
    plain = _behaviour(_make())
    cache = tmp_path / "code"
    first = DataclassCode(cache).install()
    try:
        once = _behaviour(_make())
    finally:
        first.finish(write=True)
    assert first.compiled >= 5 and cache.exists()  # __init__, __repr__, __eq__, __setattr__, __delattr__, ...
    assert not hasattr(dataclasses, "exec")  # uninstalled: the builtin again
    second = DataclassCode(cache).install()
    try:
        again = _behaviour(_make())
    finally:
        second.finish(write=True)
    assert second.compiled == 0 and second.sources == first.sources
    assert plain == once == again


def test_a_foreign_or_broken_cache_is_ignored(tmp_path):
    for blob in (b"", b"garbage", b"\x00\x00\r\n" + b"x" * 40):
        cache = tmp_path / "code"
        cache.write_bytes(blob)
        code = DataclassCode(cache).install()
        try:
            assert _behaviour(_make()) == _behaviour(_make())
        finally:
            code.finish(write=False)
        assert code.compiled > 0 and cache.read_bytes() == blob  # compiled as usual, nothing written


def test_no_write_while_bytecode_writing_is_off(tmp_path):
    probe = ("import dataclasses, sys; sys.dont_write_bytecode = True\n"
             "from weavectl.compiled_once import DataclassCode\n"
             f"c = DataclassCode(__import__('pathlib').Path({str(tmp_path / 'code')!r})).install()\n"
             "dataclasses.dataclass(type('A', (), {'__annotations__': {'a': int}}))\n"
             "c.finish(); print(c.compiled)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and int(out.stdout) > 0, out.stderr
    assert not (tmp_path / "code").exists()


def test_the_fork_server_compiles_nothing_after_make_venv():
    """`make venv` wrote the cache and the bytecode (as the stack's Python runs, `-OO`):
    importing what the supervisor preloads compiles no dataclass method and no module
    from source, where bytecode is never written (PYTHONDONTWRITEBYTECODE)."""
    probe = ("import importlib._bootstrap_external as bx\nfrom_source = []\n"
             "def counted(self, data, path, **kw):\n"
             "    from_source.append(path)\n"
             "    return original(self, data, path, **kw)\n"
             "original, bx.SourceLoader.source_to_code = bx.SourceLoader.source_to_code, counted\n"
             "from weavectl import compiled_once\nc = compiled_once.install()\nimport weavectl.supervisor\n"
             "from weavectl import preload\nfrom weavectl.services import SERVICE_MODULES\n"
             "preload.load(list(SERVICE_MODULES.values()))\n"
             "import sys, json\nprint(json.dumps([c.compiled, c.sources, sys.flags.optimize, from_source]))")
    out = subprocess.run([sys.executable, *STACK_PYTHON_FLAGS, "-c", probe], capture_output=True, text=True,
                         timeout=120, env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    compiled, sources, optimize, from_source = json.loads(out.stdout)
    assert optimize == 2 and sources > 500 and compiled == 0, (compiled, sources, Path(sys.prefix))
    assert from_source == [], f"{len(from_source)} modules compiled from source: {from_source[:5]}"


def test_a_run_that_used_fewer_sources_keeps_the_others(tmp_path):
    cache = tmp_path / "code"
    first = DataclassCode(cache).install()
    try:
        _make()
    finally:
        first.finish(write=True)

    second = DataclassCode(cache).install()
    try:
        dataclasses.dataclass(type("Other", (), {"__annotations__": {"z": str}}))
    finally:
        second.finish(write=True)
    third = DataclassCode(cache).install()
    try:
        _make()
        dataclasses.dataclass(type("Other", (), {"__annotations__": {"z": str}}))
    finally:
        third.finish(write=True)
    assert second.compiled > 0 and third.compiled == 0
