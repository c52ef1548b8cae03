"""`weave launch --merge-pages` (shared/memory.py): the kernel is asked to merge the
stack's identical pages (KSM), for the process that asks and for every process it forks
or execs; the operator is told when the host's ksmd is off."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shared.memory import merge_pages_problem

KSM_STAT = Path("/proc/self/ksm_stat")  # (Linux 6.1; PR_SET_MEMORY_MERGE is 6.4)


def _merge_any(stat: str) -> str:
    return next(line.split(":")[1].strip() for line in stat.splitlines() if line.startswith("ksm_merge_any"))


def test_merge_pages_holds_for_the_process_and_what_it_forks_and_execs():
    """A process that asked, and `cat` forked and exec'd from it afterwards, read their
    own /proc/<pid>/ksm_stat; this test's process, which did not ask, is left alone."""
    script = (
        "import json, os, subprocess\n"
        "from shared.memory import merge_pages\n"
        "def stat():\n"
        "    return open('/proc/self/ksm_stat').read() if os.path.exists('/proc/self/ksm_stat') else ''\n"
        "before = stat()\n"
        "problem = merge_pages()\n"
        "child = subprocess.run(['cat', '/proc/self/ksm_stat'], capture_output=True, text=True).stdout\n"
        "print(json.dumps([before, problem, stat(), child]))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    before, problem, after, child = json.loads(out.stdout)
    if not KSM_STAT.exists():  # an older kernel: the stack runs, and says why nothing is merged
        assert "kernel" in problem
        return
    assert problem is None
    assert [_merge_any(before), _merge_any(after), _merge_any(child)] == ["no", "yes", "yes"]
    assert _merge_any(KSM_STAT.read_text()) == "no"


def test_the_operator_is_told_when_ksmd_is_off_or_missing(tmp_path):
    if not KSM_STAT.exists():
        assert "kernel" in merge_pages_problem()
        return
    run = tmp_path / "run"
    run.write_text("0\n")
    problem = merge_pages_problem(run)
    assert problem and "ksmd" in problem and str(run) in problem and "echo 1 >" in problem
    run.write_text("1\n")
    assert merge_pages_problem(run) is None
    assert "no KSM" in merge_pages_problem(tmp_path / "absent")


def test_weave_launch_takes_merge_pages(tmp_path, monkeypatch):
    from weavectl.cli import build_parser, launch_config

    for var in ("WEAVE_PASSWORD", "WEAVE_SCOPE_TOKEN", "DOCKER_HOST"):
        monkeypatch.delenv(var, raising=False)
    parse = build_parser("launch").parse_args
    on = launch_config(parse(["--state-dir", str(tmp_path), "launch", "--no-docker", "--merge-pages"]))
    off = launch_config(parse(["--state-dir", str(tmp_path), "launch", "--no-docker"]))
    assert on.merge_pages and not off.merge_pages


def test_a_fixed_mmap_threshold_keeps_large_blocks_out_of_the_heap():
    """glibc raises its mmap threshold to a freed large block's size, so the next one of
    that size comes from the heap and stays; fixed, it is mapped and given back."""
    import subprocess
    import sys

    probe = """
import sys
from pathlib import Path
from shared.memory import fix_mmap_threshold
def heap_kb():
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith("[heap]"):
            a, b = (int(x, 16) for x in line.split()[0].split("-"))
            return (b - a) // 1024
    return 0
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
before = heap_kb()
block = bytearray(4 << 20); del block
block = bytearray(4 << 20)
print(heap_kb() - before)
"""
    grown = {mode: int(subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True,
                                      check=True).stdout) for mode in ("glibc", "fixed")}
    assert grown["glibc"] >= 3072 and grown["fixed"] < 1024, grown  # (KiB of heap)
