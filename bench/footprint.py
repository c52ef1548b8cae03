"""What one host's stack costs at rest (issue 15): memory, idle CPU, wake-ups, start-up.

On a 2-host testbed (each host a network namespace running `weave launch --no-scope`,
connected to the other, one container attached on each), per host:
- PSS and private (unshared) memory of every process of the stack (supervisor,
  nats-server, each service), from /proc/<pid>/smaps_rollup; and the host's PSS were it
  the machine's only stack: PSS splits a file page (nats-server's binary, libpython,
  shared libraries) among the two hosts' processes, which a node does not (pagemap and
  kpagecount give each page's mappings);
- CPU while idle over `--idle` seconds (each thread's run time, in nanoseconds), and wake-ups per second
  (voluntary context switches), per process;
- CPU to start the stack: the CPU time of every stack process from `weave launch` until
  it reports healthy (plus the `weave launch` CLI itself), and that wall time.
Printed next to the goals of issue 15 and the real Weave Net 2.8 router's figures
measured on this kind of machine (reference/baseline.md: one Go process per host); the
Go router cannot run here, so its column is quoted, not re-measured. `bench.launch`
gives launch-to-full-mesh.

    .venv/bin/python -m bench.footprint [--idle 30] [--json]
    .venv/bin/python -m bench.footprint --soak 600    # churn attach/detach + DNS queries;
                                                      # PSS per process each minute
    .venv/bin/python -m bench.footprint --merge-pages [--ksm-sleep-ms 200] [--soak 600]
                                 # launched --merge-pages: PSS before and after the machine's
                                 # ksmd merged the pages, and ksmd's CPU next to the stack's
                                 # (or the soak, ksmd on)
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from weavectl.testbed import Testbed

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PFN_MASK = (1 << 55) - 1
GO = {"pss_mb": 49.0, "idle_cpu_s_per_30s": 0.03, "start_cpu_s": 0.07, "launch_to_mesh_s": 0.62}
GOAL = {"pss_mb": 100.0, "idle_cpu_s_per_30s": 0.10, "start_cpu_s": 0.6, "launch_to_mesh_s": 1.5}


def stack_pids(state_dir: Path) -> dict[str, int]:
    """Every process of a host's stack by name: the supervisor and what it runs."""
    data = json.loads((state_dir / "processes.json").read_text())
    pids = {"supervisor": int(data["supervisor"])}
    pids.update({name: int(pid) for name, pid in data["processes"].items() if pid})
    for extra in _children(int(data["supervisor"])):  # anything else it started
        if extra not in pids.values():
            pids[_comm(extra)] = extra
    return pids


def _children(pid: int) -> list[int]:
    """Every process whose parent is `pid` (scanned from /proc/*/stat)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _comm(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        text = b" ".join(cmd).decode(errors="replace")
        if "resource_tracker" in text:
            return "resource_tracker"
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return f"pid {pid}"


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, private clean + private dirty) in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def page_frames(pid: int) -> list[int]:
    """The physical frame of every resident page `pid` maps, one entry per mapping
    (/proc/<pid>/pagemap; frame numbers need root)."""
    frames = []
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            fields = line.split()
            if fields[-1] == "[vsyscall]":  # not in the page tables
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            pagemap.seek(start // PAGE * 8)
            for (entry,) in struct.iter_unpack("<Q", pagemap.read((end - start) // PAGE * 8)):
                if entry >> 63:  # present
                    frames.append(entry & PFN_MASK)
    return frames


def alone_extra_kb(host: list[int], others: list[int], mapcount) -> float:
    """What a host's PSS leaves out because the testbed's other hosts map the same pages:
    its file pages (nats-server's binary, libpython, shared libraries) are split with the
    other hosts' stacks, which a node running one stack does not have. For each page of
    `host` (frames, one per mapping) also in `others`, the share it would have with the
    others gone, 1 / (mapcount - their mappings), less the share PSS gave it, 1 / mapcount.
    `mapcount(frame)` is the kernel's count of mappings of that page."""
    theirs = collections.Counter(others)
    extra = 0.0
    for frame in host:
        j = theirs.get(frame, 0)
        if not j:
            continue
        total = mapcount(frame)
        if total > j:  # (else not a page PSS counts, e.g. the zero page)
            extra += 1 / (total - j) - 1 / total
    return extra * PAGE / 1024


def kpagecount():
    """mapcount(frame) from /proc/kpagecount, as alone_extra_kb wants it."""
    f = open("/proc/kpagecount", "rb")

    def mapcount(frame: int) -> int:
        f.seek(frame * 8)
        return struct.unpack("<Q", f.read(8))[0]
    return f, mapcount


def alone_pss_mb(state_dirs: list[Path], pss: list[float]) -> list[float]:
    """Each host's PSS (`pss`, MB) as if it were the only stack on the machine (see
    alone_extra_kb)."""
    frames = [[fr for pid in stack_pids(d).values() for fr in _safe(page_frames, pid, [])] for d in state_dirs]
    f, mapcount = kpagecount()
    with f:
        return [round(mb + alone_extra_kb(mine, [fr for j, fs in enumerate(frames) if j != i for fr in fs],
                                          mapcount) / 1024, 1)
                for i, (mine, mb) in enumerate(zip(frames, pss))]


def cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / CLK_TCK


def run_s(pid: int) -> float:
    """CPU time of every live thread of `pid`, to the nanosecond (/proc/<pid>/task/*/schedstat):
    for the idle window, where /proc/<pid>/stat's clock ticks would round each process's
    0.01-0.02 s to +-0.01 s. (A thread that ends in the window takes its time with it;
    the stack's threads live as long as their process.)"""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of `pid`."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def children_cpu_s(pid: int) -> float:
    """CPU of `pid`'s waited-for children (cutime + cstime): a CLI's helpers."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[13]) + int(stat[14])) / CLK_TCK


def launch_and_measure_start(tb: Testbed, h, extra: tuple[str, ...] = ()) -> dict:
    """`weave launch` on h, timed; CPU of the stack's processes (and the CLI) until healthy."""
    argv = ["ip", "netns", "exec", h.ns, *_weave(tb, h, tb.launch_args(h, launch_args=("--no-scope", *extra)))]
    started = time.monotonic()
    before = os.times()
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    wall = time.monotonic() - started
    after = os.times()
    cli_cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    h.launched = True
    pids = stack_pids(Path(h.state_dir))
    stack_cpu = sum(_safe(cpu_s, p, 0.0) for name, p in pids.items() if name != "supervisor")
    supervisor = _safe(cpu_s, pids["supervisor"], 0.0)
    return {"wall_s": wall, "cpu_s": stack_cpu + supervisor + cli_cpu, "cli_cpu_s": cli_cpu}


def _weave(tb: Testbed, h, args: list[str]) -> list[str]:
    from weavectl.testbed import weave_bin
    return [weave_bin(), "--state-dir", h.state_dir, *args]


def _safe(fn, pid, default):
    try:
        return fn(pid)
    except (OSError, ValueError, IndexError):
        return default


def snapshot(state_dir: Path) -> dict[str, dict]:
    out = {}
    for name, pid in stack_pids(state_dir).items():
        try:
            pss, private = memory_kb(pid)
            out[name] = {"pid": pid, "pss_kb": pss, "private_kb": private, "cpu_s": cpu_s(pid),
                         "run_s": run_s(pid), "wakeups": wakeups(pid)}
        except (OSError, ValueError, KeyError):
            continue
    return out


def idle(state_dirs: list[Path], seconds: float) -> list[dict[str, dict]]:
    """Per host, per process: memory now, CPU and wake-ups over `seconds` (all hosts at once)."""
    a = [snapshot(d) for d in state_dirs]
    time.sleep(seconds)
    out = []
    for before_all, d in zip(a, state_dirs):
        host = {}
        for name, after in snapshot(d).items():
            before = before_all.get(name)
            if before is None or before["pid"] != after["pid"]:
                continue
            host[name] = {**after, "idle_cpu_s": after["run_s"] - before["run_s"],
                          "wakeups_per_s": (after["wakeups"] - before["wakeups"]) / seconds}
        out.append(host)
    return out


BARE_LOOP = """
import asyncio
async def main():
    print("ready", flush=True)
    while True:
        await asyncio.sleep(1.0)
asyncio.run(main())
"""


@contextlib.contextmanager
def bare_loop():
    """A bare asyncio process that wakes once a second and does nothing else: the same
    run's yardstick for idle CPU. On this shared machine a wake-up after a long sleep
    costs ~0.3-1 ms of CPU (caches gone cold), 10-20x one after a short sleep, and the
    cost moves from day to day; the stack's idle CPU is mostly its wake-ups."""
    proc = subprocess.Popen([sys.executable, "-c", BARE_LOOP], stdout=subprocess.PIPE)
    try:
        proc.stdout.readline()
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def build(root: Path, extra: tuple[str, ...] = (), hosts: int = 2) -> tuple[Testbed, list[dict]]:
    tb = Testbed(root, prefix=f"wfp{os.getpid() % 1000}")
    tb.up(hosts, launch=False)
    starts = []
    for h in tb.hosts:
        starts.append(launch_and_measure_start(tb, h, extra))
    for h in tb.hosts:
        tb.weave(h, "connect", *[o.addr for o in tb.hosts if o is not h])
    for h in tb.hosts:
        tb.add_container(h, 1)
    return tb, starts


def established(tb: Testbed) -> bool:
    """Every host has an established connection to each of the others."""
    return all(tb.weave(h, "status", "connections", check=False).stdout.count(" established ") >= len(tb.hosts) - 1
               for h in tb.hosts)


def pss_mb(procs: dict[str, dict]) -> float:
    return sum(p["pss_kb"] for p in procs.values()) / 1024


def idle_cpu_per_30s(procs: dict[str, dict], seconds: float) -> float:
    return sum(p["idle_cpu_s"] for p in procs.values()) * 30 / seconds


def report(starts: list[dict], per_host: list[dict[str, dict]], seconds: float, alone: list[float],
           bare_s: float) -> dict:
    hosts = []
    for start, procs, pss_alone in zip(starts, per_host, alone):
        hosts.append({
            "start_wall_s": round(start["wall_s"], 2), "start_cpu_s": round(start["cpu_s"], 2),
            "pss_mb": round(pss_mb(procs), 1), "pss_alone_mb": pss_alone,
            "private_mb": round(sum(p["private_kb"] for p in procs.values()) / 1024, 1),
            "idle_cpu_s_per_30s": round(idle_cpu_per_30s(procs, seconds), 3),
            "wakeups_per_s": round(sum(p["wakeups_per_s"] for p in procs.values()), 1),
            "processes": {n: {"pss_mb": round(p["pss_kb"] / 1024, 1), "private_mb": round(p["private_kb"] / 1024, 1),
                              "idle_cpu_s": round(p["idle_cpu_s"], 3), "wakeups_per_s": round(p["wakeups_per_s"], 1)}
                          for n, p in sorted(procs.items())}})
    return {"idle_seconds": seconds, "hosts": hosts, "bare_loop_cpu_s_per_30s": round(bare_s * 30 / seconds, 3)}


def print_report(rep: dict) -> None:
    print(f"one host's stack (weave launch --no-scope; {len(rep['hosts'])} hosts, each peered with the others "
          f"and running 1 container; idle {rep['idle_seconds']:.0f} s)")
    print(f"{'per host':<34}{'Weave Net 2.8':>14}{'goal':>8}" + "".join(f"{'h' + str(i + 1):>10}"
                                                                    for i in range(len(rep['hosts']))))
    rows = [("memory, PSS of all processes (MB)", "pss_mb"), ("CPU while idle (s per 30 s)", "idle_cpu_s_per_30s"),
            ("CPU to start the stack (s)", "start_cpu_s")]
    for label, key in rows:
        print(f"{label:<34}{GO[key]:>14}{GOAL[key]:>8}" + "".join(f"{h[key]:>10}" for h in rep["hosts"]))
        if key == "pss_mb":  # (the Go figure was taken with its peer on the same machine too)
            print(f"{'  the same, were it the only stack':<34}{'':>14}{'':>8}"
                  + "".join(f"{h['pss_alone_mb']:>10}" for h in rep["hosts"]))
        if key == "idle_cpu_s_per_30s":
            print(f"{'  wake-ups per second':<34}{'':>14}{'':>8}"
                  + "".join(f"{h['wakeups_per_s']:>10}" for h in rep["hosts"]))
            print(f"{'  beside: bare asyncio, 1 wake/s':<34}{'':>14}{'':>8}{rep['bare_loop_cpu_s_per_30s']:>10}"
                  "  (same window: what a wake-up costs on this machine now)")
    print(f"{'private memory (MB)':<34}{'':>14}{'':>8}" + "".join(f"{h['private_mb']:>10}" for h in rep["hosts"]))
    print(f"{'weave launch to healthy (s)':<34}{'':>14}{'':>8}" + "".join(f"{h['start_wall_s']:>10}"
                                                                       for h in rep["hosts"]))
    print("\nper process (h1): PSS MB, private MB, idle CPU s, wake-ups/s")
    for name, p in rep["hosts"][0]["processes"].items():
        print(f"  {name:<12}{p['pss_mb']:>8}{p['private_mb']:>8}{p['idle_cpu_s']:>8}{p['wakeups_per_s']:>8}")


def soak(tb: Testbed, seconds: float) -> None:
    """attach/detach one container a second and DNS queries, for `seconds`; PSS per process
    each minute; the growth of each process after the first minute."""
    h = tb.hosts[0]
    state = Path(h.state_dir)
    samples: list[dict[str, dict]] = []  # snapshot() each minute
    end = time.monotonic() + seconds
    next_sample = time.monotonic() + 60
    n = 0
    ns = f"{h.ns}soak"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        while time.monotonic() < end:
            n += 1
            tb.weave(h, "attach", "--name", f"soak{n}.weave.local", ns, check=False)
            tb.exec(h.nickname, ["dig", "@127.0.0.1", "+time=1", "+tries=1", f"soak{n}.weave.local"], check=False)
            tb.weave(h, "detach", ns, check=False)
            if time.monotonic() >= next_sample:
                samples.append(snapshot(state))
                print(f"minute {len(samples)}: " + ", ".join(f"{k} {v['pss_kb'] / 1024:.1f}"
                                                             for k, v in sorted(samples[-1].items())), flush=True)
                next_sample += 60
            time.sleep(1.0)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    if len(samples) >= 2:
        first, last = samples[0], samples[-1]
        for label, key in (("PSS", "pss_kb"), ("private memory", "private_kb")):
            # private: what the process itself holds (PSS also grows as shared code pages are first run)
            growth = {k: 100 * (last[k][key] - first[k][key]) / first[k][key] for k in sorted(first) if k in last}
            print(f"growth after the first minute ({label}): " + ", ".join(f"{k} {g:+.1f}%" for k, g in growth.items()))


KSM = Path("/sys/kernel/mm/ksm")
MERGE_TIMEOUT_S = 1200.0


def _ksm(name: str) -> str:
    return (KSM / name).read_text().strip()


def _ksmd_s() -> float:
    """CPU time of the kernel's ksmd thread, in seconds."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _comm(int(entry.name)) == "ksmd":
            return run_s(int(entry.name))
    raise SystemExit("no ksmd thread: this kernel has no KSM")


@contextlib.contextmanager
def ksmd_on(sleep_ms: int | None):
    """The machine's ksmd running (at `sleep_ms` between batches, if given) for the
    block, then put back as it was (pages merged meanwhile stay merged until written)."""
    saved = {name: _ksm(name) for name in ("run", "sleep_millisecs")}
    try:
        if sleep_ms is not None:
            (KSM / "sleep_millisecs").write_text(str(sleep_ms))
        (KSM / "run").write_text("1")
        yield
    finally:
        for name in ("sleep_millisecs", "run"):
            (KSM / name).write_text(saved[name])


def wait_merged() -> float:
    """Seconds until ksmd has scanned everything twice: it merges a page it has seen
    unchanged on two scans, and its count of full scans is bumped when its cursor wraps,
    which may happen at once, so this waits for three."""
    scans, started = int(_ksm("full_scans")), time.monotonic()
    while int(_ksm("full_scans")) < scans + 3:
        if time.monotonic() - started > MERGE_TIMEOUT_S:
            raise SystemExit(f"ksmd did not finish its scans in {MERGE_TIMEOUT_S:.0f} s (try a smaller --ksm-sleep-ms)")
        time.sleep(0.5)
    return time.monotonic() - started


def merged(tb: Testbed, seconds: float, sleep_ms: int | None, soak_s: float) -> None:
    """--merge-pages: both hosts launched with it; PSS per host before ksmd runs and once
    it has merged, then idle CPU with ksmd's own next to the stack's (or, with --soak,
    the soak with ksmd on). ksmd is the machine's (/sys/kernel/mm/ksm): it is turned on
    for the measurement, then put back."""
    dirs = [Path(h.state_dir) for h in tb.hosts]
    before = [snapshot(d) for d in dirs]
    with ksmd_on(sleep_ms):
        merge_s = wait_merged()
        print(f"weave launch --merge-pages, 2 hosts; ksmd at sleep_millisecs={_ksm('sleep_millisecs')}, "
              f"pages_to_scan={_ksm('pages_to_scan')}: its scans took {merge_s:.0f} s, "
              f"{_ksm('pages_sharing')} pages merged", flush=True)
        if soak_s:
            soak(tb, soak_s)
            return
        ksmd0 = _ksmd_s()
        per_host = idle(dirs, seconds)
        ksmd_s = _ksmd_s() - ksmd0
    pss = [pss_mb(host) for host in before]
    after = [pss_mb(host) for host in per_host]
    after_alone = alone_pss_mb(dirs, after)
    idle_cpu = [idle_cpu_per_30s(host, seconds) for host in per_host]
    ksmd_per_host = ksmd_s * 30 / seconds / len(dirs)  # (it scanned both hosts' processes, nothing else asked)
    print(f"{'per host':<40}{'goal':>8}" + "".join(f"{'h' + str(i + 1):>10}" for i in range(len(dirs))))
    print(f"{'PSS before ksmd ran (MB)':<40}{'':>8}" + "".join(f"{v:>10.1f}" for v in pss))
    print(f"{'PSS after ksmd scanned them (MB)':<40}{GOAL['pss_mb']:>8}" + "".join(f"{v:>10.1f}" for v in after))
    print(f"{'  the same, were it the only stack':<40}{'':>8}" + "".join(f"{v:>10.1f}" for v in after_alone))
    print(f"{'idle CPU of the stack (s per 30 s)':<40}{'':>8}" + "".join(f"{v:>10.3f}" for v in idle_cpu))
    print(f"{'+ ksmd, half of its CPU (s per 30 s)':<40}{GOAL['idle_cpu_s_per_30s']:>8}"
          + "".join(f"{v + ksmd_per_host:>10.3f}" for v in idle_cpu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement")
    ap.add_argument("--soak", type=float, default=0.0, help="seconds of attach/detach + DNS churn instead")
    ap.add_argument("--merge-pages", action="store_true", help="launch with --merge-pages and measure with the "
                    "machine's ksmd on (turned on for the run, then put back)")
    ap.add_argument("--ksm-sleep-ms", type=int, help="ksmd's pause between batches for --merge-pages "
                    "(default: the machine's setting)")
    ap.add_argument("--hosts", type=int, default=2, choices=range(2, 10), metavar="2-9",
                    help="testbed hosts, each peered with all the others (default 2; more shows what each "
                    "peer adds at rest)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tb, starts = build(Path(tmp), ("--merge-pages",) if args.merge_pages else (), args.hosts)
        try:
            deadline = time.monotonic() + 30
            while not established(tb) and time.monotonic() < deadline:
                time.sleep(0.2)
            if args.soak and not args.merge_pages:
                soak(tb, args.soak)
                return
            time.sleep(5)  # let start-up work (first gossip, consensus) finish
            if args.merge_pages:
                merged(tb, args.idle, args.ksm_sleep_ms, args.soak)
                return
            dirs = [Path(h.state_dir) for h in tb.hosts]
            with bare_loop() as bare:
                bare0 = run_s(bare)
                per_host = idle(dirs, args.idle)
                bare_s = run_s(bare) - bare0
            rep = report(starts, per_host, args.idle, alone_pss_mb(dirs, [pss_mb(p) for p in per_host]), bare_s)
            print(json.dumps(rep, indent=1)) if args.json else print_report(rep)
        finally:
            tb.down()


if __name__ == "__main__":
    main()
