"""Request/reply over the host's bus: NatsBus (our NATS client, typed messages, tracing
context) against the floor, a bare asyncio loop speaking the NATS protocol with no
schema, span or bookkeeping, over the same nats-server in the same run.

    python -m bench.bus [--requests N]

Both ends live in one process, so "CPU a request" is the requester's and the
responder's together. Figures of 2026-12-05, alternated with the commit before (nats-py):
p50 0.28-0.30 ms against nats-py's 0.36-0.39, 195-206 us of CPU a request against 272-303.
"""
from __future__ import annotations

import argparse
import asyncio
import time

from shared.nats_bus import NatsBus
from shared.schemas import HealthReply, HealthRequest
from weavectl.nats_process import LocalNatsServer

SUBJECT = "weave.bench.health"


def _reply() -> HealthReply:
    return HealthReply(service="bench", pid=1, healthy=True, detail="", uptime_s=0.0, metrics_port=0)


async def _timed(n: int, once) -> tuple[list[float], float]:
    for _ in range(min(200, n)):
        await once()
    lat = []
    cpu = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        await once()
        lat.append(time.perf_counter() - start)
    return sorted(lat), (time.process_time() - cpu) / n


async def _natsbus(url: str, n: int) -> tuple[list[float], float]:
    server, client = await NatsBus.connect(url, "", "bench-srv"), await NatsBus.connect(url, "", "bench-cli")

    async def answer(_: HealthRequest) -> HealthReply:
        return _reply()

    await server.serve(SUBJECT, HealthRequest, answer)
    try:
        return await _timed(n, lambda: client.request(SUBJECT, HealthRequest(), HealthReply))
    finally:
        await client.close()
        await server.close()


async def _bare(port: int, n: int) -> tuple[list[float], float]:
    """The floor: one connection answering itself, lines parsed by hand."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false,"headers":true,"no_responders":true,"protocol":1}\r\n'
                 b"SUB weave.bench.health 1\r\nSUB _INBOX.bench.* 2\r\nPING\r\n")
    assert await reader.readline() == b"PONG\r\n"
    body = _reply().model_dump_json().encode()

    async def once() -> None:
        writer.write(b"PUB weave.bench.health _INBOX.bench.1 2\r\n{}\r\n")
        while True:
            line = await reader.readline()
            if line.startswith(b"MSG weave.bench.health"):
                reply = line.split()[3]
                await reader.readexactly(int(line.split()[-1]) + 2)
                writer.write(b"PUB %s %d\r\n%s\r\n" % (reply, len(body), body))
            elif line.startswith(b"MSG _INBOX.bench."):
                await reader.readexactly(int(line.split()[-1]) + 2)
                return
            elif line == b"PING\r\n":
                writer.write(b"PONG\r\n")

    try:
        return await _timed(n, once)
    finally:
        writer.close()


def _row(name: str, lat: list[float], cpu: float, floor_cpu: float) -> str:
    p50, p99 = lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3
    return f"  {name:<34} p50 {p50:.3f} ms  p99 {p99:.3f} ms  CPU {cpu * 1e6:5.0f} us/request ({cpu / floor_cpu:.2f} x)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    with LocalNatsServer(token=False) as server:
        floor = asyncio.run(_bare(server.port, args.requests))
        ours = asyncio.run(_natsbus(server.url, args.requests))
    print(f"request/reply over one nats-server, {args.requests} requests, both ends in this process")
    print(_row("bare protocol loop (the floor)", *floor, floor[1]))
    print(_row("NatsBus (typed, traced)", *ours, floor[1]))


if __name__ == "__main__":
    main()
