"""The Docker images the testbed's engines run, built from Debian packages (Docker Hub
is not reachable from here): built on first use, cached per machine, loaded into an
engine with `docker load` (aiodocker's images/load).

- `weave-busybox:latest`: busybox-static's /bin/busybox and its applet links: the test
  containers (sh, ping, nc, nslookup, httpd, sleep).
- `weave-py:0.1.0` (compose.yaml's default WEAVE_IMAGE): two layers.
  1. base: a Debian root filesystem made by mmdebstrap (minbase, from this machine's
     own apt sources: its Debian entries for its release) with python3, iproute2,
     iptables, ipset, ethtool, conntrack and procps, plus a venv in /opt/weave holding
     the project's Python dependencies (wheels from PyPI, installed in the chroot).
     Rebuilt only when the dependency list, the package list or the sources change.
  2. the project: this checkout's wheel, unpacked into that venv, with its console
     scripts (`weave`, `weave-gossip`, ...). Rebuilt when a source file changes (a few
     seconds), keyed by a hash of the sources.
  Its config is deploy/Dockerfile's: PATH starting /opt/weave/bin, WEAVE_STATE_DIR,
  ENTRYPOINT weave.

Cache: `$WEAVE_IMAGE_CACHE` or /var/cache/weave-py/images (outside the repository),
`base-<key>.tar` (a layer) and `<image>-<key>.tar` (a `docker save` archive). Only the
newest two archives of each image are kept. Builds take a lock file, so parallel test
runs build once.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUSYBOX = "weave-busybox:latest"
STACK = "weave-py:0.1.0"
PACKAGES = ("python3", "python3-venv", "iproute2", "iptables", "ipset", "ethtool", "conntrack", "procps",
            "ca-certificates")
SOURCES = ("pyproject.toml", "README.md", "shared", "services", "weavectl", "bench")
RECIPE = "2"
"""Bumped when the way an image is made changes (a new key for every cached file)."""
PATH = "/opt/weave/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(Exception):
    """An image could not be built or loaded; the message says which step and why."""


def cache_dir() -> Path:
    path = Path(os.environ.get("WEAVE_IMAGE_CACHE", "/var/cache/weave-py/images"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(name: str):
    with open(cache_dir() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


# -- docker save archives ------------------------------------------------------------------
def _config(diff_ids: list[str], history: list[str], env: list[str], entrypoint: list[str] | None,
            cmd: list[str], labels: dict[str, str]) -> bytes:
    """The image config (deterministic: the same layers give the same image id)."""
    return json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Env": env, "Entrypoint": entrypoint, "Cmd": cmd, "WorkingDir": "/", "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": h} for h in history],
    }, sort_keys=True).encode()


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_archive(out: Path, ref: str, layers: list[Path], history: list[str], env: list[str],
                  entrypoint: list[str] | None, cmd: list[str], labels: dict[str, str]) -> str:
    """A `docker save` archive of `layers` (plain tars, bottom first) tagged `ref`;
    returns the image id (sha256 of its config)."""
    diff_ids = [f"sha256:{_file_sha(p)}" for p in layers]
    config = _config(diff_ids, history, env, entrypoint, cmd, labels)
    image_id = hashlib.sha256(config).hexdigest()
    manifest = [{"Config": f"{image_id}.json", "RepoTags": [ref],
                 "Layers": [f"{d[7:]}/layer.tar" for d in diff_ids]}]
    tmp = out.with_name(f"{out.stem}.partial.tar")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, f"{image_id}.json", config)
        for d, layer in zip(diff_ids, layers):
            tar.add(layer, arcname=f"{d[7:]}/layer.tar")
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    os.replace(tmp, out)
    return image_id


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _prune(prefix: str, keep: int = 2) -> None:
    found = sorted(cache_dir().glob(f"{prefix}-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in found[keep:]:
        old.unlink(missing_ok=True)


# -- busybox ---------------------------------------------------------------------------------
def busybox_archive() -> Path:
    """weave-busybox: /bin/busybox of Debian's busybox-static and its applets."""
    binary = Path("/bin/busybox")
    if not binary.exists():
        raise ImageError("/bin/busybox is missing: apt-get install busybox-static (scripts/install-deps.sh)")
    if b"ld-linux" in binary.read_bytes()[:8192]:  # an ELF interpreter: a dynamic build, useless alone
        raise ImageError("/bin/busybox is not static: apt-get install busybox-static")
    key = _sha(RECIPE, binary.read_bytes())[:16]
    out = cache_dir() / f"busybox-{key}.tar"
    if out.exists():
        return out
    with _locked("busybox"), tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        if out.exists():
            return out
        applets = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=True).stdout.split()
        layer = Path(tmp) / "layer.tar"
        with tarfile.open(layer, "w") as tar:
            for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var", "var/www"):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
                tar.addfile(info)
            tar.add(binary, arcname="bin/busybox")
            for applet in applets:
                if applet != "busybox":
                    link = tarfile.TarInfo(f"bin/{applet}")
                    link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                    tar.addfile(link)
            _add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
            _add_bytes(tar, "etc/group", b"root:x:0:\n")
        write_archive(out, BUSYBOX, [layer], ["busybox-static"], [f"PATH={PATH}"], None, ["sh"],
                      {"works.weave.py.image": "busybox"})
        _prune("busybox")
    return out


# -- the stack -------------------------------------------------------------------------------
def apt_sources() -> str:
    """This machine's Debian apt sources for its own release, one-line format."""
    codename = _os_release().get("VERSION_CODENAME", "bookworm")
    lines: list[str] = []
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
             *sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            lines += _deb822_lines(text)
        else:
            lines += [ln.strip() for ln in text.splitlines() if ln.strip().startswith("deb ")]
    mine = [ln for ln in lines if "debian" in ln and codename in ln]
    if not mine:
        raise ImageError(f"no Debian apt source for {codename} on this machine (/etc/apt/sources.list*)")
    return "\n".join(mine) + "\n"


def _deb822_lines(text: str) -> list[str]:
    out = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        opts = f"[signed-by={fields['signed-by']}] " if fields.get("signed-by", "").startswith("/") else ""
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                out.append(f"deb {opts}{uri} {suite} {fields.get('components', 'main')}")
    return out


def _os_release() -> dict[str, str]:
    out = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v.strip('"')
    return out


def _dependencies() -> list[str]:
    import tomllib

    return sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def source_key() -> str:
    """A hash of every file the project's wheel is made of."""
    h = hashlib.sha256(RECIPE.encode())
    for top in SOURCES:
        path = REPO / top
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*.py") if "node_modules" not in p.parts)
        for f in files:
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def stack_archive(log=print) -> Path:
    """weave-py:0.1.0 (module docstring): the cached archive, built when missing."""
    sources = apt_sources()
    base_key = _sha(RECIPE, sources, " ".join(PACKAGES), *_dependencies())[:16]
    key = _sha(base_key, source_key())[:16]
    out = cache_dir() / f"stack-{key}.tar"
    if out.exists():
        return out
    with _locked("stack"), tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        if out.exists():
            return out
        started = time.monotonic()
        wheels = _wheelhouse(Path(tmp))
        base = _base_layer(base_key, sources, wheels, log)
        layer = _project_layer(Path(tmp), base, wheels)
        write_archive(out, STACK, [base, layer], [f"mmdebstrap {' '.join(PACKAGES)} + venv", "weave-py wheel"],
                      [f"PATH={PATH}", "WEAVE_STATE_DIR=/var/lib/weave"], ["weave"], ["--help"],
                      {"works.weave.py.image": "stack", "works.weave.py.source": key})
        _prune("stack")
        log(f"built {STACK} in {time.monotonic() - started:.1f} s: {out}")
    return out


def _wheelhouse(tmp: Path) -> Path:
    """This checkout's wheel and its dependencies' wheels (from PyPI, through pip's cache),
    built from a copy of the sources (the working tree gets no build/ or egg-info)."""
    src, wheels = tmp / "src", tmp / "wheels"
    src.mkdir()
    for top in SOURCES:
        path = REPO / top
        if path.is_file():
            shutil.copy2(path, src / top)
        else:
            shutil.copytree(path, src / top, ignore=shutil.ignore_patterns("__pycache__", "node_modules", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), str(src)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise ImageError(f"pip wheel failed: {proc.stderr.strip()[-2000:]}")
    return wheels


def _project_wheel(wheels: Path) -> Path:
    found = sorted(wheels.glob("weave_py-*.whl"))
    if not found:
        raise ImageError(f"no weave_py wheel in {wheels}")
    return found[-1]


def _base_layer(key: str, sources: str, wheels: Path, log) -> Path:
    out = cache_dir() / f"base-{key}.tar"
    if out.exists():
        return out
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is missing: apt-get install mmdebstrap (scripts/install-deps.sh)")
    deps = wheels.parent / "deps"
    deps.mkdir()
    for whl in wheels.glob("*.whl"):
        if not whl.name.startswith("weave_py-"):
            shutil.copy2(whl, deps / whl.name)
    codename = _os_release().get("VERSION_CODENAME", "bookworm")
    partial = out.with_name(f"{out.stem}.partial.tar")  # mmdebstrap picks its output format by the suffix
    argv = ["mmdebstrap", "--mode=unshare", "--variant=minbase", f"--include={','.join(PACKAGES)}",
            *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "info", "locale")),
            f"--customize-hook=copy-in {deps} /tmp",
            "--customize-hook=chroot \"$1\" python3 -m venv /opt/weave",
            "--customize-hook=chroot \"$1\" sh -c '/opt/weave/bin/pip install -q --no-index --no-deps "
            "/tmp/deps/*.whl && rm -rf /tmp/deps /root/.cache'",
            codename, str(partial), "-"]
    log(f"building the Debian base layer of {STACK} (mmdebstrap, once per dependency set)")
    proc = subprocess.run(argv, input=sources, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise ImageError(f"mmdebstrap failed ({proc.returncode}): {proc.stderr.strip()[-3000:]}")
    os.replace(partial, out)
    _prune("base")
    return out


def _site_packages(base: Path) -> str:
    with tarfile.open(base) as tar:
        for name in tar.getnames():
            parts = name.lstrip("./").split("/")
            if parts[:3] == ["opt", "weave", "lib"] and len(parts) >= 5 and parts[4] == "site-packages":
                return "/".join(parts[:5])
    raise ImageError(f"{base} has no /opt/weave/lib/python*/site-packages")


def _project_layer(tmp: Path, base: Path, wheels: Path) -> Path:
    """The project's wheel unpacked into the base's venv, with its console scripts."""
    stage = tmp / "stage"
    site = stage / _site_packages(base)
    whl = _project_wheel(wheels)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                           "--target", str(site), str(whl)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise ImageError(f"unpacking {whl.name} failed: {proc.stderr.strip()[-2000:]}")
    shutil.rmtree(site / "bin", ignore_errors=True)
    bindir = stage / "opt/weave/bin"
    bindir.mkdir(parents=True)
    for name, target in _console_scripts(site):
        module, _, func = target.partition(":")
        script = bindir / name
        script.write_text(f"#!/opt/weave/bin/python3\nimport sys\nfrom {module} import {func}\n"
                          f"sys.exit({func}())\n")
        script.chmod(0o755)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-o", "0", "-o", "2", str(site)],  # the stack runs -OO
                   check=False, capture_output=True)
    layer = tmp / "project.tar"
    with tarfile.open(layer, "w") as tar:
        for path in sorted(stage.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(stage)), recursive=False)
    return layer


def _console_scripts(site: Path) -> list[tuple[str, str]]:
    import configparser

    found = list(site.glob("weave_py-*.dist-info/entry_points.txt"))
    if not found:
        raise ImageError("the weave_py wheel has no entry points")
    cp = configparser.ConfigParser()
    cp.read(found[0])
    return [(k, v.strip()) for k, v in cp.items("console_scripts")] if cp.has_section("console_scripts") else []


# -- loading into an engine -------------------------------------------------------------------
def archive_for(which: str) -> Path:
    if which == "busybox":
        return busybox_archive()
    if which == "stack":
        return stack_archive()
    raise ImageError(f"unknown image {which!r}: busybox or stack")


def load(url: str, archive: Path) -> str:
    """Load `archive` into the engine at `url` unless it holds that image already;
    returns the image's reference."""
    from shared.docker import run

    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    ref, image_id = manifest[0]["RepoTags"][0], "sha256:" + manifest[0]["Config"].removesuffix(".json")

    async def work(client) -> None:
        import aiodocker

        try:
            if (await client.images.inspect(ref))["Id"] == image_id:
                return
        except aiodocker.DockerError:
            pass
        with open(archive, "rb") as f:
            await client.images.import_image(f)
        if (await client.images.inspect(ref))["Id"] != image_id:
            raise ImageError(f"{ref} from {archive} did not load as {image_id}")

    run(url, work)
    return ref
