"""pyroute2's IPRoute and NetlinkError, imported without the package's `__init__`.

`import pyroute2` (or `from pyroute2 import IPRoute`) runs an `__init__` that imports
every family pyroute2 has (ndb, ipdb, nftables, wireless, devlink, plan9, ...): 163
modules and a seventh of a second of CPU, of which we use rtnetlink only. Here the
package is registered bare (its path, not its `__init__`), and only the submodules we
use are imported: 99 modules, 0.09 s (measured on this machine). Every module of this
project takes pyroute2 from here; if something imported the whole package first, that
one is used, and these names are the same objects. (shared/imports.py has the helpers.)
"""
from __future__ import annotations

from shared.imports import bare_package

bare_package("pyroute2")

from pyroute2.iproute.linux import IPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402

__all__ = ["IPRoute", "NetlinkError"]
