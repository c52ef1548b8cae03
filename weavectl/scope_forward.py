"""A TCP forwarder from this machine's loopback into a testbed host's loopback, so a
browser on the machine reaches that host's Scope app (`weave demo` keeps one up).

    python -m weavectl.scope_forward --netns wd-h1 [--listen 127.0.0.1:4040] [--to 127.0.0.1:4040]

The listening socket is bound in the namespace the forwarder starts in (the machine's);
then the process joins the host's network namespace (setns), so every connection it
makes goes to that host's loopback. Being inside that namespace, it is ended with the
testbed (`weave testbed down` kills every process in its namespaces). Prints
`listening on <addr>:<port>` once ready (port 0 picks one).
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000


def join_netns(name: str) -> None:
    """Move this process (its only thread) into the network namespace `ip netns` calls `name`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host or "127.0.0.1", int(port)))
    sock.listen(64)
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(listener: socket.socket, to: str) -> None:
    host, _, port = to.rpartition(":")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scope_forward", description=__doc__.splitlines()[0])
    p.add_argument("--netns", required=True, help="the testbed host's namespace (ip netns name)")
    p.add_argument("--listen", default="127.0.0.1:4040", help="address on this machine (port 0: any free one)")
    p.add_argument("--to", default="127.0.0.1:4040", help="address inside the host's namespace")
    args = p.parse_args(argv)
    listener = bind(args.listen)
    join_netns(args.netns)
    addr, port = listener.getsockname()[:2]
    print(f"listening on {addr}:{port}", flush=True)
    try:
        asyncio.run(serve(listener, args.to))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
