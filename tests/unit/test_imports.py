"""The layout's promises, read from every module's imports (ARCHITECTURE.md, "Code
layout"): services meet only on the bus, so a service never imports another service;
`shared/` imports no service; the CLI (`weavectl/`) imports no service code; and no
module of ours is part of an import circle. Every import counts, including those under
`if TYPE_CHECKING:` and inside functions."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "services", "weavectl", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ours that `name` imports (a `from pkg import mod` counts as pkg.mod
    when that is a module, else as pkg)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = our_modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def service_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def test_a_service_never_imports_another_service():
    wrong = sorted(f"{m} -> {t}" for m, targets in graph().items() for t in targets
                   if service_of(m) and service_of(t) and service_of(m) != service_of(t))
    assert not wrong, "services meet only on the bus:\n" + "\n".join(wrong)


def test_shared_and_the_cli_import_no_service():
    wrong = sorted(f"{m} -> {t}" for m, targets in graph().items() for t in targets
                   if m.split(".")[0] in ("shared", "weavectl") and service_of(t))
    assert not wrong, "shared/ and weavectl/ must not import services:\n" + "\n".join(wrong)


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    found = circles(graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_see_what_they_must():
    """The graph is read right: known edges are present, and a made-up circle is found."""
    g = graph()
    assert "shared.weave.peer_name" in g["services.ipam.ring"]
    assert "services.dns.nameserver" in g["services.dns.service"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_services_import_heavy_clients_only_where_used():
    """issue 15: npc imports the Kubernetes client only when it has an API server to watch,
    and no Weave Net service imports the Docker or Scope HTTP stacks."""
    import subprocess
    import sys
    code = ("import sys, importlib\n"
            "for m in ('services.gossip.service', 'services.ipam.service', 'services.dns.service', "
            "'services.datapath.service', 'services.npc.service'): importlib.import_module(m)\n"
            "print(sorted(m for m in ('lightkube', 'aiohttp', 'aiodocker', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
