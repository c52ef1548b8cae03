"""Sleeve codec micro-benchmark: frames/s for decode + encode of 1400-byte frames.

Prints each figure next to a baseline measured in the same run (raw `bytes` slicing
of the same packets, no validation), since this machine is shared and only ratios
compare across runs (see reference/baseline.md).

    .venv/bin/python -m bench.sleeve_codec [--frames N]
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

from services.datapath.sleeve import frame as fr
from services.datapath.sleeve.crypto import NaClDecryptor, NaClPacker

SRC, DST = 0xAA0000000001, 0xAA0000000002
FRAME = bytes(range(256)) * 5 + bytes(120)
assert len(FRAME) == 1400
KEY = bytes(range(32))


def _rate(n: int, run: Callable[[], None]) -> float:
    """Frames per second of `run`, which handles `n` frames; best of 3."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return n / best


def baseline(packets: list[bytes]) -> Callable[[], None]:
    """Slice out sender, peers, length and frame; rebuild the packet by concatenation."""

    def run() -> None:
        for p in packets:
            sender, src, dst, length, frame = p[:6], p[6:12], p[12:18], p[18:20], p[20:]
            sender + src + dst + length + frame

    return run


def plain(packets: list[bytes]) -> Callable[[], None]:
    packer = fr.PlainPacker(SRC)

    def run() -> None:
        for p in packets:
            sender, body = fr.split_packet(p)
            for src, dst, frame in fr.iterate_frames(body):
                packer.append_frame(src, dst, frame)
            packer.flush()

    return run


RING = 256
"""Distinct sealed packets decoded in turn (cache-warm, like freshly received ones);
a new decryptor per pass over them, so the replay windows accept every one."""


def encrypted(n: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """(encode, decode) runs: seal n one-frame packets; open n packets."""
    sealer = NaClPacker(SRC, KEY, outbound=True, df=False)
    sealed = []
    for _ in range(RING):
        sealer.append_frame(SRC, DST, FRAME)
        sealed.append(sealer.flush())

    def encode() -> None:
        packer = NaClPacker(SRC, KEY, outbound=True, df=False)
        for _ in range(n):
            packer.append_frame(SRC, DST, FRAME)
            packer.flush()

    def decode() -> None:
        for _ in range(n // RING):
            dec = NaClDecryptor(KEY, outbound=False)
            for p in sealed:
                sender, body = fr.split_packet(p)
                fr.iterate_frames(dec.open(body))

    return encode, decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000)
    n = parser.parse_args().frames
    packer = fr.PlainPacker(SRC)
    packer.append_frame(SRC, DST, FRAME)
    packets = [packer.flush()] * n
    base = _rate(n, baseline(packets))
    enc, dec = encrypted(n)
    rows = [
        ("raw bytes slicing (baseline)", base),
        ("plain decode + encode", _rate(n, plain(packets))),
        ("encrypted encode (seal)", _rate(n, enc)),
        ("encrypted decode (open + replay + split)", _rate(n // RING * RING, dec)),
    ]
    print(f"sleeve codec, 1400-byte frames, {n} frames per run, best of 3")
    for name, rate in rows:
        print(f"  {name:42s} {rate / 1000:8.1f} k frames/s  {rate / base:5.2f} x baseline")


if __name__ == "__main__":
    main()
