"""Network namespaces: resolving a CONTAINER argument to an opened namespace.

A container is named the way `weave attach` users name it here (we have no Docker):
- a namespace name as `ip netns` knows it (`/var/run/netns/<name>`),
- a path to a namespace file (`/var/run/netns/<name>`, `/proc/<pid>/ns/net`, a bind mount),
- a pid (an int or a string of digits, never read as a name): that process's namespace.
`None` as a *host* argument means "the namespace this thread is in now" (the datapath
service runs inside its host's namespace and passes `None`).

Contracts:
- Resolving never creates a namespace: names and paths are opened O_RDONLY and a
  missing one raises `NotFound` (pyroute2's netns helpers, which the project used once,
  created a namespace opened by a misspelt name unless told `flags=0`).
- A `Namespace` holds an fd, so the namespace cannot disappear while we work on it
  even if its process exits or its name is deleted. Close it (or use `with`).
- Work inside a namespace runs in a short-lived thread that `setns()`s into it; the
  calling thread never changes namespace. Sockets created there stay bound to that
  namespace (netlink, ethtool ioctls, AF_PACKET) and are usable from any thread, and
  /proc/sys/net files opened there show that namespace's sysctls.
- Everything here blocks (netlink round trips, a thread join): the asyncio shell calls
  it through `asyncio.to_thread`.

Used by the datapath (attach, bridge, veth) and by the CNI plugin (to look into a pod's
namespace), so it lives in shared/. Its errors are the base of the datapath's
(`services/datapath/netns.py` names them as the datapath's own).
"""
from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from shared.netlink import IPRoute

from shared.errors import LocalProtocolError, WeaveError

T = TypeVar("T")

NETNS_RUN_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), linux/nsfs.h: kernel >= 4.11
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(WeaveError):
    """Base of the errors of namespace and device handling (the datapath's errors
    derive from it); `code` says whose move it is."""

    code = "datapath_error"


class NotFound(NetnsError):
    """A namespace, process, device or attachment that does not exist."""

    code = "not_found"


class BadRequest(NetnsError):
    """The caller's argument is malformed or not allowed."""

    code = "bad_request"


class Conflict(NetnsError):
    """The request clashes with what exists (an address in use, a foreign device)."""

    code = "conflict"


class Namespace:
    """An opened network namespace. `ident` is how the caller named it (for messages);
    `name` is its `ip netns` name when it has one; `pid` when it was named by a pid."""

    def __init__(self, ident: str, path: str, fd: int, *, name: str | None = None,
                 pid: int | None = None) -> None:
        self.ident, self.path, self.fd, self.name, self.pid = ident, path, fd, name, pid
        st = os.fstat(fd)
        self.key = (st.st_dev, st.st_ino)  # the namespace's identity, however it was named

    @property
    def inode(self) -> int:
        return self.key[1]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Namespace({self.ident!r}, inode={self.inode})"

    def is_current(self) -> bool:
        """True when the calling thread is already in this namespace."""
        st = os.stat("/proc/thread-self/ns/net")
        return (st.st_dev, st.st_ino) == self.key

    def run(self, fn: Callable[..., T], *args: object) -> T:
        """Call `fn(*args)` inside this namespace and return its result (or raise its
        exception). Runs in the calling thread when that is already here."""
        if self.is_current():
            return fn(*args)
        box: dict[str, object] = {}

        def body() -> None:
            try:
                _setns(self.fd)
                box["value"] = fn(*args)
            except BaseException as exc:  # handed to the caller's thread below
                box["error"] = exc

        worker = threading.Thread(target=body, name=f"netns-{self.ident}", daemon=True)
        worker.start()
        worker.join()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]

    def socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        """A socket that belongs to this namespace."""
        return self.run(socket.socket, family, kind, proto)

    def iproute(self) -> IPRoute:
        """An rtnetlink handle on this namespace (close it, or use `with`). Its calls
        block, so this refuses a thread running asyncio."""
        if _loop_running():
            raise LocalProtocolError("datapath netlink calls block: run them via asyncio.to_thread")
        sock = self.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        return IPRoute(fileno=sock.detach())

    def write_sysctl(self, key: str, value: str) -> None:
        """Write `/proc/sys/<key>` as seen from this namespace (key like
        'net/ipv4/neigh/weave/ucast_solicit'). A missing key raises FileNotFoundError."""
        self.run(_write_file, f"/proc/sys/{key}", value)

    def read_sysctl(self, key: str) -> str:
        return self.run(_read_file, f"/proc/sys/{key}").strip()

    def ensure_sysctl(self, key: str, value: str) -> bool:
        """Write the sysctl only if it differs; True if it was written."""
        return self.run(_ensure_file, f"/proc/sys/{key}", value)


def open_namespace(container: str | int | os.PathLike | None) -> Namespace:
    """Resolve a CONTAINER argument (see the module docstring) to an opened namespace.
    Raises NotFound (no such name, path or process) or BadRequest (malformed, or a
    path that is not a network namespace). Never creates anything."""
    if container is None:
        return _open("current namespace", "/proc/thread-self/ns/net", missing="")
    if isinstance(container, bool):
        raise BadRequest(f"container {container!r} is neither a namespace name, a path nor a pid",
                         container=container)
    if isinstance(container, int) or (isinstance(container, str) and container.isdigit()):
        return _open_pid(int(container))
    text = os.fspath(container)
    if "/" in text:
        return _open(text, text, missing=f"no namespace file at {text}: check the path "
                     "(ip netns list shows the named namespaces)")
    if text in ("", ".", "..") or "\0" in text:
        raise BadRequest(f"{text!r} is not a valid namespace name: pass a name, a path or a pid",
                         container=text)
    path = os.path.join(NETNS_RUN_DIR, text)
    return _open(text, path, missing=f"network namespace {text!r} does not exist: "
                 "create it (ip netns add) or pass a path or a pid", name=text)


@contextmanager
def using_namespace(where: Namespace | str | int | os.PathLike | None) -> Iterator[Namespace]:
    """`where` as an opened namespace for the `with` block: an already open `Namespace`
    is used as is (and left open), anything else is resolved and closed afterwards."""
    if isinstance(where, Namespace):
        yield where
        return
    ns = open_namespace(where)
    try:
        yield ns
    finally:
        ns.close()


def _open_pid(pid: int) -> Namespace:
    gone = f"process {pid} does not exist (the container has stopped?): start it again or pass its namespace"
    if pid <= 0:
        raise BadRequest(f"{pid} is not a valid pid", container=pid)
    return _open(str(pid), f"/proc/{pid}/ns/net", missing=gone, pid=pid)


def _open(ident: str, path: str, *, missing: str, name: str | None = None, pid: int | None = None) -> Namespace:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError) as exc:
        raise NotFound(missing or f"cannot open {path}", container=ident, path=path) from exc
    except PermissionError as exc:
        raise BadRequest(f"no permission to open {path}: run as root", container=ident, path=path) from exc
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        nstype = None
    if nstype != CLONE_NEWNET:
        os.close(fd)
        if name is not None:  # a stale name file whose mount is gone
            raise NotFound(missing, container=ident, path=path)
        raise BadRequest(f"{path} is not a network namespace: pass a name, a namespace path or a pid",
                         container=ident, path=path)
    return Namespace(ident, path, fd, name=name, pid=pid)


def named_namespaces() -> dict[str, str]:
    """`ip netns` names -> their paths, for the namespaces that exist now."""
    try:
        names = sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return {}
    return {n: os.path.join(NETNS_RUN_DIR, n) for n in names}


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _write_file(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _ensure_file(path: str, value: str) -> bool:
    if _read_file(path).strip() == value:
        return False
    _write_file(path, value)
    return True


def _read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


__all__ = ["Namespace", "open_namespace", "using_namespace", "named_namespaces", "NetnsError", "NotFound",
           "BadRequest", "Conflict"]
