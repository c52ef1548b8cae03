"""bench/bus.py runs: both rows, the floor first, with figures that parse."""
from __future__ import annotations

import re
import subprocess
import sys


def test_bench_bus_prints_ours_beside_the_floor():
    out = subprocess.run([sys.executable, "-m", "bench.bus", "--requests", "50"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if "us/request" in line]
    assert [r.split("p50")[0].strip() for r in rows] == ["bare protocol loop (the floor)", "NatsBus (typed, traced)"]
    assert "(1.00 x)" in rows[0]
    for row in rows:
        p50, p99, cpu = map(float, re.findall(r"p50 ([\d.]+) ms\s+p99 ([\d.]+) ms\s+CPU\s+(\d+)", row)[0])
        assert 0 < p50 <= p99 and cpu > 0
