"""bench.footprint's "were it the only stack" PSS: the share of a page the testbed's
other host takes away, given back."""
import os
import signal

from bench.footprint import PAGE, alone_extra_kb, kpagecount, page_frames

KB = PAGE / 1024


def test_a_page_split_with_the_other_host_is_given_back_whole():
    counts = {1: 2, 2: 12, 3: 1, 4: 3}
    mapcount = counts.__getitem__
    # frame 1: one mapping here, one there (PSS 1/2 here, 1 alone)
    assert alone_extra_kb([1], [1], mapcount) == 0.5 * KB
    # frame 2: six mappings on each host: each of ours 1/12 -> 1/6
    assert abs(alone_extra_kb([2] * 6, [2] * 6, mapcount) - 0.5 * KB) < 1e-9
    # frame 3 is ours alone; frame 4 also has a mapping outside the testbed (kept in the split)
    assert alone_extra_kb([3], [], mapcount) == 0
    assert abs(alone_extra_kb([4], [4], mapcount) - (1 / 2 - 1 / 3) * KB) < 1e-9


def test_a_count_below_the_other_hosts_mappings_is_not_a_counted_page():
    # the zero page (or a page unmapped meanwhile) reports fewer mappings than seen
    assert alone_extra_kb([7, 7], [7, 7, 7], {7: 0}.__getitem__) == 0


def test_a_forked_child_shares_frames_the_kernel_counts():
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    try:
        mine, child = page_frames(os.getpid()), page_frames(pid)
        same = set(mine) & set(child)
        assert mine and child and same  # copy-on-write: the same frames
        f, mapcount = kpagecount()
        with f:
            extra = alone_extra_kb(child, mine, mapcount)
        # the child's PSS gives half of each page it shares with this process to it
        shared = sum(1 for fr in child if fr in same)
        assert 0 < extra <= shared * KB
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
