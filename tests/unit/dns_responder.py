"""A small upstream DNS server for tests (dnslib), on 127.0.0.2 (not the weaveDNS
listener's address, which weaveDNS leaves out of its upstreams), UDP and TCP on one
port. Answers A queries for the names it is given, NXDOMAIN otherwise; `pad` adds TXT
records to make replies big; `silent` makes it answer nothing."""
from __future__ import annotations

import asyncio
import struct

from dnslib import QTYPE, RCODE, RR, TXT, A, DNSRecord


class Responder:
    host = "127.0.0.2"

    def __init__(self, names: dict[str, str], *, pad: int = 0, silent: bool = False) -> None:
        self.names, self.pad, self.silent = names, pad, silent
        self.seen: list[str] = []
        self.port = 0

    def answer(self, data: bytes) -> bytes | None:
        query = DNSRecord.parse(data)
        name = str(query.q.qname)
        self.seen.append(name)
        if self.silent:
            return None
        reply = query.reply()
        if name in self.names:
            reply.add_answer(RR(name, QTYPE.A, rdata=A(self.names[name]), ttl=60))
            for i in range(self.pad):
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT("x" * 200), ttl=60))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply.pack()

    async def __aenter__(self) -> "Responder":
        loop = asyncio.get_running_loop()
        responder = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                out = responder.answer(data)
                if out is not None:
                    self.transport.sendto(out, addr)

        self._udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(self.host, 0))
        self.port = self._udp.get_extra_info("sockname")[1]
        self._tcp = await asyncio.start_server(self._on_tcp, self.host, self.port)
        return self

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            (size,) = struct.unpack("!H", await reader.readexactly(2))
            out = self.answer(await reader.readexactly(size))
            if out is not None:
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        finally:
            writer.close()

    async def __aexit__(self, *exc) -> None:
        self._udp.close()
        self._tcp.close()
